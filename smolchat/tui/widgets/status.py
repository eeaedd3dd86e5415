"""The status bar: model, device, precision, think mode, sampling, context and speed."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.widgets import Static

from smolchat.backend.types import GenerationStats, PrefillProgress
from smolchat.chat.format import context_use

SEPARATOR = " │ "


@dataclass(frozen=True)
class StatusInfo:
    """What the status bar shows (built from the session on the UI thread)."""

    model: str
    where: str  # the backend's description: "cpu float32", "cuda nf4", "remote: URL"
    thinking: bool | None  # None: the model has no thinking mode (nothing to show)
    temperature: float
    top_p: float
    context_used: int
    context_limit: int
    last_stats: GenerationStats | None = None
    busy: bool = False
    prefill: PrefillProgress | None = None  # while busy: how much of a long prompt is read

    def parts(self) -> list[tuple[int, str]]:
        """(priority, text) of each field; the lowest priorities go first when space is short."""
        parts = [
            (4, self.model.rstrip("/").rsplit("/", 1)[-1]),  # the repo name, not its owner
            (5, self.where),
            (3, f"T {self.temperature:g}"),
            (1, f"top_p {self.top_p:g}"),
            (7, f"ctx {context_use(self.context_used, self.context_limit)}"),
        ]
        if self.thinking is not None:
            parts.insert(2, (6, "think" if self.thinking else "no_think"))
        stats = self.last_stats
        if self.busy and self.prefill is not None:
            parts.append((8, f"prefill {self.prefill.done:,}/{self.prefill.total:,}"))
        elif self.busy:
            parts.append((8, "● generating"))
        elif stats is not None and stats.generated_tokens:
            parts.append((8, f"{stats.decode_tok_s:.1f} tok/s"))
            parts.append((2, f"TTFT {stats.ttft_s:.2f}s"))
        return parts

    def render_line(self, width: int = 1_000) -> str:
        """The fields that fit in ``width`` cells, in their order."""
        parts = self.parts()
        while len(parts) > 1 and len(SEPARATOR.join(t for _, t in parts)) > width:
            parts.remove(min(parts, key=lambda p: p[0]))
        return SEPARATOR.join(text for _, text in parts)


class StatusBar(Static):
    """One line docked at the bottom of the chat screen."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)
        self.info: StatusInfo | None = None

    def show(self, info: StatusInfo) -> None:
        if info != self.info:
            self.info = info
            self._render_info()

    def on_resize(self, event: events.Resize) -> None:
        self._render_info()

    def _render_info(self) -> None:
        if self.info is not None:
            width = self.content_size.width or self.app.size.width - 2
            self.update(self.info.render_line(width))
