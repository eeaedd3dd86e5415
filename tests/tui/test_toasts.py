"""Notifications at 80x24 stay clear of the prompt and the status bar, however many come at
once (four quick /set errors stacked over both). REAL local backend (tiny SmolLM3, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets._toast import Toast

import smolchat
from smolchat.tui.widgets.status import StatusBar
from tests.tui.helpers import command
from tests.tui.test_real_backend import real_app


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


async def test_many_errors_in_a_row_never_cover_the_prompt(engine, tmp_path) -> None:
    app = real_app(engine, tmp_path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        for n in range(6):
            screen = await command(pilot, f"/set nosuch{n} 1")
        await pilot.pause(0.3)
        await pilot.pause()
        screen.prompt.load_text("\n".join("line" for _ in range(12)))  # the tallest prompt
        await pilot.pause()
        top = min(screen.prompt.region.y, screen.query_one(StatusBar).region.y)

        def toast_at(x: int, y: int) -> Toast | None:
            widget, _ = app.screen.get_widget_at(x, y)
            return next((w for w in (widget, *widget.ancestors) if isinstance(w, Toast)), None)

        covered = [(x, y) for y in range(top, 24) for x in range(0, 80, 4) if toast_at(x, y)]
        assert not covered, f"notifications cover the prompt / status bar at {covered[:3]}"
        shown = {toast_at(x, y) for y in range(top) for x in range(0, 80, 4)} - {None}
        assert shown, "no notification shows"
        newest = max(shown, key=lambda t: t.region.y)  # type: ignore[union-attr]
        assert "nosuch5" in str(newest.render())  # the newest one shows
