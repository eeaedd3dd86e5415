"""GGUF reading: config, tensors and tokenizer against transformers' own GGUF loader, every
dequantization type against gguf's reference code (and llama.cpp's block layouts), and clear
errors for bad files."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from smolchat.errors import ModelLoadError
from smolchat.model.gguf import (
    GGUFFile,
    iter_gguf_tensors,
    read_gguf,
    read_gguf_header,
)

T = gguf.GGMLQuantizationType

TEXTS = [
    "Hello, world! How are you today?",
    "Émilie a mangé une pomme 🍎 à Zürich. 日本語のテキスト。 Привет, мир! ²³½ ﬁ",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\r\n"
    "x = {'a': [1, 22, 333]}  # comment\n",
    "In 2024, 3.14159 and 1,000,000 people paid $12.50 (x2) on 12/31.",
    "   leading and trailing spaces   \n\n\n  ",
    "I'm sure they'll say it's John's; we've DONE IT'S",
    "<|endoftext|><repo_name>smolchat<file_sep>main.py\n<|im_end|>",
]
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? 🇮🇹"},
]


# -- transformers' reference load of the real SmolLM2 file (slow: cached for the session) --


@pytest.fixture(scope="session")
def gguf_dir(smollm2_gguf: Path, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("smollm2-gguf")
    (d / smollm2_gguf.name).symlink_to(smollm2_gguf)
    return d


@pytest.fixture(scope="session")
def hf_model_ref(gguf_dir: Path, smollm2_gguf: Path):
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=smollm2_gguf.name)
    return {k: v.detach() for k, v in model.state_dict().items()}, model.config


@pytest.fixture(scope="session")
def hf_tokenizer(gguf_dir: Path, smollm2_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf_dir, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def ours(smollm2_gguf: Path):
    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def our_tokenizer(ours):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(ours.tokenizer_json)


def test_config_matches_transformers(ours, hf_model_ref) -> None:
    _, ref = hf_model_ref
    cfg = ours.config
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ):
        assert cfg[key] == getattr(ref, key), key
    assert cfg["rope_theta"] == ref.rope_parameters["rope_theta"]
    assert cfg["rope_scaling"] is None
    assert ref.rope_parameters.get("rope_type", "default") == "default"


def test_tensors_match_transformers(ours, hf_model_ref, smollm2_gguf: Path) -> None:
    ref, _ = hf_model_ref
    names = set(ours.tensors)
    assert ours.config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in names
    assert names | {"lm_head.weight"} == set(ref)  # transformers lists the tied head too
    for name, tensor in ours.tensors.items():
        expected = ref[name]
        assert tensor.shape == expected.shape, name
        if not torch.equal(tensor.float(), expected.float()):
            diff = (tensor.float() - expected.float()).abs().max().item()
            raise AssertionError(f"{name}: max abs diff {diff}")
    # the q/k rows really were reordered (the GGUF stores them interleaved)
    f = GGUFFile(smollm2_gguf)
    raw_q = f.tensor(next(t for t in f.tensors if t.name == "blk.0.attn_q.weight"))
    assert not torch.equal(raw_q, ours.tensors["model.layers.0.self_attn.q_proj.weight"])


def test_header_matches_read(smollm2_gguf: Path, ours) -> None:
    header = read_gguf_header(smollm2_gguf)
    assert header.tensor_count == len(ours.tensors) == 272
    assert header.config == ours.config
    assert header.tokenizer_json == ours.tokenizer_json
    assert header.tokenizer_config == ours.tokenizer_config


def _non_ascii_number(text: str) -> bool:
    return any(not c.isascii() and unicodedata.category(c) in ("Nd", "Nl", "No") for c in text)


def test_token_ids_match_transformers(our_tokenizer, hf_tokenizer) -> None:
    """Same ids as transformers' GGUF tokenizer, except one deliberate difference: the file says
    tokenizer.ggml.pre = "smollm", for which llama.cpp (and SmolLM2's own tokenizer.json, via
    its Digits pre-tokenizer) cuts every Unicode number character (\\p{N}) out on its own;
    transformers ignores that and uses GPT-2's split. ASCII digits never merge in this
    vocabulary, so only non-ASCII numbers (²½٣...) tokenize differently."""
    from tokenizers import Tokenizer, pre_tokenizers

    smollm_rule = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    smollm_rule.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(False)]
    )
    chat = hf_tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant\n" in chat
    for text in [*TEXTS, chat]:
        ids = our_tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == smollm_rule.encode(text, add_special_tokens=False).ids, text
        if not _non_ascii_number(text):
            assert ids == hf_tokenizer.encode(text, add_special_tokens=False), text
        assert our_tokenizer.decode(ids, skip_special_tokens=False) == text
        assert hf_tokenizer.decode(ids) == text
    assert sum(map(_non_ascii_number, TEXTS)) == 1  # the difference is exercised
    assert our_tokenizer.get_vocab_size() == hf_tokenizer.vocab_size == 49152


def test_tokenizer_config(ours, hf_tokenizer) -> None:
    tc = ours.tokenizer_config
    assert tc["chat_template"] == hf_tokenizer.chat_template
    assert "<|im_start|>" in tc["chat_template"]
    assert tc["eos_token"] == hf_tokenizer.eos_token == "<|im_end|>"
    assert tc["bos_token"] == hf_tokenizer.bos_token
    assert tc["pad_token"] == hf_tokenizer.pad_token
    assert tc["added_tokens_decoder"]["1"]["content"] == "<|im_start|>"
    assert tc["added_tokens_decoder"]["1"]["special"] is True


def test_chat_tokenizer_from_parts(ours, hf_tokenizer) -> None:
    """The chat layer's Tokenizer takes our two parts and renders the GGUF's own template."""
    from smolchat.chat.tokenizer import Tokenizer

    tok = Tokenizer.from_parts(ours.tokenizer_json, ours.tokenizer_config)
    expected = hf_tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True) == expected
    assert tok.encode(expected) == hf_tokenizer.encode(expected, add_special_tokens=False)
    assert 2 in tok.eos_token_ids  # <|im_end|>


# -- small files written with gguf.GGUFWriter ------------------------------------------------


def write_gguf(path: Path, arch: str, meta: dict, tensors: dict) -> Path:
    """Write a GGUF: ``meta`` values typed by Python type; ``tensors`` name -> array or
    (uint8 block bytes, ggml type)."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, list(value))
    for name, value in tensors.items():
        if isinstance(value, tuple):
            data, qtype = value
            w.add_tensor(name, data, raw_dtype=qtype)
        else:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_one(path: Path, name: str = "x") -> torch.Tensor:
    f = GGUFFile(path)
    return f.tensor(next(t for t in f.tensors if t.name == name))


