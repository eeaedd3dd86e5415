"""Keys of the chat screen through Pilot: Ctrl+C, copying (real session, fake engine)."""

from __future__ import annotations

import pytest

import smolchat.tui.screens.chat as chat_module
from smolchat.tui.screens.dialogs import HelpScreen
from tests.tui.conftest import make_app
from tests.tui.helpers import chat_screen, running, submit, texts, wait_for


@pytest.fixture(autouse=True)
def no_desktop_clipboard(monkeypatch) -> None:
    """No clipboard tool and no tmux: copies go by OSC 52 alone (and the app's clipboard)."""
    for name in ("TMUX", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("smolchat.clipboard.shutil.which", lambda name: None)


async def test_ctrl_c_copies_the_selection_of_the_prompt() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        screen.prompt.load_text("hello world")
        screen.prompt.select_all()
        await pilot.press("ctrl+c")
        assert app.clipboard == "hello world"
        assert screen.prompt.text == "hello world"  # copied, not cleared
        assert app.last_copy is not None and app.last_copy.used == ["OSC 52"]
        assert any(
            t.startswith("Copied the selection with OSC 52 (11 characters).") for t in texts(notes)
        )
        assert app.is_running


async def test_ctrl_c_clears_a_draft_and_ctrl_z_or_up_brings_it_back() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.press(*"draft one")
        await pilot.press("ctrl+c")
        assert screen.prompt.text == ""
        assert "Draft cleared: Ctrl+Z or ↑ brings it back." in texts(notes)
        await pilot.press("ctrl+z")
        assert screen.prompt.text == "draft one"
        await pilot.press("ctrl+c")
        assert screen.prompt.text == ""
        await pilot.press("up")
        assert screen.prompt.text == "draft one"
        assert app.is_running  # never quits while a draft is there


async def test_ctrl_c_twice_quits_only_within_the_window(monkeypatch) -> None:
    monkeypatch.setattr(chat_module, "QUIT_WINDOW_S", 0.3)
    app = make_app()
    async with running(app) as (pilot, notes):
        await chat_screen(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause(0.5)  # too late for a second press: it warns again
        await pilot.press("ctrl+c")
        assert app.is_running
        assert texts(notes).count("Press Ctrl+C again to quit (Ctrl+Q quits at once).") == 2
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 0


async def test_ctrl_c_closes_a_dialog() -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        await chat_screen(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen) and app.is_running


async def test_ctrl_q_quits_at_once() -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        screen.prompt.load_text("a draft does not stop Ctrl+Q")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running)


async def test_copy_keys_report_how_they_copied() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await submit(pilot, "code please")
        await pilot.press("ctrl+o")
        assert app.clipboard == "def add(a, b):\n    return a + b\n"
        assert any(
            t.startswith("Copied the last code block (2 lines) with OSC 52 (32 characters).")
            for t in texts(notes)
        )
        await pilot.press("ctrl+y")
        assert app.clipboard == screen.session.messages[-1]["content"]
