"""The app around the chat: loading with progress, load failures, resume, autosave."""

from __future__ import annotations

import threading
from pathlib import Path

from textual.widgets import ProgressBar, Static

from smolchat.chat.session import ChatSession
from smolchat.errors import ModelLoadError
from smolchat.exit_codes import ExitCode
from smolchat.tui.screens.loading import LoadingScreen
from smolchat.tui.widgets.conversation import UserMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, running, submit, texts, wait_for


async def test_loading_screen_shows_placement_and_real_progress() -> None:
    engine = FakeEngine()
    step = threading.Event()
    release = threading.Event()

    def load(progress):
        progress("download", 1_500_000, 3_000_000)
        step.wait(5)
        progress("weights", 3, 8)
        release.wait(5)
        return engine

    app = make_app(engine, load=load, placement=lambda: ("cpu", "float32"), quantize="nf4")
    async with running(app) as (pilot, _):
        screen = app.screen
        assert isinstance(screen, LoadingScreen)
        stage = screen.query_one("#loading-stage", Static)
        await wait_for(pilot, lambda: "Downloading" in str(stage.render()))
        assert "1.5 MB / 3.0 MB" in str(stage.render())
        placement = str(screen.query_one("#loading-placement", Static).render())
        assert placement == "device cpu · dtype float32 · quantization nf4"
        step.set()
        await wait_for(pilot, lambda: "Loading weights" in str(stage.render()))
        assert "3 / 8 tensors" in str(stage.render())
        bar = screen.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (3, 8)
        release.set()
        await chat_screen(pilot)


async def test_load_failure_exits_with_the_error() -> None:
    def load(progress):
        raise ModelLoadError("no model at /nowhere: give a hub id, a folder or a .gguf file")

    app = make_app(load=load)
    async with running(app) as (pilot, _):
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 1
    assert app.error == "no model at /nowhere: give a hub id, a folder or a .gguf file"


async def test_unexpected_load_failure_is_one_line_too() -> None:
    def load(progress):
        raise RuntimeError("boom")

    app = make_app(load=load)
    async with running(app) as (pilot, _):
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 1 and app.error == "internal error: RuntimeError: boom"


async def test_quitting_while_loading_stops_the_loader() -> None:
    stopped = threading.Event()

    def load(progress):
        try:
            for i in range(10_000):
                progress("weights", i, 10_000)
                threading.Event().wait(0.01)
        finally:
            stopped.set()
        raise AssertionError("the loader was not stopped")

    app = make_app(load=load)
    async with running(app) as (pilot, _):
        await pilot.pause(0.1)
        await pilot.press("ctrl+c")
    assert stopped.wait(5)
    assert app.error is None
    assert app.return_code == ExitCode.INTERRUPTED  # 130, as Ctrl+C while loading in -p/--plain


async def test_after_quitting_mid_load_the_app_waits_for_the_loading_thread() -> None:
    """The loader is inside a long step (no progress report for 0.5 s) when Ctrl+C quits:
    ``wait_for_loader`` (the CLI calls it after ``run``) returns once the thread has stopped,
    so Python never exits with it inside torch (that aborted with exit status 134)."""
    inside, ended = threading.Event(), threading.Event()

    def load(progress):
        try:
            while True:
                progress("weights", 1, 2)
                inside.set()
                threading.Event().wait(0.5)  # a long tensor step between two reports
        finally:
            ended.set()

    app = make_app(load=load)
    async with running(app) as (pilot, _):
        await wait_for(pilot, inside.is_set)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == ExitCode.INTERRUPTED
    assert app.wait_for_loader(5) and ended.is_set()
    assert make_app().wait_for_loader(0)  # nothing was loading


async def test_autosave_writes_the_conversation(tmp_path: Path) -> None:
    async with running(make_app(transcripts=tmp_path)) as (pilot, _):
        screen = await submit(pilot, "keep this")
        files = list(tmp_path.glob("*.md"))
        assert len(files) == 1 and "keep this" in files[0].read_text()
        assert screen.session.transcript_path == files[0]


async def test_resume_shows_the_transcript(tmp_path: Path) -> None:
    first = ChatSession(FakeEngine())
    for _ in first.send("what did I say?"):
        pass
    saved = first.save(tmp_path / "old.md")
    app = make_app(resume=saved)
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.pause()
        assert [str(u.render()) for u in screen.query(UserMessage)] == ["what did I say?"]
        assert any("Resumed" in t for t in texts(notes))


async def test_startup_notices_are_shown() -> None:
    app = make_app(notices=["No transcript to resume in /x: starting a new chat."])
    async with running(app) as (pilot, notes):
        await chat_screen(pilot)
        await pilot.pause()
        assert "No transcript to resume in /x: starting a new chat." in texts(notes)
