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


async def test_a_message_shows_without_its_thinking_flag_as_the_transcript_has_it(tmp_path):
    from smolchat.tui.widgets.conversation import UserMessage

    async with running(make_app(transcripts=tmp_path)) as (pilot, _):
        screen = await submit(pilot, "what is 2+2? /no_think")
        shown = [str(w.text) for w in screen.query(UserMessage)]
        assert shown == ["what is 2+2?"]
        assert screen.session.messages[0].content == "what is 2+2?"


@pytest.mark.parametrize("args", [["--help"], ["chats", "--help"]])
def test_help_shows_no_value_for_flags_and_never_cuts_a_word(args: list[str]) -> None:
    import os
    import subprocess
    import sys

    from tests.reliability.helpers import ROOT

    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    out = subprocess.run(
        [sys.executable, "-m", "smolchat", *args], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=60,
    ).stdout  # fmt: skip
    assert "<bool>" not in out  # `--plain false` is an error: a flag takes no value
    for word in ("bfloat16", "float16", "float32"):
        if args == ["--help"]:
            assert word in out  # whole on one line
    assert all(len(line) <= 80 for line in out.splitlines())


def test_every_theme_keeps_its_hues_on_256_colour_terminals() -> None:
    """Each palette colour goes to its nearest xterm-256 colour, never to a far one (nord's
    background became teal #005f5f through Rich's rounding)."""
    from rich.color import Color, ColorSystem

    from smolchat.tui.themes import available_themes, load_theme, palette_for

    def distance(a: str, b: str) -> float:
        x, y = Color.parse(a).get_truecolor(), Color.parse(b).get_truecolor()
        return sum((p - q) ** 2 for p, q in zip(x, y, strict=True)) ** 0.5

    for name in available_themes():
        palette = load_theme(name).palette
        shown = palette_for(palette, "256")
        for key, colour in palette.items():
            rich_way = Color.parse(colour).downgrade(ColorSystem.EIGHT_BIT).get_truecolor().hex
            assert distance(colour, shown[key]) <= distance(colour, rich_way), (name, key)
    assert palette_for(load_theme("nord").palette, "256")["background"] == "#3a3a3a"  # grey
    assert palette_for(load_theme("nord").palette, "truecolor") == load_theme("nord").palette


def test_loading_a_file_from_outside_the_folder_keeps_one_copy_under_its_name(tmp_path) -> None:
    """/load of a transcript kept elsewhere: autosave writes one copy in the transcripts folder,
    named like the file, and a later /load of the same file continues that copy."""
    from smolchat.chat.transcript import TranscriptStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = ChatSession(FakeEngine())
    for _ in first.send("keep this"):
        pass
    original = first.save(elsewhere / "my-notes.md")
    folder = tmp_path / "transcripts"
    for turn in ("one more", "and another"):
        session = ChatSession(FakeEngine(), store=TranscriptStore(folder))
        run_command(session, f"/load {original}")
        for _ in session.send(turn):
            pass
    assert sorted(p.name for p in folder.glob("*.md")) == ["my-notes.md"]
    assert session.transcript_path == folder / "my-notes.md"
    assert "and another" in (folder / "my-notes.md").read_text()
