"""TUI faults (Pilot): a resize while streaming, typing while the model loads, a chat template
that raises, and unexpected errors: each is a notification and the app keeps running, with
nothing the user typed lost.

Already covered in tests/tui: a generation error mid-reply (test_chat.py::
test_generation_error_is_a_notification_not_a_crash), Esc/Ctrl+C stop (::test_escape_stops_
within_a_token_and_keeps_the_partial_reply, ::test_ctrl_c_stops_a_reply_then_quits_when_idle),
a message sent while answering (::test_message_sent_while_answering_is_kept_in_the_prompt),
bad commands (test_commands.py::test_bad_command_is_a_notification), quitting while loading
(test_app.py::test_quitting_while_loading_stops_the_loader).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from textual import events

import smolchat
from smolchat.errors import SmolchatError
from smolchat.tui.screens.chat import ChatScreen
from smolchat.tui.screens.loading import LoadingScreen
from smolchat.tui.widgets.conversation import AssistantMessage, UserMessage
from tests.reliability.helpers import ROOT
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, idle, running, submit, texts, wait_for

WORDS = " ".join(f"word{i}" for i in range(300))


async def test_resize_while_streaming() -> None:
    app = make_app(FakeEngine(lambda q: WORDS, delay=0.005))
    async with running(app, size=(100, 30)) as (pilot, notes):
        screen = await submit(pilot, "count", wait=False)
        await wait_for(
            pilot, lambda: "word20" in (screen.turn.reply.answer_text if screen.turn else "")
        )
        for size in ((40, 12), (160, 50), (20, 8), (100, 30)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.05)
            assert app.size == size
        await wait_for(pilot, lambda: len(screen.session.messages) == 2)
        await idle(pilot, screen)
        reply = screen.conversation.query(AssistantMessage).last()
        assert reply.answer_text == WORDS and screen.session.messages[1].content == WORDS
        assert not [n for n in notes if n.severity == "error"]
        await submit(pilot, "again")  # still working
        assert len(screen.session.messages) == 4


# ---- typing while the model loads ------------------------------------------------------------


def gated_app(**options):
    """An app whose model loads only when ``gate`` is set."""
    gate = threading.Event()
    engine = FakeEngine(lambda q: f"you said {q!r}")

    def load(progress):
        progress("weights", 1, 4)
        assert gate.wait(30)
        progress("weights", 4, 4)
        return engine

    return make_app(engine, load=load, **options), gate


@pytest.fixture
def opened():
    """Gates to open at the end of a test, whatever happens (no loader thread left waiting)."""
    gates: list[threading.Event] = []
    yield gates.append
    for gate in gates:
        gate.set()


async def type_keys(pilot, text: str) -> None:
    for char in text:
        await pilot.press("space" if char == " " else char)


@pytest.mark.parametrize("enter", [True, False], ids=["enter-sends", "kept-in-prompt"])
async def test_typing_while_loading_is_kept(enter: bool, opened) -> None:
    app, gate = gated_app()
    opened(gate)
    async with running(app) as (pilot, notes):
        await wait_for(pilot, lambda: isinstance(app.screen, LoadingScreen))
        loading = app.screen
        await type_keys(pilot, "helx")
        await pilot.press("backspace")
        await type_keys(pilot, "lo there")
        await pilot.press("shift+enter")
        app.post_message(events.Paste("pasted line"))
        await wait_for(pilot, lambda: loading.typed.endswith("pasted line"))
        if enter:
            await pilot.press("enter")
        assert loading.typed == "hello there\npasted line"
        shown = str(loading.query_one("#loading-typed").render())
        assert "pasted line" in shown
        assert ("sends when the model is ready" in shown) is enter
        gate.set()
        screen = await chat_screen(pilot)
        if enter:
            await wait_for(pilot, lambda: len(screen.session.messages) == 2)
            await idle(pilot, screen)
            assert screen.session.messages[0].content == "hello there\npasted line"
            assert screen.prompt.text == ""
        else:
            assert screen.prompt.text == "hello there\npasted line"
            assert screen.session.messages == []
            assert screen.prompt.cursor_location == screen.prompt.document.end


async def test_ctrl_c_while_loading_still_quits_with_typed_text(opened) -> None:
    app, gate = gated_app()
    opened(gate)
    async with running(app) as (pilot, _):
        await wait_for(pilot, lambda: isinstance(app.screen, LoadingScreen))
        await type_keys(pilot, "abc")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running)


# ---- a chat template that raises, unexpected errors --------------------------------------------


@pytest.fixture(scope="module")
def raising_model(tiny_model: Path, tmp_path_factory) -> Path:
    folder = shutil.copytree(tiny_model, tmp_path_factory.mktemp("raising") / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ raise_exception('this template refuses every chat') }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


async def test_template_that_raises_is_a_notification(raising_model: Path) -> None:
    engine = smolchat.load(str(raising_model), device="cpu")
    async with running(make_app(engine)) as (pilot, notes):
        screen = await submit(pilot, "hello there", wait=False)
        await wait_for(pilot, lambda: any("refuses every chat" in t for t in texts(notes)))
        await idle(pilot, screen)
        assert notes[-1].severity == "error" and notes[-1].title == "Generation failed"
        assert screen.session.messages == []
        assert not screen.conversation.query(UserMessage)  # taken back...
        assert screen.prompt.text == "hello there"  # ...and given back to edit
        await command(pilot, "/stats")  # the app keeps running
        assert app_is_chatting(pilot, screen)


def app_is_chatting(pilot, screen: ChatScreen) -> bool:
    return pilot.app.is_running and pilot.app.screen is screen and not screen.generating


async def test_unexpected_error_before_a_turn_gives_the_text_back(monkeypatch) -> None:
    async with running(make_app()) as (pilot, notes):
        screen = await submit(pilot, "first")
        monkeypatch.setattr(screen.session, "send", lambda text: 1 / 0)
        await submit(pilot, "second", wait=False)
        await wait_for(pilot, lambda: any("internal error" in t for t in texts(notes)))
        await idle(pilot, screen)
        assert "ZeroDivisionError" in texts(notes)[-1]
        assert screen.prompt.text == "second"
        assert len(screen.conversation.query(UserMessage)) == 1
        monkeypatch.undo()
        screen.prompt.clear()
        await submit(pilot, "second")
        assert len(screen.session.messages) == 4


async def test_unexpected_error_in_a_command_is_a_notification(monkeypatch) -> None:
    async with running(make_app()) as (pilot, notes):
        screen = await submit(pilot, "first")

        def broken(path):
            raise RuntimeError("a bug in load")

        monkeypatch.setattr(screen.session, "load", broken)
        await command(pilot, "/load some.md")
        assert notes[-1].severity == "error" and "RuntimeError: a bug in load" in notes[-1].message
        assert app_is_chatting(pilot, screen) and len(screen.session.messages) == 2


async def test_failed_retry_shows_the_reply_it_would_replace(monkeypatch) -> None:
    async with running(make_app()) as (pilot, notes):
        screen = await submit(pilot, "first")

        def refusing_stream():  # fails when first advanced, as a stale stream does
            raise SmolchatError("the conversation changed; send it again")
            yield

        monkeypatch.setattr(screen.session, "retry", refusing_stream)
        await command(pilot, "/retry")
        assert "send it again" in texts(notes)[-1]
        replies = screen.conversation.query(AssistantMessage)
        assert (
            len(replies) == 1 and replies.last().answer_text == screen.session.messages[1].content
        )


STUCK_LOADER = """
import time
from pathlib import Path
from smolchat.tui import app as app_module
from smolchat.tui.app import AppOptions, SmolchatApp

def load(progress):
    time.sleep(120)  # a long step that reports no progress (a download stalls, a compile)

class App(SmolchatApp):
    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))

    def on_mount(self):
        super().on_mount()
        self.set_timer(1.0, self.action_stop_or_quit)  # Ctrl+C while loading

app = App(AppOptions(model="m", load_engine=load, make_session=lambda engine: None))
app.run(headless=True)
print("exited", app.return_code, app.error)
"""


def test_quitting_during_a_silent_load_does_not_wait_for_it(tmp_path: Path) -> None:
    script = tmp_path / "stuck_loader.py"  # a file: Textual reads the source of App classes
    script.write_text(STUCK_LOADER)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exited 130 None"  # interrupted (README: exit statuses)
    assert took < 30, f"the app waited {took:.0f}s for the loader"
