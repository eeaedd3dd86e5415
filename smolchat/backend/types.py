"""The backend seam: what the chat layer asks of whatever generates text (torch-free).

A :class:`Backend` takes a :class:`GenerationRequest` (the conversation as typed messages, the
system prompt, thinking on/off, sampling settings, ``max_new_tokens`` and a :class:`CancelToken`)
and streams typed events: :class:`ReasoningDelta`, :class:`AnswerDelta`, then exactly one
:class:`Finished` (stats and a truthful finish reason). Before the first delta a backend may
send :class:`PrefillProgress` events while it reads a long prompt (the local backend does when
the prefill takes more than one chunk; a remote one never does); a consumer that has no use
for them ignores them. It also answers what the UI needs: model
name, context limit, whether the model has a thinking mode, how many tokens a conversation takes,
and a one-line description for the status bar.

Stream lifetime: :meth:`Backend.open` plans the turn at once (a turn that cannot fit raises
:class:`~smolchat.errors.ContextOverflowError` with ``.drop`` there, before anything runs) and
returns a :class:`ReplyStream`. The stream takes the backend (one stream runs at a time) on its
first ``next()`` and gives it back when it produces :class:`Finished`, when the consumer closes it
early (``close()``, ``with``, or garbage collection), and when it fails. :class:`EventStream`
implements that for any backend written as a generator function.

This module never imports torch: a remote-only session starts without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

from smolchat.engine.types import FinishReason, GenerationStats, PrefillProgress, SamplingParams
from smolchat.errors import ContextOverflowError, SmolchatError

__all__ = [
    "FINISH_REASONS",
    "MIN_REPLY_ROOM",
    "AnswerDelta",
    "Backend",
    "BackendBusyError",
    "BackendEvent",
    "CancelToken",
    "ChatMessage",
    "Conversation",
    "EventStream",
    "FinishReason",
    "Finished",
    "GenerationRequest",
    "GenerationStats",
    "PrefillProgress",
    "ReasoningDelta",
    "ReplyStream",
    "Role",
    "SamplingParams",
    "error_line",
    "plan_reply",
]

FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "context", "cancelled", "error")
MIN_REPLY_ROOM = 256  # a turn is refused unless this many reply tokens (or max_new_tokens) fit

Role = Literal["user", "assistant"]


# --- the conversation -------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatMessage:
    """One message of the dialogue as the model should see it.

    ``reasoning``: an assistant reply's reasoning (the text inside ``<think>``), or None when
    the reply had no reasoning block (then none is put back when the history is rendered).
    """

    role: Role
    content: str
    reasoning: str | None = None


@dataclass(frozen=True)
class Conversation:
    """System prompt + dialogue + thinking mode: everything a backend renders a prompt from.

    ``system_prompt`` None means the model's default (the template's own, or the server's).
    ``date`` pins the template's "today" (so that every turn of a conversation renders alike).
    """

    messages: tuple[ChatMessage, ...]
    system_prompt: str | None = None
    thinking: bool = True
    date: datetime | None = None

    def exchange_starts(self) -> list[int]:
        """Indices of the user messages (each starts an exchange)."""
        return [i for i, m in enumerate(self.messages) if m.role == "user"]

    def without_oldest(self, n: int) -> Conversation:
        """The conversation with its ``n`` oldest exchanges dropped (system prompt kept)."""
        starts = self.exchange_starts()
        cut = starts[n] if n < len(starts) else len(self.messages)
        return Conversation(self.messages[cut:], self.system_prompt, self.thinking, self.date)


class CancelToken:
    """A thread-safe cancel flag for one turn; callbacks run once, on the cancelling thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a cancel must never fail
                callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when cancelled (at once if already cancelled)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()


@dataclass(frozen=True)
class GenerationRequest:
    """One reply to generate: the conversation ends with the user message to answer.

    ``thinking_budget``: at most this many reasoning tokens (None: no cap); then the backend
    closes the reasoning itself with the model's own end-of-thinking tokens and the answer
    follows. ``end_thinking``: set it (from any thread) to close the reasoning now. Both need
    :attr:`Backend.supports_end_thinking`; elsewhere they are ignored.
    """

    conversation: Conversation
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 256
    cancel: CancelToken = field(default_factory=CancelToken, compare=False)
    thinking_budget: int | None = None
    end_thinking: CancelToken = field(default_factory=CancelToken, compare=False)


