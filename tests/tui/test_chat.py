"""Pilot tests of the chat screen: the real app and ChatSession over a fake engine."""

from __future__ import annotations

from textual.widgets import Collapsible, Static
from textual.widgets.markdown import MarkdownFence

from smolchat.tui.screens.chat import ChatScreen
from smolchat.tui.widgets.conversation import AssistantMessage, UserMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import CODE_REPLY, FakeEngine
from tests.tui.helpers import chat_screen, idle, running, status_line, submit, texts, wait_for

LONG_REPLY = "<think>\nLet me count.\n</think>\n" + " ".join(f"w{i}" for i in range(300))


def long_reply(_question: str) -> str:
    return LONG_REPLY


def replies(screen: ChatScreen) -> list[AssistantMessage]:
    return list(screen.query(AssistantMessage))


async def test_type_and_send_shows_the_exchange() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await chat_screen(pilot)
        await pilot.press(*"Hi there")
        assert screen.prompt.text == "Hi there"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.session.messages) == 2)
        await idle(pilot, screen)
        assert screen.prompt.text == ""
        assert [str(u.render()) for u in screen.query(UserMessage)] == ["Hi there"]
        (reply,) = replies(screen)
        assert "def add(a, b):" in reply.answer_text
        assert reply.answer_text == screen.session.messages[-1].content
        assert screen.session.messages[0].content == "Hi there"
        # the status bar shows the model, precision, think mode, context and speed
        line = status_line(screen)
        for part in ("SmolLM3-test", "cpu float32", "think", "T 0.6", "100.0 tok/s"):
            assert part in line
        assert f"ctx {screen.session.context_used():,}/8,192" in line


async def test_reply_streams_then_is_rendered_complete() -> None:
    engine = FakeEngine(delay=0.03)
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "add function please", wait=False)
        await wait_for(pilot, lambda: replies(screen) and replies(screen)[0].answer_text)
        reply = replies(screen)[0]
        partial = reply.answer_text
        assert screen.generating and not reply.finished
        await idle(pilot, screen)
        assert reply.finished and len(reply.answer_text) > len(partial)
        full = screen.session.messages[-1].content
        assert full.startswith(partial.lstrip()[:10]) and reply.answer_text == full
        # the final full update rendered the code block (not lost while streaming)
        assert reply.code_blocks() == ["def add(a, b):\n    return a + b\n"]
        assert reply.answer.source == full
        fences = list(reply.answer.query(MarkdownFence))
        assert [(f.lexer, f.code) for f in fences] == [
            ("python", "def add(a, b):\n    return a + b")
        ]


async def test_reasoning_is_open_while_thinking_and_collapses_for_the_answer() -> None:
    engine = FakeEngine(delay=0.05)
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "hi", wait=False)
        await wait_for(pilot, lambda: replies(screen) and replies(screen)[0].reasoning_text)
        reply = replies(screen)[0]
        box = reply.query_one(".reasoning", Collapsible)
        assert reply.answer_text == ""
        assert box.display and not box.collapsed and box.title == "Thinking…"
        await wait_for(pilot, lambda: reply.answer_text)
        await pilot.pause()
        assert box.collapsed and box.title == "Reasoning"
        await idle(pilot, screen)
        assert box.collapsed
        shown = str(box.query_one(".reasoning-text", Static).render())
        assert "A one-liner will do." in shown
        assert screen.session.messages[-1].reasoning.strip() == shown.strip()


async def test_reasoning_show_hide_command_and_key() -> None:
    async with running(make_app()) as (pilot, notes):
        screen = await submit(pilot, "hi")
        box = replies(screen)[0].query_one(".reasoning", Collapsible)
        assert box.collapsed
        screen = await submit(pilot, "/reasoning show", wait=False)
        await pilot.pause()
        assert not box.collapsed and screen.show_reasoning
        await submit(pilot, "again")
        second = replies(screen)[1].query_one(".reasoning", Collapsible)
        assert not second.collapsed  # stays open after the answer started
        await submit(pilot, "/reasoning hide", wait=False)
        await pilot.pause()
        assert box.collapsed and second.collapsed
        await pilot.press("f2")
        assert not box.collapsed and screen.show_reasoning
        assert "Reasoning shown by default." in texts(notes)


