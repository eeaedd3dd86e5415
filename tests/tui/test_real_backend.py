"""The TUI over the REAL local backend (tiny SmolLM3, CPU): the turn sequences that once broke.

Issue 10 item 1: after ``/retry`` the retried stream stayed referenced once it had ended, so the
engine's lock was never released: every later message failed with "the engine is already
generating", and a ``/retry`` in that state deleted the previous reply and autosaved an empty
error reply. The fake engine had no lock, so only the real engine can show this.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import smolchat
from smolchat.backend.local import LocalBackend
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.engine.types import SamplingParams
from smolchat.tui.app import AppOptions, SmolchatApp
from smolchat.tui.widgets.conversation import AssistantMessage
from tests.tui.helpers import command, idle, running, submit, wait_for


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def real_app(engine, transcripts: Path, max_new_tokens: int = 6) -> SmolchatApp:
    engine.reset_cache()

    def make_session(eng) -> ChatSession:
        settings = ChatSettings(
            sampling=SamplingParams(temperature=0.0), max_new_tokens=max_new_tokens
        )
        store = TranscriptStore(transcripts, autosave=True)
        return ChatSession(LocalBackend(eng), settings=settings, store=store)

    return SmolchatApp(
        AppOptions(model="tiny", load_engine=lambda progress: engine, make_session=make_session)
    )


def errors(notes) -> list[str]:
    return [n.message for n in notes if n.severity == "error"]


def replies(screen) -> list[str]:
    return [m.finish_reason for m in screen.session.messages if m.role == "assistant"]


async def test_retry_then_send_answers(engine, tmp_path) -> None:
    async with running(real_app(engine, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "Hello there")
        await command(pilot, "/retry")
        await wait_for(pilot, lambda: not screen.generating)
        await submit(pilot, "And now?")
        await command(pilot, "/retry")  # a second retry in a row works too
        await submit(pilot, "Once more")
        assert errors(notes) == []
        assert replies(screen) == ["length"] * 3
        assert len(screen.query(AssistantMessage)) == 3


async def stop_mid_reply(pilot, screen) -> None:
    """Send a long turn and press Esc once it streams."""
    screen.session.settings.max_new_tokens = 4000
    await submit(pilot, "Tell me a long story", wait=False)
    await wait_for(pilot, lambda: screen.generating and screen.turn is not None)
    await wait_for(pilot, lambda: screen.turn is None or bool(screen.turn.reply.answer_text))
    await pilot.press("escape")
    await idle(pilot, screen)
    screen.session.settings.max_new_tokens = 6
    assert screen.session.messages[-1].finish_reason == "cancelled"


async def test_stop_then_retry(engine, tmp_path) -> None:
    async with running(real_app(engine, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "Hi")
        await stop_mid_reply(pilot, screen)
        await command(pilot, "/retry")
        await wait_for(pilot, lambda: screen.session.messages[-1].finish_reason == "length")
        await submit(pilot, "Next question")
        assert errors(notes) == []
        assert replies(screen) == ["length"] * 3


async def test_stop_then_send(engine, tmp_path) -> None:
    async with running(real_app(engine, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "Hi")
        await stop_mid_reply(pilot, screen)
        await submit(pilot, "Next question")
        assert errors(notes) == []
        assert replies(screen) == ["length", "cancelled", "length"]


async def test_a_failed_retry_keeps_the_previous_reply(engine, tmp_path, monkeypatch) -> None:
    async with running(real_app(engine, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "Hello there")
        before = screen.session.messages[-1]
        assert before.content

        def failing(ids, **kwargs):
            raise RuntimeError("the device fell over")
            yield  # a generator, like the engine's

        monkeypatch.setattr(engine, "generate", failing)
        await command(pilot, "/retry")
        await wait_for(pilot, lambda: any("fell over" in e for e in errors(notes)))
        await idle(pilot, screen)
        assert screen.session.messages[-1] == before  # the reply is still there...
        saved = read_transcript(screen.session.transcript_path)
        assert saved.messages[-1]["content"] == before.content  # ...and in the autosave
        shown = [r.answer_text for r in screen.query(AssistantMessage)]
        assert shown == [before.content]  # ...and on screen
        monkeypatch.undo()
        await submit(pilot, "And now?")  # the chat goes on
        assert replies(screen) == ["length", "length"]
