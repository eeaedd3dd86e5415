"""Our network against transformers' SmolLM3ForCausalLM / LlamaForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch

from smolchat.engine.cpu import CPUDecoder, cpu_step_enabled
from smolchat.engine.fast import FUSED_TORCH_OPS, SDPA_TORCH_OPS, FastDecoder
from smolchat.model.cache import KVCache
from smolchat.model.config import ModelConfig
from smolchat.model.weights import build_on_meta, iter_safetensors, load_weights, safetensors_files
from tests.tiny import build_smollm3

TOL = 2e-4

CASES = {
    "nope-gqa-tied": dict(),
    "mqa-untied": dict(kv_heads=1, tie=False),
    "mha-all-rope": dict(kv_heads=4, no_rope_layers=[1, 1, 1, 1]),
    "explicit-head-dim": dict(head_dim=24),
    "yarn": dict(
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        max_pos=256,
    ),
    "linear-rope": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "llama3-rope": dict(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
    ),
    "sliding-window": dict(sliding_window=12, no_rope_layers=[1, 0, 1, 0]),
    "v4-spelling-yarn": dict(
        v4_spelling=True,
        rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32},
    ),
    "llama-arch": dict(arch="llama", kv_heads=2),
}


def ours(folder) -> torch.nn.Module:
    cfg = ModelConfig.from_file(folder / "config.json")
    model = build_on_meta(cfg)
    files = safetensors_files(folder)
    return load_weights(model, iter_safetensors(files), torch.device("cpu"), torch.float32)


def reference(folder) -> torch.nn.Module:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def pair(request, tmp_path_factory):
    folder = build_smollm3(
        tmp_path_factory.mktemp(request.param), with_tokenizer=False, **CASES[request.param]
    )
    return ours(folder), reference(folder)


def prompt(n: int, vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g)


@torch.inference_mode()
def test_full_forward_matches(pair):
    mine, ref = pair
    ids = prompt(48, mine.config.vocab_size)  # past the sliding window and YaRN's original 32
    expected = ref(ids).logits
    got = mine(ids)
    assert (got - expected).abs().max().item() <= TOL


@torch.inference_mode()
def test_cached_decoding_matches(pair):
    mine, ref = pair
    cfg = mine.config
    ids = prompt(20, cfg.vocab_size, seed=2)
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(20)
    logits = mine(ids[:, :12], cache, 0)  # prefill 12, then step one token at a time
    cache.length = 12
    steps = [logits]
    for pos in range(12, 20):
        cache.ensure_capacity(pos + 1)
        steps.append(mine(ids[:, pos : pos + 1], cache, pos))
        cache.length = pos + 1
    got = torch.cat(steps, dim=1)
    expected = ref(ids).logits
    assert (got - expected).abs().max().item() <= TOL


@torch.inference_mode()
def test_greedy_tokens_match(pair):
    mine, ref = pair
    cfg = mine.config
    ids = prompt(8, cfg.vocab_size, seed=3)
    expected = ref.generate(
        ids,
        max_new_tokens=24,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        min_new_tokens=24,
    )[0, 8:].tolist()
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(8 + 24)
    logits = mine(ids, cache, 0, last_only=True)
    cache.length = 8
    got = []
    for _ in range(24):
        nxt = int(logits[0, -1].argmax())
        got.append(nxt)
        pos = cache.length
        logits = mine(torch.tensor([[nxt]]), cache, pos, last_only=True)
        cache.length = pos + 1
    assert got == expected


def _stepped_logits(model, ids: torch.Tensor, start: int, make_step) -> torch.Tensor:
    """Prefill ``ids[:start]`` with the general forward, then feed one token at a time to the
    step ``make_step(model, cache)`` returns (``step(token, pos) -> logits (V,)``)."""
    cfg = model.config
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(ids.shape[1])
    model(ids[:, :start], cache, 0)
    cache.length = start
    step = make_step(model, cache)
    out = []
    for pos in range(start, ids.shape[1]):
        out.append(step(int(ids[0, pos]), pos).reshape(-1))
        cache.length = pos + 1
    return torch.stack(out)


def _cpu_step(model, cache):
    return CPUDecoder(model, cache).step


def _fast_step(ops):
    """The CUDA fast path's step (the model's decode step with its static torch ops: device
    position, whole-bucket mask; ``fused``: the attention Inductor compiles), run eagerly."""

    def make(model, cache):
        fast = FastDecoder(model, cache, graphs=False, compile=False)
        fast.torch_ops = ops

        def step(token: int, pos: int) -> torch.Tensor:
            fast.start(pos)
            fast.stage(torch.tensor([token]))
            fast.step()
            assert fast.pos.item() == pos + 1 and fast.logits is not None
            assert fast.tok.item() == int(fast.logits.argmax())  # the step's own greedy pick
            return fast.logits

        return step

    return make


STEPS = {"cpu": _cpu_step, "fast-sdpa": _fast_step(SDPA_TORCH_OPS)}
STEPS["fast-fused"] = _fast_step(FUSED_TORCH_OPS)


@pytest.mark.parametrize("step", list(STEPS))
@torch.inference_mode()
def test_decode_step_matches(pair, step):
    """The model's one-token step (model/decode_step.py) as the CPU decoder and the CUDA fast
    path run it, token by token after a prefill, against transformers' full forward."""
    mine, ref = pair
    ids = prompt(40, mine.config.vocab_size, seed=4)  # past the window (12) and YaRN's 32
    assert cpu_step_enabled(mine, torch.device("cpu"))  # windowed models too
    got = _stepped_logits(mine, ids, 10, STEPS[step])
    expected = ref(ids).logits[0, 10:]
    assert (got - expected).abs().max().item() <= TOL
