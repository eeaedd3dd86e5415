"""The conversation's history as typed records: :class:`UserTurn` and :class:`Reply`.

A :class:`~smolchat.chat.session.ChatSession` keeps ``messages: list[Turn]``. Transcripts store
each record as a JSON object (``role``, ``content``, ...); :func:`from_record` and
:func:`to_record` convert at that boundary, so the file format stays exactly as written so far
(the same keys, in the same order) and every older file loads: missing keys read as None,
values of the wrong type are ignored, and keys this version does not know (written by a later
one) are kept in ``unknown`` so that a load and save never lose them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeGuard, TypeVar

from smolchat.backend.types import FINISH_REASONS, FinishReason, GenerationStats
from smolchat.chat.format import stats_from_record

T = TypeVar("T")

__all__ = ["Reply", "Turn", "UserTurn", "from_record", "to_record"]


@dataclass(frozen=True)
class UserTurn:
    """A message the user sent.

    ``thinking``: the mode a ``/think`` / ``/no_think`` suffix asked for this turn only (None:
    the session's setting); ``time``: when it was sent (ISO 8601, seconds, with offset).
    """

    role: ClassVar[Literal["user"]] = "user"
    content: str
    thinking: bool | None = None
    time: str | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)  # keys of a later smolchat


@dataclass(frozen=True)
class Reply:
    """The model's reply: the answer, its reasoning, how it ended and its figures.

    ``reasoning``: the text of the ``<think>`` block ("" if empty or none; None in transcripts
    written before reasoning was recorded); ``reasoning_block``: whether the reply opened one
    (None: unknown, an old transcript); ``thinking``: the mode the turn ran in;
    ``finish_reason`` and ``stats``: as the backend reported them (None: an old transcript);
    ``error``: one line, set when ``finish_reason == "error"``.
    """

    role: ClassVar[Literal["assistant"]] = "assistant"
    content: str
    reasoning: str | None = None
    thinking: bool | None = None
    reasoning_block: bool | None = None
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    time: str | None = None
    error: str | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)  # keys of a later smolchat
    # ``stats`` as a transcript held it (keys this version lacks, figures left out): written
    # back as it was while ``stats`` still says the same
    stats_record: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def generated_tokens(self) -> int:
        """Tokens the model generated for this reply (0 when not recorded)."""
        n = self.stats.generated_tokens if self.stats is not None else 0
        return n if isinstance(n, int) else 0  # an edited transcript may hold anything

    @property
    def failed_empty(self) -> bool:
        """A failed turn with nothing to show (not part of the dialogue the model sees)."""
        return self.finish_reason == "error" and not self.content and not self.reasoning


Turn = UserTurn | Reply

# the keys each record knows, in the order transcripts have always written them
_USER_KEYS = ("role", "content", "thinking", "time")
_REPLY_KEYS = (
    "role",
    "content",
    "reasoning",
    "thinking",
    "reasoning_block",
    "finish_reason",
    "stats",
    "time",
    "error",
)


def _is_finish_reason(value: object) -> TypeGuard[FinishReason]:
    return value in FINISH_REASONS


class _Reader:
    """Reads a record's known keys; a value it cannot use is kept as it was, in ``unknown``."""

    def __init__(self, record: Mapping[str, Any], known: tuple[str, ...]) -> None:
        self.record = record
        self.unknown = {k: v for k, v in record.items() if k not in known}

    def _kept(self, key: str) -> None:
        if self.record.get(key) is not None:
            self.unknown[key] = self.record[key]

    def _typed(self, key: str, kind: type[T]) -> T | None:
        """``record[key]`` when it is a ``kind``; otherwise None, the value kept as unknown."""
        value = self.record.get(key)
        if isinstance(value, kind):
            return value
        self._kept(key)
        return None

    def text(self, key: str) -> str | None:
        return self._typed(key, str)

    def flag(self, key: str) -> bool | None:
        return self._typed(key, bool)

    def finish_reason(self) -> FinishReason | None:
        value = self.record.get("finish_reason")
        if _is_finish_reason(value):
            return value
        self._kept("finish_reason")
        return None

    def stats(self) -> GenerationStats | None:
        value = self.record.get("stats")
        if isinstance(value, Mapping):
            return stats_from_record(value)
        self._kept("stats")
        return None


def from_record(record: Mapping[str, Any]) -> Turn:
    """A transcript's message object (role "user" or "assistant") as a typed record."""
    if record.get("role") == "user":
        r = _Reader(record, _USER_KEYS)
        content, thinking, time = r.text("content"), r.flag("thinking"), r.text("time")
        return UserTurn(content or "", thinking, time, unknown=r.unknown)
    r = _Reader(record, _REPLY_KEYS)
    raw_stats = record.get("stats")
    return Reply(
        r.text("content") or "",
        reasoning=r.text("reasoning"),
        thinking=r.flag("thinking"),
        reasoning_block=r.flag("reasoning_block"),
        finish_reason=r.finish_reason(),
        stats=r.stats(),
        time=r.text("time"),
        error=r.text("error"),
        unknown=r.unknown,
        stats_record=raw_stats if isinstance(raw_stats, Mapping) else None,
    )


def _stats_record(reply: Reply) -> dict[str, Any] | None:
    if reply.stats is None:
        return None
    raw = reply.stats_record
    if raw is not None and stats_from_record(raw) == reply.stats:
        return dict(raw)  # as read: an old file saves back the same
    return dataclasses.asdict(reply.stats)


def to_record(turn: Turn) -> dict[str, Any]:
    """The transcript's message object for ``turn`` (None fields are left out)."""
    out: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if isinstance(turn, UserTurn):
        fields: dict[str, Any] = {"thinking": turn.thinking, "time": turn.time}
    else:
        fields = {
            "reasoning": turn.reasoning,
            "thinking": turn.thinking,
            "reasoning_block": turn.reasoning_block,
            "finish_reason": turn.finish_reason,
            "stats": _stats_record(turn),
            "time": turn.time,
            "error": turn.error,
        }
    out.update((k, v) for k, v in fields.items() if v is not None)
    for key, value in turn.unknown.items():
        out.setdefault(key, value)
    return out
