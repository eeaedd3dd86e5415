"""Our network against transformers' SmolLM3ForCausalLM / LlamaForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch

from smolchat.engine.cpu import CPUDecoder
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


@torch.inference_mode()
def test_cpu_decode_step_matches(pair):
    """The model's one-token step (``decode_step`` with ``TorchOps``: the CPU decoder's)."""
    mine, ref = pair
    cfg = mine.config
    ids = prompt(40, cfg.vocab_size, seed=4)  # steps run past the window (12) and YaRN's 32
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(40)
    mine(ids[:, :10], cache, 0)
    cache.length = 10
    decoder = CPUDecoder(mine, cache)
    steps = []
    for pos in range(10, 40):
        steps.append(decoder.step(int(ids[0, pos]), pos))
        cache.length = pos + 1
    expected = ref(ids).logits[0, 10:]
    assert (torch.stack(steps) - expected).abs().max().item() <= TOL
