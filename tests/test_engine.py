"""Engine.generate on a tiny random SmolLM3: cache reuse, stops, cancellation, seeds, stats."""

from __future__ import annotations

import threading

import pytest
import torch

import smolchat
from smolchat import SamplingParams
from smolchat.errors import ContextOverflowError

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_model):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture
def prompt(engine):
    engine.reset_cache()
    return engine.tokenizer.encode("The capital of France is Paris. Hello! How can I help")


def tokens(events) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None]


def test_greedy_generation_equals_full_forward_argmax(engine, prompt):
    events = list(engine.generate(prompt, sampling=GREEDY, max_new_tokens=12, stop_ids=[]))
    got = tokens(events)
    ids = list(prompt)
    expected = []
    for _ in range(12):
        nxt = int(engine.logits(ids)[-1].argmax())
        expected.append(nxt)
        ids.append(nxt)
    assert got == expected
    assert events[-1].finish_reason == "length"
    assert "".join(e.text for e in events) == engine.tokenizer.decode(got)


def test_stops_on_every_eos_id(engine, prompt):
    free = tokens(engine.generate(prompt, sampling=GREEDY, max_new_tokens=6, stop_ids=[]))
    for stop in (free[2], free[4]):
        saved, engine.eos_token_ids = engine.eos_token_ids, [10**6, stop]
        try:
            events = list(engine.generate(prompt, sampling=GREEDY, max_new_tokens=6))
        finally:
            engine.eos_token_ids = saved
        assert events[-1].finish_reason == "stop"
        assert events[-1].token_id == stop
        assert tokens(events)[:-1] == free[: free.index(stop)]
        assert events[-1].stats.generated_tokens == free.index(stop) + 1


def test_follow_up_prefills_only_new_tokens(engine, prompt):
    first = tokens(engine.generate(prompt, sampling=GREEDY, max_new_tokens=5, stop_ids=[]))
    follow = prompt + first + engine.tokenizer.encode(" more words")
    list(engine.generate(follow, sampling=GREEDY, max_new_tokens=2, stop_ids=[]))
    stats = engine.last_stats
    # The cache holds the prompt and the fed replies (the last sampled token is never fed).
    assert stats.cached_tokens == len(prompt) + len(first) - 1
    assert stats.prefilled_tokens == len(follow) - stats.cached_tokens


def test_crop_then_continue_equals_a_fresh_run(engine, prompt, tiny_model):
    list(engine.generate(prompt + [5, 6, 7, 8], sampling=GREEDY, max_new_tokens=3, stop_ids=[]))
    branch = prompt + [9, 10]  # shares the prompt, then diverges: the cache is cropped
    reused = tokens(engine.generate(branch, sampling=GREEDY, max_new_tokens=8, stop_ids=[]))
    assert engine.last_stats.cached_tokens == len(prompt)
    engine.reset_cache()
    fresh = tokens(engine.generate(branch, sampling=GREEDY, max_new_tokens=8, stop_ids=[]))
    assert engine.last_stats.cached_tokens == 0
    assert reused == fresh


def test_same_seed_same_reply(engine, prompt):
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=1234)
    a = tokens(engine.generate(prompt, sampling=p, max_new_tokens=16, stop_ids=[]))
    b = tokens(engine.generate(prompt, sampling=p, max_new_tokens=16, stop_ids=[]))
    c = tokens(engine.generate(prompt, sampling=p.with_(seed=99), max_new_tokens=16, stop_ids=[]))
    assert a == b
    assert a != c


def test_cancel_from_another_thread_stops_within_one_token(engine, prompt):
    seen = []
    gen = engine.generate(prompt, sampling=GREEDY, max_new_tokens=200, stop_ids=[])
    for event in gen:
        seen.append(event)
        if len(seen) == 3:
            t = threading.Thread(target=engine.cancel)
            t.start()
            t.join()
    assert seen[-1].finish_reason == "cancelled"
    assert len(seen) <= 5  # three tokens, at most one more, then the final event
    assert seen[-1].stats.finish_reason == "cancelled"
    # The engine is usable afterwards and reuses the cache.
    list(engine.generate(prompt, sampling=GREEDY, max_new_tokens=2, stop_ids=[]))
    assert engine.last_stats.cached_tokens == len(prompt) - 1


def test_stats_are_filled(engine, prompt):
    events = list(engine.generate(prompt, sampling=GREEDY, max_new_tokens=8, stop_ids=[]))
    stats = events[-1].stats
    assert stats.prompt_tokens == len(prompt)
    assert stats.generated_tokens == 8
    assert stats.ttft_s > 0 and stats.decode_tok_s > 0


def test_overflowing_prompt_is_refused(engine):
    with pytest.raises(ContextOverflowError):
        list(engine.generate([1] * engine.context_length, max_new_tokens=1))


def test_logits_are_float32_cpu(engine, prompt):
    out = engine.logits(prompt)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (len(prompt), engine.config.vocab_size)
