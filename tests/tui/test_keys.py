"""Keys of the chat screen through Pilot: Ctrl+C, copying, scrolling, moving between messages
(the real session over the fake engine; the real tiny engine where a reply is generated again)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable

import pytest

import smolchat.tui.screens.chat as chat_module
from smolchat.tui.screens.dialogs import HelpScreen, HistorySearchScreen
from smolchat.tui.widgets.conversation import AssistantMessage, NoteMessage, UserMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, idle, running, submit, texts, wait_for


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
        assert app.clipboard == screen.session.messages[-1].content


# ---- scrolling and moving between messages ----------------------------------------------------

TWO_BLOCKS = "First:\n\n```python\nx = 1\n```\n\nSecond:\n\n```sh\necho hi\n```\n" + "line\n\n" * 30


async def test_keyboard_scrolling_keeps_the_prompt_focused() -> None:
    app = make_app(FakeEngine(lambda q: TWO_BLOCKS))
    async with running(app) as (pilot, _):
        screen = await submit(pilot, "one")
        await submit(pilot, "two")
        view = screen.conversation
        await pilot.pause()
        bottom = view.max_scroll_y
        assert bottom > 20 and view.scroll_y == bottom
        await pilot.press("pageup")
        assert view.scroll_y < bottom and screen.prompt.has_focus
        await pilot.press("ctrl+home")
        assert view.scroll_y == 0
        await pilot.press("ctrl+down")
        assert view.scroll_y == screen.SCROLL_LINES
        await pilot.press("pagedown")
        assert view.scroll_y > screen.SCROLL_LINES
        await pilot.press("ctrl+end")
        assert view.scroll_y == bottom
        await pilot.press("ctrl+up")
        assert view.scroll_y == bottom - screen.SCROLL_LINES
        assert screen.prompt.has_focus
        await pilot.press(*"typing goes on")
        assert screen.prompt.text == "typing goes on"


async def test_alt_up_highlights_messages_and_copies_them_and_their_code() -> None:
    app = make_app(FakeEngine(lambda q: TWO_BLOCKS))
    async with running(app) as (pilot, notes):
        screen = await submit(pilot, "first question")
        view = screen.conversation
        await pilot.press("alt+up")
        assert view.has_focus and isinstance(view.selected, AssistantMessage)
        assert view.selected.has_class("-selected")
        await pilot.press("o")
        assert app.clipboard == "x = 1\n"
        await pilot.press("o")
        assert app.clipboard == "echo hi\n"
        assert any(t.startswith("Copied code block 2 of 2 with") for t in texts(notes))
        await pilot.press("o")  # round again
        assert app.clipboard == "x = 1\n"
        await pilot.press("up")
        assert isinstance(view.selected, UserMessage)
        await pilot.press("c")
        assert app.clipboard == "first question"
        await pilot.press("o")
        assert "This message has no code block." in texts(notes)
        await pilot.press("escape")
        assert screen.prompt.has_focus and view.selected is None
        assert not list(view.query(".-selected"))


async def test_edit_an_earlier_message_replaces_it_and_what_followed() -> None:
    app = make_app(FakeEngine(lambda q: f"answer to {q.split()[-1]}"))
    async with running(app) as (pilot, _):
        screen = await submit(pilot, "question one")
        await submit(pilot, "question two")
        await submit(pilot, "question three")
        await pilot.press("alt+up", "up", "up", "up")  # reply 3, user 3, reply 2, user 2
        assert isinstance(screen.conversation.selected, UserMessage)
        await pilot.press("e")
        assert screen.prompt.has_focus and screen.prompt.text == "question two"
        assert screen.editing == 1
        assert "Editing message 2" in str(screen.query_one("#hint").render())
        screen.prompt.load_text("question deux")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not screen.generating and len(screen.session.messages) == 4)
        await idle(pilot, screen)
        users = [m.content for m in screen.session.messages if m.role == "user"]
        assert users == ["question one", "question deux"]
        shown = [u.text for u in screen.query(UserMessage)]
        assert shown == users
        assert [r.answer_text for r in screen.query(AssistantMessage)][-1] == "answer to deux"
        assert screen.editing is None


async def test_esc_cancels_an_edit() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await submit(pilot, "hello")
        await pilot.press("alt+up", "up", "e")
        assert screen.editing == 0
        await pilot.press("escape")
        assert screen.editing is None and screen.prompt.text == ""
        assert "Edit cancelled." in texts(notes)
        assert len(screen.session.messages) == 2


async def test_retry_from_an_earlier_message_with_the_real_engine(tiny_model) -> None:
    import smolchat

    engine = smolchat.load(str(tiny_model), device="cpu", dtype="float32")
    app = make_app(engine)  # type: ignore[arg-type]
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        screen.session.settings.max_new_tokens = 4
        await submit(pilot, "Hello one")
        await submit(pilot, "Hello two")
        first_reply = screen.session.messages[1]
        await pilot.press("alt+up", "up", "up")  # reply 2, user 2, reply 1
        assert screen.conversation.exchange_of(screen.conversation.selected) == 0
        await pilot.press("r")
        await wait_for(pilot, lambda: not screen.generating and len(screen.session.messages) == 2)
        await idle(pilot, screen)
        assert screen.session.messages[0].content == "Hello one"
        assert screen.session.messages[1] is not first_reply
        assert [u.text for u in screen.query(UserMessage)] == ["Hello one"]
        assert len(screen.query(AssistantMessage)) == 1


# ---- $EDITOR ---------------------------------------------------------------------------------


def scripted_editor(tmp_path, body: str) -> str:
    """A real editor program: a Python script run on the draft file (``body`` edits ``text``)."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys\n"
        "path = sys.argv[-1]\n"
        "text = open(path, encoding='utf-8').read()\n"
        f"{body}\n"
        "open(path, 'w', encoding='utf-8').write(text)\n"
    )
    return f"{sys.executable} {script}"


