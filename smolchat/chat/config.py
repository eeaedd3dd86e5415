"""Settings from the config file, the environment and the command line, and where each came from.

The config file is ``config.toml`` in the platform's config folder (``$XDG_CONFIG_HOME/smolchat``,
``~/.config/smolchat`` on Linux; ``SMOLCHAT_CONFIG`` names another file). Its keys are the long
command-line option names with underscores::

    temperature = 0.3
    think = false
    theme = "nord"
    preset = "coder"              # the preset used when none is given

    [presets.coder]               # --preset coder, /preset coder
    system = "You are a careful Python reviewer."
    temperature = 0.2

Precedence, highest first: the command line, the environment (``SMOLCHAT_TEMPERATURE=0.3``...),
the preset chosen (``--preset``, ``SMOLCHAT_PRESET`` or ``preset =``), the config file's top
level, then the model's own defaults (its generation_config). A resumed chat keeps its saved
settings unless an option is given on the command line.

A bad file, key or value raises :class:`SettingsError` whose message is one line naming the file
and line (or the variable) and the fix. ``lenient=True`` (``smolchat config`` and ``smolchat
chats``, which must work while the file has a typo) leaves each such key out instead and keeps
its message in ``problems``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolchat.chat.attachments import DEFAULT_MAX_FILE_KB
from smolchat.chat.paths import default_config_file
from smolchat.engine.types import SamplingParams
from smolchat.errors import SamplingError, SmolchatError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_MAX_FILE_KB",
    "ENV_PREFIX",
    "KEYS",
    "SESSION_KEYS",
    "ConfigFile",
    "Effective",
    "Key",
    "Preset",
    "SettingsError",
    "Source",
    "from_environment",
    "load_config",
    "parse_value",
    "resolve",
]

ENV_PREFIX = "SMOLCHAT_"


class SettingsError(SmolchatError):
    """A config file, preset or SMOLCHAT_* variable is wrong; the message is one line."""


# --- the keys --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One setting: its type, a check, and a few words for --print-config."""

    name: str
    kind: str  # "str" | "float" | "int" | "bool" | "path"
    help: str
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    choices: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _sampling_check(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        try:
            SamplingParams().with_(**{name: value})
        except (SamplingError, TypeError) as error:
            return str(error)
        return None

    return check


def _device_check(value: Any) -> str | None:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(value)):
        return None
    return f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps"


def _positive(value: Any) -> str | None:
    return None if value >= 1 else f"must be 1 or more, got {value}"


_KEYS = [
    Key("model", "str", "hub id, local folder or .gguf file"),
    Key("server", "str", "an OpenAI-compatible API base (http://host:8000/v1) to chat through"),
    Key("tokenizer", "str", "with server: a folder or hub id for exact token counts"),
    Key("device", "str", "auto, cpu, cuda, cuda:N or mps", _device_check),
    Key("dtype", "str", "weights' dtype", choices=("auto", "bfloat16", "float16", "float32")),
    Key("quantize", "str", "nf4, or none", choices=("none", "nf4")),
    *(
        Key(n, "int" if n in ("top_k", "seed") else "float", "sampling", _sampling_check(n))
        for n in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
    ),
    Key("max_new_tokens", "int", "longest reply, in tokens", _positive),
    Key("system", "str", "system prompt"),
    Key("think", "bool", "reason before answering"),
    Key("theme", "str", "TUI theme"),
    Key("message_width", "int", "TUI: columns a message takes at most; 0 = the full width"),
    Key("transcripts", "path", "folder for transcripts"),
    Key("autosave", "bool", "save every reply"),
    Key("max_file_kb", "int", "largest file /read and -f accept, in KB", _positive),
    Key("preset", "str", "the preset to use"),
]
KEYS: dict[str, Key] = {k.name: k for k in _KEYS}
# what a saved chat carries (a resumed chat keeps these unless the command line says otherwise)
SESSION_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "max_new_tokens",
    "think",
    "system",
)
PRESET_KEYS = tuple(k for k in KEYS if k != "preset")


def parse_value(key: Key, raw: Any, *, from_text: bool = False) -> Any:
    """``raw`` checked (and, ``from_text``, converted from a string) for ``key``.

    Raises ValueError with what is wrong and what to give instead.
    """
    value = raw
    if from_text and isinstance(raw, str):
        text = raw.strip()
        if key.kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                value = True
            elif lowered in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError("must be true or false (also 1/0, yes/no, on/off)")
        elif key.kind == "int":
            if key.name == "seed" and text.lower() in ("none", ""):
                return None
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"must be a whole number, got {raw!r}") from None
        elif key.kind == "float":
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"must be a number, got {raw!r}") from None
    if key.kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    if key.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"must be a whole number, got {value!r}")
    if key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
    if key.kind in ("str", "path") and not isinstance(value, str):
        raise ValueError(f'must be a string in quotes, e.g. {key.name} = "..."')
    if key.kind == "path":
        value = Path(value).expanduser()
    if key.choices and value not in key.choices:
        raise ValueError(f"must be one of {', '.join(key.choices)}, got {value!r}")
    if key.check is not None:
        wrong = key.check(value)
        if wrong:
            raise ValueError(wrong)
    return value


