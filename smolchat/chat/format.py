"""The one place that words reply endings, speed figures and context use for people.

Used by the status bar, ``/stats``, the line under each reply (TUI and ``--plain``), the
stderr note of ``-p`` and the transcript, so each figure reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smolchat.backend.types import GenerationStats

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


def stats_from_record(stats: GenerationStats | Mapping[str, Any] | None) -> GenerationStats | None:
    """Stats as stored in a transcript (a dict) or live, as GenerationStats (unknown keys go)."""
    if stats is None or isinstance(stats, GenerationStats):
        return stats
    known = GenerationStats.__dataclass_fields__
    try:
        return GenerationStats(**{k: v for k, v in stats.items() if k in known})
    except TypeError:
        return None


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
