"""The status bar: model, device, precision, think mode, sampling, context and speed."""

from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

from smolchat.engine.types import GenerationStats


@dataclass(frozen=True)
class StatusInfo:
    """What the status bar shows (built from the session on the UI thread)."""

    model: str
    device: str
    precision: str  # dtype, or the quantization
    thinking: bool
    temperature: float
    top_p: float
    context_used: int
    context_limit: int
    last_stats: GenerationStats | None = None
    busy: bool = False

    def render_line(self) -> str:
        parts = [
            self.model,
            self.device,
            self.precision,
            "think" if self.thinking else "no_think",
            f"T {self.temperature:g}",
            f"top_p {self.top_p:g}",
            f"ctx {self.context_used:,}/{self.context_limit:,}",
        ]
        stats = self.last_stats
        if self.busy:
            parts.append("● generating")
        elif stats is not None and stats.generated_tokens:
            parts.append(f"{stats.decode_tok_s:.1f} tok/s")
            parts.append(f"TTFT {stats.ttft_s:.2f}s")
        return " │ ".join(parts)


class StatusBar(Static):
    """One line docked at the bottom of the chat screen."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)
        self.info: StatusInfo | None = None

    def show(self, info: StatusInfo) -> None:
        if info != self.info:
            self.info = info
            self.update(info.render_line())
