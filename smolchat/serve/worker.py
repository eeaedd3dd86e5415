"""One engine, batch 1: a worker thread that runs queued turns in arrival order.

Each :class:`Job` is a :class:`~smolchat.backend.types.GenerationRequest` plus the stop
sequences of the request. The worker opens it on the backend (planning happens there, on the
worker thread, so that the backend's KV-cache bookkeeping is never touched by two threads),
streams its events to the job's sink and records the end. The sink must not block: the server
hands each item to its event loop (``loop.call_soon_threadsafe``), so a client that never reads
costs memory bounded by ``max_tokens``, never the engine. A job whose client went away is
cancelled through its :class:`~smolchat.backend.types.CancelToken`: a queued one ends before it
starts (0 tokens), a running one within one token.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from smolchat.backend.types import (
    AnswerDelta,
    Backend,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    ReasoningDelta,
    error_line,
)
from smolchat.errors import ContextOverflowError, SmolchatError, TemplateError

__all__ = ["Delta", "Done", "EngineWorker", "Job", "QueueFullError", "Refused", "Started"]


# --- what the worker reports for a job ------------------------------------------------------
@dataclass(frozen=True)
class Started:
    """The turn fits and generation begins (``prompt_tokens``: the rendered prompt)."""


@dataclass(frozen=True)
class Refused:
    """The turn was not started. ``status``: the HTTP status it deserves (400 or 500)."""

    status: int
    message: str
    code: str | None = None


@dataclass(frozen=True)
class Delta:
    """More reply text: ``kind`` "reasoning" (inside ``<think>``) or "answer"."""

    kind: str
    text: str


@dataclass(frozen=True)
class Done:
    """The end. ``finish_reason`` is the backend's own (stop, length, context, cancelled,
    error); a stop sequence found in the answer reports ``stop``."""

    finish_reason: FinishReason
    stats: GenerationStats
    error: str | None = None


Item = Started | Refused | Delta | Done
Sink = Callable[[Item], None]


class QueueFullError(SmolchatError):
    """More turns are waiting than the server accepts."""


class StopFilter:
    """Cuts the answer at the first stop sequence; holds back text that may begin one.

    ``feed(text)`` returns the text that is safe to emit now; ``stopped`` turns True when a
    stop sequence was found (the text from it on is dropped, like OpenAI does).
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        cuts = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            out, self.pending, self.stopped = self.pending[: min(cuts)], "", True
            return out
        keep = 0  # the longest tail of pending that is the start of some stop sequence
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), keep, -1):
                if self.pending.endswith(s[:n]):
                    keep = n
                    break
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


@dataclass
class Job:
    """One turn for the worker. Cancel it with :meth:`cancel`, never through
    ``request.cancel`` directly: the backend ties that token to the engine's own cancel, so
    setting it after the turn ended would stop whatever turn runs next."""

    request: GenerationRequest
    sink: Sink
    stops: list[str] = field(default_factory=list)
    _state: str = "queued"  # queued -> running -> done
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cancel(self) -> None:
        """Stop this turn (a queued one never starts); a no-op once it has ended."""
        with self._lock:
            if self._state != "done":
                self.request.cancel.cancel()

    def _advance(self, state: str) -> None:
        with self._lock:
            self._state = state


_STOP = object()


class EngineWorker:
    """Runs jobs on ``backend`` one at a time, first come first served.

    ``max_queue``: turns that may wait (beyond it :meth:`submit` raises QueueFullError).
    """

    def __init__(self, backend: Backend, *, max_queue: int = 64) -> None:
        self.backend = backend
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | object] = queue.Queue()
        self._waiting = 0
        self._count = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="smolchat-engine", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs submitted and not yet finished (the running one included)."""
        return self._waiting

    def submit(self, job: Job) -> None:
        with self._count:
            if self._waiting >= self.max_queue:
                raise QueueFullError(
                    f"{self._waiting} requests are already waiting for the engine; retry later"
                )
            self._waiting += 1
        self._jobs.put(job)

    def close(self) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            assert isinstance(job, Job)
            job._advance("running")
            try:
                self._run(job)
            except Exception as exc:  # the sink failed (the server is going away): go on
                job.cancel()
                with contextlib.suppress(Exception):
                    job.sink(Refused(500, error_line(exc)))
            finally:
                job._advance("done")
                with self._count:
                    self._waiting -= 1

    def _run(self, job: Job) -> None:
        request, sink = job.request, job.sink
        try:
            stream = self.backend.open(request)
        except ContextOverflowError as exc:
            sink(Refused(400, _context_message(exc), "context_length_exceeded"))
            return
        except (TemplateError, SmolchatError) as exc:
            sink(Refused(400, error_line(exc)))
            return
        except Exception as exc:
            sink(Refused(500, error_line(exc)))
            return
        sink(Started())
        stops = StopFilter(job.stops)
        with stream:
            for event in stream:
                if isinstance(event, ReasoningDelta):
                    sink(Delta("reasoning", event.text))
                elif isinstance(event, AnswerDelta):
                    text = stops.feed(event.text)
                    if text:
                        sink(Delta("answer", text))
                    if stops.stopped:
                        job.cancel()  # ends within one token
                elif isinstance(event, Finished):
                    rest = stops.flush()
                    if rest:
                        sink(Delta("answer", rest))
                    reason = event.finish_reason
                    if stops.stopped and reason in ("cancelled", "stop"):
                        reason = "stop"
                    job._advance("done")  # before the client hears of it: see Job
                    sink(Done(reason, event.stats, event.error))
                    return
        sink(Done("error", GenerationStats(), "the reply ended without a final event"))


def _context_message(exc: ContextOverflowError) -> str:
    """The backend's line without the TUI's advice (/drop, /clear mean nothing to a client)."""
    head = str(exc).split(":", 1)[0].split(", even with", 1)[0]
    return f"{head}: shorten the messages or lower max_tokens"
