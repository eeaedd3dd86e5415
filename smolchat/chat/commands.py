"""Slash commands: one registry shared by the TUI, the plain REPL and the tests.

``run_command(session, line)`` validates everything before it changes anything: an unknown
command or a bad value raises :class:`~smolchat.errors.CommandError` (one line, with the allowed
values and a close-match suggestion) and leaves the session as it was. Commands the UI must
carry out come back as an ``action``:

* ``"exit"``: leave the app.
* ``"generate"``: ``stream`` holds the events of a new reply (``/retry``); consume it like
  ``session.send``.
* ``"clear"``: the history changed (``/clear``, ``/undo``, ``/drop``, ``/load``); redraw the
  conversation from ``session.messages`` (empty after ``/clear``). For ``/undo``, ``arg`` is the
  text of the removed user message, to offer it for editing.
* ``"theme"``: switch to theme ``arg``. ``"reasoning"``: ``arg`` is ``"show"`` or ``"hide"``.

Other errors of the session pass through unchanged: ContextOverflowError from ``/retry``,
TranscriptError from ``/save`` and ``/load``, SmolchatError while a reply is being generated.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolchat.chat.events import ChatEvent
from smolchat.chat.session import MIN_REPLY_ROOM, ChatSession
from smolchat.chat.settings import MAX_NEW_TOKENS_CAP, SAMPLING_NAMES
from smolchat.chat.text import valid_text
from smolchat.engine.types import SamplingParams
from smolchat.errors import CommandError, SamplingError

__all__ = [
    "COMMANDS",
    "SETTINGS",
    "Command",
    "CommandResult",
    "complete",
    "is_command",
    "parse_command",
    "run_command",
]


@dataclass
class CommandResult:
    """What a command did, and what (if anything) the UI must do."""

    message: str = ""  # text to show (may be multi-line Markdown, e.g. /help)
    action: str | None = None  # None | "exit" | "generate" | "theme" | "reasoning" | "clear"
    arg: str | None = None  # theme name, "show"/"hide", the undone user text
    stream: Iterator[ChatEvent] | None = None  # /retry: consume it like session.send()


Handler = Callable[[ChatSession, str], CommandResult]


@dataclass
class Command:
    """One slash command: ``usage`` and ``help`` feed /help and completion."""

    name: str
    usage: str
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # fixed argument words, for completion


COMMANDS: dict[str, Command] = {}
_ALIASES: dict[str, str] = {}
_COMMAND_LINE = re.compile(r"/([A-Za-z_][\w-]*)(?:\s+(.*))?", re.DOTALL)


def _command(name: str, usage: str, help: str, *, aliases: tuple[str, ...] = (), args=()):
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, usage, help, fn, aliases, tuple(args))
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return register


# --- parsing -------------------------------------------------------------------------------


def is_command(line: str) -> bool:
    """True if ``line`` is a slash command (``/name`` first; ``/usr/bin ...`` is a message).

    A message that merely *ends* with ``/think`` or ``/no_think`` is not a command: it is sent,
    and the flag sets the thinking mode of that turn only.
    """
    return _COMMAND_LINE.fullmatch(line.strip()) is not None


def parse_command(line: str) -> tuple[str, str]:
    """``(name, args)`` of a command line; the name is lowercased, aliases resolved."""
    m = _COMMAND_LINE.fullmatch(line.strip())
    if m is None:
        raise CommandError(
            f"not a command: {line.strip()[:40]!r}; commands start with /, see /help"
        )
    name = m.group(1).lower().replace("-", "_")
    return _ALIASES.get(name, name), (m.group(2) or "").strip()


def _suggest(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(word)][:1] if word else []
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def run_command(session: ChatSession, line: str) -> CommandResult:
    """Run one slash command on ``session``; CommandError (one line) if it is wrong."""
    name, args = parse_command(line)
    command = COMMANDS.get(name)
    if command is None:
        names = sorted([*COMMANDS, *_ALIASES])
        hint = _suggest(name, names, "/")
        raise CommandError(f"unknown command /{name}{hint} (/help lists them)")
    return command.handler(session, args)


def _no_args(name: str, args: str, extra: str = "") -> None:
    if args:
        raise CommandError(f"/{name} takes no argument, got {args[:40]!r}{extra}")


def _one_path(name: str, args: str) -> str:
    """A path argument: the rest of the line, or one shell-quoted word."""
    text = args.strip()
    if text[:1] in ("'", '"'):
        try:
            parts = shlex.split(text)
        except ValueError:
            raise CommandError(f"/{name}: unbalanced quotes in {text[:60]!r}") from None
        if len(parts) != 1:
            raise CommandError(f"/{name} takes one path; quote it if it has spaces")
        return parts[0]
    return text


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: str  # "float" | "int" | "seed" | "bool"
    help: str


SETTINGS: dict[str, SettingSpec] = {
    "temperature": SettingSpec("temperature", "float", "randomness; 0 (or below 1e-5) = greedy"),
    "top_p": SettingSpec("top_p", "float", "nucleus sampling; 1 = off"),
    "top_k": SettingSpec("top_k", "int", "sample from the k most likely; 0 = off"),
    "min_p": SettingSpec("min_p", "float", "drop tokens below min_p x the top one; 0 = off"),
    "repetition_penalty": SettingSpec("repetition_penalty", "float", "1 = off"),
    "seed": SettingSpec("seed", "seed", "random seed; none = fresh each time"),
    "max_new_tokens": SettingSpec("max_new_tokens", "int", "longest reply, in tokens"),
    "thinking": SettingSpec("thinking", "bool", "reason before answering (also /think)"),
}
_SETTING_ALIASES = {
    "temp": "temperature",
    "max_tokens": "max_new_tokens",
    "repeat_penalty": "repetition_penalty",
    "rep_penalty": "repetition_penalty",
}
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


def _range(session: ChatSession, name: str) -> tuple[float, float] | None:
    if name == "max_new_tokens":
        return 1, min(MAX_NEW_TOKENS_CAP, session.context_limit())
    return SamplingParams.RANGES.get(name)


def _range_text(session: ChatSession, name: str) -> str:
    spec = SETTINGS[name]
    if spec.kind == "bool":
        return "on or off"
    low, high = _range(session, name)  # type: ignore[misc]
    if name == "top_p":
        return f"a number above {low} up to {high}"
    if spec.kind == "seed":
        return f"a whole number from {low} to {high}, or none"
    if spec.kind == "int":
        return f"a whole number from {low} to {high}"
    return f"a number from {low} to {high}"


def _current(session: ChatSession, name: str) -> Any:
    if name in SAMPLING_NAMES:
        return getattr(session.settings.sampling, name)
    return getattr(session.settings, name)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _parse_value(session: ChatSession, name: str, raw: str) -> Any:
    spec = SETTINGS[name]
    allowed = _range_text(session, name)
    bad = CommandError(f"{name} must be {allowed}, got {raw[:40]!r}")
    word = raw.strip().lower()
    if spec.kind == "bool":
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise bad
    if spec.kind == "seed" and word in ("none", "random", "off"):
        return None
    if spec.kind in ("int", "seed"):
        try:
            value: float | int = int(word)
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
    low, high = _range(session, name)  # type: ignore[misc]
    if not (low <= value <= high) or (name == "top_p" and value <= 0):
        raise bad
    return value


def _settings_table(session: ChatSession) -> str:
    rows = ["| setting | value | allowed | meaning |", "|---|---|---|---|"]
    for name, spec in SETTINGS.items():
        value = _show(_current(session, name))
        rows.append(f"| {name} | {value} | {_range_text(session, name)} | {spec.help} |")
    return "\n".join(rows)


@_command(
    "set",
    "/set [NAME [VALUE]]",
    "show the settings, or change one (temperature, top_p, top_k, min_p, repetition_penalty, "
    "seed, max_new_tokens, thinking)",
    args=tuple(SETTINGS),
)
def _cmd_set(session: ChatSession, args: str) -> CommandResult:
    if not args:
        return CommandResult(_settings_table(session))
    if "=" in args.split()[0]:
        args = args.replace("=", " ", 1)
    parts = args.split()
    if not parts:
        raise CommandError("usage: /set NAME VALUE (or /set alone to show the settings)")
    key = parts[0].lower().replace("-", "_")
    name = _SETTING_ALIASES.get(key, key)
    if name not in SETTINGS:
        hint = _suggest(key, [*SETTINGS, *_SETTING_ALIASES])
        raise CommandError(
            f"unknown setting {parts[0][:40]!r}{hint} (settings: {', '.join(SETTINGS)})"
        )
    if len(parts) == 1:
        value = _show(_current(session, name))
        return CommandResult(f"{name} = {value} ({_range_text(session, name)})")
    if len(parts) > 2:
        raise CommandError(f"/set {name} takes one value ({_range_text(session, name)})")
    value = _parse_value(session, name, parts[1])
    old = _current(session, name)
    if name in SAMPLING_NAMES:
        try:
            session.settings.sampling = session.settings.sampling.with_(**{name: value})
        except SamplingError as exc:
            raise CommandError(f"{exc} ({_range_text(session, name)})") from None
    else:
        setattr(session.settings, name, value)
    return CommandResult(f"{name}: {_show(old)} → {_show(value)}")


# --- conversation commands -----------------------------------------------------------------


@_command("help", "/help [COMMAND]", "list the commands, or explain one", aliases=("h", "?"))
def _cmd_help(session: ChatSession, args: str) -> CommandResult:
    if args:
        key = args.split()[0].lstrip("/").lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in COMMANDS:
            hint = _suggest(key, list(COMMANDS), "/")
            raise CommandError(f"no command /{key}{hint}")
        cmd = COMMANDS[key]
        text = f"`{cmd.usage}`: {cmd.help}"
        if cmd.aliases:
            text += " (also " + ", ".join(f"/{a}" for a in cmd.aliases) + ")"
        if key == "set":
            text += "\n\n" + _settings_table(session)
        return CommandResult(text)
    rows = ["| command | what it does |", "|---|---|"]
    # a "|" inside a table cell ends the cell, even inside a code span: escape it
    rows += [f"| `{_cell(c.usage)}` | {_cell(c.help)} |" for c in COMMANDS.values()]
    rows.append("")
    rows.append(
        "End a message with `/think` or `/no_think` to set the thinking mode for that message only."
    )
    return CommandResult("\n".join(rows))


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _thinking_note(session: ChatSession) -> str:
    system = session.system_prompt or ""
    if "/no_think" in system:
        return " Note: the system prompt contains /no_think, which turns thinking off anyway."
    if "/think" in system:
        return " Note: the system prompt contains /think, which turns thinking on anyway."
    return ""


@_command(
    "system",
    "/system [TEXT | --clear]",
    "show the system prompt, set it to TEXT, or go back to the model's default",
)
def _cmd_system(session: ChatSession, args: str) -> CommandResult:
    if not args:
        if session.system_prompt is None:
            return CommandResult("No system prompt is set (the model's default applies).")
        return CommandResult("System prompt:\n\n" + session.system_prompt)
    if args in ("--clear", "--reset", "--default"):
        session.set_system(None)
        return CommandResult("System prompt cleared (the model's default applies).")
    args = valid_text(args)
    tokens = len(session.engine.tokenizer.encode(args))
    room = session.context_limit() - MIN_REPLY_ROOM
    if tokens > room:
        raise CommandError(
            f"the system prompt is {tokens} tokens but at most {room} fit the "
            f"{session.context_limit()}-token context; shorten it"
        )
    session.set_system(args)
    return CommandResult(f"System prompt set ({tokens} tokens).{_thinking_note(session)}")


@_command("think", "/think", "thinking mode on: the model reasons before it answers")
def _cmd_think(session: ChatSession, args: str) -> CommandResult:
    _no_args("think", args, "; to think for one message only, end the message with /think")
    session.settings.thinking = True
    return CommandResult("Thinking on for the next turns." + _thinking_note(session))


@_command("no_think", "/no_think", "thinking mode off: the model answers directly")
def _cmd_no_think(session: ChatSession, args: str) -> CommandResult:
    _no_args("no_think", args, "; to skip thinking for one message, end it with /no_think")
    session.settings.thinking = False
    return CommandResult("Thinking off for the next turns." + _thinking_note(session))


@_command("save", "/save [PATH]", "save the transcript (Markdown); no PATH: the autosave file")
def _cmd_save(session: ChatSession, args: str) -> CommandResult:
    path = session.save(_one_path("save", args) or None)
    return CommandResult(f"Saved to {path}")


@_command("load", "/load PATH", "load a transcript: its history, system prompt and settings")
def _cmd_load(session: ChatSession, args: str) -> CommandResult:
    raw = _one_path("load", args)
    if not raw:
        raise CommandError("/load needs a path: /load PATH (a Markdown transcript)")
    data = session.load(Path(raw))
    turns = session.exchanges()
    note = ""
    model = str(getattr(session.engine, "model_name", "") or "")
    if data.model and model and data.model != model:
        note = f" It was recorded with {data.model}."
    message = f"Loaded {turns} turn{'s' if turns != 1 else ''} from {raw}.{note}"
    return CommandResult(message, action="clear")


@_command("retry", "/retry", "generate the last reply again")
def _cmd_retry(session: ChatSession, args: str) -> CommandResult:
    _no_args("retry", args)
    return CommandResult(action="generate", stream=session.retry())


@_command("undo", "/undo", "remove the last exchange (your message and the reply)")
def _cmd_undo(session: ChatSession, args: str) -> CommandResult:
    _no_args("undo", args)
    text = session.undo()
    return CommandResult("Removed the last exchange.", action="clear", arg=text)


@_command("clear", "/clear", "start a new conversation (system prompt and settings stay)")
def _cmd_clear(session: ChatSession, args: str) -> CommandResult:
    _no_args("clear", args)
    session.clear()
    return CommandResult("Started a new conversation.", action="clear")


@_command("drop", "/drop [N]", "remove the N oldest exchanges (default 1) to free context")
def _cmd_drop(session: ChatSession, args: str) -> CommandResult:
    parts = args.split()
    if len(parts) > 1:
        raise CommandError("/drop takes one number: /drop N")
    n = 1
    if parts:
        available = session.exchanges()
        try:
            n = int(parts[0])
        except ValueError:
            raise CommandError(
                f"/drop needs a whole number from 1 to {max(available, 1)}, got {parts[0][:40]!r}"
            ) from None
        if n < 1:
            raise CommandError(f"/drop needs a whole number from 1 to {max(available, 1)}, got {n}")
    dropped = session.drop_oldest(n)
    used, limit = session.context_used(), session.context_limit()
    plural = "s" if dropped != 1 else ""
    return CommandResult(
        f"Dropped the {dropped} oldest exchange{plural}; context {used}/{limit} tokens.",
        action="clear",
    )


def _fmt_stats(session: ChatSession) -> str:
    used, limit = session.context_used(), session.context_limit()
    pct = 100.0 * used / limit if limit else 0.0
    lines = [
        f"- model: {getattr(session.engine, 'model_name', '') or 'unknown'}"
        f" ({getattr(session.engine, 'device', '?')}, {getattr(session.engine, 'dtype', '?')})",
        f"- context: {used} / {limit} tokens ({pct:.1f}%)",
        f"- turns: {session.exchanges()}",
    ]
    st = session.last_stats
    if st is None:
        lines.append("- last reply: none yet")
    else:
        lines.append(
            f"- last reply: {st.generated_tokens} tokens, {st.finish_reason or '?'}; "
            f"{st.decode_tok_s:.1f} tok/s decode"
        )
        lines.append(
            f"- last prompt: {st.prompt_tokens} tokens, {st.cached_tokens} from cache, "
            f"{st.prefilled_tokens} prefilled at {st.prefill_tok_s:.0f} tok/s; "
            f"first token after {st.ttft_s:.2f} s"
        )
    generated = sum(
        int((m.get("stats") or {}).get("generated_tokens") or 0)
        for m in session.messages
        if m.get("role") == "assistant"
    )
    lines.append(f"- generated this conversation: {generated} tokens")
    if session.transcript_path is not None:
        lines.append(f"- transcript: {session.transcript_path}")
    if session.autosave_error:
        lines.append(f"- autosave problem: {session.autosave_error}")
    return "\n".join(lines)


@_command("stats", "/stats", "speed of the last reply and context use")
def _cmd_stats(session: ChatSession, args: str) -> CommandResult:
    _no_args("stats", args)
    return CommandResult(_fmt_stats(session))


@_command("exit", "/exit", "leave smolchat", aliases=("quit", "q"))
def _cmd_exit(session: ChatSession, args: str) -> CommandResult:
    _no_args("exit", args)
    return CommandResult(action="exit")


_THEME_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


@_command("theme", "/theme NAME", "switch the colour theme")
def _cmd_theme(session: ChatSession, args: str) -> CommandResult:
    parts = args.split()
    if len(parts) != 1:
        raise CommandError("/theme needs one theme name: /theme NAME")
    if not _THEME_NAME.fullmatch(parts[0]):
        raise CommandError(
            f"bad theme name {parts[0][:40]!r}: use letters, digits, '-', '_' or '.'"
        )
    return CommandResult(action="theme", arg=parts[0])


@_command("reasoning", "/reasoning show|hide", "show or hide the reasoning", args=("show", "hide"))
def _cmd_reasoning(session: ChatSession, args: str) -> CommandResult:
    word = args.strip().lower()
    if word not in ("show", "hide"):
        got = f", got {args.strip()[:40]!r}" if word else ""
        raise CommandError(f"/reasoning takes show or hide{got}{_suggest(word, ['show', 'hide'])}")
    return CommandResult(action="reasoning", arg=word)


# --- completion ----------------------------------------------------------------------------


def complete(prefix: str) -> list[str]:
    """Completions of a partly typed line, as whole lines, sorted.

    ``"/se"`` gives ``["/set"]``; ``"/set te"`` gives ``["/set temperature"]``;
    ``"/reasoning s"`` gives ``["/reasoning show"]``. A prefix without ``/`` completes bare
    command names (``"he"`` gives ``["help"]``).
    """
    slash = prefix.startswith("/")
    body = prefix[1:] if slash else prefix
    lead = "/" if slash else ""
    if " " not in body:
        word = body.lower()
        return sorted(lead + name for name in COMMANDS if name.startswith(word))
    name, _, rest = body.partition(" ")
    key = _ALIASES.get(name.lower(), name.lower())
    command = COMMANDS.get(key)
    if command is None or not command.args or " " in rest.strip():
        return []
    word = rest.strip().lower()
    return sorted(f"{lead}{name} {a}" for a in command.args if a.startswith(word))


_ORDER = (
    "help", "system", "think", "no_think", "set", "save", "load", "retry", "undo", "clear",
    "drop", "stats", "theme", "reasoning", "exit",
)  # fmt: skip
_registered = dict(COMMANDS)
COMMANDS.clear()
COMMANDS.update({name: _registered[name] for name in _ORDER})
