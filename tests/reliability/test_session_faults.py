"""Session faults: context overflow, a 100,000-character paste, invalid UTF-8 and control
characters in what the user types or pipes, and in what the model writes.

Already covered elsewhere (not repeated): overflow refused and fixed by ``drop_oldest``
(tests/test_session.py::test_context_overflow_is_refused_and_drop_oldest_fixes_it), a message
too long for any context (::test_a_message_too_long_for_any_context_says_so), the TUI's offer
to drop turns (tests/tui/test_chat.py::test_context_overflow_offers_to_drop_the_oldest_turns,
::test_context_overflow_declined_keeps_everything), and every slash command with good, missing,
invalid and extreme arguments (tests/test_commands.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console
from textual import events
from typer.testing import CliRunner

import smolchat
from smolchat import cli
from smolchat.chat.commands import COMMANDS, run_command
from smolchat.chat.events import TurnFinished
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.text import printable, valid_text
from smolchat.chat.turns import UserTurn
from smolchat.engine.types import SamplingParams
from smolchat.errors import ContextOverflowError
from smolchat.plain import PlainChat
from smolchat.tui.screens.dialogs import ConfirmScreen
from smolchat.tui.widgets.conversation import AssistantMessage, UserMessage
from tests.reliability.helpers import (
    ANSWERED,
    one_line_error,
    quiet_env,
    run_smolchat,
    without_cut_note,
)
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, idle, running, submit, texts, wait_for

runner = CliRunner()
PASTE = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2000)[:100_000]
NASTY = "bell\x07 nul\x00 esc\x1b]0;PWNED\x07 clear\x1b[2J cr\rlf del\x7f c1\x9b tab\tend"
CONTROL = {chr(c) for c in range(0x20) if c not in (9, 10)} | {chr(0x7F)}
CONTROL |= {chr(c) for c in range(0x80, 0xA0)}


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def greedy_session(engine, **kwargs) -> ChatSession:
    engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=6)
    return ChatSession(engine, settings=settings, **kwargs)


def rendered(session, history, add_generation_prompt=True) -> list[int]:
    """The ids the local backend renders for ``history`` (thinking on)."""
    conversation = session.conversation(history, True)
    return session.backend.render_ids(conversation, add_generation_prompt=add_generation_prompt)


def finished(events) -> TurnFinished:
    events = list(events)
    assert isinstance(events[-1], TurnFinished)
    return events[-1]


class EOFRead:
    def __init__(self, lines: list[str]) -> None:
        self.lines = iter(lines)

    def __call__(self, prompt: str) -> str:
        try:
            return next(self.lines)
        except StopIteration:
            raise EOFError from None


def shown_text(screen) -> str:
    """Everything the widgets of ``screen`` render, as text."""
    parts = []
    for widget in screen.walk_children():
        try:
            parts.append(str(widget.render()))
        except Exception:  # containers and the like render nothing textual
            continue
    return "\n".join(parts)


# ---- context overflow -------------------------------------------------------------------


def test_overflow_error_says_how_many_turns_to_drop(engine, monkeypatch) -> None:
    session = greedy_session(engine, system_prompt="You are terse.")
    for question in ("Hello!", "What is the capital of France?", "And of Italy?"):
        finished(session.send(question))
    ask = UserTurn("Thank you, how can I help you today?")
    without_two = len(rendered(session, [*session.messages[4:], ask]))
    monkeypatch.setattr(engine, "context_length", without_two + 6)  # fits once 2 are gone
    with pytest.raises(ContextOverflowError) as info:
        session.send(ask.content)
    assert info.value.drop == 2 and "/drop 2" in str(info.value)
    monkeypatch.setattr(engine, "context_length", 40)  # nothing dropped can make room
    with pytest.raises(ContextOverflowError) as info:
        session.send(ask.content)
    assert info.value.drop is None and "shorten the message" in str(info.value)


async def test_tui_offers_the_drop_the_error_carries(monkeypatch) -> None:
    """The TUI reads ``error.drop``, not the wording of the message."""
    app = make_app()
    async with running(app) as (pilot, notes):
        for n in range(3):
            await submit(pilot, f"question {n}")
        screen = await chat_screen(pilot)
        session = screen.session
        real_send = session.send
        refusals = []

        def send(text):
            if not refusals:
                refusals.append(text)
                raise ContextOverflowError("no room for this turn", drop=2)
            return real_send(text)

        monkeypatch.setattr(session, "send", send)
        await submit(pilot, "the long one", wait=False)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Drop 2" in str(app.screen.query_one("#yes").label)
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not screen.generating and len(session.messages) == 4)
        await idle(pilot, screen)
        users = [m.content for m in session.messages if m.role == "user"]
        assert users == ["question 2", "the long one"]


# ---- a 100,000-character paste ------------------------------------------------------------


async def paste(pilot, text: str) -> None:
    screen = await chat_screen(pilot)
    screen.prompt.focus()
    pilot.app.post_message(events.Paste(text))  # as the terminal driver delivers a paste
    await wait_for(pilot, lambda: len(screen.prompt.text) >= len(text.strip()) > 0)
    await pilot.pause()


async def test_huge_paste_too_long_for_the_context_is_refused_and_kept() -> None:
    app = make_app(FakeEngine(context_length=8192))
    async with running(app) as (pilot, notes):
        await paste(pilot, PASTE)
        screen = await chat_screen(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("shorten the message" in t for t in texts(notes)))
        await idle(pilot, screen)
        assert screen.session.messages == []
        assert screen.prompt.text == PASTE.strip()  # nothing lost: the text is back to edit
        assert not screen.conversation.query(UserMessage)
        screen.prompt.clear()
        await submit(pilot, "a short one")  # still responsive
        assert len(screen.session.messages) == 2


async def test_huge_paste_that_fits_is_sent_and_shown() -> None:
    app = make_app(FakeEngine(lambda q: f"got {len(q)} characters", context_length=400_000))
    async with running(app) as (pilot, notes):
        await paste(pilot, PASTE)
        screen = await chat_screen(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.session.messages) == 2, timeout=60)
        await idle(pilot, screen)
        assert screen.session.messages[0].content == PASTE.strip()
        assert screen.session.messages[1].content == f"got {len(PASTE.strip())} characters"
        assert str(screen.conversation.query_one(UserMessage).render()) == PASTE.strip()


def test_huge_paste_in_plain_mode(engine) -> None:
    session = greedy_session(engine)
    out = io.StringIO()
    chat = PlainChat(session, Console(file=out, width=100, force_terminal=False))
    assert chat.run(EOFRead([PASTE, "hello", "/stats"])) == 0
    text = out.getvalue()
    assert "error: this turn needs" in text and "shorten the message" in text
    assert [m.content for m in session.messages if m.role == "user"] == ["hello"]
    assert "turns: 1" in text


def test_huge_prompt_on_stdin_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    result = run_smolchat(
        [str(tiny_model), "-p", "-", "--device", "cpu"],
        input=PASTE.encode(),
        env=quiet_env(tmp_path),
    )
    assert "shorten the prompt or lower --max-new-tokens" in one_line_error(result)


# ---- invalid UTF-8 and control characters ---------------------------------------------------


def test_text_helpers() -> None:
    assert valid_text("ok \ud800 \udcff é") == "ok \ufffd \ufffd é"
    assert valid_text("plain") == "plain"
    shown = printable(NASTY)
    assert not set(shown) & CONTROL
    assert "\u241b]0;PWNED\u2407" in shown and "\u2400" in shown and "\u2421" in shown
    assert "\t" in shown and printable("a\r\nb\nc") == "a\nb\nc"
    assert printable("x\ud800y") == "x\ufffdy"
    assert printable("Zürich 日本 🍎") == "Zürich 日本 🍎"


def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(tiny_model, tmp_path) -> None:
    result = run_smolchat(
        [str(tiny_model), "-p", "-", "--device", "cpu", "--max-new-tokens", "4"],
        input=b"caf\xe9 \xff\xfe ok \x00\x1b[2J\n",
        env=quiet_env(tmp_path),
    )
    err = without_cut_note(result.stderr)
    assert result.returncode in ANSWERED, err
    assert err.count("\n") == 1 and "not valid UTF-8 (byte 3)" in err and "Traceback" not in err


def test_stdin_bytes_reach_the_model_as_text(monkeypatch) -> None:
    fake = FakeEngine(lambda q: "fine")
    monkeypatch.setattr(cli, "load_engine", lambda config, progress=None: fake)
    result = runner.invoke(
        cli.cli, ["m", "-p", "-"], input=b"caf\xe9 \x00\x1b[2J \xf0\x9f\x8d\x8e\n"
    )
    assert result.exit_code == 0 and result.stdout == "fine\n"
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "caf\ufffd \x00\x1b[2J 🍎<|im_end|>" in prompt  # verbatim but for the bad byte


def test_plain_repl_survives_bad_bytes_on_a_strict_stdin(tiny_model, tmp_path) -> None:
    lines = b"caf\xe9 au lait\n/stats\n/exit\n"
    result = run_smolchat(
        [str(tiny_model), "--plain", "--no-autosave", "--device", "cpu", "--max-new-tokens", "3"],
        input=lines,
        env=quiet_env(tmp_path, PYTHONIOENCODING="utf-8:strict"),
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "turns: 1" in out and "Traceback" not in result.stderr.decode()


def test_lone_surrogates_become_replacement_characters(engine) -> None:
    session = greedy_session(engine)
    finished(session.send("escaped byte \udcff and half a pair \ud83c"))
    assert session.messages[0].content == "escaped byte \ufffd and half a pair \ufffd"
    run_command(session, "/system be \udcff brief")
    assert session.system_prompt == "be \ufffd brief"
    finished(session.send("again"))


async def test_control_characters_are_shown_not_obeyed_in_the_tui() -> None:
    reply = f"Here: {NASTY}\n\n```\ncode {NASTY}\n```"
    app = make_app(FakeEngine(lambda q: reply))
    async with running(app) as (pilot, notes):
        await paste(pilot, NASTY)
        screen = await chat_screen(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.session.messages) == 2)
        await idle(pilot, screen)
        # the conversation keeps the text as typed (the model sees it), the screen shows it safely
        typed = NASTY.replace("\r", "\n")  # the text area takes a lone CR as a line break
        assert screen.session.messages[0].content == typed.strip()
        assert screen.session.messages[1].content == reply
        shown = shown_text(screen)
        assert "PWNED" in shown and "\u241b]0;PWNED" in shown
        assert not set(shown) & CONTROL
        assert not set(app.export_screenshot()) & (CONTROL - {"\r"})
        last = screen.conversation.query(AssistantMessage).last()
        assert last.answer_text == reply  # copying the reply gives it exactly
        await command(pilot, "/system " + NASTY)
        await command(pilot, "/system")
        assert not set(shown_text(screen)) & CONTROL


def test_control_characters_are_shown_not_obeyed_in_plain_mode() -> None:
    fake = FakeEngine(
        lambda q: "<think>\nhm \x1b[31m\n</think>\nanswer \x1b]52;c;cHduZWQ=\x07 done"
    )
    session = ChatSession(fake)
    out = io.StringIO()
    terminal = Console(file=out, width=100, force_terminal=True, color_system=None)
    chat = PlainChat(session, terminal)  # a terminal without colours: no ESC of its own
    assert chat.run(EOFRead(["say \x1b[2J it", "/system x\x1by", "/system"])) == 0
    text = out.getvalue()
    assert "answer \u241b]52;c;cHduZWQ=\u2407 done" in text and "hm \u241b[31m" in text
    assert "x\u241by" in text
    assert not set(text) & CONTROL
    assert session.messages[1].content == "answer \x1b]52;c;cHduZWQ=\x07 done"


# ---- /help ----------------------------------------------------------------------------------


def test_help_table_keeps_every_usage_in_its_cell(engine) -> None:
    session = greedy_session(engine)
    table = run_command(session, "/help").message
    tokens = MarkdownIt("commonmark").enable("table").parse(table)
    cells = [t.children[0].content for t in tokens if t.type == "inline" and t.children]
    usages = [c for c in cells if c.startswith("/")]
    assert usages == [c.usage for c in COMMANDS.values()]  # "/system [TEXT | --clear]" whole