async def test_no_think_reply_has_no_reasoning_block() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await submit(pilot, "/no_think", wait=False)
        await pilot.pause()
        assert screen.session.settings.thinking is False
        assert "no_think" in status_line(screen)
        await submit(pilot, "hi")
        reply = replies(screen)[0]
        assert not reply.query_one(".reasoning", Collapsible).display
        assert reply.answer_text.startswith("Here is a function")
        await pilot.press("ctrl+t")  # back to think mode
        assert screen.session.settings.thinking is True


async def test_escape_stops_within_a_token_and_keeps_the_partial_reply() -> None:
    engine = FakeEngine(long_reply, delay=0.1)
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(pilot, lambda: replies(screen) and len(replies(screen)[0].answer_text) > 8)
        generated_at_press = len(engine.cached_ids) - len(engine.calls[-1]["ids"])
        await pilot.press("escape")
        await idle(pilot, screen)
        last = screen.session.messages[-1]
        assert last.finish_reason == "cancelled"
        assert last.stats.generated_tokens <= generated_at_press + 1
        reply = replies(screen)[0]
        assert reply.has_class("-stopped")
        assert "stopped" in str(reply.query_one(".footer", Static).render())
        assert reply.answer_text == last.content and 0 < len(last.content) < 600
        # the app goes on: the next message is answered
        engine.delay = 0.0
        await submit(pilot, "more")
        assert len(screen.session.messages) == 4


async def test_ctrl_c_stops_a_reply_then_quits_when_idle() -> None:
    engine = FakeEngine(long_reply, delay=0.05)
    app = make_app(engine)
    async with running(app) as (pilot, notes):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(pilot, lambda: replies(screen) and replies(screen)[0].answer_text)
        await pilot.press("ctrl+c")
        await idle(pilot, screen)
        assert screen.session.messages[-1].finish_reason == "cancelled"
        assert app.is_running
        await pilot.press("ctrl+c")  # idle, empty prompt: the first press only warns
        await pilot.pause()
        assert app.is_running
        assert "Press Ctrl+C again to quit (Ctrl+Q quits at once)." in texts(notes)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 0 and app.error is None


async def test_message_sent_while_answering_is_kept_in_the_prompt() -> None:
    engine = FakeEngine(long_reply, delay=0.05)
    async with running(make_app(engine)) as (pilot, notes):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(pilot, lambda: screen.generating)
        screen.prompt.load_text("second")
        await pilot.press("enter")
        assert screen.prompt.text == "second"
        assert any("press Esc" in t for t in texts(notes))
        await pilot.press("escape")
        await idle(pilot, screen)


async def test_enter_sends_ctrl_j_adds_a_line() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await chat_screen(pilot)
        await pilot.press("a", "ctrl+j", "b")
        assert screen.prompt.text == "a\nb" and not screen.session.messages
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.session.messages) == 2)
        assert screen.session.messages[0].content == "a\nb"


async def test_history_up_and_down() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await submit(pilot, "first")
        await submit(pilot, "second")
        prompt = screen.prompt
        await pilot.press(*"draft")
        await pilot.press("up")
        assert prompt.text == "second"
        await pilot.press("up")
        assert prompt.text == "first"
        await pilot.press("up")  # no older entry: stays
        assert prompt.text == "first"
        await pilot.press("down")
        assert prompt.text == "second"
        await pilot.press("down")
        assert prompt.text == "draft"


