"""Every slash command from the TUI prompt, and themes (real session, fake engine)."""

from __future__ import annotations

from pathlib import Path

from textual.color import Color

from smolchat.chat.transcript import read_transcript
from smolchat.tui.screens.dialogs import HelpScreen
from smolchat.tui.themes import available_themes, load_theme
from smolchat.tui.widgets.conversation import AssistantMessage, NoteMessage, UserMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, idle, running, submit, texts, wait_for


def users(screen) -> list[str]:
    return [str(u.render()) for u in screen.query(UserMessage)]


def notes_in_view(screen) -> list[str]:
    return [n.source for n in screen.query(NoteMessage)]


async def test_help_opens_the_help_screen() -> None:
    async with running(make_app()) as (pilot, _):
        await command(pilot, "/help")
        assert isinstance(pilot.app.screen, HelpScreen)
        source = pilot.app.screen.query_one("#help-text").source
        for name in ("/system", "/retry", "/theme", "Ctrl+Y", "Esc", "F7"):
            assert name in source
        # the key table is generated from the bindings: every described one is listed
        screen = pilot.app.screen_stack[-2]
        for binding in [*screen.BINDINGS, *pilot.app.BINDINGS]:
            if binding.description:
                assert f"| {binding.tooltip or binding.description} |" in source
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(pilot.app.screen, HelpScreen)


async def test_system_think_set_and_stats() -> None:
    engine = FakeEngine()
    async with running(make_app(engine)) as (pilot, _):
        screen = await command(pilot, "/system You are terse.")
        assert screen.session.system_prompt == "You are terse."
        await command(pilot, "/no_think")
        assert screen.session.settings.thinking is False
        await command(pilot, "/think")
        assert screen.session.settings.thinking is True
        await command(pilot, "/set temperature 0.2")
        assert screen.session.settings.sampling.temperature == 0.2
        await submit(pilot, "hi")
        assert engine.calls[-1]["sampling"].temperature == 0.2
        assert "You are terse." in engine.tokenizer.decode(engine.calls[-1]["ids"])
        assert "T 0.2" in str(screen.query_one("#status").render())
        await command(pilot, "/stats")
        assert any("context" in n for n in notes_in_view(screen))


async def test_bad_command_is_a_notification() -> None:
    async with running(make_app()) as (pilot, notes):
        screen = await command(pilot, "/frobnicate")
        await command(pilot, "/set temperature hot")
        errors = [n.message for n in notes if n.severity == "error"]
        assert any("unknown command /frobnicate" in e for e in errors)
        assert any("temperature" in e for e in errors)
        assert screen.session.settings.sampling.temperature == 0.6
        assert pilot.app.is_running


async def test_save_writes_the_transcript_and_load_reads_it(tmp_path: Path) -> None:
    target = tmp_path / "chat.md"
    async with running(make_app()) as (pilot, _):
        screen = await submit(pilot, "remember the number 42")
        await command(pilot, f"/save {target}")
        assert target.exists()
        saved = read_transcript(target)
        assert saved.messages[0]["content"] == "remember the number 42"
        assert "def add" in saved.messages[1]["content"]
        await command(pilot, "/clear")
        assert users(screen) == [] and not screen.session.messages
        await command(pilot, f"/load {target}")
        assert users(screen) == ["remember the number 42"]
        (reply,) = screen.query(AssistantMessage)
        assert reply.finished and "def add" in reply.answer_text
        assert any("Loaded 1 turn" in n for n in notes_in_view(screen))


async def test_failed_save_is_a_notification(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    async with running(make_app()) as (pilot, notes):
        await submit(pilot, "hi")
        await command(pilot, f"/save {blocker}/sub/chat.md")
        assert [n for n in notes if n.severity == "error"]
        assert pilot.app.is_running


async def test_retry_replaces_the_last_reply() -> None:
    answers = iter(["first answer", "second answer"])
    engine = FakeEngine(lambda q: next(answers))
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "hi")
        assert [r.answer_text for r in screen.query(AssistantMessage)] == ["first answer"]
        await command(pilot, "/retry")
        await wait_for(pilot, lambda: screen.session.messages[-1].content == "second answer")
        await idle(pilot, screen)
        assert [r.answer_text for r in screen.query(AssistantMessage)] == ["second answer"]
        assert users(screen) == ["hi"] and len(screen.session.messages) == 2


async def test_undo_drop_and_clear_redraw_the_conversation() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await submit(pilot, "one")
        await submit(pilot, "two")
        await submit(pilot, "three")
        await command(pilot, "/undo")
        assert users(screen) == ["one", "two"]
        assert screen.prompt.text == ""  # typing next must not append to the removed text
        await pilot.press("up")
        assert screen.prompt.text == "three"  # ...but it is one keypress away
        screen.prompt.clear()
        await command(pilot, "/drop 1")
        assert users(screen) == ["two"]
        assert len(list(screen.query(AssistantMessage))) == 1
        await command(pilot, "/clear")
        assert users(screen) == [] and not list(screen.query(AssistantMessage))


async def test_exit_command_quits() -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        await command(pilot, "/exit")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 0


async def test_theme_switches_live() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        dark_bg = screen.styles.background
        assert dark_bg == Color.parse(load_theme("dark").palette["background"])
        await command(pilot, "/theme light")
        await pilot.pause()
        assert app.theme == "smolchat-light" and app.theme_name == "light"
        assert screen.styles.background == Color.parse(load_theme("light").palette["background"])
        status = screen.query_one("#status")
        assert status.styles.color == Color.parse(app.theme_variables["foreground"])
        await command(pilot, "/theme gruvbox")
        await pilot.pause()
        # gruvbox's own rule: the status bar text in its primary colour
        assert status.styles.color == Color.parse(app.theme_variables["primary"])
        want = Color.parse(load_theme("gruvbox").palette["primary"])
        got = status.styles.color
        assert max(abs(got.r - want.r), abs(got.g - want.g), abs(got.b - want.b)) <= 1
        assert "Theme: gruvbox" in texts(notes)


async def test_unknown_theme_lists_the_themes() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        await command(pilot, "/theme solarized")
        errors = [n.message for n in notes if n.severity == "error"]
        assert errors == [f"Unknown theme 'solarized'. Themes: {', '.join(available_themes())}"]
        assert app.theme == "smolchat-dark"


async def test_start_theme_option_and_unknown_start_theme() -> None:
    app = make_app(theme="nord")
    async with running(app) as (pilot, _):
        await chat_screen(pilot)
        assert app.theme == "smolchat-nord"
    app = make_app(theme="nope")
    async with running(app) as (pilot, notes):
        await chat_screen(pilot)
        assert app.theme == "smolchat-dark"
        assert any("Unknown theme 'nope'" in t for t in texts(notes))


def test_shipped_themes_parse() -> None:
    themes = available_themes()
    assert {"dark", "light", "gruvbox", "nord"} <= set(themes)
    for name in themes:
        spec = load_theme(name)
        assert {"primary", "background", "foreground", "surface"} <= set(spec.palette)
        assert "$primary:" not in spec.css  # the palette becomes the Textual theme
    assert load_theme("dark").dark and not load_theme("light").dark
