"""A small deterministic engine for UI tests (never proof that the real engine works).

The TUI tests run the real :class:`~smolchat.backend.local.LocalBackend` over it (so the
backend's rendering, locking and stream lifetimes are the real ones), and
``tests/contract/test_backend_contract.py`` checks ``LocalBackend(FakeEngine())`` against the
same contract as the real engine. Like the real engine it refuses a second ``generate`` while
one runs (its lock is held from the first event until the generator ends or is closed).

It has the engine's interface: a tokenizer (ChatML rendering with SmolLM3's no-think block,
char-level ids, word-level generated pieces), ``generate`` streaming GenerationEvents with an
optional delay per token (and PrefillProgress per ``prefill_chunk`` prompt ids when that is
set and ``progress=True``), thread-safe ``cancel``, ``cached_ids``, ``context_length``,
``generation_defaults``, ``model_name``, ``device``, ``dtype``, ``quantize``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from smolchat.engine.types import (
    FinishReason,
    GenerationEvent,
    GenerationStats,
    PrefillProgress,
    SamplingParams,
)
from smolchat.errors import SmolchatError

SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<think>",
    "</think>",
    "<|im_start|>",
    "<|im_end|>",
]
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")
NO_THINK = "<think>\n\n</think>\n"

CODE_REPLY = (
    "<think>\nThe user wants a function. A one-liner will do.\n</think>\n"
    "Here is a function that adds two numbers:\n\n"
    "```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "Call it as `add(2, 3)`."
)


def code_reply(_question: str) -> str:
    """The default reply: reasoning, then an answer with a Python code block."""
    return CODE_REPLY


class FakeStreamDecoder:
    def __init__(self, tokenizer: FakeTokenizer) -> None:
        self.tokenizer = tokenizer

    def add(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def flush(self) -> str:
        return ""


class FakeTokenizer:
    """Char-level ids for prompts; any piece of generated text gets an id on first use."""

    chat_template = None

    def __init__(self) -> None:
        self.pieces: list[str] = list(SPECIALS)
        self.ids: dict[str, int] = {p: i for i, p in enumerate(SPECIALS)}
        self.eos_token_ids = [self.ids["<|im_end|>"]]
        self.special_tokens = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"}

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def piece_id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def token_to_id(self, token: str) -> int | None:
        return self.ids.get(token)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in _SPECIAL_RE.split(text):
            if part in self.ids and part in SPECIALS:
                ids.append(self.ids[part])
            else:
                ids.extend(self.piece_id(ch) for ch in part)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        pieces = (self.pieces[i] for i in ids)
        return "".join(p for p in pieces if not (skip_special_tokens and p in SPECIALS))

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
            if kwargs.get("enable_thinking", True) is False:
                text += NO_THINK
        return self.encode(text) if tokenize else text

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> list[int]:
        return self.encode(str(self.apply_chat_template(messages, add_generation_prompt, **kwargs)))

    def stream_decoder(self) -> FakeStreamDecoder:
        return FakeStreamDecoder(self)


class FakeEngine:
    """Replies with ``responder(last user message)``, one word per token.

    ``delay``: seconds per token. ``fail_after``: raise RuntimeError after that many tokens.
    Stats are fixed (TTFT 0.05 s, 100 tok/s) so that screenshots are deterministic.
    """

    def __init__(
        self,
        responder: Callable[[str], str] = code_reply,
        *,
        delay: float = 0.0,
        context_length: int = 8192,
        fail_after: int | None = None,
        model_name: str = "fake/SmolLM3-test",
    ) -> None:
        self.responder = responder
        self.delay = delay
        self.context_length = context_length
        self.fail_after = fail_after
        self.model_name = model_name
        self.tokenizer = FakeTokenizer()
        self.eos_token_ids = list(self.tokenizer.eos_token_ids)
        self.generation_defaults = {"temperature": 0.6, "top_p": 0.95}
        self.device = "cpu"
        self.dtype = "float32"
        self.quantize: str | None = None
        self.cached_ids: list[int] = []
        self.last_stats: GenerationStats | None = None
        self.calls: list[dict[str, Any]] = []  # what each generate() was asked
        self.prefill_chunk: int | None = None  # None: no PrefillProgress events
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self._cancel.set()

    def reset_cache(self) -> None:
        self.cached_ids = []

    def reply_for(self, prompt: str) -> str:
        """The text the fake model produces for a rendered prompt."""
        users = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
        reply = self.responder(users[-1] if users else "")
        if prompt.endswith(NO_THINK):
            reply = re.sub(r"^<think>.*?</think>\n?", "", reply, flags=re.DOTALL)
        return reply

    def generate(
        self,
        ids: Sequence[int],
        sampling: SamplingParams | None = None,
        max_new_tokens: int = 256,
        *,
        progress: bool = False,
    ) -> Iterator[GenerationEvent | PrefillProgress]:
        if not self._lock.acquire(blocking=False):
            raise SmolchatError("the engine is already generating; wait for it or cancel it")
        try:
            yield from self._generate(list(ids), sampling, max_new_tokens, progress)
        finally:
            self._lock.release()

    def _generate(
        self, ids: list[int], sampling: SamplingParams | None, max_new_tokens: int, progress: bool
    ) -> Iterator[GenerationEvent | PrefillProgress]:
        self._cancel.clear()
        chunk = self.prefill_chunk
        if progress and chunk is not None and len(ids) > chunk:
            for done in [*range(0, len(ids), chunk), len(ids)]:
                yield PrefillProgress(done, len(ids))
                if self._cancel.is_set() and done < len(ids):
                    stats = GenerationStats(prompt_tokens=len(ids), finish_reason="cancelled")
                    self.last_stats = stats
                    yield GenerationEvent(None, "", "cancelled", stats)
                    return
        room = self.context_length - len(ids)
        cut: FinishReason = "context" if room < max_new_tokens else "length"
        max_new_tokens = min(max_new_tokens, room)
        self.calls.append({"ids": ids, "sampling": sampling, "max_new_tokens": max_new_tokens})
        tok = self.tokenizer
        pieces = [
            piece
            for part in _SPECIAL_RE.split(self.reply_for(tok.decode(ids)))
            for piece in ([part] if part in SPECIALS else re.findall(r"\s*\S+|\s+", part))
        ]
        stats = GenerationStats(prompt_tokens=len(ids), prefilled_tokens=len(ids), ttft_s=0.05)
        self.cached_ids = ids
        finish = "stop"
        for n, piece in enumerate(pieces):
            if self._cancel.is_set():
                finish = "cancelled"
                break
            if n >= max_new_tokens:
                finish = cut
                break
            if self.fail_after is not None and n >= self.fail_after:
                raise RuntimeError("fake engine failure")
            if self.delay:
                time.sleep(self.delay)
            token = tok.piece_id(piece)
            self.cached_ids = [*self.cached_ids, token]
            stats.generated_tokens += 1
            yield GenerationEvent(token, piece)
        stats.decode_s = 0.01 * max(stats.generated_tokens - 1, 0)
        stats.finish_reason = finish  # type: ignore[assignment]
        self.last_stats = stats
        if finish == "stop":
            eos = tok.eos_token_ids[0]
            yield GenerationEvent(eos, tok.decode([eos]), "stop", stats)
        else:
            yield GenerationEvent(None, "", finish, stats)  # type: ignore[arg-type]
