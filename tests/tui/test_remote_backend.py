"""The TUI over the RemoteBackend: real HTTP (the scripted server of tests/remote, and the real
``transformers serve`` on SmolLM2 for the slow case): streaming, Esc mid-reply keeps the
partial, a stream cut mid-reply keeps the partial (marked as an error) and the chat goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from smolchat.backend.remote import RemoteBackend
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.engine.types import SamplingParams
from smolchat.tui.app import AppOptions, SmolchatApp
from tests.remote.servers import Script
from tests.tui.helpers import idle, running, submit, wait_for


def remote_app(url: str, transcripts: Path, max_new_tokens: int = 12) -> SmolchatApp:
    def make_session(backend) -> ChatSession:
        settings = ChatSettings(
            sampling=SamplingParams(temperature=0.0), max_new_tokens=max_new_tokens
        )
        store = TranscriptStore(transcripts, autosave=True)
        return ChatSession(backend, settings=settings, store=store)

    return SmolchatApp(
        AppOptions(
            model=url, load_engine=lambda progress: RemoteBackend(url), make_session=make_session
        )
    )


def errors(notes) -> list[str]:
    return [n.message for n in notes if n.severity == "error"]


def saved(folder: Path) -> list[dict]:
    (path,) = folder.glob("*.md")
    return read_transcript(path).messages


async def test_streams_and_esc_keeps_the_partial(scripted, tmp_path) -> None:
    scripted.script = Script(words=["Once ", "upon ", "a ", "time "], forever=True, delay_s=0.05)
    async with running(remote_app(scripted.url, tmp_path, max_new_tokens=100_000)) as (
        pilot,
        notes,
    ):
        screen = await submit(pilot, "Tell me a long story", wait=False)
        await wait_for(pilot, lambda: screen.turn is not None and screen.turn.reply.answer_text)
        await wait_for(pilot, lambda: len(screen.turn.reply.answer_text) > 20)  # streaming
        await pilot.press("escape")
        await idle(pilot, screen)
        last = screen.session.messages[-1]
        assert last.finish_reason == "cancelled" and last.content.startswith("Once upon")
        assert scripted.disconnected.wait(5)  # the HTTP stream was closed
        scripted.script = Script(words=["Paris", "."])
        await submit(pilot, "What is the capital of France?")
        assert screen.session.messages[-1].content == "Paris."
        assert errors(notes) == []
        assert "remote: " in screen.session.backend.description
    assert [m.get("finish_reason") for m in saved(tmp_path) if m["role"] == "assistant"] == [
        "cancelled",
        "stop",
    ]


async def test_a_cut_stream_keeps_the_partial_and_the_chat_goes_on(scripted, tmp_path) -> None:
    scripted.script = Script(words=["The ", "capital ", "is "], forever=True, cut_after=3)
    async with running(remote_app(scripted.url, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "What is the capital of France?")
        last = screen.session.messages[-1]
        assert last.finish_reason == "error" and last.content == "The capital is "
        assert "partial reply is kept" in str(last.error), last
        scripted.script = Script(words=["Paris", "."])
        await submit(pilot, "Again?")
        assert screen.session.messages[-1].content == "Paris."
    contents = [m["content"] for m in saved(tmp_path) if m["role"] == "assistant"]
    assert contents == ["The capital is ", "Paris."]


@pytest.mark.slow
async def test_streams_from_transformers_serve(transformers_serve, tmp_path) -> None:
    async with running(remote_app(transformers_serve.url, tmp_path)) as (pilot, notes):
        screen = await submit(pilot, "What is the capital of France?", wait=False)
        # the shared CPU serves ~1 token/s: wait for the recorded reply
        await wait_for(pilot, lambda: len(screen.session.messages) == 2, 240)
        assert "Paris" in screen.session.messages[-1].content
        assert errors(notes) == []
