"""A conversation with a model: history, settings, KV-cache reuse, retry/undo, transcripts.

Every turn renders the whole conversation with the model's chat template and hands the ids to
``engine.generate``, which crops its KV cache to the longest common prefix and prefills only the
rest. So the rendering of earlier turns must not change from turn to turn: the system prompt is
kept apart and always first, the template's date (``strftime_now``) is pinned to the start of the
conversation, and a reply is recorded as the text the model produced, so that re-rendering it
gives back (nearly always exactly) the tokens the cache already holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from smolchat.chat.events import ChatEvent, TurnFinished
from smolchat.chat.reasoning import ReasoningParser
from smolchat.chat.settings import ChatSettings, sampling_from_defaults
from smolchat.chat.template import pinned_time
from smolchat.chat.text import valid_text
from smolchat.chat.thinking import (
    THINK_START,
    effective_thinking,
    history_for_template,
    prompt_opens_reasoning,
    resolve_thinking,
)
from smolchat.chat.transcript import (
    Transcript,
    TranscriptStore,
    is_transcript,
    read_transcript,
    shown,
    user_path,
    write_transcript,
)
from smolchat.engine.types import GenerationStats
from smolchat.errors import (
    CommandError,
    ContextOverflowError,
    SmolchatError,
    TemplateError,
    TranscriptError,
)

__all__ = ["MIN_REPLY_ROOM", "ChatSession", "ChatSettings", "error_line"]

MIN_REPLY_ROOM = 256  # a turn is refused unless this many reply tokens (or max_new_tokens) fit
_TEMPLATE_KEYS = ("role", "content", "reasoning")


def _now() -> datetime:
    return datetime.now().astimezone()


def _normalize_system(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    return text


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


_REPLACEMENT = "\ufffd"
ALIGN_WINDOW = 256  # tokens each side may advance while re-synchronising after a difference


def _resync(
    rendered: list[int],
    seen: list[int],
    i: int,
    j: int,
    decode: Callable[[list[int]], str],
    control: frozenset[int],
) -> tuple[int, int] | None:
    """Smallest ``(i2, j2)`` with ``decode(rendered[i:i2]) == decode(seen[j:j2])``, or None.

    Two pointers: the side whose text is behind advances. A trailing replacement character
    may be half of a multi-byte character, so texts ending in one match only where both sides
    end (a control token or the end follows): that is how a reply cut inside a character is
    recorded. Spans holding a control token never match (text is never swapped for one).
    """

    def boundary(ids: list[int], k: int) -> bool:
        return k == len(ids) or ids[k] in control

    i2, j2 = i + 1, j + 1
    while i2 <= len(rendered) and j2 <= len(seen):
        if rendered[i2 - 1] in control or seen[j2 - 1] in control:
            return None
        if i2 - i > ALIGN_WINDOW or j2 - j > ALIGN_WINDOW:
            return None
        a, b = decode(rendered[i:i2]), decode(seen[j:j2])
        if a == b:
            r_end, s_end = boundary(rendered, i2), boundary(seen, j2)
            if not a.endswith(_REPLACEMENT) or (r_end and s_end):
                return i2, j2
            if not s_end:
                j2 += 1
            else:
                i2 += 1
            continue
        sa, sb = a.rstrip(_REPLACEMENT), b.rstrip(_REPLACEMENT)
        if not (sa.startswith(sb) or sb.startswith(sa)):
            return None
        # the side whose text (then whose raw text) is shorter is behind
        behind = len(sa) < len(sb) if len(sa) != len(sb) else len(a) < len(b)
        if behind:
            i2 += 1
        else:
            j2 += 1
    return None


def align_to_seen(
    rendered: list[int],
    seen: list[int],
    decode: Callable[[list[int]], str],
    control: frozenset[int] = frozenset(),
) -> list[int]:
    """``rendered`` with each stretch that spells the same text as ``seen`` taken from ``seen``.

    The template re-encodes earlier replies canonically, but the model may have produced the
    same text with other tokens (a sampled split of a word, a character cut in two). Taking the
    tokens the model actually produced keeps the rendering equal to what the KV cache holds.
    Alignment stops at the first place where the texts really differ; the rest is ``rendered``.
    """
    out: list[int] = []
    i = j = 0
    while i < len(rendered) and j < len(seen):
        if rendered[i] == seen[j]:
            out.append(rendered[i])
            i += 1
            j += 1
            continue
        sync = _resync(rendered, seen, i, j, decode, control)
        if sync is None:
            break
        i2, j2 = sync
        out.extend(seen[j:j2])
        i, j = i2, j2
    out.extend(rendered[i:])
    return out


class ChatSession:
    """One conversation with an engine. Not for concurrent turns; ``cancel`` is thread-safe."""

    def __init__(
        self,
        engine: Any,
        *,
        system_prompt: str | None = None,
        settings: ChatSettings | None = None,
        store: TranscriptStore | None = None,
    ) -> None:
        self.engine = engine
        if settings is None:
            defaults = getattr(engine, "generation_defaults", None) or {}
            settings = ChatSettings(sampling=sampling_from_defaults(defaults))
        self.settings = settings
        self.system_prompt: str | None = _normalize_system(system_prompt)
        self.store = store
        self.messages: list[dict[str, Any]] = []
        self.last_stats: GenerationStats | None = None
        self.busy = False
        self.extra: dict[str, Any] = {}  # other transcript data kept across load/save (title)
        self.transcript_path: Path | None = None  # where this conversation is autosaved
        self.autosave_error: str | None = None  # the last autosave failure (one line), if any
        self.started = _now()  # conversation start: names the autosave file
        self._date_pin = self.started  # the template's "today" (fixed, so renderings stay equal)
        self._version = 0  # bumped whenever the history changes (guards stale streams)
        self._cancel = threading.Event()
        self._state = threading.Lock()
        self._used_cache: tuple[Any, int] | None = None
        self._seen: list[int] = []  # the last prompt plus the reply's ids, as the model saw them
        self._control_ids: frozenset[int] | None = None

    # --- rendering ---------------------------------------------------------------------
    def _template_messages(
        self, history: list[dict[str, Any]], thinking: bool
    ) -> list[dict[str, Any]]:
        """System prompt + history as template messages (reasoning put back as generated)."""
        msgs: list[dict[str, Any]] = []
        if self.system_prompt is not None:
            msgs.append({"role": "system", "content": self.system_prompt})
        for m in history:
            failed = m.get("role") == "assistant" and m.get("finish_reason") == "error"
            if failed and not m.get("content") and not m.get("reasoning"):
                continue  # a failed turn with nothing to show: not part of the dialogue
            record = {k: m[k] for k in _TEMPLATE_KEYS if k in m}
            if m.get("role") == "assistant" and m.get("reasoning_block") is False:
                record.pop("reasoning", None)  # the reply had no <think> block: don't add one
            msgs.append(record)
        template = getattr(self.engine.tokenizer, "chat_template", None)
        return history_for_template(msgs, enable_thinking=thinking, template=template)

    def _effective_thinking(self, thinking: bool) -> bool:
        """The mode the template will use (a /think or /no_think in the system prompt wins)."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return effective_thinking(system, thinking)

    def _encode(
        self, history: list[dict[str, Any]], thinking: bool, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of ``history`` rendered by the model's template (date pinned)."""
        tok = self.engine.tokenizer
        msgs = self._template_messages(history, thinking)
        with pinned_time(self._date_pin):
            ids = list(
                tok.encode_chat(
                    msgs, add_generation_prompt=add_generation_prompt, enable_thinking=thinking
                )
            )
        if not self._seen:
            return ids
        return align_to_seen(ids, self._seen, tok.decode, self._control())

    def _control(self) -> frozenset[int]:
        """Ids of the tokenizer's control tokens (never swapped for text when aligning)."""
        if self._control_ids is None:
            tok = self.engine.tokenizer
            names = list(getattr(tok, "control_tokens", lambda: [])())
            ids = {tok.token_to_id(t) for t in names}
            ids.update(getattr(tok, "eos_token_ids", None) or [])
            self._control_ids = frozenset(i for i in ids if i is not None)
        return self._control_ids

    def context_limit(self) -> int:
        """Tokens the model's context holds (prompt + reply)."""
        return int(self.engine.context_length)

    def context_used(self) -> int:
        """Tokens the conversation takes now (system prompt and every turn, rendered)."""
        key = (
            self.system_prompt,
            self.settings.thinking,
            tuple((m.get("role"), m.get("content"), m.get("reasoning")) for m in self.messages),
        )
        if self._used_cache is not None and self._used_cache[0] == key:
            return self._used_cache[1]
        if not self.messages and self.system_prompt is None:
            used = 0
        else:
            try:
                used = len(
                    self._encode(self.messages, self.settings.thinking, add_generation_prompt=False)
                )
            except TemplateError:
                used = 0
        self._used_cache = (key, used)
        return used

    # --- planning a turn ---------------------------------------------------------------
    def _exchange_starts(self, history: list[dict[str, Any]]) -> list[int]:
        return [i for i, m in enumerate(history) if m.get("role") == "user"]

    def _fits(self, history: list[dict[str, Any]], thinking: bool) -> tuple[list[int], int] | int:
        """(ids, max_new_tokens) if the turn fits, else the prompt length."""
        ids = self._encode(history, thinking)
        room = self.context_limit() - len(ids)
        need = min(MIN_REPLY_ROOM, self.settings.max_new_tokens)
        if room < need:
            return len(ids)
        return ids, min(self.settings.max_new_tokens, room)

    def _plan(self, history: list[dict[str, Any]], thinking: bool) -> tuple[list[int], int]:
        """Ids and reply budget for a turn on ``history``; ContextOverflowError if it can't fit."""
        fit = self._fits(history, thinking)
        if not isinstance(fit, int):
            return fit
        prompt_len = fit
        limit = self.context_limit()
        need = min(MIN_REPLY_ROOM, self.settings.max_new_tokens)
        starts = self._exchange_starts(history)
        droppable = len(starts) - 1  # the exchange being answered stays
        # the fewest oldest exchanges to drop (binary search: fitting is monotonic in practice)
        lo, hi, best = 1, droppable, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if isinstance(self._fits(history[starts[mid] :], thinking), int):
                lo = mid + 1
            else:
                best, hi = mid, mid - 1
        head = (
            f"this turn needs {prompt_len} prompt tokens plus {need} for the reply, "
            f"but the context holds {limit}"
        )
        if best is not None:
            plural = "s" if best > 1 else ""
            raise ContextOverflowError(
                f"{head}: drop the {best} oldest exchange{plural} with /drop {best} "
                "(the system prompt stays) or start over with /clear",
                drop=best,
            )
        raise ContextOverflowError(
            f"{head}, even with all earlier turns dropped: shorten the message"
            + (" or the system prompt (/system)" if self.system_prompt else "")
            + " or lower max_new_tokens (/set max_new_tokens N)"
        )

    def _parser_starts_in_reasoning(self, ids: list[int]) -> bool:
        """True if the prompt ends inside an open ``<think>`` block (some templates do that)."""
        try:
            tail = self.engine.tokenizer.decode(ids[-16:])
        except Exception:
            return False
        return prompt_opens_reasoning(tail)

    # --- turns -------------------------------------------------------------------------
    def _require_idle(self) -> None:
        if self.busy:
            raise SmolchatError("a reply is being generated: wait for it or cancel it first")

    def send(self, text: str, *, replace: int | None = None) -> Iterator[ChatEvent]:
        """Answer ``text``; stream ReasoningDelta/AnswerDelta, then one TurnFinished.

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
        user: dict[str, Any] = {"role": "user", "content": clean}
        if clean.strip() != text.strip():  # a /think or /no_think suffix: this turn only
            user["thinking"] = thinking
        user["time"] = _now().isoformat(timespec="seconds")
        history = [*before, user]
        ids, max_new = self._plan(history, thinking)
        self._cancel.clear()
        return self._turn(history, ids, max_new, thinking, self._version)

    def retry(self, exchange: int | None = None) -> Iterator[ChatEvent]:
        """Generate the last reply again (the prompt up to it comes from the KV cache).

        ``exchange`` (0 = the first): generate the reply of that exchange again instead; the
        exchanges after it go when the new reply is recorded.
        """
        self._require_idle()
        if not self.messages:
            raise CommandError("nothing to retry: the conversation is empty")
        if exchange is not None:
            history = self.messages[: self._start_of(exchange) + 1]
        elif self.messages[-1].get("role") == "assistant":
            history = self.messages[:-1]
        else:
            history = list(self.messages)
        if not history or history[-1].get("role") != "user":
            raise CommandError("nothing to retry: the last message is not a reply to a user turn")
        user = history[-1]
        thinking = user.get("thinking")
        if not isinstance(thinking, bool):
            thinking = self.settings.thinking
        ids, max_new = self._plan(history, thinking)
        self._cancel.clear()
        return self._turn(history, ids, max_new, thinking, self._version)

    def _turn(
        self,
        history: list[dict[str, Any]],
        ids: list[int],
        max_new: int,
        thinking: bool,
        version: int,
    ) -> Iterator[ChatEvent]:
        """Stream one reply to ``history`` (ending in a user message), then record it."""
        with self._state:
            self._require_idle()
            if version != self._version:
                raise SmolchatError(
                    "the conversation changed after this message was prepared; send it again"
                )
            self.busy = True
        opens = self._parser_starts_in_reasoning(ids)
        parser = ReasoningParser(start_in_reasoning=opens)
        raw: list[str] = []  # the reply as generated, to tell whether it opened <think>
        produced: list[int] = []  # the reply's token ids (without the stop token)
        stats: GenerationStats | None = None
        finish: str | None = None
        error: str | None = None
        recorded = False
        stream = None
        tail: list[ChatEvent] = []  # deltas still held by the parser when a turn fails
        eos = set(getattr(self.engine, "eos_token_ids", None) or [])

        def record() -> TurnFinished:
            nonlocal recorded, stats
            recorded = True
            if stats is None:
                stats = GenerationStats(prompt_tokens=len(ids), generated_tokens=len(produced))
            stats.finish_reason = finish  # type: ignore[assignment]
            reply: dict[str, Any] = {
                "role": "assistant",
                "content": parser.answer,
                "reasoning": parser.reasoning,
                "thinking": self._effective_thinking(thinking),
                "reasoning_block": parser.opened_by_prompt
                or "".join(raw).lstrip().startswith(THINK_START),
                "finish_reason": finish,
                "stats": dataclasses.asdict(stats),
                "time": _now().isoformat(timespec="seconds"),
            }
            if error is not None:
                reply["error"] = error
            self.messages = [*history, reply]
            self._version += 1
            self._seen = [*ids, *produced]
            self.last_stats = stats
            self.busy = False
            self.autosave()
            return TurnFinished(finish, stats, parser.reasoning, parser.answer, error)  # type: ignore[arg-type]

        try:
            if self._cancel.is_set():  # cancelled before the first token
                finish = "cancelled"
            else:
                stream = self.engine.generate(
                    ids, sampling=self.settings.sampling, max_new_tokens=max_new
                )
                for event in stream:
                    if event.token_id is not None and not (
                        event.finish_reason == "stop" and event.token_id in eos
                    ):
                        produced.append(event.token_id)
                    text = event.text
                    if event.finish_reason == "stop" and event.token_id in eos and text:
                        text = text.removesuffix(self.engine.tokenizer.decode([event.token_id]))
                    if text:
                        raw.append(text)
                        yield from parser.feed(text)
                    if self._cancel.is_set():
                        self.engine.cancel()  # re-issue: the engine clears its flag when it starts
                    if event.finish_reason is not None:
                        finish, stats = event.finish_reason, event.stats
                        break
                if finish is None:  # the engine ended without a final event
                    finish = "cancelled" if self._cancel.is_set() else "error"
                    if finish == "error":
                        error = "generation ended unexpectedly"
            yield from parser.finish()
        except GeneratorExit:  # the caller stopped listening: keep the partial reply
            finish = finish or "cancelled"
            self._close(stream)
            parser.finish()
            if not recorded:
                record()
            raise
        except Exception as exc:
            finish, error = "error", error_line(exc)
            self._close(stream)
            if not isinstance(exc, SmolchatError):  # refusals come before the cache is touched
                with contextlib.suppress(Exception):
                    self.engine.reset_cache()  # the cache may be half-written
            tail = [*parser.finish()]
        except BaseException:  # KeyboardInterrupt and the like: keep the partial, re-raise
            finish = "cancelled"
            self._close(stream)
            with contextlib.suppress(Exception):
                self.engine.reset_cache()
            if not recorded:
                record()
            raise
        finally:
            if not recorded and finish is None:
                self.busy = False
        yield from tail
        yield record()

    @staticmethod
    def _close(stream: Any) -> None:
        if stream is not None and hasattr(stream, "close"):
            with contextlib.suppress(Exception):
                stream.close()

    def cancel(self) -> None:
        """Stop the reply being generated (thread-safe); the partial reply is kept."""
        self._cancel.set()
        with contextlib.suppress(Exception):
            self.engine.cancel()

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
        return removed[0].get("content")

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
        return Transcript(
            messages=[dict(m) for m in self.messages],
            system_prompt=self.system_prompt,
            settings=self.settings.to_dict(),
            model=str(getattr(self.engine, "model_name", "") or ""),
            created=self.started.isoformat(timespec="seconds"),
            extra=dict(self.extra),
        )

    def _first_user_text(self) -> str:
        return next((m["content"] for m in self.messages if m.get("role") == "user"), "")

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
        data = read_transcript(path)
        merged = {**self.settings.to_dict(), **data.settings}
        try:
            settings = ChatSettings.from_dict(merged)
        except (ValueError, TypeError) as exc:
            raise TranscriptError(f"{shown(path)} has invalid settings: {exc}") from None
        self.settings = settings
        self.system_prompt = _normalize_system(data.system_prompt)
        self.messages = [dict(m) for m in data.messages]
        self.extra = dict(data.extra)
        self._version += 1
        last = next((m for m in reversed(self.messages) if m.get("role") == "assistant"), None)
        self.last_stats = None
        if last and isinstance(last.get("stats"), dict):
            with contextlib.suppress(TypeError):
                self.last_stats = GenerationStats(**last["stats"])
        self._date_pin = _now()
        try:
            self.started = datetime.fromisoformat(data.created).astimezone()
        except (ValueError, TypeError):
            self.started = self._date_pin
        in_store = self.store is not None and self.store.contains(path)
        self.transcript_path = path if in_store else None
        return data
