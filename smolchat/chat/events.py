"""Events a :class:`~smolchat.chat.session.ChatSession` streams while it answers."""

from __future__ import annotations

from dataclasses import dataclass

from smolchat.backend.types import (
    AnswerDelta,
    FinishReason,
    GenerationStats,
    PrefillProgress,
    ReasoningDelta,
)

__all__ = ["AnswerDelta", "ChatEvent", "PrefillProgress", "ReasoningDelta", "TurnFinished"]


@dataclass
class TurnFinished:
    """The reply is complete (or stopped, or failed); the history is updated."""

    finish_reason: FinishReason
    stats: GenerationStats
    reasoning: str
    answer: str
    error: str | None = None  # one-line message when finish_reason == "error"


# PrefillProgress: the backend is still reading a long prompt (before the first delta; a UI
# may show it or ignore it).
ChatEvent = ReasoningDelta | AnswerDelta | PrefillProgress | TurnFinished