async def test_ctrl_g_edits_the_draft_in_the_editor(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", scripted_editor(tmp_path, "text = text.upper() + 'line two\\n'"))
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        await pilot.press(*"line one")
        await pilot.press("ctrl+g")
        assert screen.prompt.text == "LINE ONE\nline two"
        await pilot.press("ctrl+z")  # the editor's change is one edit
        assert screen.prompt.text == "line one"
    # $VISUAL wins over $EDITOR
    monkeypatch.setenv("VISUAL", scripted_editor(tmp_path, "text = 'from visual'"))
    async with running(make_app()) as (pilot, _):
        screen = await chat_screen(pilot)
        await pilot.press("ctrl+g")
        assert screen.prompt.text == "from visual"


async def test_a_failing_editor_keeps_the_draft(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", scripted_editor(tmp_path, "text = 'lost'; sys.exit(3)"))
    async with running(make_app()) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.press(*"keep me")
        await pilot.press("ctrl+g")
        assert screen.prompt.text == "keep me"
        assert any("exited with status 3; the draft is unchanged" in t for t in texts(notes))
    monkeypatch.setenv("EDITOR", "/nonexistent/editor")
    async with running(make_app()) as (pilot, notes):
        await chat_screen(pilot)
        await pilot.press("ctrl+g")
        assert any("could not start the editor '/nonexistent/editor'" in t for t in texts(notes))


# ---- the prompt history ----------------------------------------------------------------------


async def test_history_survives_a_restart_and_ctrl_r_searches_it(tmp_path) -> None:
    path = tmp_path / "history.jsonl"
    async with running(make_app(history_file=path)) as (pilot, _):
        await submit(pilot, "tell me about cats")
        await submit(pilot, "tell me about dogs")
    async with running(make_app(history_file=path)) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.press("up")
        assert screen.prompt.text == "tell me about dogs"
        await pilot.press("up")
        assert screen.prompt.text == "tell me about cats"
        screen.prompt.clear()
        await pilot.press("ctrl+r")
        assert isinstance(app_screen := pilot.app.screen, HistorySearchScreen)
        await pilot.press(*"cat")
        assert app_screen.matches == ["tell me about cats"]
        await pilot.press("enter")
        assert not isinstance(pilot.app.screen, HistorySearchScreen)
        assert screen.prompt.text == "tell me about cats" and screen.prompt.has_focus
        screen.prompt.clear()
        await pilot.press("ctrl+r", "down", "enter")  # nothing typed: newest first, Down: next
        assert screen.prompt.text == "tell me about cats"
        await pilot.press("ctrl+r", "escape")
        assert screen.prompt.text == "tell me about cats"


async def test_ctrl_r_with_no_history() -> None:
    async with running(make_app()) as (pilot, notes):
        await chat_screen(pilot)
        await pilot.press("ctrl+r")
        assert "No past prompts yet." in texts(notes)


# ---- the command palette and completion -------------------------------------------------------


async def press_tab(pilot, screen, text: str) -> str:
    """Tab on a prompt holding ``text`` (cursor at the end); the prompt's text after it."""
    screen.prompt.load_text(text)
    screen.prompt.move_cursor(screen.prompt.document.end)
    await pilot.press("tab")
    await pilot.pause()
    return screen.prompt.text


async def test_ctrl_p_palette_lists_commands_and_key_actions() -> None:
    from textual.command import CommandPalette

    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"stats")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
        await idle(pilot, screen)
        assert any("context" in n.source for n in screen.query(NoteMessage))  # /stats ran
        # a command that takes an argument goes into the prompt, ready for it
        await pilot.press("ctrl+p", *"system")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.prompt.text == "/system ")
        # a key's action: show / hide reasoning
        before = screen.show_reasoning
        await pilot.press("ctrl+p", *"show / hide reasoning")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.show_reasoning != before)