# --- sources ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where a value came from: ``layer`` is one of LAYERS; ``where`` says exactly."""

    layer: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.layer} ({self.where})" if self.where else self.layer


COMMAND_LINE = "command line"
ENVIRONMENT = "environment"
PRESET = "preset"
CONFIG_FILE = "config file"
DEFAULT = "default"
LAYERS = (COMMAND_LINE, ENVIRONMENT, PRESET, CONFIG_FILE, DEFAULT)


# --- the file --------------------------------------------------------------------------------
@dataclass
class Preset:
    """A ``[presets.NAME]`` table: a system prompt and any settings."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class ConfigFile:
    """The parsed config file (empty when there is none)."""

    path: Path
    exists: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # lenient: each key left out, and why

    def report(self, error: SettingsError, lenient: bool) -> None:
        """Raise ``error``; ``lenient``: note it in ``problems`` instead (the key is left out)."""
        if not lenient:
            raise error
        self.problems.append(str(error))

    def where(self, key: str, preset: str | None = None) -> str:
        lines = self.presets[preset].lines if preset else self.lines
        line = lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path)


_HEADER = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> line number, for messages (``table`` is "" at the top level)."""
    out: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = ".".join(p.strip().strip("\"'") for p in header.group(1).split("."))
            out.setdefault((table, ""), number)
            continue
        key = _KEY_LINE.match(line)
        if key:
            out.setdefault((table, key.group(1).strip("\"'")), number)
    return out


def _unknown(path: Path, line: int | None, name: str, allowed: tuple[str, ...]) -> SettingsError:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
    at = f"{path}:{line}" if line else str(path)
    return SettingsError(f"{at}: unknown key {name!r}; {hint}")


def load_config(path: Path | None = None, *, lenient: bool = False) -> ConfigFile:
    """Read and check the config file (``None``: the default one). No file: an empty config.

    Raises SettingsError naming the file, the line and the fix. ``lenient``: a bad key, value
    or preset is left out and a file that cannot be read or parsed reads as empty, each with
    its message in ``problems``.
    """
    path = default_config_file() if path is None else Path(path).expanduser()
    config = ConfigFile(path)
    try:
        data, text = _read_toml(config)
    except SettingsError as error:
        config.report(error, lenient)
        return config
    lines = _key_lines(text)
    presets = data.pop("presets", {})  # (its tables follow the top-level keys in the file)
    _read_keys(config, config, data, "", lines, lenient)
    if not isinstance(presets, dict):
        line = lines.get(("", "presets"))
        not_tables = SettingsError(
            f"{path}:{line}: presets must be tables, e.g. [presets.coder] on its own line"
        )
        config.report(not_tables, lenient)
        presets = {}
    for pname, table in presets.items():
        try:
            config.presets[pname] = _preset(config, pname, table, lines, lenient)
        except SettingsError as error:
            config.report(error, lenient)
    chosen = config.values.get("preset")
    if chosen is not None and chosen not in config.presets:
        missing = SettingsError(
            f"{config.where('preset')}: no preset {chosen!r}; " + _presets_hint(config)
        )
        config.report(missing, lenient)
        del config.values["preset"]
    return config


