"""Small defects seen in use (issue 10, item 9): each through the shared commands and the TUI."""

from __future__ import annotations

import pytest

from smolchat.chat.commands import CommandError, SwitchTheme, is_read_only, run_command
from smolchat.chat.session import ChatSession
from smolchat.tui.widgets.conversation import NoteMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, idle, running, submit, texts, wait_for


def long_reply(_: str) -> str:
    return " ".join(f"w{i}" for i in range(300))


async def test_stats_runs_while_a_reply_streams() -> None:
    """/stats only reads: it answers at once instead of "Still answering"."""
    async with running(make_app(FakeEngine(long_reply, delay=0.05))) as (pilot, notes):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(pilot, lambda: screen.generating)
        screen.prompt.load_text("/stats")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query(NoteMessage))
        assert screen.generating  # the reply goes on
        assert not any("Still answering" in t for t in texts(notes))
        await pilot.press("escape")
        await idle(pilot, screen)


def test_only_reading_commands_are_read_only() -> None:
    assert is_read_only("/stats") and is_read_only("/help set")
    assert not is_read_only("/retry") and not is_read_only("/clear")
    assert not is_read_only("/nope") and not is_read_only("hello")


@pytest.mark.parametrize("line", ["/drop x", "/drop 2", "/drop"])
def test_drop_on_an_empty_chat_says_there_is_nothing(line: str) -> None:
    with pytest.raises(CommandError) as info:
        run_command(ChatSession(FakeEngine()), line)
    assert "from 1 to 1" not in str(info.value)
    assert "nothing to drop" in str(info.value)


def test_drop_range_counts_the_exchanges() -> None:
    session = ChatSession(FakeEngine())
    for text in ("one", "two"):
        for _ in session.send(text):
            pass
    with pytest.raises(CommandError, match="from 1 to 2, got 'x'"):
        run_command(session, "/drop x")


def test_theme_without_a_name_asks_for_the_list() -> None:
    assert run_command(ChatSession(FakeEngine()), "/theme").effect == SwitchTheme(None)


async def test_theme_without_a_name_lists_the_themes() -> None:
    async with running(make_app()) as (pilot, notes):
        await chat_screen(pilot)
        await command(pilot, "/theme")
        shown = [t for t in texts(notes) if t.startswith("Themes:")]
        assert shown == ["Themes: dark, gruvbox, light, nord (now dark); /theme NAME switches"]
