"""The loading screen: which model, where and how, and real progress of download and weights.

What the user types meanwhile is kept (type-ahead): it is shown under the progress bar and
handed to the chat screen's prompt; Enter marks it to be sent as soon as the model is ready.
"""

from __future__ import annotations

from pathlib import Path

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Label, ProgressBar, Static

from smolchat.chat.text import lf_line_ends, printable
from smolchat.tui.widgets.prompt import NEWLINE_KEYS

TYPED_SHOWN = 48  # characters of type-ahead shown on the loading screen
STAGES = {
    "download": "Downloading",
    "weights": "Loading weights",
    "compile": "Tuning and capturing the GPU decode step (first use: ~15 s)",
}


class LoadingScreen(Screen[None]):
    """Shown while the model loads; fed by messages posted from the loading thread."""

    CSS_PATH = "../loading.tcss"

    class Progress(Message):
        """``stage`` ("download": bytes, "weights": tensors), ``done`` of ``total``."""

        def __init__(self, stage: str, done: int, total: int | None) -> None:
            super().__init__()
            self.stage = stage
            self.done = done
            self.total = total

    class Placement(Message):
        """The device and dtype chosen for the model."""

        def __init__(self, device: str, dtype: str) -> None:
            super().__init__()
            self.device = device
            self.dtype = dtype

    def __init__(self, model: str, *, device: str, dtype: str, quantize: str | None) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.typed = ""  # type-ahead: what the user typed while the model loads
        self.send_when_ready = False  # Enter was pressed: send ``typed`` once loaded

    def compose(self) -> ComposeResult:
        with Center(), Vertical(id="loading-box"):
            yield Label("smolchat", id="loading-title")
            path = Path(self.model).expanduser()
            if path.exists():  # a folder or file: its name, then where it is
                yield Static(path.name, id="loading-model", markup=False)
                yield Static(str(path.resolve().parent), id="loading-where", markup=False)
            else:
                yield Static(self.model, id="loading-model", markup=False)
            yield Static(self._placement_text(), id="loading-placement", markup=False)
            yield Static("Starting…", id="loading-stage", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="loading-bar")
            yield Static("", id="loading-typed", markup=False)

    def on_mount(self) -> None:
        self.query_one("#loading-typed", Static).display = False

    # ---- type-ahead -------------------------------------------------------------------
    def on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            self.send_when_ready = bool(self.typed.strip())
        elif key in NEWLINE_KEYS:
            self.typed += "\n"
        elif key == "backspace":
            self.typed = self.typed[:-1]
            self.send_when_ready = False
        elif event.is_printable and event.character:
            self.typed += event.character
            self.send_when_ready = False
        else:
            return
        event.stop()
        self._show_typed()

    def on_paste(self, event: events.Paste) -> None:
        self.typed += lf_line_ends(event.text)
        self.send_when_ready = False
        event.stop()
        self._show_typed()

    def _show_typed(self) -> None:
        typed = self.query_one("#loading-typed", Static)
        typed.display = bool(self.typed)
        last = self.typed.split("\n")[-1]  # the end of what was typed, as the prompt shows it
        shown = last if len(last) <= TYPED_SHOWN else "…" + last[-TYPED_SHOWN:]
        if "\n" in self.typed:
            shown = "… " + shown
        when = "sends when the model is ready" if self.send_when_ready else "Enter: send when ready"
        typed.update(printable(f"› {shown}\n  ({when})"))

    def _placement_text(self) -> str:
        quant = self.quantize or "none"
        return f"device {self.device} · dtype {self.dtype} · quantization {quant}"

    @on(Placement)
    def _on_placement(self, message: Placement) -> None:
        self.device, self.dtype = message.device, message.dtype
        self.query_one("#loading-placement", Static).update(self._placement_text())

    @on(Progress)
    def _on_progress(self, message: Progress) -> None:
        label = STAGES.get(message.stage, message.stage.capitalize())
        if message.stage == "download":
            amount = _bytes(message.done) + (f" / {_bytes(message.total)}" if message.total else "")
        elif message.stage == "compile":
            amount = ""
        else:
            amount = f"{message.done:,}" + (f" / {message.total:,}" if message.total else "")
            amount += " tensors" if message.stage == "weights" else ""
        self.query_one("#loading-stage", Static).update(f"{label}  {amount}")
        self.query_one("#loading-bar", ProgressBar).update(
            total=message.total, progress=message.done
        )


def _bytes(n: int) -> str:
    """A byte count in human units."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