def _read_toml(config: ConfigFile) -> tuple[dict[str, Any], str]:
    """The file's TOML table and text (empty for no file); SettingsError if it can't be had."""
    path = config.path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, ""
    except OSError as error:
        raise SettingsError(f"{path}: cannot read it ({error.strerror or error})") from None
    config.exists = True
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SettingsError(
            f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        what = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
        at = f"{path}:{m.group(1)}" if m else str(path)
        raise SettingsError(
            f"{at}: {what[0].lower() + what[1:]}; fix the TOML there "
            '(strings need quotes: theme = "nord"; true/false in lower case)'
        ) from None


def _presets_hint(config: ConfigFile) -> str:
    if config.presets:
        return f"presets: {', '.join(config.presets)}"
    return f"define one as a [presets.NAME] table in {config.path}"


def _checked(path: Path, line: int | None, key: Key, value: Any) -> Any:
    try:
        return parse_value(key, value)
    except ValueError as error:
        at = f"{path}:{line}" if line else str(path)
        what = str(error) if str(error).startswith(key.name) else f"{key.name} {error}"
        raise SettingsError(f"{at}: {what}") from None


def _preset(
    config: ConfigFile, name: str, table: Any, lines: dict[tuple[str, str], int], lenient: bool
) -> Preset:
    path = config.path
    header = lines.get((f"presets.{name}", ""))
    if not isinstance(table, dict):
        at = f"{path}:{lines.get(('presets', name)) or header or ''}".rstrip(":")
        raise SettingsError(f"{at}: preset {name!r} must be a table: [presets.{name}]")
    preset = Preset(name)
    _read_keys(config, preset, table, f"presets.{name}", lines, lenient)
    return preset


def _read_keys(
    config: ConfigFile,
    into: ConfigFile | Preset,
    table: Mapping[str, Any],
    section: str,
    lines: dict[tuple[str, str], int],
    lenient: bool,
) -> None:
    """Check the keys of ``table`` (the file's ``section``: "" for the top level, else
    ``presets.NAME``) into ``into.values``, their line numbers into ``into.lines``. A bad one
    raises SettingsError (``lenient``: it is left out, its message in ``config.problems``)."""
    allowed = PRESET_KEYS if isinstance(into, Preset) else (*KEYS, "presets")
    for key, value in table.items():
        line = lines.get((section, key))
        try:
            if key not in allowed or key not in KEYS:
                raise _unknown(config.path, line, key, allowed)
            into.values[key] = _checked(config.path, line, KEYS[key], value)
        except SettingsError as error:
            config.report(error, lenient)
            continue
        if line:
            into.lines[key] = line


# --- the environment -------------------------------------------------------------------------
def from_environment(
    environ: Mapping[str, str] | None = None, problems: list[str] | None = None
) -> dict[str, Any]:
    """The settings given as ``SMOLCHAT_*`` variables (empty values ignored).

    Other ``SMOLCHAT_*`` variables are switches of other parts (``SMOLCHAT_NO_CUDA_GRAPHS``,
    ``SMOLCHAT_CACHE_DIR``, a test harness's ``SMOLCHAT_CI``...) and are ignored, except a name
    that is a near miss of a setting's (``SMOLCHAT_TEMPRATURE``): that is a typo, and an error.
    Raises SettingsError for such a typo or a bad value; given ``problems``, that variable is
    left out and the message goes there instead.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    others = {"SMOLCHAT_CONFIG", "SMOLCHAT_API_KEY"}  # the key is a secret, never a setting
    names = [k.env for k in KEYS.values()]
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in others or raw == "":
            continue
        name = var[len(ENV_PREFIX) :].lower()
        key = KEYS.get(name)
        try:
            if key is None:
                close = difflib.get_close_matches(var, names, n=1, cutoff=0.85)
                if close:
                    raise SettingsError(
                        f"environment variable {var}: no such setting; did you mean {close[0]}?"
                    )
                continue
            try:
                out[name] = parse_value(key, raw, from_text=True)
            except ValueError as error:
                what = str(error).removeprefix(f"{name} ")
                raise SettingsError(f"environment variable {var}={raw!r}: {what}") from None
        except SettingsError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return out


# --- all layers ------------------------------------------------------------------------------
@dataclass
class Effective:
    """The settings in force, each with its source; a missing key means the model's default."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    config: ConfigFile | None = None
    preset: Preset | None = None
    problems: list[str] = field(default_factory=list)  # lenient: what was left out, and why

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def from_command_line(self, name: str) -> bool:
        """True if ``name`` was given on the command line, or by a preset named there."""
        src = self.sources.get(name)
        if src is None:
            return False
        if src.layer == PRESET:
            chosen = self.sources.get("preset")
            return chosen is not None and chosen.layer == COMMAND_LINE
        return src.layer == COMMAND_LINE

    def table(
        self, defaults: Mapping[str, tuple[Any, Source]] | None = None
    ) -> list[tuple[str, str, str]]:
        """(key, value, source) rows for every key, for ``--print-config``.

        ``defaults``: the value and source of a key nothing here sets (the model's own, a
        built-in default); a key missing from both reads ``-``, ``default``. Values are whole
        (a path is never cut) and on one line (a line break reads ``\\n``).
        """
        defaults = defaults or {}
        rows = []
        for name in KEYS:
            if name in self.values:
                value, source = self.values[name], self.sources[name]
            elif name in defaults:
                value, source = defaults[name]
            else:
                rows.append((name, "-", DEFAULT))
                continue
            shown = "true" if value is True else "false" if value is False else str(value)
            if value is None:
                shown = "none"
            if name == "server":
                shown = _without_credentials(shown)
            rows.append((name, shown.replace("\n", "\\n"), str(source)))
        return rows


def _without_credentials(url: str) -> str:
    """A URL without ``user:password@``, query or fragment (what may be shown or recorded)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve(
    command_line: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config: ConfigFile | None = None,
    *,
    lenient: bool = False,
) -> Effective:
    """Merge the layers: command line > environment > preset > config file > defaults.

    ``command_line``: only the options that were given (values already checked by the CLI).
    Raises SettingsError for a bad config file, variable or preset name. ``lenient``: a bad
    key of the file or a bad variable is left out, its message in ``Effective.problems`` (a
    preset the command line names must still exist).
    """
    config = load_config(lenient=lenient) if config is None else config
    problems = list(config.problems)
    env = from_environment(environ, problems if lenient else None)
    out = Effective(config=config, problems=problems)
    preset_name: str | None = None
    preset_source = Source(DEFAULT)
    for layer, values, where in (
        (COMMAND_LINE, command_line, lambda n: ""),
        (ENVIRONMENT, env, lambda n: KEYS[n].env),
        (CONFIG_FILE, config.values, lambda n: config.where(n)),
    ):
        if values.get("preset") is not None:
            preset_name, preset_source = values["preset"], Source(layer, where("preset"))
            break
    if preset_name is not None:
        out.preset = config.presets.get(preset_name)
        if out.preset is None:
            error = SettingsError(
                f"no preset {preset_name!r} ({preset_source}); {_presets_hint(config)}"
            )
            if not lenient or preset_source.layer == COMMAND_LINE:
                raise error
            problems.append(str(error))
            preset_name = None
        else:
            out.values["preset"], out.sources["preset"] = preset_name, preset_source
    preset_values = out.preset.values if out.preset else {}
    layers: list[tuple[str, Mapping[str, Any], Callable[[str], str]]] = [
        (COMMAND_LINE, command_line, lambda n: ""),
        (ENVIRONMENT, env, lambda n: KEYS[n].env),
        (PRESET, preset_values, lambda n: f"{preset_name}, {config.where(n, preset_name)}"),
        (CONFIG_FILE, config.values, lambda n: config.where(n)),
    ]
    for name in KEYS:
        if name == "preset":
            continue
        for layer, values, where in layers:
            if name in values and values[name] is not None:
                out.values[name] = values[name]
                out.sources[name] = Source(layer, where(name))
                break
    return out


# --- applying settings to a conversation -----------------------------------------------------
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")


def session_values(session: Any) -> dict[str, Any]:
    """The session keys' current values on a ChatSession (for messages and comparisons)."""
    s = session.settings
    out: dict[str, Any] = {n: getattr(s.sampling, n) for n in _SAMPLING}
    out["max_new_tokens"] = s.max_new_tokens
    out["think"] = s.thinking
    out["system"] = session.system_prompt
    return out


def apply_settings(session: Any, values: Mapping[str, Any]) -> None:
    """Set the session keys among ``values`` on a ChatSession (others are ignored).

    Raises SamplingError for a value out of range (the session is then unchanged).
    """
    settings = session.settings
    sampling = settings.sampling.with_(**{n: values[n] for n in _SAMPLING if n in values})
    settings.sampling = sampling
    if "max_new_tokens" in values:
        settings.max_new_tokens = values["max_new_tokens"]
    if "think" in values:
        settings.thinking = values["think"]
    if "system" in values:
        session.set_system(values["system"])


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        line = " ".join(value.split())
        return repr(line if len(line) <= 40 else line[:39] + "…")
    return str(value)


def apply_on_resume(session: Any, effective: Effective) -> str:
    """After loading a saved chat: re-apply what the command line gave; say which won.

    Returns one line such as ``temperature 0.1 from the command line (the chat
    had 0.6); kept the chat's top_p 0.9 over the config file's 0.95``.
    """
    saved = session_values(session)
    given = {n: effective.values[n] for n in SESSION_KEYS if effective.from_command_line(n)}
    apply_settings(session, given)
    won = [
        f"{n} {_show(v)}" + (f" (the chat had {_show(saved[n])})" if saved[n] != v else "")
        for n, v in given.items()
    ]
    kept = [
        f"{n} {_show(saved[n])} over {effective.sources[n].layer} {_show(effective.values[n])}"
        for n in SESSION_KEYS
        if n not in given and n in effective.values and saved[n] != effective.values[n]
    ]
    parts = []
    if won:
        parts.append("from the command line: " + ", ".join(won))
    if kept:
        parts.append("kept the chat's " + ", ".join(kept))
    return "; ".join(parts) if parts else "with its saved settings"
