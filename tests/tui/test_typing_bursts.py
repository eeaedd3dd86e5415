"""Keys as a terminal delivers them: a burst of key events queued at once (tmux send-keys, a fast
typist, a paste without bracketed paste), right after the chat screen shows.

``pilot.press`` waits for each key to be handled before the next, so it never saw the bug where
the prompt's Enter (a priority binding, run by the app as the key arrived) sent the text before
the characters queued just ahead of it had reached the text area: half a message was sent, or
nothing and a second Enter sent it. These tests post the keys the way the driver does.
"""

from __future__ import annotations

import pytest
from textual import events
from textual.app import App
from textual.keys import _character_to_key
from textual.pilot import Pilot

from smolchat.chat.turns import UserTurn
from smolchat.tui.screens.chat import ChatScreen
from smolchat.tui.widgets.conversation import ConversationView
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import idle, running, wait_for


def burst(app: App, *keys: str) -> None:
    """Queue ``keys`` at once, as the terminal driver does: text is typed character by
    character, names such as ``"enter"`` or ``"ctrl+g"`` are keys."""
    for key in keys:
        if key in ("enter", "escape", "tab") or key.startswith(("ctrl+", "alt+")):
            app.post_message(events.Key(key, "\r" if key == "enter" else None))
            continue
        for char in key:
            app.post_message(events.Key(_character_to_key(char), char))


def user_texts(screen: ChatScreen) -> list[str]:
    return [m.content for m in screen.session.messages if isinstance(m, UserTurn)]


def long_reply(_question: str) -> str:
    return " ".join(f"word{i}" for i in range(300))


async def chat_shown(pilot: Pilot, app: App) -> ChatScreen:
    """The chat screen, the moment it shows (no pause after: the keys come at once)."""
    await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(("What is the capital of France?", "enter"), id="typed-as-the-screen-shows"),
        pytest.param(
            ("/stats", "enter", "What is the capital of France?", "enter"),
            id="right-after-a-command",  # the message lost its first letters
        ),
    ],
)
async def test_a_message_typed_in_one_burst_is_sent_whole(keys: tuple[str, ...]) -> None:
    app = make_app()
    async with running(app) as (pilot, _):
        screen = await chat_shown(pilot, app)
        burst(app, *keys)  # no pause: as tmux sends it
        await wait_for(pilot, lambda: len(screen.session.messages) >= 2)
        await idle(pilot, screen)
        assert user_texts(screen) == ["What is the capital of France?"]
        assert screen.prompt.text == ""
        assert screen.prompt.has_focus


@pytest.mark.parametrize("focus", ["conversation", "prompt"])
async def test_one_escape_stops_the_reply(focus: str) -> None:
    engine = FakeEngine(long_reply, delay=0.05)
    app = make_app(engine)
    async with running(app) as (pilot, _):
        screen = await chat_shown(pilot, app)
        burst(app, "count", "enter")
        await wait_for(pilot, lambda: screen.generating)
        if focus == "conversation":
            await pilot.press("alt+up")  # a message highlighted: the conversation has the focus
            assert screen.query_one(ConversationView).has_focus
            await pilot.press("escape")
        else:
            burst(app, "escape")
        await idle(pilot, screen)
        assert screen.session.messages[-1].finish_reason == "cancelled"
        assert screen.prompt.has_focus  # and back to the prompt
