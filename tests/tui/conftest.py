"""Fixtures for the TUI tests: the real app and the real ChatSession over a fake engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smolchat.chat.session import ChatSession
from smolchat.chat.transcript import TranscriptStore
from smolchat.tui.app import AppOptions, SmolchatApp
from tests.tui.fake_engine import FakeEngine


def make_app(
    engine: FakeEngine | None = None,
    *,
    transcripts: Path | None = None,
    load: Callable[[Any], Any] | None = None,
    **options: Any,
) -> SmolchatApp:
    """The app over ``engine`` (a FakeEngine by default); autosave off unless a folder given."""
    engine = engine if engine is not None else FakeEngine()

    def load_engine(progress: Any) -> FakeEngine:
        for i in range(1, 5):
            progress("weights", i, 4)
        return engine

    def make_session(eng: Any) -> ChatSession:
        store = TranscriptStore(transcripts, autosave=True) if transcripts else None
        return ChatSession(eng, store=store)

    return SmolchatApp(
        AppOptions(
            model=options.pop("model", engine.model_name),
            load_engine=load or load_engine,
            make_session=make_session,
            **options,
        )
    )


@pytest.fixture
def app_factory() -> Callable[..., SmolchatApp]:
    return make_app