# --- events -------------------------------------------------------------------------------
@dataclass
class ReasoningDelta:
    """More text inside ``<think> ... </think>``."""

    text: str


@dataclass
class AnswerDelta:
    """More text of the visible answer."""

    text: str


@dataclass
class Finished:
    """The last event of a stream.

    ``finish_reason``: ``stop`` (the model ended its reply), ``length`` (``max_new_tokens``
    reached), ``context`` (the context window is full: prompt + reply = context limit),
    ``cancelled`` (the cancel token or an early close), ``error`` (``error`` holds one line).
    ``reasoning_block``: whether the reply (or the prompt) opened a reasoning block, so that a
    re-rendered history puts the reasoning back only where the model wrote one.
    ``reasoning`` / ``answer``: the whole reply as it should be recorded, when the backend knows
    better than the concatenated deltas (a parser that re-split the text); None: the deltas.
    """

    finish_reason: FinishReason
    stats: GenerationStats
    error: str | None = None
    reasoning_block: bool = False
    reasoning: str | None = None
    answer: str | None = None


# PrefillProgress(done, total) (smolchat.engine.types, re-exported here): ``done`` of the
# ``total`` prompt tokens the model had to read (those reused from the KV cache not counted)
# are read; only before the first delta, ``done`` never decreasing. Optional: a stream may
# have none (a short prompt, a remote server).
BackendEvent = ReasoningDelta | AnswerDelta | PrefillProgress | Finished


def plan_reply(
    conversation: Conversation,
    max_new_tokens: int,
    context_limit: int,
    prompt_tokens: Callable[[Conversation], int],
) -> int:
    """The reply budget (tokens) for ``conversation`` in a context of ``context_limit``.

    ``prompt_tokens(c)``: tokens ``c`` takes rendered with the generation prompt. A turn fits
    when ``min(MIN_REPLY_ROOM, max_new_tokens)`` reply tokens fit after its prompt; otherwise
    raises :class:`~smolchat.errors.ContextOverflowError` whose ``.drop`` is the fewest oldest
    exchanges to drop (binary search: fitting is monotonic in practice), or None.
    """
    need = min(MIN_REPLY_ROOM, max_new_tokens)
    prompt_len = prompt_tokens(conversation)
    if context_limit - prompt_len >= need:
        return min(max_new_tokens, context_limit - prompt_len)
    droppable = len(conversation.exchange_starts()) - 1  # the exchange answered stays
    lo, hi, best = 1, droppable, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if context_limit - prompt_tokens(conversation.without_oldest(mid)) < need:
            lo = mid + 1
        else:
            best, hi = mid, mid - 1
    head = (
        f"this turn needs {prompt_len} prompt tokens plus {need} for the reply, "
        f"but the context holds {context_limit}"
    )
    if best is not None:
        plural = "s" if best > 1 else ""
        raise ContextOverflowError(
            f"{head}: drop the {best} oldest exchange{plural} with /drop {best} "
            "(the system prompt stays) or start over with /clear",
            drop=best,
            what=head,
        )
    raise ContextOverflowError(
        f"{head}, even with all earlier turns dropped: shorten the message"
        + (" or the system prompt (/system)" if conversation.system_prompt else "")
        + " or lower max_new_tokens (/set max_new_tokens N)",
        what=head,
    )


class BackendBusyError(SmolchatError):
    """A second stream was started while one is running."""


def error_line(exc: BaseException) -> str:
    """One line for the user about a failed generation."""
    name = type(exc).__name__
    detail = " ".join(str(exc).split())
    if isinstance(exc, SmolchatError):
        return detail or name
    if "OutOfMemory" in name or "out of memory" in detail.lower():
        return (
            "the device ran out of memory: lower max_new_tokens (/set max_new_tokens N), "
            "drop old turns (/drop N) or load the model with --quantize nf4"
        )
    if len(detail) > 240:
        detail = detail[:237] + "..."
    return f"generation failed ({name}: {detail})" if detail else f"generation failed ({name})"


