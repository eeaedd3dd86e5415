"""Per-session chat settings (sampling, reply length, thinking mode) and the ``/set`` grammar.

:data:`SETTINGS` describes every setting a user can change with ``/set NAME VALUE``: its kind,
its allowed values and its help line. :func:`find_setting` resolves a typed name (aliases,
``-`` for ``_``, a close-match suggestion); :meth:`Setting.parse` turns the typed value into a
valid one or raises :class:`~smolchat.errors.CommandError` (one line naming what is allowed);
:meth:`Setting.apply` stores it. A new setting is one entry in :data:`SETTINGS` (and a field of
:class:`ChatSettings`, saved by ``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from smolchat.engine.types import SamplingParams
from smolchat.errors import CommandError, SamplingError

DEFAULT_MAX_NEW_TOKENS = 4096
MAX_NEW_TOKENS_CAP = 1 << 20  # upper bound of the setting; the context length clamps it anyway

SAMPLING_NAMES = tuple(f.name for f in fields(SamplingParams))


@dataclass
class ChatSettings:
    """What the next turn is generated with."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    thinking: bool = True  # session-wide think / no-think (the template's enable_thinking)
    thinking_budget: int | None = None  # reasoning tokens before smolchat closes the block

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict (transcripts, /set listing); ``thinking_budget`` only if set."""
        out: dict[str, Any] = {n: getattr(self.sampling, n) for n in SAMPLING_NAMES}
        out["max_new_tokens"] = self.max_new_tokens
        out["thinking"] = self.thinking
        if self.thinking_budget is not None:
            out["thinking_budget"] = self.thinking_budget
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
        budget = data.get("thinking_budget")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 0
        ):
            raise ValueError(f"thinking_budget must be a whole number >= 0, got {budget!r}")
        return cls(
            sampling=sampling, max_new_tokens=max_new, thinking=thinking, thinking_budget=budget
        )


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


# --- the /set grammar ------------------------------------------------------------------------

SettingKind = Literal["float", "int", "seed", "bool", "budget"]
SettingValue = float | int | bool | None
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


def suggest(word: str, choices: list[str], prefix: str = "") -> str:
    """``"; did you mean PREFIX+CHOICE?"`` for the closest choice to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(word)][:1] if word else []
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def show_value(value: SettingValue) -> str:
    """A setting's value as ``/set`` prints it: ``none``, ``on``/``off``, or the number."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@dataclass(frozen=True)
class Setting:
    """One setting of ``/set``: how its value is typed, checked, read and stored."""

    name: str
    kind: SettingKind
    help: str
    aliases: tuple[str, ...] = ()

    def bounds(self, context_limit: int) -> tuple[float, float] | None:
        """Inclusive (low, high) of a numeric setting; ``max_new_tokens`` is capped by the
        context length (tokens)."""
        if self.name == "max_new_tokens":
            return 1, min(MAX_NEW_TOKENS_CAP, context_limit)
        if self.kind == "budget":
            return 0, context_limit
        return SamplingParams.RANGES.get(self.name)

    def allowed(self, context_limit: int) -> str:
        """The allowed values in words, e.g. ``a number from 0.0 to 10.0``."""
        if self.kind == "bool":
            return "on or off"
        low, high = self.bounds(context_limit)  # type: ignore[misc]
        if self.name == "top_p":
            return f"a number above {low} up to {high}"
        if self.kind == "seed":
            return f"a whole number from {low} to {high}, or none"
        if self.kind == "budget":
            return f"a number of tokens from {low} to {high}, or none (no cap)"
        if self.kind == "int":
            return f"a whole number from {low} to {high}"
        return f"a number from {low} to {high}"

    def parse(self, raw: str, context_limit: int) -> SettingValue:
        """The value typed as ``raw``; CommandError (one line) if it is not allowed."""
        bad = CommandError(f"{self.name} must be {self.allowed(context_limit)}, got {raw[:40]!r}")
        word = raw.strip().lower()
        if self.kind == "bool":
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise bad
        if self.kind in ("seed", "budget") and word in ("none", "random", "off"):
            return None
        value: float | int
        if self.kind in ("int", "seed", "budget"):
            try:
                value = int(word)
            except ValueError:
                try:
                    number = float(word)
                except ValueError:
                    raise bad from None
                if not math.isfinite(number) or not number.is_integer() or abs(number) > 2**53:
                    raise bad from None
                value = int(number)
        else:
            try:
                value = float(word)
            except ValueError:
                raise bad from None
            if not math.isfinite(value):
                raise bad
        low, high = self.bounds(context_limit)  # type: ignore[misc]
        if not (low <= value <= high) or (self.name == "top_p" and value <= 0):
            raise bad
        return value

    def get(self, settings: ChatSettings) -> SettingValue:
        if self.name in SAMPLING_NAMES:
            return getattr(settings.sampling, self.name)  # type: ignore[no-any-return]
        return getattr(settings, self.name)  # type: ignore[no-any-return]

    def apply(self, settings: ChatSettings, value: SettingValue, context_limit: int) -> None:
        """Store a value returned by :meth:`parse` (CommandError if the sampler refuses it)."""
        if self.name in SAMPLING_NAMES:
            try:
                settings.sampling = settings.sampling.with_(**{self.name: value})
            except SamplingError as exc:
                raise CommandError(f"{exc} ({self.allowed(context_limit)})") from None
        else:
            setattr(settings, self.name, value)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "temperature", "float", "randomness; 0 (or below 1e-5) = greedy", aliases=("temp",)
        ),
        Setting("top_p", "float", "nucleus sampling; 1 = off"),
        Setting("top_k", "int", "sample from the k most likely; 0 = off"),
        Setting("min_p", "float", "drop tokens below min_p x the top one; 0 = off"),
        Setting(
            "repetition_penalty",
            "float",
            "1 = off",
            aliases=("repeat_penalty", "rep_penalty"),
        ),
        Setting("seed", "seed", "random seed; none = fresh each time"),
        Setting("max_new_tokens", "int", "longest reply, in tokens", aliases=("max_tokens",)),
        Setting("thinking", "bool", "reason before answering (also /think)"),
        Setting(
            "thinking_budget",
            "budget",
            "reasoning tokens at most; then the reasoning is closed and the answer follows",
            aliases=("think_budget", "budget"),
        ),
    )
}
SETTING_ALIASES: dict[str, str] = {a: s.name for s in SETTINGS.values() for a in s.aliases}


def find_setting(word: str) -> Setting:
    """The setting named ``word`` (any case, ``-`` or ``_``, aliases); CommandError if none."""
    key = word.lower().replace("-", "_")
    name = SETTING_ALIASES.get(key, key)
    if name in SETTINGS:
        return SETTINGS[name]
    hint = suggest(key, [*SETTINGS, *SETTING_ALIASES])
    raise CommandError(f"unknown setting {word[:40]!r}{hint} (settings: {', '.join(SETTINGS)})")


THINKING_SETTINGS = frozenset({"thinking", "thinking_budget"})


def settings_table(settings: ChatSettings, context_limit: int, *, thinking: bool = True) -> str:
    """Every setting as a Markdown table: name, value, allowed values, meaning.

    ``thinking=False`` (a model whose chat template has no thinking mode) leaves out the
    rows of :data:`THINKING_SETTINGS`."""
    rows = ["| setting | value | allowed | meaning |", "|---|---|---|---|"]
    for spec in SETTINGS.values():
        if not thinking and spec.name in THINKING_SETTINGS:
            continue
        value = show_value(spec.get(settings))
        rows.append(f"| {spec.name} | {value} | {spec.allowed(context_limit)} | {spec.help} |")
    return "\n".join(rows)
