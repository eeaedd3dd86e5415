"""Ctrl+C, Ctrl+G and Ctrl+R on the chat screen are ordinary (not priority) bindings.

A priority binding runs in the app's queue the moment its key arrives, before the characters
typed just ahead of it reach the prompt (see test_typing_bursts.py): "draft" + Ctrl+C in one
burst warned "press again to quit" and left the draft, "draft" + Ctrl+G opened the editor on
an empty draft. Each key is checked in a burst after text, and with the focus in the prompt and
in the conversation (after Alt+Up), through the real app over the fake engine.
"""

from __future__ import annotations

import pytest

from smolchat.tui.screens.dialogs import HelpScreen, HistorySearchScreen
from smolchat.tui.widgets.conversation import ConversationView
from tests.tui.conftest import make_app
from tests.tui.helpers import chat_screen, running, submit, texts, wait_for
from tests.tui.test_keys import scripted_editor
from tests.tui.test_typing_bursts import burst

CLEARED = "Draft cleared: Ctrl+Z or ↑ brings it back."
QUIT_WARNING = "Press Ctrl+C again to quit (Ctrl+Q quits at once)."


@pytest.fixture(autouse=True)
def no_desktop_clipboard(monkeypatch) -> None:
    for name in ("TMUX", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("smolchat.clipboard.shutil.which", lambda name: None)


@pytest.fixture
def upper_editor(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", scripted_editor(tmp_path, "text = text.upper()"))


async def focus_conversation(pilot, screen) -> None:
    """Alt+Up: a message highlighted, the conversation has the focus (not the prompt)."""
    await pilot.press("alt+up")
    assert screen.query_one(ConversationView).has_focus and not screen.prompt.has_focus


async def draft_after_a_reply(pilot, draft: str, where: str):
    """One exchange, then ``draft`` in the prompt and the focus ``where``; the chat screen."""
    screen = await submit(pilot, "hello")
    screen.prompt.load_text(draft)
    if where == "conversation":
        await focus_conversation(pilot, screen)
    return screen


# ---- in order with the keys typed before -----------------------------------------------------


async def test_ctrl_c_typed_right_after_text_clears_all_of_it() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        burst(app, "draft text", "ctrl+c")
        await wait_for(pilot, lambda: CLEARED in texts(notes))
        assert screen.prompt.text == ""
        assert QUIT_WARNING not in texts(notes)
        await pilot.press("ctrl+z")
        assert screen.prompt.text == "draft text"


async def test_ctrl_g_typed_right_after_text_edits_all_of_it(upper_editor) -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        burst(app, "draft text", "ctrl+g")
        await wait_for(pilot, lambda: screen.prompt.text == "DRAFT TEXT")


async def test_ctrl_r_typed_right_after_text_keeps_the_text(tmp_path) -> None:
    app = make_app(history_file=tmp_path / "history.jsonl")
    async with running(app) as (pilot, _):
        screen = await submit(pilot, "an earlier prompt")
        burst(app, "new draft", "ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, HistorySearchScreen))
        await pilot.press("escape")
        assert screen.prompt.text == "new draft" and screen.prompt.has_focus


# ---- each key from either focus ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["prompt", "conversation"])
async def test_ctrl_c_clears_then_warns_then_quits(where: str) -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await draft_after_a_reply(pilot, "a draft", where)
        await pilot.press("ctrl+c")
        assert screen.prompt.text == "" and CLEARED in texts(notes)
        await pilot.press("ctrl+c")
        assert texts(notes).count(QUIT_WARNING) == 1 and app.is_running
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 0


@pytest.mark.parametrize("where", ["prompt", "conversation"])
async def test_ctrl_c_stops_a_streaming_reply(where: str) -> None:
    from tests.tui.fake_engine import FakeEngine

    engine = FakeEngine(lambda q: " ".join(f"w{i}" for i in range(400)), delay=0.05)
    app = make_app(engine)
    async with running(app) as (pilot, _):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(pilot, lambda: screen.generating and screen.turn.reply.answer_text)
        if where == "conversation":
            await focus_conversation(pilot, screen)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not screen.generating)
        assert screen.session.messages[-1].finish_reason == "cancelled"
        assert app.is_running


async def test_ctrl_c_closes_a_dialog_whatever_has_the_focus() -> None:
    from textual.command import CommandPalette

    app = make_app()
    async with running(app) as (pilot, _):
        await chat_screen(pilot)
        for key, dialog in (("f1", HelpScreen), ("ctrl+p", CommandPalette)):
            await pilot.press(key)
            await wait_for(pilot, lambda d=dialog: isinstance(app.screen, d))
            await pilot.press("ctrl+c")
            await wait_for(pilot, lambda d=dialog: not isinstance(app.screen, d))
            assert app.is_running


@pytest.mark.parametrize("where", ["prompt", "conversation"])
async def test_ctrl_g_opens_the_editor_on_the_draft(where: str, upper_editor) -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await draft_after_a_reply(pilot, "edit me", where)
        await pilot.press("ctrl+g")
        assert screen.prompt.text == "EDIT ME" and screen.prompt.has_focus


@pytest.mark.parametrize("where", ["prompt", "conversation"])
async def test_ctrl_r_searches_the_history(where: str, tmp_path) -> None:
    app = make_app(history_file=tmp_path / "history.jsonl")
    async with running(app) as (pilot, _):
        screen = await submit(pilot, "tell me about cats")
        if where == "conversation":
            await focus_conversation(pilot, screen)
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, HistorySearchScreen)
        await pilot.press(*"cat", "enter")
        assert screen.prompt.text == "tell me about cats" and screen.prompt.has_focus
