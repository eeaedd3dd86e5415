"""Pilot helpers shared by the TUI tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from textual.app import App
from textual.message import Message
from textual.notifications import Notification, Notify
from textual.pilot import Pilot

from smolchat.tui.screens.chat import ChatScreen
from smolchat.tui.widgets.status import StatusBar

SIZE = (100, 30)


@asynccontextmanager
async def running(
    app: App, size: tuple[int, int] = SIZE
) -> AsyncIterator[tuple[Pilot, list[Notification]]]:
    """Run ``app`` headless; also collect the notifications it shows."""
    notes: list[Notification] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            notes.append(message.notification)

    async with app.run_test(size=size, message_hook=hook) as pilot:
        yield pilot, notes


def texts(notes: list[Notification]) -> list[str]:
    return [n.message for n in notes]


async def wait_for(pilot: Pilot, condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.02)


async def chat_screen(pilot: Pilot) -> ChatScreen:
    """Wait for the model to load; return the chat screen."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    await pilot.pause()
    return screen


async def submit(pilot: Pilot, text: str, *, wait: bool = True) -> ChatScreen:
    """Send a message; by default wait until the session has recorded the reply."""
    screen = await chat_screen(pilot)
    before = len(screen.session.messages)
    screen.prompt.load_text(text)
    screen.prompt.focus()
    await pilot.press("enter")
    if wait:
        await wait_for(pilot, lambda: len(screen.session.messages) >= before + 2)
        await idle(pilot, screen)
    return screen


async def command(pilot: Pilot, line: str) -> ChatScreen:
    """Run a slash command from the prompt and let the app settle."""
    screen = await chat_screen(pilot)
    screen.prompt.load_text(line)
    screen.prompt.focus()
    await pilot.press("enter")
    await pilot.pause()
    await idle(pilot, screen)
    return screen


async def idle(pilot: Pilot, screen: ChatScreen) -> None:
    """Wait until no turn is being generated and pending messages are handled."""
    await wait_for(pilot, lambda: not screen.generating)
    await pilot.pause()
    await asyncio.sleep(0)


def status_line(screen: ChatScreen) -> str:
    """The status bar's text as shown."""
    return str(screen.query_one(StatusBar).render())
