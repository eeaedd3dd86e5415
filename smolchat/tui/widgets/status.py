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

    def parts(self) -> list[Field]:
        """Each field with its priority (the lowest go first when space is short) and a
        shorter spelling tried before anything is dropped."""
        name = self.model.rstrip("/").rsplit("/", 1)[-1]  # the repo name, not its owner
        parts = [
            Field(4, name, _short_name(name), squeeze=MIN_NAME),
            Field(5, self.where, self.where.split(" (", 1)[0]),  # "cpu int4 (GGUF Q4_1)"
            Field(3, f"T {self.temperature:g}"),
            Field(1, f"top_p {self.top_p:g}"),
            Field(7, f"ctx {context_use(self.context_used, self.context_limit)}"),
        ]
        if self.thinking is not None:
            parts.insert(2, Field(6, "think" if self.thinking else "no_think"))
        stats = self.last_stats
        if self.busy and self.prefill is not None:
            parts.append(Field(8, f"prefill {self.prefill.done:,}/{self.prefill.total:,}"))
        elif self.busy:
            parts.append(Field(8, "● generating"))
        elif stats is not None and stats.generated_tokens:
            parts.append(Field(8, f"{stats.decode_tok_s:.1f} tok/s"))
            parts.append(Field(2, f"TTFT {stats.ttft_s:.2f}s"))
        return parts

    def render_line(self, width: int = 1_000) -> str:
        """The fields that fit in ``width`` cells, in their order: first the long ones take
        their short spelling (least important first), then the least important go; before
        one of priority KEEP or more goes, a squeezable field (the model's name) is cut."""
        fields = self.parts()
        texts = [f.text for f in fields]
        order = sorted(range(len(fields)), key=lambda k: fields[k].priority)  # least first

        def line() -> str:
            return SEPARATOR.join(t for t in texts if t)

        for k in order:
            if len(line()) <= width:
                break
            texts[k] = fields[k].short or texts[k]
        while len(line()) > width and sum(1 for t in texts if t) > 1:
            k = next(k for k in order if texts[k])
            if fields[k].priority >= KEEP:
                for j, f in enumerate(fields):
                    over = len(line()) - width
                    if over > 0 and f.squeeze and len(texts[j]) > f.squeeze:
                        texts[j] = texts[j][: max(f.squeeze, len(texts[j]) - over) - 1] + "…"
                if len(line()) <= width:
                    break
            texts[k] = ""
        return line()


@dataclass(frozen=True)
class Field:
    """One field of the status bar: ``priority`` (higher stays longer), its ``text``, and a
    ``short`` spelling used when the line is too long (None: none)."""

    priority: int
    text: str
    short: str | None = None
    squeeze: int = 0  # > 0: may be cut (ending in …) to this many cells to keep others


KEEP = 3  # fields of this priority or more (the temperature and up) outrank the name's length
MAX_NAME = 24  # cells of the model's name once the line is short of space
MIN_NAME = 12  # ... and at the least, before the temperature goes


def _short_name(name: str) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``SmolLM2-135M-Instruct.Q4_1``, cut to MAX_NAME
    cells with an ellipsis."""
    name = name.removesuffix(".gguf")
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


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
