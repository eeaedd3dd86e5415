"""``smolchat.model.load_pretrained``: the bare decoder and its task heads against transformers.

Every checkpoint is a tiny random one saved by transformers' own ``SmolLM3For...`` class; the
reference is that class loaded back by transformers. Inputs are two texts of different lengths
run through a transformers tokenizer with left or right padding, as a user would batch them.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from smolchat.errors import SmolchatError, TaskError, TaskInputError
from smolchat.model import TASKS, load_pretrained
from smolchat.model.device import pick_dtype
from tests.tiny import build_smollm3

TOL = 2e-4  # float32, max |ours - transformers|
TEXTS = [
    "The capital of France is Paris.",
    "Hello! How can I help you today? I am a small language model, Paris is in Europe.",
]
CONFIGS = {
    "nope-gqa": dict(),  # NoPE every 4th layer, 4 query heads on 2 kv heads
    "mqa-all-rope": dict(kv_heads=1, no_rope_layers=[1, 1, 1, 1]),
    "sliding-window": dict(sliding_window=6, no_rope_layers=[1, 0, 1, 0]),  # shorter than TEXTS
    "llama": dict(arch="llama", kv_heads=2),
}
HEADS = {task: suffix for task, suffix in TASKS.items()}
NUM_LABELS = 3


def build(folder, task: str, **kwargs):
    return build_smollm3(folder, head=HEADS[task], num_labels=NUM_LABELS, **kwargs)


def reference(folder, task: str, dtype=torch.float32):
    import transformers

    family = (
        "Llama"
        if "Llama" in json.loads((folder / "config.json").read_text())["architectures"][0]
        else "SmolLM3"
    )
    cls = getattr(transformers, family + HEADS[task])
    return cls.from_pretrained(folder, dtype=dtype).eval()


def reference_outputs(ref, task: str, batch) -> list[torch.Tensor]:
    out = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    if task == "base":
        return [out.last_hidden_state]
    if task == "question-answering":
        return [out.start_logits, out.end_logits]
    return [out.logits]


def our_outputs(module, batch) -> list[torch.Tensor]:
    out = module(batch["input_ids"], batch["attention_mask"])
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    import transformers

    folder = build_smollm3(tmp_path_factory.mktemp("tok-model"), layers=1)
    return transformers.AutoTokenizer.from_pretrained(folder)


def encode(tokenizer, side: str) -> dict[str, torch.Tensor]:
    batch = tokenizer(TEXTS, padding=True, padding_side=side, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the two texts must pad one row"
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


PAIRS = [(c, t) for c in CONFIGS for t in TASKS]


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{c}-{t}" for c, t in PAIRS])
def pair(request, tmp_path_factory):
    config, task = request.param
    folder = build(tmp_path_factory.mktemp(f"{config}-{task}"), task, **CONFIGS[config])
    mine = load_pretrained(folder, task, device="cpu", dtype="float32")
    return task, mine, reference(folder, task)


@pytest.mark.parametrize("side", ["left", "right"])
@torch.inference_mode()
def test_padded_batch_matches_transformers(pair, hf_tokenizer, side):
    task, mine, ref = pair
    batch = encode(hf_tokenizer, side)
    expected = reference_outputs(ref, task, batch)
    got = our_outputs(mine, batch)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float32
        assert (g - e).abs().max().item() <= TOL


@torch.inference_mode()
def test_unpadded_batch_matches_transformers(pair, hf_tokenizer):
    task, mine, ref = pair
    batch = encode(hf_tokenizer, "right")
    full = {k: v[1:] for k, v in batch.items()}  # the longer text: no padding, mask all ones
    for mask in (full["attention_mask"], None):
        expected = reference_outputs(ref, task, full)
        got = mine(full["input_ids"], mask)
        got = list(got) if isinstance(got, tuple) else [got]
        for g, e in zip(got, expected, strict=True):
            assert (g - e).abs().max().item() <= TOL


def test_shapes_and_labels(pair, hf_tokenizer):
    task, mine, _ = pair
    batch = encode(hf_tokenizer, "left")
    b, t = batch["input_ids"].shape
    cfg = mine.config
    with torch.inference_mode():
        got = our_outputs(mine, batch)
    expected = {
        "base": [(b, t, cfg.hidden_size)],
        "causal-lm": [(b, t, cfg.vocab_size)],
        "sequence-classification": [(b, NUM_LABELS)],
        "token-classification": [(b, t, NUM_LABELS)],
        "question-answering": [(b, t), (b, t)],
    }[task]
    assert [tuple(g.shape) for g in got] == expected
    assert mine.task == task and not mine.training
    assert mine.num_labels == NUM_LABELS
    assert mine.id2label == {i: f"LABEL_{i}" for i in range(NUM_LABELS)}
    assert mine.label2id == {f"LABEL_{i}": i for i in range(NUM_LABELS)}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    folder = build(tmp_path_factory.mktemp("sw-base"), "base", **CONFIGS["sliding-window"])
    return load_pretrained(folder, "base", device="cpu", dtype="float32")


@pytest.mark.parametrize("side", ["left", "right"])
@torch.inference_mode()
def test_a_padded_row_gives_what_it_gives_alone(base_model, hf_tokenizer, side):
    """Independent of transformers: padding and its mask change nothing at the real tokens."""
    batch = encode(hf_tokenizer, side)
    got = base_model(batch["input_ids"], batch["attention_mask"])
    for row in range(2):
        real = batch["attention_mask"][row].bool()
        alone = base_model(batch["input_ids"][row, real][None])[0]
        assert (got[row, real] - alone).abs().max().item() <= TOL


@torch.inference_mode()
def test_sequence_classification_pools_the_last_real_token(tmp_path, hf_tokenizer):
    """The pooled logits are the token-level score at each row's last real token."""
    folder = build(tmp_path, "sequence-classification", **CONFIGS["nope-gqa"])
    mine = load_pretrained(folder, "sequence-classification", device="cpu", dtype="float32")
    for side in ("left", "right"):
        batch = encode(hf_tokenizer, side)
        hidden = mine.hidden_states(batch["input_ids"], batch["attention_mask"])
        per_token = mine.score(hidden)  # (B, T, labels)
        lengths = batch["attention_mask"].sum(-1)
        last = lengths - 1 if side == "right" else torch.full_like(lengths, hidden.shape[1] - 1)
        expected = per_token[torch.arange(2), last]
        got = mine(batch["input_ids"], batch["attention_mask"])
        assert (got - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("task", ["base", "sequence-classification", "question-answering"])
@torch.inference_mode()
def test_bf16_agrees_with_transformers(tmp_path, hf_tokenizer, task):
    """bf16, measured against transformers in float32: about as close as transformers' bf16.

    Over the real tokens, our mean error is at most twice transformers' own bf16 mean error
    (measured: 0.7x to 1.4x on these configs) and the worst one under 8% of the largest value
    (measured: under 5%, some 10 bf16 steps).
    """
    folder = build(tmp_path, task, **CONFIGS["sliding-window"])
    batch = encode(hf_tokenizer, "left")
    truth = reference_outputs(reference(folder, task), task, batch)
    theirs = reference_outputs(reference(folder, task, torch.bfloat16), task, batch)
    mine = load_pretrained(folder, task, device="cpu", dtype="bfloat16")
    ours = our_outputs(mine, batch)
    real = batch["attention_mask"].bool()
    for o, h, f in zip(ours, theirs, truth, strict=True):
        assert o.dtype == torch.bfloat16
        if o.dim() >= 2 and o.shape[:2] == real.shape:  # per-token outputs: the real tokens
            o, h, f = o[real], h[real], f[real]
        our_err, their_err = (o.float() - f).abs(), (h.float() - f).abs()
        assert our_err.mean() <= 2 * their_err.mean(), (our_err.mean(), their_err.mean())
        assert our_err.max() <= 0.08 * f.abs().max(), (our_err.max(), f.abs().max())


@torch.inference_mode()
def test_sharded_checkpoint(tmp_path, hf_tokenizer):
    folder = build(tmp_path, "token-classification", max_shard_size="40KB")
    assert (folder / "model.safetensors.index.json").exists()
    assert len(list(folder.glob("*.safetensors"))) > 2
    mine = load_pretrained(folder, "token-classification", device="cpu", dtype="float32")
    batch = encode(hf_tokenizer, "right")
    expected = reference_outputs(
        reference(folder, "token-classification"), "token-classification", batch
    )
    assert (mine(**batch) - expected[0]).abs().max().item() <= TOL


@torch.inference_mode()
def test_base_reads_the_decoder_of_a_head_checkpoint(tmp_path, hf_tokenizer):
    folder = build(tmp_path, "question-answering")  # decoder saved as transformer.*
    base = load_pretrained(folder, "base", device="cpu", dtype="float32")
    ref = reference(folder, "question-answering")
    batch = encode(hf_tokenizer, "left")
    expected = ref.transformer(**batch).last_hidden_state
    assert (base(**batch) - expected).abs().max().item() <= TOL


@torch.inference_mode()
def test_labels_from_config(tmp_path):
    labels = {"0": "negative", "1": "neutral", "2": "positive"}
    folder = build(
        tmp_path,
        "sequence-classification",
        extra_config=dict(id2label=labels, label2id={v: int(k) for k, v in labels.items()}),
    )
    mine = load_pretrained(folder, "sequence-classification", device="cpu")
    assert mine.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert mine.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    # dtype "auto" on the CPU: bf16 where the CPU has AVX-512 BF16 / AMX, else float32
    assert mine.num_labels == 3 and mine.dtype == pick_dtype("auto", torch.device("cpu"))


@torch.inference_mode()
def test_token_classification_without_bias(tmp_path, hf_tokenizer):
    folder = build(
        tmp_path, "token-classification", extra_config={"token_classification_bias": False}
    )
    mine = load_pretrained(folder, "token-classification", device="cpu", dtype="float32")
    assert mine.score.bias is None
    batch = encode(hf_tokenizer, "left")
    expected = reference_outputs(
        reference(folder, "token-classification"), "token-classification", batch
    )
    assert (mine(**batch) - expected[0]).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def smollm2_classifier(smollm2_gguf, tmp_path_factory):
    """SmolLM2-135M-Instruct's real weights (from the GGUF) under a seeded random 2-label head,
    saved as a LlamaForSequenceClassification safetensors folder (bf16) with its tokenizer."""
    from safetensors.torch import save_file

    from smolchat.model.gguf import iter_gguf_tensors, read_gguf_header

    folder = tmp_path_factory.mktemp("smollm2-cls")
    header = read_gguf_header(smollm2_gguf)
    tensors = {n: t.to(torch.bfloat16) for n, t in iter_gguf_tensors(smollm2_gguf)}
    tensors.pop("lm_head.weight", None)
    hidden = header.config["hidden_size"]
    g = torch.Generator().manual_seed(0)
    tensors["score.weight"] = (torch.randn(2, hidden, generator=g) * 0.05).to(torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        **header.config,
        "architectures": ["LlamaForSequenceClassification"],
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
        "dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(header.tokenizer_json)
    return folder


@pytest.mark.slow
@torch.inference_mode()
def test_real_weights_classifier_matches_transformers(smollm2_classifier):
    """Real weights and tokenizer; its pad token is <|im_end|> (id 2), as SmolLM2 ships it."""
    import transformers
    from tokenizers import Tokenizer

    ref = transformers.LlamaForSequenceClassification.from_pretrained(
        smollm2_classifier, dtype=torch.float32
    ).eval()
    mine = load_pretrained(
        smollm2_classifier, "sequence-classification", device="cpu", dtype="float32"
    )
    assert mine.pad_token_id == 2 and mine.id2label == {0: "negative", 1: "positive"}
    tok = Tokenizer.from_file(str(smollm2_classifier / "tokenizer.json"))
    rows = {}
    for side in ("left", "right"):
        tok.enable_padding(pad_id=mine.pad_token_id, direction=side)
        enc = tok.encode_batch(TEXTS)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        assert (mask == 0).any()
        expected = ref(input_ids=ids, attention_mask=mask)
        rows[side] = got = mine(ids, mask)
        assert (got - expected.logits).abs().max().item() <= TOL
        hidden = ref.model(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        ours = mine.hidden_states(ids, mask)  # what task="base" returns
        assert (ours[real] - hidden[real]).abs().max().item() <= TOL * 10  # |h| up to ~35
    assert (rows["left"] - rows["right"]).abs().max().item() <= TOL


# --- errors -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One checkpoint per task (the default config)."""
    return {t: build(tmp_path_factory.mktemp(f"err-{t}"), t) for t in TASKS}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


def test_unknown_task(checkpoints):
    with pytest.raises(TaskError) as info:
        load_pretrained(checkpoints["causal-lm"], "summarization", device="cpu")
    assert "summarization" in one_line(info.value) and "sequence-classification" in str(info.value)


@pytest.mark.parametrize(
    ("saved", "asked"),
    [
        ("causal-lm", "sequence-classification"),
        ("sequence-classification", "token-classification"),
        ("token-classification", "question-answering"),
        ("question-answering", "causal-lm"),
        ("base", "sequence-classification"),
    ],
)
def test_checkpoint_of_another_task(checkpoints, saved, asked):
    with pytest.raises(TaskError) as info:
        load_pretrained(checkpoints[saved], asked, device="cpu")
    assert f"task={saved!r}" in one_line(info.value)


def copy_without_architectures(src, dst):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    del cfg["architectures"]
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("saved", "asked", "says"),
    [
        ("causal-lm", "sequence-classification", "has no score.weight"),
        ("base", "question-answering", "has no qa_outputs.weight"),
        ("sequence-classification", "token-classification", "has no score.bias"),
        ("token-classification", "sequence-classification", "has a score.bias weight"),
        ("question-answering", "causal-lm", "has a qa_outputs.bias weight"),
    ],
)
def test_heads_that_do_not_fit_without_architectures(checkpoints, tmp_path, saved, asked, says):
    """When config.json names no class, the weights alone decide."""
    folder = copy_without_architectures(checkpoints[saved], tmp_path / "ckpt")
    with pytest.raises(TaskError) as info:
        load_pretrained(folder, asked, device="cpu")
    assert says in one_line(info.value)


def test_score_of_the_wrong_shape(checkpoints, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["sequence-classification"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {str(i): f"L{i}" for i in range(5)}
    cfg["label2id"] = {f"L{i}": i for i in range(5)}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TaskError) as info:
        load_pretrained(folder, "sequence-classification", device="cpu")
    text = one_line(info.value)
    assert "score.weight has shape (3, 64)" in text and "5 labels" in text


def test_gguf_is_refused(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(TaskError, match="safetensors"):
        load_pretrained(gguf, "base", device="cpu")


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(SmolchatError) as info:
        load_pretrained(tmp_path / "nope" / "model", "base", device="cpu")
    one_line(info.value)


@pytest.fixture(scope="module")
def seq_cls(checkpoints):
    return load_pretrained(
        checkpoints["sequence-classification"], "sequence-classification", device="cpu"
    )


@pytest.mark.parametrize(
    ("ids", "mask", "says"),
    [
        (torch.tensor([1, 2, 3]), None, "shape (batch, tokens)"),
        (torch.zeros(1, 3), None, "integer token ids"),
        (torch.zeros(1, 0, dtype=torch.long), None, "no tokens"),
        (torch.tensor([[1, 100000]]), None, "outside 0.."),
        (torch.tensor([[1, 2]]), torch.ones(1, 3), "attention_mask must have"),
    ],
)
def test_bad_input_is_one_line(seq_cls, ids, mask, says):
    with pytest.raises(TaskInputError) as info:
        seq_cls(ids, mask)
    assert says in one_line(info.value)


def test_batch_without_pad_token_id(checkpoints, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["sequence-classification"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(cfg))
    mine = load_pretrained(folder, "sequence-classification", device="cpu")
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        one = mine(ids)  # one row: its last token, as transformers
        assert one.shape == (1, NUM_LABELS)
        with pytest.raises(TaskInputError, match="pad_token_id"):
            mine(ids.repeat(2, 1))


# --- CUDA (skipped elsewhere) --------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("config", ["nope-gqa", "sliding-window"])
@pytest.mark.parametrize("task", ["base", "sequence-classification", "question-answering"])
@torch.inference_mode()
def test_cuda_padded_batches(tmp_path, hf_tokenizer, config, task):
    """On the GPU: float32 equal to transformers there, bf16 as close as transformers' bf16,
    left and right padding (padding queries attend to nothing: no NaN may reach real tokens)."""
    folder = build(tmp_path, task, **CONFIGS[config])
    truth = reference(folder, task).cuda()
    theirs = reference(folder, task, torch.bfloat16).cuda()
    mine32 = load_pretrained(folder, task, device="cuda", dtype="float32")
    mine16 = load_pretrained(folder, task, device="cuda")  # auto: bf16 on CUDA
    assert mine16.dtype == torch.bfloat16 and mine16.device.type == "cuda"
    for side in ("left", "right"):
        batch = {k: v.cuda() for k, v in encode(hf_tokenizer, side).items()}
        real = batch["attention_mask"].bool()
        expected = reference_outputs(truth, task, batch)
        for g, e in zip(our_outputs(mine32, batch), expected, strict=True):
            assert torch.isfinite(g).all()
            assert (g - e).abs().max().item() <= TOL
        for o, h, f in zip(
            our_outputs(mine16, batch),
            reference_outputs(theirs, task, batch),
            expected,
            strict=True,
        ):
            assert torch.isfinite(o).all()
            if o.dim() >= 2 and o.shape[:2] == real.shape:
                o, h, f = o[real], h[real], f[real]
            our_err, their_err = (o.float() - f).abs(), (h.float() - f).abs()
            assert our_err.mean() <= 2 * their_err.mean(), (our_err.mean(), their_err.mean())
            assert our_err.max() <= 0.08 * f.abs().max(), (our_err.max(), f.abs().max())
