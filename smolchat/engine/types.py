"""Value types shared by the engine and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

from smolchat.errors import SamplingError

# stop: the model ended its reply; length: max_new_tokens reached; context: the context window is
# full (prompt + reply = context length); cancelled; error.
FinishReason = Literal["stop", "length", "context", "cancelled", "error"]

# Temperatures below this decode greedily (vLLM's threshold): dividing logits by a smaller one
# only overflows float32 on the way to the same argmax.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. ``temperature == 0`` (or below ``GREEDY_BELOW``, 1e-5) means greedy.

    ``top_k == 0``, ``top_p == 1`` and ``min_p == 0`` disable those filters;
    ``seed=None`` draws from a fresh generator each time.
    """

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    # name -> (low, high) inclusive ranges, used for validation and /set help
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "temperature": (0.0, 10.0),
        "top_p": (0.0, 1.0),
        "top_k": (0, 1_000_000),
        "min_p": (0.0, 1.0),
        "repetition_penalty": (0.01, 10.0),
        "seed": (0, 2**63 - 1),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "seed":
                continue
            low, high = self.RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SamplingError(f"{f.name} must be a number, got {value!r}")
            if isinstance(low, int) and isinstance(high, int) and not float(value).is_integer():
                raise SamplingError(f"{f.name} must be a whole number, got {value!r}")
            if value != value or not (low <= value <= high):  # NaN or out of range
                raise SamplingError(f"{f.name} must be between {low} and {high}, got {value!r}")
        if self.top_p == 0.0:
            raise SamplingError("top_p must be greater than 0 (use 1.0 to disable it)")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with some settings changed (validated)."""
        return replace(self, **changes)


@dataclass
class GenerationStats:
    """Figures for one call of ``Engine.generate``."""

    prompt_tokens: int = 0  # ids passed in
    cached_tokens: int = 0  # of those, reused from the KV cache
    prefilled_tokens: int = 0  # of those, run through the model now
    generated_tokens: int = 0
    ttft_s: float = 0.0  # time to first token (prefill + first sample)
    decode_s: float = 0.0  # time spent after the first token
    finish_reason: FinishReason | None = None

    @property
    def prefill_tok_s(self) -> float:
        return self.prefilled_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0

    def summary(self) -> list[str]:
        """``["42 tokens", "35.0 tok/s", "TTFT 0.12s"]`` (empty when nothing was generated)."""
        if not self.generated_tokens:
            return []
        parts = [f"{self.generated_tokens} tokens"]
        if self.decode_tok_s:
            parts.append(f"{self.decode_tok_s:.1f} tok/s")
        return [*parts, f"TTFT {self.ttft_s:.2f}s"]


@dataclass
class GenerationEvent:
    """One step of generation.

    ``token_id`` is the sampled id (None only for a final event with no token);
    ``text`` is the printable delta it adds. The last event of a generation has
    ``finish_reason`` set and carries ``stats``.
    """

    token_id: int | None
    text: str
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PrefillProgress:
    """How far the prefill of a long prompt has got: ``done`` of ``total`` tokens.

    ``total``: the prompt tokens the KV cache lacked (those reused from the cache are not
    counted); ``0 <= done <= total``, non-decreasing. Emitted (on request) before the first
    prefill chunk and after each one, only when the prefill takes more than one chunk.
    """

    done: int
    total: int