async def test_palette_entries_cover_every_command_and_binding() -> None:
    from smolchat.chat.commands import COMMANDS
    from smolchat.tui.palette import SmolchatCommands

    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        provider = SmolchatCommands(screen)
        texts_ = [e.text for e in provider.entries()]
        for cmd in COMMANDS.values():
            assert cmd.usage in texts_
        assert "/theme gruvbox" in texts_
        described = [b for b in screen.BINDINGS if b.description]
        for binding in described:
            assert any(t.startswith(binding.description + " (") for t in texts_)


async def test_tab_completion_of_names_and_arguments(tmp_path, monkeypatch) -> None:
    (tmp_path / "chats").mkdir()
    (tmp_path / "chats" / "paris.md").write_text("x")
    (tmp_path / "chats" / "pisa.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_screen(pilot)
        hint = screen.query_one("#hint")

        def tab(text: str) -> Awaitable[str]:
            return press_tab(pilot, screen, text)

        assert await tab("/th") == "/th"  # two matches: both shown
        shown = str(hint.render())
        assert hint.display and "/theme" in shown and "/think" in shown
        assert await tab("/theme gr") == "/theme gruvbox "
        assert await tab("/theme ") == "/theme "
        assert "matches:" in str(hint.render()) and "nord" in str(hint.render())
        assert await tab("/set max") == "/set max_new_tokens "
        assert await tab("/load ch") == "/load chats/"  # a folder: no space, go on
        assert await tab("/load chats/p") == "/load chats/p"
        assert "paris.md" in str(hint.render()) and "pisa.md" in str(hint.render())
        assert await tab("/load chats/pa") == "/load chats/paris.md "


# ---- thinking control --------------------------------------------------------------------------


async def test_a_model_without_thinking_mode_shows_no_think_toggle() -> None:
    engine = FakeEngine()
    engine.tokenizer.chat_template = "{{ messages }}"  # a template without enable_thinking
    app = make_app(engine)
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        status = str(screen.query_one("#status").render())
        assert "think" not in status
        assert screen.check_action("toggle_think", ()) is False
        assert "ctrl+t" not in app.active_bindings  # not in the footer either
        before = screen.session.settings.thinking
        await pilot.press("ctrl+t")
        assert screen.session.settings.thinking == before
    engine = FakeEngine()  # with a thinking mode: shown
    async with running(make_app(engine)) as (pilot, _):
        screen = await chat_screen(pilot)
        assert "think" in str(screen.query_one("#status").render())
        assert screen.check_action("toggle_think", ()) is True
        assert "ctrl+t" in pilot.app.active_bindings


async def test_smollm2_help_completion_and_palette_name_no_thinking(smollm2_gguf, tmp_path) -> None:
    """The real SmolLM2 GGUF (its template has no thinking mode): Tab, the hint line, F1 and
    the palette offer no /think, /no_think or thinking setting."""
    from textual.command import CommandPalette

    import smolchat
    from smolchat.tui.palette import SmolchatCommands
    from tests.tui.test_real_backend import real_app

    engine = smolchat.load(str(smollm2_gguf), device="cpu")
    async with running(real_app(engine, tmp_path)) as (pilot, _):
        screen = await chat_screen(pilot)
        assert not screen.session.backend.has_thinking_mode
        hint = screen.query_one("#hint")

        def tab(text: str) -> Awaitable[str]:
            return press_tab(pilot, screen, text)

        assert await tab("/th") == "/theme "  # one match: /think is not offered
        assert await tab("/set thi") == "/set thi"  # no thinking setting to complete to
        assert await tab("/set t") == "/set t"
        shown = str(hint.render())
        assert "temperature" in shown and "top_p" in shown and "thinking" not in shown
        screen.prompt.load_text("/no")
        await pilot.pause()
        assert "/no_think" not in str(hint.render())
        screen.prompt.clear()
        await pilot.press("f1")
        assert isinstance(help_screen := pilot.app.screen, HelpScreen)
        assert "/set" in help_screen.help_text and "/think" not in help_screen.help_text
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
        entries = [e.text for e in SmolchatCommands(pilot.app.screen, None).entries()]
        assert any(t.startswith("/set") for t in entries)
        assert not any(t.startswith(("/think", "/no_think")) for t in entries)


async def test_ctrl_t_while_reasoning_stops_thinking_with_the_real_engine(tmp_path) -> None:
    import smolchat
    from tests.test_thinking_control import THINKING_TEMPLATE

    folder = tmp_path / "model"
    from tests.tiny import build_smollm3

    build_smollm3(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = THINKING_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    engine = smolchat.load(str(folder), device="cpu", dtype="float32")
    step = engine._step

    def slow_step(token_id: int):  # the tiny model would finish 80 tokens before Ctrl+T lands
        time.sleep(0.03)
        return step(token_id)

    engine._step = slow_step  # type: ignore[method-assign]
    app = make_app(engine)  # type: ignore[arg-type]
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        screen.session.settings.max_new_tokens = 80
        await submit(pilot, "think about it", wait=False)
        await wait_for(pilot, lambda: screen.turn is not None and screen.turn.reply.reasoning_text)
        await pilot.press("ctrl+t")
        assert "Stopped thinking: the answer follows." in texts(notes)
        await wait_for(pilot, lambda: len(screen.session.messages) == 2, timeout=180)
        reply = screen.session.messages[1]
        assert reply.reasoning and reply.content  # closed early, then answered
        assert screen.session.settings.thinking is True  # the mode itself did not change


# ---- reading comfort ----------------------------------------------------------------------------


async def test_welcome_panel_width_limit_and_a_growing_context_meter() -> None:
    engine = FakeEngine(lambda q: "word " * 200, delay=0.01)
    app = make_app(engine)
    async with running(app, size=(200, 40)) as (pilot, _):
        screen = await chat_screen(pilot)
        (panel,) = screen.query("#welcome")
        text = str(panel.render())
        assert engine.model_name in text and "context 8,192 tokens" in text and "F1" in text
        status = screen.query_one("#status")
        meters: list[str] = []
        screen.prompt.load_text("go")
        await pilot.press("enter")
        while screen.generating or not meters:
            meters.append(str(status.render()).split("ctx ")[1].split(" ")[0])
            await pilot.pause(0.05)
        assert not screen.query("#welcome")  # gone with the first message
        used = [int(m.split("/")[0].replace(",", "")) for m in meters]
        assert len(set(used)) >= 3 and used == sorted(used)  # it grew while streaming
        reply = screen.query(AssistantMessage).last()
        assert reply.size.width <= 110 < screen.conversation.size.width


async def test_message_width_can_be_turned_off() -> None:
    app = make_app(message_width=None)
    async with running(app, size=(200, 40)) as (pilot, _):
        screen = await submit(pilot, "hi")
        reply = screen.query(AssistantMessage).last()
        assert reply.size.width > 150
