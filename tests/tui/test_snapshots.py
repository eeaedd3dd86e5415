"""Screenshots of the main screens (fixed size, fake engine, deterministic).

Update them after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and look at the SVGs in ``tests/tui/__snapshots__/``.
"""

from __future__ import annotations

import threading

from textual.pilot import Pilot

from smolchat.tui.widgets.conversation import NoteMessage
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, submit, wait_for

SIZE = (100, 30)


def test_loading_screen(snap_compare) -> None:
    release = threading.Event()

    def load(progress):
        while not release.wait(0.02):  # progress() raises once the app quits
            progress("weights", 3, 8)
        return FakeEngine()

    app = make_app(
        load=load, placement=lambda: ("cuda", "bfloat16"), quantize="nf4", model="SmolLM3-3B"
    )

    async def run_before(pilot: Pilot) -> None:
        stage = pilot.app.screen.query_one("#loading-stage")
        await wait_for(pilot, lambda: "3 / 8" in str(stage.render()))
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        release.set()


def test_chat_with_reasoning_and_code(snap_compare) -> None:
    app = make_app(show_reasoning=True)

    async def run_before(pilot: Pilot) -> None:
        screen = await submit(pilot, "Write an add function in Python")
        screen.prompt.cursor_blink = False  # the blink phase made the picture differ
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_light_theme_small_terminal(snap_compare) -> None:
    app = make_app(theme="light")

    async def run_before(pilot: Pilot) -> None:
        await submit(pilot, "Write an add function in Python")
        screen = await chat_screen(pilot)
        screen.prompt.cursor_blink = False  # a blinking cursor made the picture differ by phase
        screen.prompt.load_text("/s")
        hint = screen.query_one("#hint")
        await wait_for(pilot, lambda: hint.display and "/set" in str(hint.render()))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_help_screen(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await chat_screen(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_welcome_panel_80x24(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await chat_screen(pilot)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_wide_terminal_keeps_messages_readable_200x50(snap_compare) -> None:
    app = make_app(
        FakeEngine(
            lambda q: "word " * 120 + "\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
        )
    )

    async def run_before(pilot: Pilot) -> None:
        await submit(pilot, "A long answer please")
        await pilot.press("alt+up")  # the reply highlighted
        await pilot.pause()

    assert snap_compare(app, terminal_size=(200, 50), run_before=run_before)


def test_stats_and_status_bar_80x24(snap_compare) -> None:
    """A GGUF's long file name and description at 80 columns: the status bar shortens them
    and keeps the temperature; /stats keeps every figure beside its unit."""
    name = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    engine = FakeEngine(lambda q: "The capital of France is Paris.", model_name=name)
    engine.quantize = "int4 (GGUF Q4_1)"

    async def run_before(pilot: Pilot) -> None:
        screen = await submit(pilot, "What is the capital of France?")
        screen.prompt.cursor_blink = False
        screen.prompt.load_text("/stats")
        await pilot.press("enter")
        notes = screen.query(NoteMessage)
        await wait_for(pilot, lambda: any("first token after" in n.source for n in notes))
        await pilot.pause()

    assert snap_compare(make_app(engine), terminal_size=(80, 24), run_before=run_before)