# --- streams ------------------------------------------------------------------------------
@runtime_checkable
class ReplyStream(Protocol):
    """An iterator of :data:`BackendEvent` ending with one :class:`Finished`.

    ``close()`` is idempotent and releases whatever the stream holds; so do reaching
    :class:`Finished`, an exception, leaving a ``with`` block and garbage collection.
    """

    def __iter__(self) -> Iterator[BackendEvent]: ...
    def __next__(self) -> BackendEvent: ...
    def close(self) -> None: ...
    def __enter__(self) -> ReplyStream: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StreamLock:
    """At most one running stream per backend (taken without blocking)."""

    def __init__(self, busy_message: str) -> None:
        self._lock = threading.Lock()
        self.busy_message = busy_message

    def acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise BackendBusyError(self.busy_message)

    def release(self) -> None:
        self._lock.release()

    @property
    def locked(self) -> bool:
        return self._lock.locked()


class EventStream:
    """A :class:`ReplyStream` over a generator of events, holding ``lock`` while it runs.

    The lock is taken on the first ``next()`` (a stream that is never started holds nothing)
    and given back as soon as :class:`Finished` is produced (before the consumer sees it), on
    ``close()``, on any exception and on garbage collection. Closing a started stream closes
    the generator (its ``finally`` blocks run: that is where a backend frees its resources).
    """

    def __init__(self, events: Iterator[BackendEvent], lock: StreamLock | None = None) -> None:
        self._events = events
        self._lock = lock
        self._held = False
        self._done = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> BackendEvent:
        if self._done:
            raise StopIteration
        if not self._held and self._lock is not None:
            try:
                self._lock.acquire()
            except BaseException:
                self._done = True
                self._events_close()
                raise
            self._held = True
        try:
            event = next(self._events)
        except BaseException:
            self.close()
            raise
        if isinstance(event, Finished):
            self.close()
        return event

    def _events_close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Stop the stream and release the backend (idempotent)."""
        self._done = True
        try:
            self._events_close()
        finally:
            if self._held:
                self._held = False
                assert self._lock is not None
                self._lock.release()

    @property
    def running(self) -> bool:
        """True between the first event and the end (the backend is held)."""
        return self._held

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# --- the backend --------------------------------------------------------------------------
@runtime_checkable
class Backend(Protocol):
    """Whatever generates replies: the in-process engine, a remote server, a test fake.

    Every implementation passes ``tests/contract/test_backend_contract.py``.
    """

    @property
    def model_name(self) -> str:
        """The model's name (hub id, file, or the served id)."""
        ...

    @property
    def context_limit(self) -> int:
        """Tokens the context window holds (prompt + reply)."""
        ...

    @property
    def has_thinking_mode(self) -> bool:
        """True if the model's template knows ``enable_thinking`` (SmolLM3; not SmolLM2)."""
        ...

    @property
    def supports_end_thinking(self) -> bool:
        """True if ``thinking_budget`` and ``end_thinking`` of a request work here (the local
        engine can insert tokens mid-reply; a remote server mostly cannot)."""
        ...

    @property
    def description(self) -> str:
        """Where and how it runs, for the status bar: ``cpu · float32``, ``remote: URL``."""
        ...

    @property
    def generation_defaults(self) -> Mapping[str, Any]:
        """The model's recommended sampling settings (``generation_config.json`` keys)."""
        ...

    def count_tokens(self, conversation: Conversation, *, add_generation_prompt: bool) -> int:
        """Tokens ``conversation`` takes rendered (raises TemplateError if it cannot render)."""
        ...

    def count_text(self, text: str) -> int:
        """Tokens of a plain text (e.g. a system prompt)."""
        ...

    def open(self, request: GenerationRequest) -> ReplyStream:
        """Plan the turn now (ContextOverflowError with ``.drop`` if it cannot fit) and return
        its stream; generation starts on the stream's first ``next()``."""
        ...