async def test_command_hint_and_tab_completion() -> None:
    async with running(make_app()) as (pilot, _):
        screen = await chat_screen(pilot)
        hint = screen.query_one("#hint", Static)
        await pilot.press(*"/s")
        assert hint.display
        shown = str(hint.render())
        for name in ("/system", "/set", "/save", "/stats"):
            assert name in shown
        assert "/theme" not in shown
        await pilot.press("backspace", "backspace", *"/the", "tab")
        assert screen.prompt.text == "/theme "
        await pilot.press(*"no", "tab")
        assert screen.prompt.text == "/theme nord "  # the TUI completes its theme names
        screen.prompt.load_text("/reasoning s")
        screen.prompt.move_cursor(screen.prompt.document.end)
        await pilot.press("tab")
        assert screen.prompt.text == "/reasoning show "
        screen.prompt.load_text("hello")
        await pilot.pause()
        assert not hint.display


async def test_copy_last_reply_and_code_block() -> None:
    app = make_app()
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        await pilot.press("ctrl+y")
        assert "No reply to copy yet." in texts(notes)
        await submit(pilot, "code please")
        await pilot.press("ctrl+y")
        assert app.clipboard == screen.session.messages[-1].content
        await pilot.press("ctrl+o")
        assert app.clipboard == "def add(a, b):\n    return a + b\n"


async def test_generation_error_is_a_notification_not_a_crash() -> None:
    engine = FakeEngine(fail_after=3)
    app = make_app(engine)
    async with running(app) as (pilot, notes):
        screen = await submit(pilot, "hi")
        reply = replies(screen)[0]
        assert reply.has_class("-error")
        errors = [n for n in notes if n.severity == "error"]
        assert errors and "fake engine failure" in errors[-1].message
        engine.fail_after = None
        await submit(pilot, "again")
        assert screen.session.messages[-1].finish_reason == "stop"
        assert app.is_running


async def test_context_overflow_offers_to_drop_the_oldest_turns() -> None:
    engine = FakeEngine(context_length=600)
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "a" * 150)
        text = "b" * 200
        screen.prompt.load_text(text)
        await pilot.press("enter")
        await wait_for(pilot, lambda: pilot.app.screen is not screen)
        dialog = pilot.app.screen
        assert "/drop 1" in str(dialog.query_one("#confirm-question", Static).render())
        assert screen.prompt.text == text  # taken back while the question is open
        await pilot.press("y")
        await wait_for(pilot, lambda: len(screen.session.messages) == 2)
        await idle(pilot, screen)
        await pilot.pause()
        assert [m.content for m in screen.session.messages][0] == text
        assert [str(u.render()) for u in screen.query(UserMessage)] == [text]
        assert screen.prompt.text == ""


async def test_context_overflow_declined_keeps_everything() -> None:
    engine = FakeEngine(context_length=600)
    async with running(make_app(engine)) as (pilot, _):
        screen = await submit(pilot, "a" * 150)
        screen.prompt.load_text("b" * 200)
        await pilot.press("enter")
        await wait_for(pilot, lambda: pilot.app.screen is not screen)
        await pilot.press("n")
        await wait_for(pilot, lambda: pilot.app.screen is screen)
        assert len(screen.session.messages) == 2 and len(engine.calls) == 1
        assert screen.prompt.text == "b" * 200
        assert len(list(screen.query(UserMessage))) == 1


async def test_fake_reply_is_the_default_code_reply() -> None:
    # guards the fixtures the other tests lean on
    assert "```python" in CODE_REPLY and "<think>" in CODE_REPLY


async def test_a_long_reply_line_wraps_instead_of_losing_its_end() -> None:
    """At 80 columns "cut at max_new_tokens: raise it with /set max_new_tokens N · 5 tokens ·
    … tok/s · TTFT …s" is wider than the message: it wraps, the speed and TTFT stay visible."""
    async with running(make_app(FakeEngine(responder=long_reply)), size=(80, 24)) as (pilot, _):
        screen = await chat_screen(pilot)
        screen.session.settings.max_new_tokens = 5
        await submit(pilot, "count")
        await idle(pilot, screen)
        footer = replies(screen)[0].query_one(".footer", Static)
        text = str(footer.render())
        assert "max_new_tokens" in text and "TTFT" in text
        assert footer.size.height >= 2 and footer.size.width < len(text)
