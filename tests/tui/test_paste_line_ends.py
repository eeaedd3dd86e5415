"""Pasted line ends (``\\r\\n`` or a lone ``\\r``) reach the model and the transcript as ``\\n``,
whether the paste comes while the model loads (type-ahead) or in the chat screen. REAL local
backend (tiny SmolLM3, CPU); the loader waits until the test has pasted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual import events

import smolchat
from smolchat.backend.local import LocalBackend
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.transcript import TranscriptStore
from smolchat.engine.types import SamplingParams
from smolchat.tui.app import AppOptions, SmolchatApp
from smolchat.tui.screens.loading import LoadingScreen
from tests.tui.helpers import chat_screen, idle, running, wait_for

PASTED = "alpha line\r\nbeta line\rgamma line"
SENT = "alpha line\nbeta line\ngamma line"


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def gated_app(engine, transcripts: Path, loaded: threading.Event) -> SmolchatApp:
    engine.reset_cache()

    def load(progress):
        assert loaded.wait(20), "the test never let the model load"
        return engine

    def make_session(eng) -> ChatSession:
        settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=2)
        return ChatSession(
            LocalBackend(eng), settings=settings, store=TranscriptStore(transcripts, autosave=True)
        )

    return SmolchatApp(AppOptions(model="tiny", load_engine=load, make_session=make_session))


@pytest.mark.parametrize("when", ["while-loading", "after-loading"])
async def test_pasted_cr_line_ends_are_sent_as_lf(engine, tmp_path, when: str) -> None:
    loaded = threading.Event()
    app = gated_app(engine, tmp_path, loaded)
    try:
        async with running(app) as (pilot, _):
            if when == "while-loading":
                await wait_for(pilot, lambda: isinstance(app.screen, LoadingScreen))
                app.post_message(events.Paste(PASTED))
                await wait_for(pilot, lambda: bool(app.screen.typed))  # type: ignore[attr-defined]
            loaded.set()
            screen = await chat_screen(pilot)
            if when == "after-loading":
                app.post_message(events.Paste(PASTED))
                await wait_for(pilot, lambda: "gamma" in screen.prompt.text)
            assert screen.prompt.text == SENT
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(screen.session.messages) >= 2, timeout=60)
            await idle(pilot, screen)
            assert screen.session.messages[0].content == SENT
    finally:
        loaded.set()
    saved = [p.read_text() for p in tmp_path.glob("*.md")]
    assert saved and "\r" not in saved[0] and SENT in saved[0]
