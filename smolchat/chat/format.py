"""The one place that words reply endings, speed figures and context use for people.

Used by the status bar, ``/stats``, the line under each reply (TUI and ``--plain``), the
stderr note of ``-p`` and the transcript, so each figure reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smolchat.backend.types import FINISH_REASONS, GenerationStats

__all__ = ["context_use", "finish_note", "reply_line", "stats_from_record"]

# How a reply ended, when that is worth saying, with what to do about it.
_NOTES = {
    "cancelled": "stopped",
    "length": "cut at max_new_tokens: raise it with /set max_new_tokens N",
    "context": "cut: the context window is full: free room with /drop N or /clear",
}


def finish_note(finish_reason: str | None) -> str | None:
    """``stopped``, a cut with its advice, or None (a normal stop; errors say their own)."""
    return _NOTES.get(finish_reason or "")


def context_use(used: int, limit: int) -> str:
    """``338/8,192`` tokens of the context window (the same figures everywhere)."""
    return f"{used:,}/{limit:,}"


_COUNTS = ("prompt_tokens", "cached_tokens", "prefilled_tokens", "generated_tokens")
_SECONDS = ("ttft_s", "decode_s")


def stats_from_record(stats: GenerationStats | Mapping[str, Any] | None) -> GenerationStats | None:
    """Stats as stored in a transcript (a dict) or live, as GenerationStats.

    Unknown keys and values of the wrong type (an edited file) are left out: those figures
    read as 0.
    """
    if stats is None or isinstance(stats, GenerationStats):
        return stats
    out = GenerationStats()
    for key in _COUNTS:
        value = stats.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(out, key, value)
    for key in _SECONDS:
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(out, key, float(value))
    finish = stats.get("finish_reason")
    if finish in FINISH_REASONS:
        out.finish_reason = finish
    return out


def reply_line(
    finish_reason: str | None,
    stats: GenerationStats | Mapping[str, Any] | None,
    error: str | None = None,
    *,
    marks: bool = False,
) -> str:
    """One line under a reply: how it ended (if unusual) and its speed.

    ``42 tokens · 35.0 tok/s · TTFT 0.12s``; ``marks`` adds the TUI's glyphs (■ … ✗).
    """
    parts: list[str] = []
    note = finish_note(finish_reason)
    if finish_reason == "error":
        parts.append(("✗ " if marks else "error: ") + (error or "generation failed"))
    elif note is not None:
        glyph = {"cancelled": "■ "}.get(finish_reason or "", "… ")
        parts.append((glyph if marks else "") + note)
    st = stats_from_record(stats)
    if st is not None:
        parts += st.summary()
    return " · ".join(parts)
