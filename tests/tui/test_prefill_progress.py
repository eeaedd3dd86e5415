"""Prefill progress in the status bar, over the REAL local backend (tiny SmolLM3, CPU).

The engine is loaded with ``SMOLCHAT_PREFILL_CHUNK=256``: the tiny tokenizer spells the
template's default system prompt in ~900 tokens, so every prompt takes several prefill chunks.
The test holds the engine's stream after one chunk (the worker thread waits on an event the
test sets once it has seen the bar), so what it asserts never depends on timing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from textual.pilot import Pilot

import smolchat
from smolchat.engine.engine import ENV_PREFILL_CHUNK
from smolchat.engine.types import PrefillProgress
from smolchat.tui.screens.chat import ChatScreen
from tests.tui.helpers import idle, running, status_line, submit, wait_for
from tests.tui.test_real_backend import real_app

CHUNK = 256
LONG_PROMPT = "Summarise this: " + "word " * 40  # ~1,100 tokens with the system prompt


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_PREFILL_CHUNK, str(CHUNK))
        loaded = smolchat.load(str(tiny_model), device="cpu", dtype="float32")
    assert loaded.prefill_chunk == CHUNK
    return loaded


class Held(NamedTuple):
    pilot: Pilot
    screen: ChatScreen
    held: threading.Event
    go: threading.Event


async def finished(pilot, screen) -> None:
    """Wait for the turn to end (the shared CPU may take a while for the rest)."""
    await wait_for(pilot, lambda: not screen.generating, timeout=60)
    await idle(pilot, screen)


@asynccontextmanager
async def long_turn_held(engine, tmp_path, monkeypatch) -> AsyncIterator[Held]:
    """The app sends LONG_PROMPT; the engine's stream stops after its first prefill chunk
    until ``go`` is set (``held`` is set while it waits there)."""
    held, go = threading.Event(), threading.Event()
    real = engine.generate

    def generate(ids, **kwargs):
        for event in real(ids, **kwargs):
            yield event
            if isinstance(event, PrefillProgress) and 0 < event.done < event.total:
                held.set()
                assert go.wait(20), "the test never let the prefill go on"

    monkeypatch.setattr(engine, "generate", generate)
    try:
        async with running(real_app(engine, tmp_path, max_new_tokens=2)) as (pilot, _):
            screen = await submit(pilot, LONG_PROMPT, wait=False)
            yield Held(pilot, screen, held, go)
    finally:
        go.set()


async def test_status_bar_shows_prefill_progress_then_the_reply_figures(
    engine, tmp_path, monkeypatch
) -> None:
    async with long_turn_held(engine, tmp_path, monkeypatch) as (pilot, screen, held, go):
        await wait_for(pilot, lambda: f"prefill {CHUNK}/" in status_line(screen))
        line = status_line(screen)
        shown = re.search(r"prefill ([\d,]+)/([\d,]+)", line)
        assert shown, line
        done, total = (int(g.replace(",", "")) for g in shown.groups())
        assert held.is_set() and done == CHUNK and total > 3 * CHUNK, line
        assert "generating" not in line and "tok/s" not in line
        go.set()
        await finished(pilot, screen)
        line = status_line(screen)
        assert "prefill" not in line and "tok/s" in line, line
        stats = screen.session.last_stats
        assert stats is not None and stats.prefilled_tokens == total


async def test_esc_during_the_prefill_stops_the_turn_before_any_token(
    engine, tmp_path, monkeypatch
) -> None:
    async with long_turn_held(engine, tmp_path, monkeypatch) as (pilot, screen, held, go):
        await wait_for(pilot, held.is_set)
        await pilot.press("escape")  # cancels while the engine holds after a chunk
        go.set()
        await finished(pilot, screen)
        reply = screen.session.messages[-1]
        assert reply.finish_reason == "cancelled"
        assert reply.stats is not None and reply.stats.generated_tokens == 0
        assert "prefill" not in status_line(screen)


async def test_a_prompt_of_one_chunk_shows_no_prefill(engine, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine, "prefill_chunk", 100_000)
    seen: list[str] = []
    async with running(real_app(engine, tmp_path, max_new_tokens=2)) as (pilot, _):
        screen = await submit(pilot, "Hi", wait=False)
        await wait_for(
            pilot, lambda: seen.append(status_line(screen)) or not screen.generating, timeout=60
        )
        await idle(pilot, screen)
    assert not any("prefill" in line for line in seen)


def context_meter(line: str) -> int:
    shown = re.search(r"ctx ([\d,]+)", line)
    assert shown, line
    return int(shown.group(1).replace(",", ""))


async def test_context_meter_counts_the_new_prompt_during_the_prefill(
    engine, tmp_path, monkeypatch
) -> None:
    """While a reply is on its way the meter counts the prompt as sent (it left out the new
    message: 'ctx 82/8,192' during a 3,173-token prefill)."""
    async with long_turn_held(engine, tmp_path, monkeypatch) as (pilot, screen, held, go):
        await wait_for(pilot, lambda: f"prefill {CHUNK}/" in status_line(screen))
        line = status_line(screen)
        total = int(re.search(r"prefill [\d,]+/([\d,]+)", line).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert context_meter(line) == total == screen.session.context_sent(), line
        go.set()
        await finished(pilot, screen)
        after = context_meter(status_line(screen))
        assert total <= after == screen.session.context_used()


async def test_context_meter_counts_prompt_and_reply_while_streaming(
    engine, tmp_path, monkeypatch
) -> None:
    held, go = threading.Event(), threading.Event()
    real = engine.generate

    def generate(ids, **kwargs):
        for event in real(ids, **kwargs):
            yield event
            if not isinstance(event, PrefillProgress) and not held.is_set():
                held.set()  # the first token is out: hold the rest
                assert go.wait(20), "the test never let the reply go on"

    monkeypatch.setattr(engine, "generate", generate)
    try:
        async with running(real_app(engine, tmp_path, max_new_tokens=4)) as (pilot, _):
            screen = await submit(pilot, LONG_PROMPT, wait=False)
            await wait_for(pilot, lambda: held.is_set() and screen._streamed > 0)
            await pilot.pause()
            sent = screen.session.context_sent()
            assert sent > 3 * CHUNK
            assert context_meter(status_line(screen)) == sent + screen._streamed
            go.set()
            await finished(pilot, screen)
    finally:
        go.set()
