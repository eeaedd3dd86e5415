"""A conversation with a model: history, settings, retry/undo, transcripts.

The session keeps the history and hands each turn to its :class:`~smolchat.backend.types.Backend`
as a typed :class:`~smolchat.backend.types.Conversation` (system prompt kept apart, the
template's date pinned to the start of the conversation, each reply recorded as the text the model
produced), so that a backend which caches (the local engine's KV cache) sees the earlier turns
rendered exactly as before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from smolchat.backend.local import LocalBackend
from smolchat.backend.types import (
    MIN_REPLY_ROOM,
    AnswerDelta,
    Backend,
    CancelToken,
    ChatMessage,
    Conversation,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    PrefillProgress,
    ReasoningDelta,
    ReplyStream,
    error_line,
)
from smolchat.chat.events import ChatEvent, TurnFinished
from smolchat.chat.settings import THINKING_SETTINGS, ChatSettings, sampling_from_defaults
from smolchat.chat.text import valid_text
from smolchat.chat.thinking import effective_thinking, resolve_thinking
from smolchat.chat.transcript import (
    Transcript,
    TranscriptStore,
    is_transcript,
    read_transcript,
    shown,
    user_path,
    write_transcript,
)
from smolchat.chat.turns import Reply, Turn, UserTurn, from_record, to_record
from smolchat.errors import CommandError, SmolchatError, TemplateError, TranscriptError

__all__ = ["MIN_REPLY_ROOM", "ChatSession", "ChatSettings", "error_line"]


MODEL_PATH = "model_path"  # the transcript extra naming the local model's full path
SERVER = "server"  # the transcript extra naming the server's API base (a chat made via --server)


def _now() -> datetime:
    return datetime.now().astimezone()


def _normalize_system(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    return text


def read_chat(path: Path, base: ChatSettings | None = None) -> tuple[Transcript, ChatSettings]:
    """A transcript and the settings it gives on top of ``base`` (the defaults if None): what
    :meth:`ChatSession.load` takes in. Raises :class:`TranscriptError` (one line) for a missing,
    damaged or non-transcript file, or one with invalid settings, so a caller can check a
    chat before it loads a model."""
    data = read_transcript(path)
    merged = {**(base or ChatSettings()).to_dict(), **data.settings}
    try:
        return data, ChatSettings.from_dict(merged)
    except (ValueError, TypeError) as exc:
        raise TranscriptError(f"{shown(path)} has invalid settings: {exc}") from None


class ChatSession:
    """One conversation over a :class:`Backend`. Not for concurrent turns; ``cancel`` is
    thread-safe. ``backend`` may also be an engine (what :func:`smolchat.load` returns): it is
    then wrapped in a :class:`~smolchat.backend.local.LocalBackend`."""

    def __init__(
        self,
        backend: Backend | Any,
        *,
        system_prompt: str | None = None,
        settings: ChatSettings | None = None,
        store: TranscriptStore | None = None,
    ) -> None:
        self.backend: Backend = backend if isinstance(backend, Backend) else LocalBackend(backend)
        if settings is None:
            defaults = dict(self.backend.generation_defaults)
            settings = ChatSettings(sampling=sampling_from_defaults(defaults))
        self.settings = settings
        self.system_prompt: str | None = _normalize_system(system_prompt)
        self.store = store
        self.messages: list[Turn] = []
        self.last_stats: GenerationStats | None = None
        self.busy = False
        self.extra: dict[str, Any] = {}  # other transcript data kept across load/save (title)
        # the local model's full path (a .gguf file or a folder), recorded in the transcript's
        # extra as "model_path" so that --resume without MODEL finds it; "" for a hub model
        self.model_path = ""
        # the server's API base (no credentials) of a chat made through --server, recorded in
        # the transcript's extra as "server" so that --resume can say how to reach it again
        self.server_url = ""
        self.transcript_path: Path | None = None  # where this conversation is autosaved
        self.autosave_error: str | None = None  # the last autosave failure (one line), if any
        self.started = _now()  # conversation start: names the autosave file
        self._date_pin = self.started  # the template's "today" (fixed, so renderings stay equal)
        self._version = 0  # bumped whenever the history changes (guards stale streams)
        self._cancel = CancelToken()
        self._end_thinking = CancelToken()
        self._state = threading.Lock()
        self._sent: Conversation | None = None  # what the last turn opened sent
        self._used_cache: tuple[tuple[str | None, bool, tuple[Turn, ...]], int] | None = None

    # --- the conversation as the backend sees it ------------------------------------------
    def conversation(self, history: Sequence[Turn], thinking: bool) -> Conversation:
        """``history`` as a typed Conversation (failed empty replies left out)."""
        out: list[ChatMessage] = []
        for m in history:
            if isinstance(m, UserTurn):
                out.append(ChatMessage("user", m.content))
            elif not m.failed_empty:  # a failed turn with nothing to show is not dialogue
                # a reply that had no <think> block gets none back
                reasoning = None if m.reasoning_block is False else m.reasoning
                out.append(ChatMessage("assistant", m.content, reasoning))
        return Conversation(tuple(out), self.system_prompt, thinking, self._date_pin)

    def _effective_thinking(self, thinking: bool) -> bool:
        """The mode the template will use (a /think or /no_think in the system prompt wins)."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return effective_thinking(system, thinking)

    def context_limit(self) -> int:
        """Tokens the model's context holds (prompt + reply)."""
        return int(self.backend.context_limit)

    def context_used(self) -> int:
        """Tokens the conversation takes now (system prompt and every turn, rendered)."""
        key = (
            self.system_prompt,
            self.settings.thinking,
            tuple(self.messages),
        )
        if self._used_cache is not None and self._used_cache[0] == key:
            return self._used_cache[1]
        if not self.messages and self.system_prompt is None:
            used = 0
        else:
            conversation = self.conversation(self.messages, self.settings.thinking)
            try:
                used = self.backend.count_tokens(conversation, add_generation_prompt=False)
            except TemplateError:
                used = 0
        self._used_cache = (key, used)
        return used

    def context_sent(self) -> int:
        """Tokens of the prompt the reply being generated answers: the system prompt, the turns
        kept (after any drop) and the new message, rendered with the generation prompt; the
        context holds these before the reply's first token. 0 before the first turn."""
        if self._sent is None:
            return 0
        try:
            return self.backend.count_tokens(self._sent, add_generation_prompt=True)
        except TemplateError:
            return 0

    def _exchange_starts(self, history: Sequence[Turn]) -> list[int]:
        return [i for i, m in enumerate(history) if isinstance(m, UserTurn)]

    # --- turns -------------------------------------------------------------------------
    def _require_idle(self) -> None:
        if self.busy:
            raise SmolchatError("a reply is being generated: wait for it or cancel it first")

    def _open(self, history: Sequence[Turn], thinking: bool) -> ReplyStream:
        """Plan the turn with the backend (ContextOverflowError now if it cannot fit)."""
        self._cancel = CancelToken()
        self._end_thinking = CancelToken()
        self._sent = self.conversation(history, thinking)
        request = GenerationRequest(
            self._sent,
            sampling=self.settings.sampling,
            max_new_tokens=self.settings.max_new_tokens,
            cancel=self._cancel,
            thinking_budget=self.settings.thinking_budget,
            end_thinking=self._end_thinking,
        )
        return self.backend.open(request)

    def send(self, text: str, *, replace: int | None = None) -> Iterator[ChatEvent]:
        """Answer ``text``; stream ReasoningDelta/AnswerDelta, then one TurnFinished
        (PrefillProgress before the first delta while the backend reads a long prompt).

        A message ending with ``/think`` or ``/no_think`` uses that mode for this turn only.
        ``replace``: the exchange (0 = the first) this message replaces, with everything after
        it (an edit); the history changes only when the reply is recorded.
        Raises ContextOverflowError (before generating) if the turn cannot fit, CommandError
        if there is no exchange ``replace``.
        """
        self._require_idle()
        before = self.messages if replace is None else self.messages[: self._start_of(replace)]
        text = valid_text(text)  # e.g. undecodable stdin bytes: lone surrogates
        clean, thinking = resolve_thinking(text, self.settings.thinking)
        if not clean.strip():
            raise SmolchatError("the message is empty: type something to send")
        flagged = clean.strip() != text.strip()  # a /think or /no_think suffix: this turn only
        user = UserTurn(clean, thinking if flagged else None, _now().isoformat(timespec="seconds"))
        history: list[Turn] = [*before, user]
        stream = self._open(history, thinking)
        return self._turn(history, stream, thinking, self._version, replaces=None)

    def retry(self, exchange: int | None = None) -> Iterator[ChatEvent]:
        """Generate the last reply again (the prompt up to it comes from the KV cache).

        ``exchange`` (0 = the first): generate the reply of that exchange again instead; the
        exchanges after it go when the new reply is recorded. If the new reply fails, the
        history stays as it was (a failed turn never deletes a reply).
        """
        self._require_idle()
        if not self.messages:
            raise CommandError("nothing to retry: the conversation is empty")
        if exchange is not None:
            history = self.messages[: self._start_of(exchange) + 1]
        elif isinstance(self.messages[-1], Reply):
            history = self.messages[:-1]
        else:
            history = list(self.messages)
        user = history[-1] if history else None
        if not isinstance(user, UserTurn):
            raise CommandError("nothing to retry: the last message is not a reply to a user turn")
        thinking = user.thinking if user.thinking is not None else self.settings.thinking
        stream = self._open(history, thinking)
        following = self.messages[len(history) :]
        previous = following[0] if following else None
        return self._turn(history, stream, thinking, self._version, replaces=previous)

    def _turn(
        self,
        history: list[Turn],
        stream: ReplyStream,
        thinking: bool,
        version: int,
        replaces: Turn | None,
    ) -> Iterator[ChatEvent]:
        """Stream one reply to ``history`` (ending in a user message), then record it.

        ``replaces``: the reply a /retry regenerates; kept if the new one fails.
        """
        with self._state:
            try:
                self._require_idle()
                if version != self._version:
                    raise SmolchatError(
                        "the conversation changed after this message was prepared; send it again"
                    )
            except SmolchatError:
                stream.close()
                raise
            self.busy = True
        reasoning: list[str] = []
        answer: list[str] = []
        end: Finished | None = None
        recorded = False

        def record(finish: FinishReason, error: str | None = None) -> TurnFinished:
            nonlocal recorded
            recorded = True
            stats = end.stats if end is not None else GenerationStats()
            stats.finish_reason = finish
            text, thought = "".join(answer), "".join(reasoning)
            if end is not None and end.answer is not None:  # the backend's final split wins
                text = end.answer
            if end is not None and end.reasoning is not None:
                thought = end.reasoning
            block = end.reasoning_block if end is not None else bool(thought)
            reply = Reply(
                text,
                reasoning=thought,
                thinking=self._effective_thinking(thinking),
                reasoning_block=block,
                finish_reason=finish,
                stats=stats,
                time=_now().isoformat(timespec="seconds"),
                error=error,
            )
            if finish == "error" and replaces is not None:
                pass  # a failed /retry keeps the reply it was to replace
            else:
                self.messages = [*history, reply]
                self._version += 1
            self.last_stats = stats
            self.busy = False
            self.autosave()
            return TurnFinished(finish, stats, thought, text, error)

        try:
            with stream:
                for event in stream:
                    if isinstance(event, ReasoningDelta):
                        reasoning.append(event.text)
                        yield event
                    elif isinstance(event, AnswerDelta):
                        answer.append(event.text)
                        yield event
                    elif isinstance(event, PrefillProgress):
                        yield event
                    elif isinstance(event, Finished):
                        end = event
                        break
        except GeneratorExit:  # the caller stopped listening: keep the partial reply
            stream.close()
            if not recorded:
                record("cancelled")
            raise
        except Exception as exc:
            stream.close()
            yield record("error", error_line(exc))
            return
        except BaseException:  # KeyboardInterrupt and the like: keep the partial, re-raise
            stream.close()
            if not recorded:
                record("cancelled")
            raise
        finally:
            if not recorded:
                self.busy = False
        if end is None:  # the backend ended without a final event
            cancelled = self._cancel.cancelled
            yield record(
                "cancelled" if cancelled else "error",
                None if cancelled else "generation ended unexpectedly",
            )
            return
        yield record(end.finish_reason, end.error)

    def cancel(self) -> None:
        """Stop the reply being generated (thread-safe); the partial reply is kept."""
        self._cancel.cancel()

    def end_thinking(self) -> bool:
        """Close the reasoning of the reply being generated now; the answer follows
        (thread-safe). False where the backend cannot (then nothing happens)."""
        if not self.backend.supports_end_thinking:
            return False
        self._end_thinking.cancel()
        return True

    # --- history edits -----------------------------------------------------------------
    def _start_of(self, exchange: int) -> int:
        """The index in ``messages`` of exchange ``exchange``'s user message."""
        starts = self._exchange_starts(self.messages)
        if isinstance(exchange, bool) or not 0 <= exchange < len(starts):
            raise CommandError(
                f"no exchange {exchange}: the conversation has {len(starts)} (0 is the first)"
            )
        return starts[exchange]

    def undo(self) -> str | None:
        """Drop the last exchange (user message and reply); return that user message's text."""
        self._require_idle()
        starts = self._exchange_starts(self.messages)
        if not starts:
            raise CommandError("nothing to undo: the conversation is empty")
        removed = self.messages[starts[-1] :]
        self.messages = self.messages[: starts[-1]]
        self._version += 1
        self.autosave()
        return removed[0].content

    def drop_oldest(self, n: int = 1) -> int:
        """Drop the ``n`` oldest exchanges (the system prompt stays); return how many went."""
        self._require_idle()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CommandError(f"the number of exchanges to drop must be 1 or more, got {n!r}")
        starts = self._exchange_starts(self.messages)
        if not starts:
            raise CommandError("nothing to drop: the conversation is empty")
        if n > len(starts):
            raise CommandError(
                f"there {'is' if len(starts) == 1 else 'are'} only {len(starts)} "
                f"exchange{'s' if len(starts) != 1 else ''}; use /drop {len(starts)} or /clear"
            )
        cut = starts[n] if n < len(starts) else len(self.messages)
        self.messages = self.messages[cut:]
        self._version += 1
        self.autosave()
        return n

    def clear(self) -> None:
        """Start a new conversation (system prompt and settings stay; the old file stays)."""
        self._require_idle()
        self.messages = []
        self._version += 1
        self.last_stats = None
        self.transcript_path = None
        self.extra = {}
        self.started = self._date_pin = _now()

    def set_system(self, text: str | None) -> None:
        """Set the system prompt (None or blank: the model's default)."""
        self._require_idle()
        self.system_prompt = _normalize_system(None if text is None else valid_text(text))
        self._version += 1
        if self.messages:
            self.autosave()

    def exchanges(self) -> int:
        """How many user turns the history holds."""
        return len(self._exchange_starts(self.messages))

    # --- transcripts -------------------------------------------------------------------
    def to_transcript(self) -> Transcript:
        settings = self.settings.to_dict()
        if not self.backend.has_thinking_mode:  # no "Thinking: on" for a template without it
            for name in THINKING_SETTINGS:
                settings.pop(name, None)
        return Transcript(
            messages=[to_record(m) for m in self.messages],
            system_prompt=self.system_prompt,
            settings=settings,
            model=self.backend.model_name,
            created=self.started.isoformat(timespec="seconds"),
            extra={**self.extra, **self._recorded_source()},
        )

    def _recorded_source(self) -> dict[str, str]:
        where = {MODEL_PATH: self.model_path, SERVER: self.server_url}
        return {key: value for key, value in where.items() if value}

    def _first_user_text(self) -> str:
        return next((m.content for m in self.messages if isinstance(m, UserTurn)), "")

    def autosave(self) -> Path | None:
        """Write the conversation to its autosave file (if autosave is on and it has turns).

        Never raises: a failure is kept in ``autosave_error`` for the UI to show.
        """
        if self.store is None or not self.store.autosave:
            return None
        if not self.messages and self.transcript_path is None:
            return None
        try:
            if self.transcript_path is None:
                self.transcript_path = self.store.new_path(self.started, self._first_user_text())
            write_transcript(self.transcript_path, self.to_transcript())
        except (TranscriptError, OSError) as exc:
            self.autosave_error = (
                str(exc)
                if isinstance(exc, TranscriptError)
                else (f"autosave failed: {exc.strerror or exc}")
            )
            return None
        self.autosave_error = None
        return self.transcript_path

    def save(self, path: Path | str | None = None) -> Path:
        """Write the transcript (Markdown, atomic); return its path.

        No path: the autosave file in the transcripts folder. A folder: a new file in it. A name
        without a suffix gets ``.md``. An existing file that is not a smolchat transcript is
        never overwritten.
        """
        if path is None:
            if self.store is None:
                raise TranscriptError("no transcripts folder is set: give a path, /save PATH")
            if self.transcript_path is None:
                self.transcript_path = self.store.new_path(self.started, self._first_user_text())
            return write_transcript(self.transcript_path, self.to_transcript())
        target = user_path(path)
        try:
            if target.is_dir():
                target = target / f"{self.started:%Y-%m-%d_%H%M%S}_chat.md"
            elif not target.suffix:
                target = target.with_suffix(".md")
            exists = target.exists()
        except OSError as exc:  # e.g. a name too long for the file system
            raise TranscriptError(
                f"could not save the transcript to {shown(target)}: {exc.strerror or exc}"
            ) from None
        if exists and not is_transcript(target):
            raise TranscriptError(
                f"{shown(target)} exists and is not a smolchat transcript; choose another name"
            )
        return write_transcript(target, self.to_transcript())

    def load(self, path: Path | str) -> Transcript:
        """Replace history, system prompt and settings with those of a transcript."""
        self._require_idle()
        path = user_path(path)
        data, self.settings = read_chat(path, self.settings)
        self.system_prompt = _normalize_system(data.system_prompt)
        self.messages = [from_record(m) for m in data.messages]
        self.extra = {k: v for k, v in data.extra.items() if k not in (MODEL_PATH, SERVER)}
        self._version += 1
        last = next((m for m in reversed(self.messages) if isinstance(m, Reply)), None)
        self.last_stats = last.stats if last is not None else None
        self._date_pin = _now()
        try:
            self.started = datetime.fromisoformat(data.created).astimezone()
        except (ValueError, TypeError):
            self.started = self._date_pin
        self.transcript_path = self._autosave_target(path, data)
        return data

    def _autosave_target(self, path: Path, data: Transcript) -> Path | None:
        """Where a loaded conversation goes on being saved: the file itself when it lies in the
        transcripts folder; else its copy there under the same name (made by an earlier /load
        of it: loading it again continues that copy instead of starting "-2", "-3", ...). None
        (a fresh name at the next save) when that name already holds another conversation."""
        if self.store is None:
            return None
        if self.store.contains(path):
            return path
        copy = self.store.folder / path.name
        try:
            if not copy.exists() or read_transcript(copy).created == data.created:
                return copy
        except (TranscriptError, OSError):
            pass
        return None
