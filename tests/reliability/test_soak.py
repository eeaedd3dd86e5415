"""Soak: 200 turns with the tiny model in one session. Memory is flat after /clear, the KV cache
stays within the context limit (also when old turns must be dropped), and after 200 turns the
TUI still answers a keypress at once.

torch runs on one thread here: the tiny model's matrices are too small to share, and on a busy
2-core machine two threads mostly wait for each other (30x slower decoding was measured).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from textual import events

import smolchat
from smolchat.chat.commands import run_command
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.engine.types import SamplingParams
from smolchat.errors import ContextOverflowError
from smolchat.tui.widgets.conversation import AssistantMessage
from tests.tui.conftest import make_app
from tests.tui.helpers import chat_screen, running

TURNS = 200


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def question(i: int) -> str:
    return f"Turn {i}: what is the capital of France, and which city is in Europe?"


def cache_bound(engine) -> int:
    """Bytes of K and V for a full context: what the cache may never exceed."""
    cfg = engine.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim
    return per_token * engine.context_length * torch.finfo(engine.dtype).bits // 8


def test_200_turns_memory_flat_after_clear_and_cache_bounded(engine, one_thread) -> None:
    engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=4)
    session = ChatSession(engine, settings=settings, system_prompt="You are terse.")
    after_clear: list[tuple[int, int]] = []  # (Python heap, cache bytes) after each /clear
    tracemalloc.start()
    try:
        for i in range(TURNS):
            for _ in session.send(question(i)):
                pass
            assert session.messages[-1].finish_reason in ("stop", "length")
            assert engine.cache.length <= engine.context_length
            assert engine.cache.nbytes <= cache_bound(engine)
            if i % 40 == 39:
                run_command(session, "/clear")
                assert session.messages == [] and session.context_used() > 0  # system prompt
                gc.collect()
                after_clear.append((tracemalloc.get_traced_memory()[0], engine.cache.nbytes))
    finally:
        tracemalloc.stop()
    assert len(after_clear) == TURNS // 40
    heaps = [h for h, _ in after_clear]
    # the first /clear is the baseline (caches and compiled templates exist by then)
    assert max(heaps[1:]) - heaps[0] < 64 * 1024, heaps  # measured: under 20 KB
    assert len({c for _, c in after_clear}) == 1, after_clear  # the cache does not grow either


def test_long_session_at_the_context_limit_drops_old_turns(engine, one_thread, monkeypatch):
    """Past the limit the oldest turns go (as the TUI offers): the cache never outgrows it."""
    engine.reset_cache()
    limit = 1536  # a short context, so the limit is reached within a few turns
    monkeypatch.setattr(engine, "context_length", limit)
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=4)
    session = ChatSession(engine, settings=settings, system_prompt="You are terse.")
    dropped = 0
    for i in range(40):
        try:
            stream = session.send(question(i))
        except ContextOverflowError as error:
            assert error.drop, str(error)
            dropped += session.drop_oldest(error.drop)
            stream = session.send(question(i))
        for _ in stream:
            pass
        assert engine.cache.length <= limit and len(engine.cached_ids) <= limit
        assert session.context_used() <= limit
    assert dropped > 0  # the limit was reached, and the chat went on
    assert session.system_prompt == "You are terse."
    assert session.messages[-2].content == question(39)


async def until(condition: Callable[[], object], timeout: float = 30) -> None:
    """Let the app run until ``condition()`` (no Pilot pause: it visits every widget)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.slow
async def test_ui_after_200_turns_still_answers_a_key_at_once(engine, one_thread) -> None:
    engine.reset_cache()
    app = make_app(engine)
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        session = screen.session
        session.settings.sampling = SamplingParams(temperature=0.0)
        session.settings.max_new_tokens = 4
        turn_s: list[float] = []
        for i in range(TURNS):
            count = len(session.messages) + 2
            started = time.monotonic()
            screen.prompt.load_text(f"Q{i}: hi")
            screen.prompt.submit()
            await until(lambda c=count: len(session.messages) == c and not screen.generating)
            turn_s.append(time.monotonic() - started)
            if i % 50 == 49 and i < TURNS - 1:  # /clear now and then: the widgets go
                screen.prompt.load_text("/clear")
                screen.prompt.submit()
                await until(lambda: not screen.conversation.query(AssistantMessage))
        assert len(screen.conversation.query(AssistantMessage)) == 50
        assert len(session.messages) == 100
        latencies = []
        for key in "hello":
            started = time.monotonic()
            app.post_message(events.Key(key, key))
            await until(lambda k=key: screen.prompt.text.endswith(k))
            latencies.append(time.monotonic() - started)
        assert screen.prompt.text == "hello"
        assert sorted(latencies)[2] < 0.25, latencies  # the median keypress
        assert not [n for n in notes if n.severity == "error"]
        # nothing piles up across /clear: the last turns before the first /clear and the last
        # turns of all (as many widgets on screen) take about as long as each other
        first, last = turn_s[40:50], turn_s[-10:]
        assert statistics.median(last) < 2 * statistics.median(first) + 0.05, turn_s
