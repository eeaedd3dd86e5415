"""Per-session chat settings: sampling, reply length and the thinking mode."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from smolchat.engine.types import SamplingParams
from smolchat.errors import SamplingError

DEFAULT_MAX_NEW_TOKENS = 4096
MAX_NEW_TOKENS_CAP = 1 << 20  # upper bound of the setting; the context length clamps it anyway

SAMPLING_NAMES = tuple(f.name for f in fields(SamplingParams))


@dataclass
class ChatSettings:
    """What the next turn is generated with."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    thinking: bool = True  # session-wide think / no-think (the template's enable_thinking)

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict (transcripts, /set listing)."""
        out: dict[str, Any] = {n: getattr(self.sampling, n) for n in SAMPLING_NAMES}
        out["max_new_tokens"] = self.max_new_tokens
        out["thinking"] = self.thinking
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatSettings:
        """Inverse of :meth:`to_dict`; raises SamplingError / ValueError on bad values."""
        sampling = SamplingParams(**{n: data[n] for n in SAMPLING_NAMES if n in data})
        max_new = data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
            raise ValueError(f"max_new_tokens must be a positive whole number, got {max_new!r}")
        thinking = data.get("thinking", True)
        if not isinstance(thinking, bool):
            raise ValueError(f"thinking must be true or false, got {thinking!r}")
        return cls(sampling=sampling, max_new_tokens=max_new, thinking=thinking)


def sampling_from_defaults(defaults: dict[str, Any] | None) -> SamplingParams:
    """SamplingParams from a generation_config.json-like dict.

    Known keys are taken one by one; a value that would be invalid is skipped (the
    built-in default stays) so that an odd generation_config never blocks a chat.
    ``do_sample: false`` means greedy decoding.
    """
    params = SamplingParams()
    if not defaults:
        return params
    if defaults.get("do_sample") is False:
        params = params.with_(temperature=0.0)
    for name in SAMPLING_NAMES:
        if name not in defaults or name == "seed":
            continue
        if name == "temperature" and params.temperature == 0.0:
            continue
        value = defaults[name]
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        try:
            params = params.with_(**{name: value})
        except (SamplingError, TypeError):
            continue
    return params


def describe_sampling(settings: ChatSettings) -> str:
    """One line such as ``temperature 0.6 · top_p 0.95 · ... · thinking on``."""
    parts = []
    for name, value in settings.to_dict().items():
        if name == "thinking":
            value = "on" if value else "off"
        elif value is None:
            value = "none"
        parts.append(f"{name} {value}")
    return " · ".join(parts)
