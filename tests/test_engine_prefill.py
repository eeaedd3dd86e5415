"""Chunked prefill (Engine.prefill_chunk) and its progress events, on tiny random models.

A prefill in chunks (chunk k attends to the KV cache that chunks < k wrote) must leave the
same cache and give the same logits as one forward over the whole prompt; with
``progress=True`` the engine reports each chunk; a cancel during the prefill ends it early.
"""

from __future__ import annotations

import pytest
import torch

from smolchat.engine.engine import (
    ENV_PREFILL_CHUNK,
    PREFILL_CHUNK,
    PREFILL_CHUNK_CPU,
    prefill_chunk_size,
)
from smolchat.engine.types import GenerationEvent, GenerationStats, PrefillProgress
from smolchat.errors import SmolchatError
from tests.test_cache import GREEDY, ids_of, load_model, make_engine
from tests.tiny import build_smollm3

CASES = {
    "nope-gqa": dict(),
    "sliding-window": dict(sliding_window=24, no_rope_layers=[1, 0, 1, 0]),
    "llama": dict(arch="llama", kv_heads=1, tie=False),
}


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def folder(request, tmp_path_factory):
    return build_smollm3(
        tmp_path_factory.mktemp(request.param), with_tokenizer=False, **CASES[request.param]
    )


@pytest.fixture(scope="module")
def model(folder):
    return load_model(folder)


def greedy_after_prefill(engine, ids: list[int], chunk: int, new: int = 6) -> list[torch.Tensor]:
    """The last-position logits after prefilling ``ids`` in ``chunk``-token chunks, then the
    logits of ``new`` greedy steps fed from that cache."""
    engine.reset_cache()
    engine.prefill_chunk = chunk
    logits = [engine._prefill(ids, GenerationStats())]
    for _ in range(new):
        logits.append(engine._step(int(logits[-1].argmax())))
    return logits


@pytest.mark.parametrize("chunk", [5, 32])
def test_chunked_prefill_equals_one_forward(model, chunk):
    engine = make_engine(model)
    ids = ids_of(90, model.config.vocab_size, 1)
    chunked = greedy_after_prefill(engine, ids, chunk)
    one_shot = greedy_after_prefill(engine, ids, 10_000)
    fed = [int(x.argmax()) for x in one_shot[:-1]]
    with torch.inference_mode():  # no cache at all: every position in one forward
        full = model(torch.tensor([ids + fed]))[0, len(ids) - 1 :]
    for step, (a, b) in enumerate(zip(chunked, one_shot, strict=True)):
        assert (a - b).abs().max().item() < 1e-4, step
        assert (a - full[step]).abs().max().item() < 1e-4, step


def test_progress_reports_each_chunk_then_the_reply(model):
    engine = make_engine(model)
    engine.prefill_chunk = 16
    ids = ids_of(50, model.config.vocab_size, 2)
    events = list(engine.generate(ids, sampling=GREEDY, max_new_tokens=3, progress=True))
    steps = [e for e in events if isinstance(e, PrefillProgress)]
    assert steps == [PrefillProgress(n, 50) for n in (0, 16, 32, 48, 50)]
    assert events[: len(steps)] == steps  # all before the first token
    tokens = [e for e in events if isinstance(e, GenerationEvent)]
    assert len(tokens) == 3 and tokens[-1].finish_reason == "length"
    assert tokens[-1].stats is not None and tokens[-1].stats.prefilled_tokens == 50
    # the same reply as a one-chunk prefill, and no progress events unless asked for
    engine.reset_cache()
    engine.prefill_chunk = 1000
    plain = list(engine.generate(ids, sampling=GREEDY, max_new_tokens=3, progress=True))
    assert [e.token_id for e in plain] == [e.token_id for e in tokens]
    engine.reset_cache()
    engine.prefill_chunk = 16
    quiet = list(engine.generate(ids, sampling=GREEDY, max_new_tokens=3))
    assert all(isinstance(e, GenerationEvent) for e in quiet)


def test_progress_counts_only_what_the_cache_lacks(model):
    engine = make_engine(model)
    engine.prefill_chunk = 8
    vocab = model.config.vocab_size
    history = ids_of(20, vocab, 3)
    list(engine.generate(history, sampling=GREEDY, max_new_tokens=1))
    follow = history + ids_of(20, vocab, 4)
    events = list(engine.generate(follow, sampling=GREEDY, max_new_tokens=1, progress=True))
    steps = [e for e in events if isinstance(e, PrefillProgress)]
    assert steps[0] == PrefillProgress(0, 20) and steps[-1] == PrefillProgress(20, 20)
    assert events[-1].stats.cached_tokens == 20


def test_a_cancel_during_the_prefill_ends_it_after_the_chunk(model):
    engine = make_engine(model)
    engine.prefill_chunk = 10
    ids = ids_of(60, model.config.vocab_size, 5)
    stream = engine.generate(ids, sampling=GREEDY, max_new_tokens=50, progress=True)
    assert next(stream) == PrefillProgress(0, 60)
    assert next(stream) == PrefillProgress(10, 60)
    engine.cancel()  # as from another thread, between two chunks: no further chunk runs
    rest = list(stream)
    assert len(rest) == 1
    end = rest[0]
    assert isinstance(end, GenerationEvent) and end.finish_reason == "cancelled"
    assert end.token_id is None and end.stats.generated_tokens == 0
    # what was prefilled stays in the cache and is reused
    list(engine.generate(ids, sampling=GREEDY, max_new_tokens=1))
    assert engine.last_stats.cached_tokens == 10


def test_chunk_size_from_the_environment(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(ENV_PREFILL_CHUNK, raising=False)
    assert prefill_chunk_size(cpu) == PREFILL_CHUNK_CPU == 2048
    assert prefill_chunk_size(gpu) == PREFILL_CHUNK == 8192  # as before chunks had progress
    monkeypatch.setenv(ENV_PREFILL_CHUNK, "64")
    assert prefill_chunk_size(cpu) == prefill_chunk_size(gpu) == 64
    for bad in ("0", "-3", "lots", "1.5"):
        monkeypatch.setenv(ENV_PREFILL_CHUNK, bad)
        with pytest.raises(SmolchatError, match=ENV_PREFILL_CHUNK) as info:
            prefill_chunk_size(cpu)
        assert "\n" not in str(info.value)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_chunked_generate_matches_one_chunk(folder, dtype):
    """On the GPU (lower-right causal attention per chunk, CUDA-graph decode after it)."""
    model = load_model(folder, "cuda", dtype)
    engine = make_engine(model, fast=True)
    ids = ids_of(300, model.config.vocab_size, 6)
    runs = []
    for chunk in (64, 10_000):
        engine.reset_cache()
        engine.prefill_chunk = chunk
        events = list(engine.generate(ids, sampling=GREEDY, max_new_tokens=24, progress=True))
        runs.append(events)
    chunked, whole = runs
    assert [e for e in chunked if isinstance(e, PrefillProgress)][-1] == PrefillProgress(300, 300)
    assert not any(isinstance(e, PrefillProgress) for e in whole)
    got = [e.token_id for e in chunked if isinstance(e, GenerationEvent)]
    want = [e.token_id for e in whole]
    if dtype == torch.float32:
        assert got == want
    else:  # bf16 rounding differs with the chunking: the first tokens agree, most of the rest
        same = sum(a == b for a, b in zip(got, want, strict=True))
        assert got[:8] == want[:8] and same >= 18, (got, want)
