"""Thinking modes: session-wide ``enable_thinking``, per-turn ``/think`` ``/no_think`` flags,
and how stored reasoning goes back into the prompt.

Decisions (SmolLM3):

* The session-wide mode is passed to the template as ``enable_thinking``. A ``/think`` or
  ``/no_think`` flag at the *end* of a user message applies to that turn only:
  :func:`resolve_thinking` strips it from the text and the turn is rendered with
  ``enable_thinking`` set accordingly. The SmolLM3 template ignores flags in user messages (it
  only reads them from the system message), so keeping the text as typed would leave the
  generation prompt in the session's mode; stripping it gives the model the right prompt
  (``<think>\\n\\n</think>\\n`` for no-think) and keeps the stored history free of flags.
* A ``/think`` or ``/no_think`` inside the *system* message overrides ``enable_thinking`` (the
  template's own rule); :func:`effective_thinking` computes the mode the template will use.
* The history keeps an assistant turn's reasoning apart from its answer (field
  ``"reasoning"``). :func:`history_for_template` puts it back the way the model wrote it,
  ``<think>\\n{reasoning}\\n</think>\\n{answer}``, when the render is in think mode (the SmolLM3
  template keeps past assistant content verbatim, so the prompt then matches the ids the model
  generated and the KV cache is reused). In no-think mode the template itself writes an empty
  think block, so only the answer is passed. Templates that read ``reasoning_content`` get the
  reasoning under that key instead. The rebuilt content is a :class:`ThinkContent`: its think
  tags are real control tokens for :meth:`Tokenizer.encode_chat
  <smolchat.chat.tokenizer.Tokenizer.encode_chat>`, while the reasoning and answer text, like
  all user text, can never produce control tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "THINK_END",
    "THINK_START",
    "ThinkContent",
    "TrustedText",
    "effective_thinking",
    "history_for_template",
    "prompt_opens_reasoning",
    "resolve_thinking",
]

THINK_START = "<think>"
THINK_END = "</think>"
THINK_FLAG = "/think"
NO_THINK_FLAG = "/no_think"

# Keys of our history records that are not part of a chat message.
_HISTORY_ONLY_KEYS = ("reasoning", "stats", "finish_reason")


class TrustedText(str):
    """A string whose own control tokens are trusted; subclasses name the parts that are user
    text (by default none: build one only from text the program itself wrote)."""

    def marked(self, mark: Callable[[str], str]) -> str:
        """The string with ``mark`` applied to its untrusted parts only."""
        return str.__str__(self)


class ThinkContent(TrustedText):
    """Assistant content ``<think>\\n{reasoning}\\n</think>\\n{answer}`` rebuilt from history."""

    reasoning: str
    answer: str

    def __new__(cls, reasoning: str, answer: str) -> ThinkContent:
        obj = super().__new__(cls, f"{THINK_START}\n{reasoning}\n{THINK_END}\n{answer}")
        obj.reasoning = reasoning
        obj.answer = answer
        return obj

    def marked(self, mark: Callable[[str], str]) -> str:
        return f"{THINK_START}\n{mark(self.reasoning)}\n{THINK_END}\n{mark(self.answer)}"


def resolve_thinking(user_text: str, session_thinking: bool) -> tuple[str, bool]:
    """Split a trailing ``/think`` or ``/no_think`` flag off ``user_text``.

    Returns ``(clean_text, thinking_for_turn)``. The flag counts only at the very end (trailing
    whitespace ignored) and as a word of its own (start of text or after whitespace); it is
    removed with the whitespace before it. Without a flag the session's mode applies.
    """
    stripped = user_text.rstrip()
    for flag, mode in ((NO_THINK_FLAG, False), (THINK_FLAG, True)):
        if stripped.endswith(flag):
            head = stripped[: -len(flag)]
            if not head or head[-1].isspace():
                return head.rstrip(), mode
    return user_text, session_thinking


def effective_thinking(messages: Sequence[Mapping[str, Any]], enable_thinking: bool) -> bool:
    """The mode the SmolLM3 template renders in: a ``/no_think`` (checked first) or ``/think``
    anywhere in a leading system message wins over ``enable_thinking``."""
    if messages and messages[0].get("role") == "system":
        content = messages[0].get("content")
        if isinstance(content, str):
            if NO_THINK_FLAG in content:
                return False
            if THINK_FLAG in content:
                return True
    return enable_thinking


def history_for_template(
    messages: Sequence[Mapping[str, Any]],
    *,
    enable_thinking: bool = True,
    template: str | None = None,
) -> list[dict[str, Any]]:
    """Turn history records into template messages (see the module docstring).

    Assistant records with a ``"reasoning"`` string get it back into their content as
    :class:`ThinkContent` when the render is in think mode (per :func:`effective_thinking`), or
    under ``reasoning_content`` when ``template`` reads that key. History-only keys
    (``reasoning``, ``stats``, ``finish_reason``) are dropped; other keys are kept.
    """
    thinking = effective_thinking(messages, enable_thinking)
    uses_reasoning_key = template is not None and "reasoning_content" in template
    out: list[dict[str, Any]] = []
    for record in messages:
        message = {k: v for k, v in record.items() if k not in _HISTORY_ONLY_KEYS}
        reasoning = record.get("reasoning")
        if record.get("role") == "assistant" and isinstance(reasoning, str):
            answer = record.get("content")
            answer = answer if isinstance(answer, str) else ""
            if uses_reasoning_key:
                message["reasoning_content"] = reasoning
            elif thinking:
                message["content"] = ThinkContent(reasoning, answer)
        out.append(message)
    return out


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an open think block (some templates end the
    generation prompt with ``<think>\\n``); then the reply starts as reasoning."""
    start = prompt.rfind(THINK_START)
    if start < 0:
        return False
    tail = prompt[start + len(THINK_START) :]
    return THINK_END not in tail and tail.strip() == ""