# Worst-case error of each quantizable type relative to the absolute maximum of its 32-value
# block: half a step (Q8_0: amax/127, Q5_1: 2*amax/31, Q4_1: 2*amax/15), or a whole step for the
# symmetric types whose most negative code has no positive twin (Q5_0: amax/16, Q4_0: amax/8),
# plus a margin for the fp16 block scale.
QUANTIZABLE = {
    T.F32: 0.0,
    T.F16: 1e-3,
    T.BF16: 1 / 256,
    T.Q8_0: 0.0045,
    T.Q5_1: 0.034,
    T.Q5_0: 0.065,
    T.Q4_1: 0.07,
    T.Q4_0: 0.13,
}


@pytest.mark.parametrize("qtype", list(QUANTIZABLE), ids=lambda t: t.name)
def test_dequantize_quantizable_types(tmp_path: Path, qtype) -> None:
    rng = np.random.default_rng(int(qtype))
    x = (rng.standard_normal((6, 256)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    if qtype == T.F32:
        stored: object = x
    elif qtype == T.F16:
        stored = x.astype(np.float16)
    else:
        stored = (gguf.quants.quantize(x, qtype), qtype)
    got = read_one(write_gguf(tmp_path / "q.gguf", "llama", {}, {"x": stored}))
    assert got.shape == (6, 256)
    if isinstance(stored, tuple):
        reference = gguf.quants.dequantize(stored[0], qtype)
        assert torch.equal(got.float(), torch.from_numpy(reference))
    err = (got.float().numpy() - x).reshape(6, -1, 32)
    amax = np.abs(x).reshape(6, -1, 32).max(axis=-1, keepdims=True)
    assert np.all(np.abs(err) <= QUANTIZABLE[qtype] * amax + 1e-7)


def _k_blocks(qtype, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks whose fp16 scale fields are finite (gguf cannot quantize these)."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    halves = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
    for at in halves[qtype]:
        scale = rng.uniform(0.001, 0.1, n_blocks).astype(np.float16)
        blocks[:, at : at + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def _scale_min_k4(scales: np.ndarray, j: int) -> tuple[int, int]:
    """llama.cpp get_scale_min_k4: the 6-bit scale and min of sub-block j."""
    s = [int(v) for v in scales]
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def _ref_q4_k(b: np.ndarray) -> list[float]:
    d, dmin = (float(v) for v in b[:4].view(np.float16))
    scales, qs = b[4:16], b[16:144]
    out = []
    for c in range(4):  # 64 values per chunk: low nibbles, then high nibbles
        for h in range(2):
            sc, m = _scale_min_k4(scales, 2 * c + h)
            out += [
                d * sc * ((int(q) >> (4 * h)) & 0xF) - dmin * m for q in qs[32 * c : 32 * c + 32]
            ]
    return out


def _ref_q5_k(b: np.ndarray) -> list[float]:
    d, dmin = (float(v) for v in b[:4].view(np.float16))
    scales, qh, qs = b[4:16], b[16:48], b[48:176]
    out = []
    for c in range(4):
        for h in range(2):
            sc, m = _scale_min_k4(scales, 2 * c + h)
            bit = 1 << (2 * c + h)
            out += [
                d * sc * (((int(qs[32 * c + i]) >> (4 * h)) & 0xF) + (16 if qh[i] & bit else 0))
                - dmin * m
                for i in range(32)
            ]
    return out


def _ref_q6_k(b: np.ndarray) -> list[float]:
    ql, qh, sc = b[:128], b[128:192], b[192:208].view(np.int8)
    d = float(b[208:210].view(np.float16)[0])
    out = [0.0] * 256
    for half in range(2):
        L, H, S = ql[64 * half :], qh[32 * half :], sc[8 * half :]
        for i in range(32):
            q = [
                (int(L[i]) & 0xF) | (((int(H[i]) >> 0) & 3) << 4),
                (int(L[i + 32]) & 0xF) | (((int(H[i]) >> 2) & 3) << 4),
                (int(L[i]) >> 4) | (((int(H[i]) >> 4) & 3) << 4),
                (int(L[i + 32]) >> 4) | (((int(H[i]) >> 6) & 3) << 4),
            ]
            for k in range(4):
                out[128 * half + 32 * k + i] = d * int(S[i // 16 + 2 * k]) * (q[k] - 32)
    return out


K_REFERENCES = {T.Q4_K: _ref_q4_k, T.Q5_K: _ref_q5_k, T.Q6_K: _ref_q6_k}


@pytest.mark.parametrize("qtype", [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K], ids=lambda t: t.name)
def test_dequantize_k_quants(tmp_path: Path, qtype) -> None:
    rng = np.random.default_rng(100 + int(qtype))
    blocks = _k_blocks(qtype, 3 * 2, rng)  # 3 rows of 512 values
    data = blocks.reshape(3, -1)
    got = read_one(write_gguf(tmp_path / "k.gguf", "llama", {}, {"x": (data, qtype)}))
    assert got.shape == (3, 512) and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert torch.equal(got, torch.from_numpy(gguf.quants.dequantize(data, qtype)))
    if qtype in K_REFERENCES:  # an independent decoder written from llama.cpp's C reference
        expected = [v for b in blocks for v in K_REFERENCES[qtype](b)]
        np.testing.assert_allclose(got.reshape(-1).numpy(), expected, rtol=1e-5, atol=1e-6)


# -- a tiny SmolLM3 written the way llama.cpp's converter writes it ---------------------------

_TO_GGUF = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(hf: str) -> str:
    base, _, suffix = hf.rpartition(".")
    if base.startswith("model.layers."):
        _, _, idx, rest = base.split(".", 3)
        return f"blk.{idx}.{_TO_GGUF[rest]}.{suffix}"
    return f"{_TO_GGUF[base]}.{suffix}"


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> interleaved pairs."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _tokenizer_meta(folder: Path) -> dict:
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(folder / "tokenizer.json"))
    data = json.loads((folder / "tokenizer.json").read_text())
    special = {t["id"] for t in data["added_tokens"] if t["special"]}
    n = tk.get_vocab_size()
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": [tk.id_to_token(i) for i in range(n)],
        "tokenizer.ggml.token_type": [3 if i in special else 1 for i in range(n)],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": tk.token_to_id(tcfg["eos_token"]),
        "tokenizer.ggml.padding_token_id": tk.token_to_id(tcfg["pad_token"]),
        "tokenizer.chat_template": tcfg["chat_template"],
    }


def _tiny_gguf(
    tiny_model: Path, out: Path, arch: str = "smollm3", meta: dict | None = None, **tensors
) -> Path:
    """The tiny checkpoint as llama.cpp writes it (F32); ``meta`` / ``tensors`` add or replace."""
    from safetensors.numpy import load_file

    cfg = json.loads((tiny_model / "config.json").read_text())
    state = load_file(str(tiny_model / "model.safetensors"))
    arrays: dict = {}
    for hf, w in state.items():
        if hf.endswith("q_proj.weight"):
            w = _llama_cpp_permute(w, cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            w = _llama_cpp_permute(w, cfg["num_key_value_heads"])
        arrays[_gguf_name(hf)] = np.ascontiguousarray(w)
    arrays.update({name.replace("__", "."): value for name, value in tensors.items()})
    rope = cfg.get("rope_parameters") or {"rope_theta": cfg.get("rope_theta")}
    full_meta = {
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.context_length": cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.attention.head_count": cfg["num_attention_heads"],
        f"{arch}.attention.head_count_kv": cfg["num_key_value_heads"],
        f"{arch}.rope.freq_base": float(rope["rope_theta"]),
        f"{arch}.attention.layer_norm_rms_epsilon": float(cfg["rms_norm_eps"]),
        f"{arch}.rope.dimension_count": cfg["hidden_size"] // cfg["num_attention_heads"],
        **_tokenizer_meta(tiny_model),
        **(meta or {}),
    }
    return write_gguf(out, arch, full_meta, arrays)


def test_tiny_smollm3_round_trip(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    path = _tiny_gguf(tiny_model, tmp_path / "tiny.gguf")
    got = read_gguf(path)
    ref_cfg = json.loads((tiny_model / "config.json").read_text())
    cfg = got.config
    assert cfg["architectures"] == ["SmolLM3ForCausalLM"]
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_key_value_heads")
    keys += ("max_position_embeddings", "no_rope_layers", "eos_token_id", "pad_token_id")
    for key in keys:
        assert cfg[key] == ref_cfg[key], key
    assert cfg["no_rope_layers"] == [1, 1, 1, 0]
    assert cfg["tie_word_embeddings"] is True
    ref = load_file(str(tiny_model / "model.safetensors"))
    assert set(got.tensors) == set(ref)
    streamed = iter_gguf_tensors(path)
    assert iter(streamed) is streamed  # a generator: one tensor at a time
    assert [name for name, _ in streamed] == list(got.tensors)
    for name, tensor in got.tensors.items():
        assert torch.equal(tensor, ref[name]), name  # F32: exact, q/k un-permuted

    original = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    rebuilt = Tokenizer.from_str(got.tokenizer_json)
    template_text = "<|im_start|>user\nHi <think>x</think><|im_end|>\n"
    for text in [*TEXTS, template_text]:
        ids = original.encode(text, add_special_tokens=False).ids
        assert rebuilt.encode(text, add_special_tokens=False).ids == ids, text
        assert rebuilt.decode(ids, skip_special_tokens=False) == text
    assert got.tokenizer_config["eos_token"] == "<|im_end|>"
    assert got.tokenizer_config["chat_template"].startswith(
        json.loads((tiny_model / "tokenizer_config.json").read_text())["chat_template"][:40]
    )


def test_untied_head_and_yarn(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    embed = load_file(str(tiny_model / "model.safetensors"))["model.embed_tokens.weight"]
    head = np.ascontiguousarray(embed[:, ::-1] * 2)
    scaling = {
        "llama.rope.scaling.type": "yarn",
        "llama.rope.scaling.factor": 2.0,
        "llama.rope.scaling.original_context_length": 2048,
    }
    path = _tiny_gguf(tiny_model, tmp_path / "untied.gguf", "llama", scaling, output__weight=head)
    got = read_gguf(path)
    assert got.config["architectures"] == ["LlamaForCausalLM"]
    assert "no_rope_layers" not in got.config
    assert got.config["tie_word_embeddings"] is False
    assert torch.equal(got.tensors["lm_head.weight"], torch.from_numpy(head))
    assert got.config["rope_scaling"] == {
        "type": "yarn",
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 2048,
    }


# -- errors ----------------------------------------------------------------------------------


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    for needle in needles:
        assert needle in msg, msg


def test_junk_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ModelLoadError) as exc:
        read_gguf_header(junk)
    _assert_one_line(exc, "not a GGUF file")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError):
        read_gguf(empty)
    with pytest.raises(ModelLoadError) as exc:
        iter_gguf_tensors(tmp_path / "missing.gguf")
    _assert_one_line(exc, "not found")


def test_truncated_file(smollm2_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        cut.write_bytes(f.read(1 << 20))
    with pytest.raises(ModelLoadError) as exc:
        read_gguf_header(cut)
    _assert_one_line(exc, "truncated", "download")
    # a cut inside the tensor data is caught before any weight is read
    size = smollm2_gguf.stat().st_size
    cut.write_bytes(smollm2_gguf.read_bytes()[: size - 1000])
    with pytest.raises(ModelLoadError) as exc:
        iter_gguf_tensors(cut)
    _assert_one_line(exc, "truncated")


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "qwen.gguf",
        "qwen2",
        {"qwen2.block_count": 1},
        {"token_embd.weight": np.zeros((4, 32), np.float32)},
    )
    with pytest.raises(ModelLoadError) as exc:
        read_gguf(path)
    _assert_one_line(exc, "'qwen2'", "llama")


def test_unsupported_tensor_type(tiny_model: Path, tmp_path: Path) -> None:
    rows, cols = 128, 64  # blk.0.ffn_up.weight of the tiny model
    block, size = gguf.GGML_QUANT_SIZES[T.IQ4_NL]
    iq = (np.zeros((rows, cols // block * size), np.uint8), T.IQ4_NL)
    path = _tiny_gguf(tiny_model, tmp_path / "iq.gguf", blk__0__ffn_up__weight=iq)
    with pytest.raises(ModelLoadError) as exc:
        read_gguf_header(path)
    _assert_one_line(exc, "IQ4_NL", "blk.0.ffn_up.weight")


def test_unknown_tensor(tiny_model: Path, tmp_path: Path) -> None:
    freqs = np.ones(8, np.float32)
    path = _tiny_gguf(tiny_model, tmp_path / "freqs.gguf", "llama", rope_freqs__weight=freqs)
    with pytest.raises(ModelLoadError) as exc:
        iter_gguf_tensors(path)
    _assert_one_line(exc, "rope_freqs.weight")


def test_sentencepiece_tokenizer_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    path = _tiny_gguf(tiny_model, tmp_path / "spm.gguf", meta={"tokenizer.ggml.model": "llama"})
    with pytest.raises(ModelLoadError) as exc:
        read_gguf_header(path)
    _assert_one_line(exc, "SentencePiece")


def test_merges_outside_the_vocabulary_are_one_line(tiny_model: Path, tmp_path: Path) -> None:
    meta = {"tokenizer.ggml.merges": ["zzzq qqqz"]}
    path = _tiny_gguf(tiny_model, tmp_path / "bad-merges.gguf", meta=meta)
    with pytest.raises(ModelLoadError) as exc:
        read_gguf_header(path)
    _assert_one_line(exc, "inconsistent tokenizer", "convert it again")
