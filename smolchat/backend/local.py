"""The in-process backend: the model's chat template, KV-cache alignment, context planning,
the reasoning parser, and the engine's generation loop.

Every turn renders the whole conversation with the model's chat template and hands the ids to
``engine.generate``, which crops its KV cache to the longest common prefix and prefills only the
rest. So the rendering of earlier turns must not change from turn to turn: the system prompt is
kept apart and always first, the template's date (``strftime_now``) is pinned to the start of the
conversation (:attr:`Conversation.date`), and each stretch of the rendering that spells the same
text as what the model saw last time is taken from those very ids (:func:`align_to_seen`), so the
prompt matches what the cache holds.

This module does not import torch itself (the engine it is given does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from smolchat.backend.types import (
    BackendEvent,
    Conversation,
    EventStream,
    Finished,
    GenerationRequest,
    GenerationStats,
    PrefillProgress,
    StreamLock,
    error_line,
    plan_reply,
)
from smolchat.chat.reasoning import ReasoningParser
from smolchat.chat.template import pinned_time
from smolchat.chat.thinking import (
    THINK_END,
    THINK_START,
    history_for_template,
    prompt_opens_reasoning,
)
from smolchat.errors import SmolchatError

__all__ = ["ALIGN_WINDOW", "LocalBackend", "align_to_seen"]

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


class LocalBackend:
    """A :class:`~smolchat.backend.types.Backend` over an in-process :class:`Engine`.

    ``engine``: what :func:`smolchat.load` returns (or anything with its interface: a
    ``tokenizer`` with ``encode_chat``/``decode``/``stream_decoder``, ``generate`` (called
    with ``progress=True``: it may yield PrefillProgress before its first token), ``cancel``,
    ``reset_cache``, ``context_length``, ``eos_token_ids``, ``model_name``, ``device``,
    ``dtype``, ``quantize``, ``generation_defaults``).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._seen: list[int] = []  # the last prompt plus the reply's ids, as the model saw them
        self._control_ids: frozenset[int] | None = None
        self._lock = StreamLock("a reply is already being generated; wait for it or cancel it")

    # --- what the UI asks -----------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(getattr(self.engine, "model_name", "") or "")

    @property
    def context_limit(self) -> int:
        return int(self.engine.context_length)

    @property
    def has_thinking_mode(self) -> bool:
        template = getattr(self.engine.tokenizer, "chat_template", None)
        return not isinstance(template, str) or "enable_thinking" in template

    @property
    def supports_end_thinking(self) -> bool:
        return self.has_thinking_mode and callable(getattr(self.engine, "force", None))

    def end_thinking_ids(self, reasoning: str) -> list[int]:
        """The model's own tokens that close a reasoning block (``\n</think>\n``; the first
        newline only if ``reasoning`` does not end with one)."""
        tok = self.engine.tokenizer
        end = tok.token_to_id(THINK_END) if hasattr(tok, "token_to_id") else None
        closing = [end] if end is not None else list(tok.encode(THINK_END))
        newline = list(tok.encode("\n"))
        lead = [] if reasoning.endswith("\n") else newline
        return [*lead, *closing, *newline]

    @property
    def description(self) -> str:
        precision = self.engine.quantize or str(self.engine.dtype).removeprefix("torch.")
        return f"{self.engine.device} {precision}"

    @property
    def generation_defaults(self) -> Mapping[str, Any]:
        return dict(getattr(self.engine, "generation_defaults", None) or {})

    def count_text(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text))

    def count_tokens(self, conversation: Conversation, *, add_generation_prompt: bool) -> int:
        return len(self.render_ids(conversation, add_generation_prompt=add_generation_prompt))

    # --- rendering ------------------------------------------------------------------------
    def template_messages(self, conversation: Conversation) -> list[dict[str, Any]]:
        """System prompt + dialogue as template messages (reasoning put back as generated)."""
        msgs: list[dict[str, Any]] = []
        if conversation.system_prompt is not None:
            msgs.append({"role": "system", "content": conversation.system_prompt})
        for m in conversation.messages:
            record: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.role == "assistant" and m.reasoning is not None:
                record["reasoning"] = m.reasoning
            msgs.append(record)
        template = getattr(self.engine.tokenizer, "chat_template", None)
        return history_for_template(msgs, enable_thinking=conversation.thinking, template=template)

    def render_ids(
        self, conversation: Conversation, *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of ``conversation`` rendered by the model's template (date pinned),
        aligned to the ids the model saw last."""
        tok = self.engine.tokenizer
        msgs = self.template_messages(conversation)
        with contextlib.ExitStack() as stack:
            if conversation.date is not None:
                stack.enter_context(pinned_time(conversation.date))
            ids = list(
                tok.encode_chat(
                    msgs,
                    add_generation_prompt=add_generation_prompt,
                    enable_thinking=conversation.thinking,
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

    # --- planning -------------------------------------------------------------------------
    def plan(self, request: GenerationRequest) -> tuple[list[int], int]:
        """Prompt ids and reply budget; ContextOverflowError (with ``.drop``) if it can't fit."""
        conversation = request.conversation
        ids = self.render_ids(conversation)

        def prompt_tokens(c: Conversation) -> int:
            return len(ids) if c is conversation else len(self.render_ids(c))

        budget = plan_reply(conversation, request.max_new_tokens, self.context_limit, prompt_tokens)
        return ids, budget

    # --- generation -----------------------------------------------------------------------
    def open(self, request: GenerationRequest) -> EventStream:
        ids, budget = self.plan(request)
        return EventStream(self._events(request, ids, budget), self._lock)

    def _opens_reasoning(self, ids: list[int]) -> bool:
        """True if the prompt ends inside an open ``<think>`` block (some templates do that)."""
        try:
            tail = self.engine.tokenizer.decode(ids[-16:])
        except Exception:
            return False
        return prompt_opens_reasoning(tail)

    def _events(
        self, request: GenerationRequest, ids: list[int], budget: int
    ) -> Iterator[BackendEvent]:
        engine, cancel = self.engine, request.cancel
        opens = self._opens_reasoning(ids)
        parser = ReasoningParser(start_in_reasoning=opens)
        raw: list[str] = []  # the reply as generated, to tell whether it opened <think>
        produced: list[int] = []  # the reply's token ids (without the stop token)
        eos = set(getattr(engine, "eos_token_ids", None) or [])
        stats: GenerationStats | None = None
        finish: str | None = None
        error: str | None = None
        tail: list[BackendEvent] = []
        stream = None
        control = self.supports_end_thinking
        reasoning_tokens = 0  # generated inside the reasoning block
        closed = False  # the reasoning was closed by force (budget or end_thinking)

        def finished() -> Finished:
            nonlocal stats
            self._seen = [*ids, *produced]
            if stats is None:
                stats = GenerationStats(prompt_tokens=len(ids), generated_tokens=len(produced))
            stats.finish_reason = finish  # type: ignore[assignment]
            block = parser.opened_by_prompt or "".join(raw).lstrip().startswith(THINK_START)
            return Finished(
                finish,  # type: ignore[arg-type]
                stats,
                error,
                block,
                reasoning=parser.reasoning,
                answer=parser.answer,
            )

        try:
            if cancel.cancelled:  # cancelled before the first token
                finish = "cancelled"
            else:
                stream = engine.generate(
                    ids, sampling=request.sampling, max_new_tokens=budget, progress=True
                )
                cancel.on_cancel(engine.cancel)
                for event in stream:
                    if isinstance(event, PrefillProgress):
                        yield event
                        if cancel.cancelled:
                            engine.cancel()  # the engine cleared its flag when it started
                        continue
                    is_eos = event.finish_reason == "stop" and event.token_id in eos
                    if event.token_id is not None and not is_eos:
                        produced.append(event.token_id)
                    text = event.text
                    if is_eos and text:
                        text = text.removesuffix(engine.tokenizer.decode([event.token_id]))
                    inside = parser.in_reasoning  # this token was part of the reasoning
                    if text:
                        raw.append(text)
                        yield from parser.feed(text)
                    if control and not closed and parser.in_reasoning:
                        reasoning_tokens += inside
                        cap = request.thinking_budget
                        if request.end_thinking.cancelled or (
                            cap is not None and reasoning_tokens >= cap
                        ):  # close the reasoning with the model's own tokens; the answer follows
                            closed = True
                            engine.force(self.end_thinking_ids(parser.reasoning))
                    if cancel.cancelled:
                        engine.cancel()  # re-issue: the engine clears its flag when it starts
                    if event.finish_reason is not None:
                        finish, stats = event.finish_reason, event.stats
                        break
                _close(stream)  # the engine's lock goes now, before the consumer sees the end
                if finish == "length" and budget < request.max_new_tokens:
                    finish = "context"  # the budget was the room left in the context window
                if finish is None:  # the engine ended without a final event
                    finish = "cancelled" if cancel.cancelled else "error"
                    if finish == "error":
                        error = "generation ended unexpectedly"
            tail = [*parser.finish()]
        except GeneratorExit:  # the consumer stopped listening
            _close(stream)
            self._seen = [*ids, *produced]
            raise
        except Exception as exc:
            finish, error = "error", error_line(exc)
            _close(stream)
            if not isinstance(exc, SmolchatError):  # refusals come before the cache is touched
                with contextlib.suppress(Exception):
                    engine.reset_cache()  # the cache may be half-written
            tail = [*parser.finish()]
        except BaseException:  # KeyboardInterrupt and the like
            _close(stream)
            with contextlib.suppress(Exception):
                engine.reset_cache()
            raise
        yield from tail
        yield finished()


def _close(stream: Any) -> None:
    if stream is not None and hasattr(stream, "close"):
        with contextlib.suppress(Exception):
            stream.close()
