"""Split a reply into reasoning (``<think> ... </think>``) and answer, while it streams.

Rules (the same for :class:`ReasoningParser` and :func:`split_reasoning`):

* A reply opens a reasoning block only with ``<think>`` at its very start (leading whitespace
  ignored and dropped); otherwise all of it is answer, and a later ``<think>`` is plain text.
  With ``start_in_reasoning=True`` (the prompt already opened the block) the reply starts as
  reasoning.
* The block ends at the first ``</think>``; if that never comes, everything is reasoning.
* A closing tag is never shown as text. A ``</think>`` in a reply that opened no block means
  the prompt opened it after all (distilled reasoning models' templates end with ``<think>``):
  the reply is then read as with ``start_in_reasoning=True``. The deltas streamed before that
  tag went out as answer (they cannot be taken back); :attr:`ReasoningParser.reasoning` and
  ``answer`` (what the turn records) hold the corrected split, and :attr:`revised` says so.
* One newline right after ``<think>``, one right before ``</think>`` and one right after
  ``</think>`` are dropped, so the usual ``<think>\\nR\\n</think>\\nA`` gives ``R`` and ``A``
  (and :class:`~smolchat.chat.thinking.ThinkContent` rebuilds exactly that text).
"""

from __future__ import annotations

from smolchat.chat.events import AnswerDelta, ReasoningDelta
from smolchat.chat.thinking import THINK_END, THINK_START

__all__ = ["ReasoningParser", "split_reasoning"]

_START, _REASONING, _ANSWER = "start", "reasoning", "answer"


def split_reasoning(text: str, start_in_reasoning: bool = False) -> tuple[str, str]:
    """``(reasoning, answer)`` of a complete reply (see the module rules)."""
    if start_in_reasoning:
        body = text
    else:
        stripped = text.lstrip()
        if not stripped.startswith(THINK_START):
            if THINK_END not in text:
                return "", text
            return split_reasoning(text, start_in_reasoning=True)  # a stray close: see above
        body = stripped[len(THINK_START) :]
    body = body.removeprefix("\n")
    end = body.find(THINK_END)
    if end < 0:
        return body, ""
    reasoning = body[:end].removesuffix("\n")
    answer = body[end + len(THINK_END) :].removeprefix("\n")
    return reasoning, answer


def _held_suffix(text: str, *markers: str) -> int:
    """Length of the longest end of ``text`` that could begin one of ``markers``."""
    best = 0
    for marker in markers:
        for size in range(min(len(text), len(marker) - 1), best, -1):
            if marker.startswith(text[-size:]):
                best = size
                break
    return best


class ReasoningParser:
    """Feed text deltas; get :class:`ReasoningDelta` / :class:`AnswerDelta` events back.

    Tags split across deltas are handled by holding back the few characters that might start
    one. ``reasoning`` and ``answer`` accumulate what was emitted; after :meth:`finish` they
    equal :func:`split_reasoning` of the whole text.
    """

    def __init__(self, start_in_reasoning: bool = False) -> None:
        self._mode = _REASONING if start_in_reasoning else _START
        self._drop_newline = start_in_reasoning  # one "\n" at the start of the current part
        self._buffer = ""
        self._unopened = False  # in an answer that opened no block: a "</think>" is stray
        self.opened_by_prompt = start_in_reasoning  # also True once a stray close shows it
        self.reasoning = ""
        self.answer = ""
        self.revised = False  # a stray "</think>" turned answer already streamed into reasoning

    @property
    def in_reasoning(self) -> bool:
        """Whether the text fed so far ends inside the reasoning block."""
        return self._mode == _REASONING

    def feed(self, text: str) -> list[ReasoningDelta | AnswerDelta]:
        """Add a delta of the reply; return the events it completes (maybe none)."""
        self._buffer += text
        events: list[ReasoningDelta | AnswerDelta] = []
        while True:
            before = (self._mode, len(self._buffer))
            if self._mode == _START:
                self._step_start()
            elif self._mode == _REASONING:
                self._step_reasoning(events)
            else:
                self._step_answer(events)
            if (self._mode, len(self._buffer)) == before:
                return events

    def finish(self) -> list[ReasoningDelta | AnswerDelta]:
        """The reply ended: emit whatever was held back."""
        events: list[ReasoningDelta | AnswerDelta] = []
        rest, self._buffer = self._buffer, ""
        if self._drop_newline and self._mode != _START:
            rest = rest.removeprefix("\n")
        if rest:
            if self._mode == _REASONING:
                self._emit_reasoning(rest, events)
            else:
                self._emit_answer(rest, events)
        self._drop_newline = False
        return events

    # ----- steps ---------------------------------------------------------------------------
    def _step_start(self) -> None:
        stripped = self._buffer.lstrip()
        if not stripped or (len(stripped) < len(THINK_START) and THINK_START.startswith(stripped)):
            return  # still could be "<think>"
        if stripped.startswith(THINK_START):
            self._buffer = stripped[len(THINK_START) :]
            self._mode, self._drop_newline = _REASONING, True
        else:
            self._mode, self._unopened = _ANSWER, True

    def _take_newline(self) -> bool:
        """Drop a pending leading newline; False while undecidable (buffer empty)."""
        if self._drop_newline:
            if not self._buffer:
                return False
            self._buffer = self._buffer.removeprefix("\n")
            self._drop_newline = False
        return True

    def _step_reasoning(self, events: list) -> None:
        if not self._take_newline():
            return
        end = self._buffer.find(THINK_END)
        if end >= 0:
            self._emit_reasoning(self._buffer[:end].removesuffix("\n"), events)
            self._buffer = self._buffer[end + len(THINK_END) :]
            self._mode, self._drop_newline = _ANSWER, True
            return
        keep = _held_suffix(self._buffer, "\n" + THINK_END, THINK_END)
        ready = self._buffer[: len(self._buffer) - keep]
        if ready:
            self._emit_reasoning(ready, events)
            self._buffer = self._buffer[len(ready) :]

    def _step_answer(self, events: list) -> None:
        if not self._take_newline():
            return
        if self._unopened:
            end = self._buffer.find(THINK_END)
            if end >= 0:  # a stray close: what came before was reasoning the prompt opened
                revised = bool(self.answer)  # some of it already went out as answer
                streamed = self.answer.removeprefix("\n")
                body = (self.answer + self._buffer[:end]).removeprefix("\n")
                self.reasoning, self.answer = body.removesuffix("\n"), ""
                self.revised, self._unopened = revised, False
                self.opened_by_prompt = True
                if self.reasoning.startswith(streamed) and self.reasoning[len(streamed) :]:
                    events.append(ReasoningDelta(self.reasoning[len(streamed) :]))
                self._buffer = self._buffer[end + len(THINK_END) :]
                self._drop_newline = True
                return
            keep = _held_suffix(self._buffer, THINK_END)  # never show part of the tag
            ready = self._buffer[: len(self._buffer) - keep]
            if ready:
                self._emit_answer(ready, events)
                self._buffer = self._buffer[len(ready) :]
            return
        if self._buffer:
            self._emit_answer(self._buffer, events)
            self._buffer = ""

    def _emit_reasoning(self, text: str, events: list) -> None:
        if text:
            self.reasoning += text
            events.append(ReasoningDelta(text))

    def _emit_answer(self, text: str, events: list) -> None:
        if text:
            self.answer += text
            events.append(AnswerDelta(text))
