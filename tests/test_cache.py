"""The KV cache: prefix reuse is exact, memory follows the tokens held, reset frees."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from smolchat.engine.engine import Engine
from smolchat.engine.types import SamplingParams
from smolchat.model.cache import MIN_CAPACITY, KVCache
from smolchat.model.config import ModelConfig
from smolchat.model.weights import build_on_meta, iter_safetensors, load_weights, safetensors_files
from tests.tiny import build_smollm3

GREEDY = SamplingParams(temperature=0.0)


class StandInTokenizer:
    """What Engine needs from a tokenizer: a streaming decoder (ids shown as ``<id>``)."""

    class Decoder:
        def add(self, token_id: int) -> str:
            return f"<{token_id}>"

        def flush(self) -> str:
            return ""

    def stream_decoder(self) -> Decoder:
        return self.Decoder()


def load_model(folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32, hook=None):
    cfg = ModelConfig.from_file(folder / "config.json")
    files = safetensors_files(folder)
    net = build_on_meta(cfg)
    return load_weights(net, iter_safetensors(files), torch.device(device), dtype, linear_hook=hook)


def make_engine(model, fast: bool = False) -> Engine:
    return Engine(model, StandInTokenizer(), fast=fast)


def ids_of(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def tokens(engine: Engine, ids: list[int], new: int, sampling=GREEDY) -> list[int]:
    events = list(engine.generate(ids, sampling=sampling, max_new_tokens=new, stop_ids=[]))
    return [e.token_id for e in events if e.token_id is not None]


def realistic(folder: Path, std: float = 0.02) -> Path:
    """Give the tiny model's matrices a trained model's scale (std 0.02), so 4-bit noise does
    not compound into chaos across layers (at the builder's std 0.1 it does, for any 4-bit)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    g = torch.Generator().manual_seed(0)
    for name, t in tensors.items():
        if t.dim() == 2 and "embed" not in name:
            tensors[name] = torch.randn(t.shape, generator=g) * std
    save_file(tensors, path, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = build_smollm3(
        tmp_path_factory.mktemp("cache-model"),
        with_tokenizer=False,
        sliding_window=40,
        no_rope_layers=[1, 1, 0, 1],
        max_pos=2048,
    )
    return load_model(folder)


@torch.inference_mode()
def test_crop_then_continue_matches_a_fresh_run(model):
    cfg = model.config
    first = ids_of(70, cfg.vocab_size, 1)
    second = first[:45] + ids_of(30, cfg.vocab_size, 2)  # shares 45 tokens, then differs
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(len(first))
    model(torch.tensor([first]), cache, 0)
    cache.length = len(first)
    cache.crop(45)
    assert cache.length == 45
    cache.ensure_capacity(len(second))
    got = model(torch.tensor([second[45:]]), cache, 45)
    fresh = model(torch.tensor([second]))[:, 45:]
    assert (got - fresh).abs().max().item() <= 2e-4


def test_engine_follow_up_reuses_the_prefix_and_matches_a_fresh_engine(model):
    vocab = model.config.vocab_size
    history = ids_of(60, vocab, 3)
    engine = make_engine(model)
    reply = tokens(engine, history, 12)
    follow_up = history + reply + ids_of(9, vocab, 4)
    continued = tokens(engine, follow_up, 15)
    stats = engine.last_stats
    assert stats.cached_tokens == len(history) + len(reply) - 1  # the last reply token: unfed
    assert stats.prefilled_tokens == len(follow_up) - stats.cached_tokens
    fresh = make_engine(model)
    assert tokens(fresh, follow_up, 15) == continued
    # a retry (the same ids again) crops back and reproduces the same reply
    assert tokens(engine, follow_up, 15) == continued
    assert engine.cached_ids == follow_up + continued[:-1]


def test_cache_memory_follows_tokens_held_not_the_context_limit(model):
    cfg = model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4  # f32
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, max_tokens=1 << 20)
    assert cache.nbytes == 0
    cache.ensure_capacity(10)
    assert cache.nbytes == MIN_CAPACITY * per_token
    cache.ensure_capacity(MIN_CAPACITY + 1)
    assert cache.capacity == 2 * MIN_CAPACITY
    assert cache.nbytes == 2 * MIN_CAPACITY * per_token
    engine = make_engine(model)
    assert engine.cache.nbytes == 0  # nothing allocated before the first prompt
    tokens(engine, ids_of(300, cfg.vocab_size, 5), 20)
    held = len(engine.cached_ids)
    assert held * per_token <= engine.cache.nbytes <= 2 * held * per_token
    assert engine.cache.nbytes < cfg.max_position_embeddings * per_token


def test_cache_grows_by_doubling_and_keeps_its_contents(model):
    cfg = model.config
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, max_tokens=1500)
    cache.ensure_capacity(100)
    k = torch.randn(1, cfg.num_key_value_heads, 100, cfg.head_dim)
    cache.write(0, 0, k, -k)
    cache.length = 100
    assert cache.ensure_capacity(700) is True
    assert cache.capacity == 1024
    got_k, got_v = cache.view(0, 100)
    assert torch.equal(got_k, k) and torch.equal(got_v, -k)
    assert cache.ensure_capacity(1024) is False
    cache.ensure_capacity(1500)
    assert cache.capacity == 1500  # capped at the context limit
    with pytest.raises(ValueError):
        cache.ensure_capacity(1501)


def test_reset_frees_the_buffers(model):
    engine = make_engine(model)
    tokens(engine, ids_of(100, model.config.vocab_size, 6), 5)
    assert engine.cache.nbytes > 0
    buffers = [weakref.ref(t) for t in engine.cache.k + engine.cache.v]
    engine.reset_cache()
    assert engine.cache.nbytes == 0 and engine.cache.capacity == 0
    assert engine.cached_ids == []
    gc.collect()
    assert all(ref() is None for ref in buffers)  # nothing keeps the old buffers alive
    # and the engine works again from scratch
    assert len(tokens(engine, ids_of(20, model.config.vocab_size, 7), 4)) == 4
