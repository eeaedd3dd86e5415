"""Slash commands: one registry shared by the TUI, the plain REPL and the tests.

``run_command(session, line)`` validates everything before it changes anything: an unknown
command or a bad value raises :class:`~smolchat.errors.CommandError` (one line, with the allowed
values and a close-match suggestion) and leaves the session as it was. It returns a
:class:`CommandResult`: a Markdown ``message`` to show, and at most one typed ``effect`` the UI
carries out (leave, stream a new reply, redraw the history, switch theme, show or hide the
reasoning, open the help). The UIs match on the effect types; there are no action strings.

Other errors of the session pass through unchanged: ContextOverflowError from ``/retry``,
TranscriptError from ``/save`` and ``/load``, SmolchatError while a reply is being generated.

How to add a command (one place: a decorated function in this module)::

    @command("stats", "/stats", "speed of the last reply and context use")
    def _cmd_stats(session: ChatSession, args: str) -> CommandResult:
        no_args("stats", args)
        return CommandResult(describe_stats(session))

* ``@command(name, usage, help, aliases=(), args=(), complete_arg=None, read_only=False,
  needs_thinking_mode=False, thinking_args=())`` registers it; ``read_only=True`` (the handler
  only reads the session) lets a UI run it while a reply streams. ``needs_thinking_mode=True``
  (/think) hides the command from help, completion and the palette for a model whose template
  has no thinking mode (its handler refuses it there too); ``thinking_args`` are argument words
  hidden the same way (``/set thinking_budget``). UIs list commands with
  :func:`available_commands` and complete with :func:`complete`, passing ``thinking_mode``.
  ``/help``, the hint line above the prompt, Tab completion and the command palette list the
  commands in registration order, i.e. the order of the functions in this file.
* The handler gets the session and the text after the name (stripped). Check the arguments
  first and raise ``CommandError("one line: what is wrong, what to type")``; change the
  session only once everything is valid.
* Return ``CommandResult(message)`` for output only, or with ``effect=`` one of the
  :data:`Effect` types below when the UI must do something. A command that needs something
  the UIs cannot do yet gets a new frozen dataclass here, added to :data:`Effect`; then
  ``ChatScreen.apply_effect`` (smolchat/tui/screens/chat.py) and ``PlainChat.apply_effect``
  (smolchat/plain.py) must handle it: both end in ``assert_never``, so mypy names the UI
  that misses it.
* Completion of the argument: ``args=("show", "hide")`` for fixed words, or
  ``complete_arg=fn`` (the partial argument -> the full arguments it may become) for computed
  ones such as paths (``complete_arg=complete_path``). Values only the UI knows (theme names)
  come in through :func:`complete`'s ``choices``.
* Tests: tests/test_commands.py (the command on a real tiny engine) and
  tests/tui/test_commands.py (the same command typed into the TUI through Pilot).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolchat.chat.attachments import read_attachment
from smolchat.chat.config import SESSION_KEYS, apply_settings
from smolchat.chat.context import context_of, token_count
from smolchat.chat.events import ChatEvent
from smolchat.chat.format import context_use, finish_note
from smolchat.chat.session import MIN_REPLY_ROOM, ChatSession
from smolchat.chat.settings import (
    SETTINGS,
    THINKING_SETTINGS,
    find_setting,
    settings_table,
    show_value,
    suggest,
)
from smolchat.chat.text import valid_text
from smolchat.chat.turns import Reply
from smolchat.errors import CommandError, SmolchatError

__all__ = [
    "COMMANDS",
    "Command",
    "CommandResult",
    "Effect",
    "HistoryChanged",
    "OpenChats",
    "Quit",
    "ShowHelp",
    "ShowReasoning",
    "StreamReply",
    "SwitchTheme",
    "command",
    "available_commands",
    "complete",
    "complete_path",
    "is_command",
    "no_args",
    "parse_command",
    "run_command",
]


# --- what a command asks the UI to do ------------------------------------------------------


@dataclass(frozen=True)
class Quit:
    """Leave smolchat (the transcript is already autosaved)."""


@dataclass(frozen=True)
class StreamReply:
    """A new reply to the last user message replaces the last reply (``/retry``).

    ``stream`` yields the events of the reply; consume it like ``session.send``.
    """

    stream: Iterator[ChatEvent]


@dataclass(frozen=True)
class HistoryChanged:
    """The history changed (``/clear``, ``/undo``, ``/drop``, ``/load``): redraw it from
    ``session.messages``. ``restorable``: the text of a removed user message, to offer back."""

    restorable: str | None = None


@dataclass(frozen=True)
class SwitchTheme:
    """Switch to the colour theme ``name`` (checked by the UI, which knows the themes);
    ``None``: list the themes."""

    name: str | None = None


@dataclass(frozen=True)
class ShowReasoning:
    """Show (True) or hide (False) the reasoning of replies."""

    show: bool


@dataclass(frozen=True)
class ShowHelp:
    """Open the help. ``topic``: the one command asked about (the message explains it), or None
    for everything (the message lists the commands; a UI may add its keys)."""

    topic: str | None = None


@dataclass(frozen=True)
class OpenChats:
    """Open the chat library (``/chats [TEXT]``): the saved chats, searched for ``query``.
    A UI without a browser shows the command's message (the newest chats) instead."""

    query: str = ""


Effect = Quit | StreamReply | HistoryChanged | SwitchTheme | ShowReasoning | ShowHelp | OpenChats


@dataclass(frozen=True)
class CommandResult:
    """What a command did: ``message`` (Markdown, may be empty) and what the UI must do."""

    message: str = ""
    effect: Effect | None = None


# --- the registry --------------------------------------------------------------------------

Handler = Callable[[ChatSession, str], CommandResult]
ArgCompleter = Callable[[str], list[str]]


@dataclass(frozen=True)
class Command:
    """One slash command: ``usage`` and ``help`` feed /help, the hint line and the palette."""

    name: str
    usage: str
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # fixed argument words, for completion
    complete_arg: ArgCompleter | None = None  # computed completions of the argument
    read_only: bool = False  # only reads the session: a UI may run it while a reply streams
    needs_thinking_mode: bool = False  # hidden (and refused) without a thinking mode
    thinking_args: tuple[str, ...] = ()  # argument words hidden without a thinking mode

    def arg_completions(
        self, partial: str, extra: Sequence[str] = (), *, thinking_mode: bool = True
    ) -> list[str]:
        """The arguments ``partial`` may complete to, sorted (fixed words, extra, computed);
        ``thinking_mode=False`` leaves out :attr:`thinking_args`."""
        word = partial.lower()
        hidden = () if thinking_mode else self.thinking_args
        found = {a for a in (*self.args, *extra) if a.lower().startswith(word) and a not in hidden}
        if self.complete_arg is not None:
            found.update(self.complete_arg(partial))
        return sorted(found)


COMMANDS: dict[str, Command] = {}  # in registration order
_ALIASES: dict[str, str] = {}
_COMMAND_LINE = re.compile(r"/([A-Za-z_][\w-]*)(?:\s+(.*))?", re.DOTALL)


def command(
    name: str,
    usage: str,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
    complete_arg: ArgCompleter | None = None,
    read_only: bool = False,
    needs_thinking_mode: bool = False,
    thinking_args: tuple[str, ...] = (),
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``/name`` (see the module docstring)."""

    def register(fn: Handler) -> Handler:
        if name in COMMANDS or name in _ALIASES:
            raise ValueError(f"/{name} is registered twice")
        COMMANDS[name] = Command(
            name,
            usage,
            help,
            fn,
            aliases,
            tuple(args),
            complete_arg,
            read_only,
            needs_thinking_mode,
            tuple(thinking_args),
        )
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


NO_THINKING_MODE = "this model has no thinking mode (its chat template has none)"


def available_commands(*, thinking_mode: bool = True) -> list[Command]:
    """The commands in registration order; ``thinking_mode=False`` (a model whose chat template
    has none, such as SmolLM2) leaves out those that need one."""
    return [c for c in COMMANDS.values() if thinking_mode or not c.needs_thinking_mode]


THINK_SUFFIX_NOTE = (
    "End a message with `/think` or `/no_think` to set the thinking mode for that message only."
)


def find_command(word: str) -> Command | None:
    """The command named ``word`` (with or without ``/``, any case, aliases), or None."""
    key = word.lstrip("/").lower().replace("-", "_")
    return COMMANDS.get(_ALIASES.get(key, key))


def is_read_only(line: str) -> bool:
    """True if ``line`` is a command that only reads the session (/stats, /help): safe to run
    while a reply streams."""
    try:
        name, _ = parse_command(line)
    except CommandError:
        return False
    cmd = COMMANDS.get(name)
    return cmd is not None and cmd.read_only


def run_command(session: ChatSession, line: str) -> CommandResult:
    """Run one slash command on ``session``; CommandError (one line) if it is wrong."""
    name, args = parse_command(line)
    cmd = COMMANDS.get(name)
    if cmd is None:
        names = sorted([*COMMANDS, *_ALIASES])
        hint = suggest(name, names, "/")
        raise CommandError(f"unknown command /{name}{hint} (/help lists them)")
    if cmd.needs_thinking_mode and not session.backend.has_thinking_mode:
        raise CommandError(NO_THINKING_MODE)
    return cmd.handler(session, args)


def no_args(name: str, args: str, extra: str = "") -> None:
    """CommandError if ``/name`` was given an argument (``extra`` is added to the message)."""
    if args:
        raise CommandError(f"/{name} takes no argument, got {args[:40]!r}{extra}")


def one_path(name: str, args: str) -> str:
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


MAX_PATH_COMPLETIONS = 50


def complete_path(partial: str) -> list[str]:
    """The paths ``partial`` may complete to, as typed (``~`` kept), folders ending in ``/``;
    hidden names only when ``partial``'s last part starts with ``.``. For ``complete_arg``."""
    head, _, stem = partial.rpartition("/")
    head = head + "/" if _ else ""
    folder = os.path.expanduser(head) if head else "."
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith(stem) or (name.startswith(".") and not stem.startswith(".")):
            continue
        slash = "/" if os.path.isdir(os.path.join(folder, name)) else ""
        found.append(f"{head}{name}{slash}")
        if len(found) >= MAX_PATH_COMPLETIONS:
            break
    return found


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


# --- the commands, in the order /help lists them --------------------------------------------


@command(
    "help",
    "/help [COMMAND]",
    "list the commands, or explain one",
    aliases=("h", "?"),
    read_only=True,
)
def _cmd_help(session: ChatSession, args: str) -> CommandResult:
    thinking = session.backend.has_thinking_mode
    if args:
        key = args.split()[0].lstrip("/").lower().replace("-", "_")
        cmd = find_command(key)
        if cmd is None:
            hint = suggest(key, list(COMMANDS), "/")
            raise CommandError(f"no command /{key}{hint}")
        text = f"`{cmd.usage}`: {cmd.help}"
        if cmd.aliases:
            text += " (also " + ", ".join(f"/{a}" for a in cmd.aliases) + ")"
        if cmd.name == "set":
            table = settings_table(session.settings, session.context_limit(), thinking=thinking)
            text += "\n\n" + table
        return CommandResult(text, ShowHelp(cmd.name))
    rows = ["| command | what it does |", "|---|---|"]
    # a "|" inside a table cell ends the cell, even inside a code span: escape it
    commands = available_commands(thinking_mode=thinking)
    rows += [f"| `{_cell(c.usage)}` | {_cell(c.help)} |" for c in commands]
    if thinking:
        rows += ["", THINK_SUFFIX_NOTE]
    return CommandResult("\n".join(rows), ShowHelp())


def _thinking_note(session: ChatSession) -> str:
    system = session.system_prompt or ""
    if "/no_think" in system:
        return " Note: the system prompt contains /no_think, which turns thinking off anyway."
    if "/think" in system:
        return " Note: the system prompt contains /think, which turns thinking on anyway."
    return ""


@command(
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
    tokens = session.backend.count_text(args)
    room = session.context_limit() - MIN_REPLY_ROOM
    if tokens > room:
        raise CommandError(
            f"the system prompt is {tokens} tokens but at most {room} fit the "
            f"{session.context_limit()}-token context; shorten it"
        )
    session.set_system(args)
    return CommandResult(f"System prompt set ({tokens} tokens).{_thinking_note(session)}")


def _need_thinking_mode(session: ChatSession) -> None:
    """CommandError unless the backend's chat template has a thinking mode."""
    if not session.backend.has_thinking_mode:
        raise CommandError(NO_THINKING_MODE)


@command(
    "think",
    "/think",
    "thinking mode on: the model reasons before it answers",
    needs_thinking_mode=True,
)
def _cmd_think(session: ChatSession, args: str) -> CommandResult:
    no_args("think", args, "; to think for one message only, end the message with /think")
    session.settings.thinking = True
    return CommandResult("Thinking on for the next turns." + _thinking_note(session))


@command(
    "no_think",
    "/no_think",
    "thinking mode off: the model answers directly",
    needs_thinking_mode=True,
)
def _cmd_no_think(session: ChatSession, args: str) -> CommandResult:
    no_args("no_think", args, "; to skip thinking for one message, end it with /no_think")
    session.settings.thinking = False
    return CommandResult("Thinking off for the next turns." + _thinking_note(session))


@command(
    "set",
    "/set [NAME [VALUE]]",
    "show the settings, or change one (/set alone lists them)",
    args=tuple(SETTINGS),
    thinking_args=tuple(THINKING_SETTINGS),
)
def _cmd_set(session: ChatSession, args: str) -> CommandResult:
    limit = session.context_limit()
    if not args:
        thinking = session.backend.has_thinking_mode
        return CommandResult(settings_table(session.settings, limit, thinking=thinking))
    if "=" in args.split()[0]:
        args = args.replace("=", " ", 1)
    parts = args.split()
    if not parts:
        raise CommandError("usage: /set NAME VALUE (or /set alone to show the settings)")
    spec = find_setting(parts[0])
    if spec.name in THINKING_SETTINGS:
        _need_thinking_mode(session)
    if len(parts) == 1:
        shown = show_value(spec.get(session.settings))
        return CommandResult(f"{spec.name} = {shown} ({spec.allowed(limit)})")
    if len(parts) > 2:
        raise CommandError(f"/set {spec.name} takes one value ({spec.allowed(limit)})")
    value = spec.parse(parts[1], limit)
    old = spec.get(session.settings)
    spec.apply(session.settings, value, limit)
    note = ""
    if spec.name == "thinking_budget" and not session.backend.supports_end_thinking:
        note = " (no effect here: this model or backend cannot close its reasoning early)"
    return CommandResult(f"{spec.name}: {show_value(old)} → {show_value(value)}{note}")


@command(
    "save",
    "/save [PATH]",
    "save the transcript (Markdown); no PATH: the autosave file",
    complete_arg=complete_path,
)
def _cmd_save(session: ChatSession, args: str) -> CommandResult:
    path = session.save(one_path("save", args) or None)
    return CommandResult(f"Saved to {path}")


@command(
    "load",
    "/load PATH",
    "load a transcript: its history, system prompt and settings",
    complete_arg=complete_path,
)
def _cmd_load(session: ChatSession, args: str) -> CommandResult:
    raw = one_path("load", args)
    if not raw:
        raise CommandError("/load needs a path: /load PATH (a Markdown transcript)")
    data = session.load(Path(raw))
    turns = session.exchanges()
    note = ""
    model = session.backend.model_name
    if data.model and model and data.model != model:
        note = f" It was recorded with {data.model}."
    message = f"Loaded {turns} turn{'s' if turns != 1 else ''} from {raw}.{note}"
    return CommandResult(message, HistoryChanged())


@command("retry", "/retry", "generate the last reply again")
def _cmd_retry(session: ChatSession, args: str) -> CommandResult:
    no_args("retry", args)
    return CommandResult(effect=StreamReply(session.retry()))


@command("undo", "/undo", "remove the last exchange (your message and the reply)")
def _cmd_undo(session: ChatSession, args: str) -> CommandResult:
    no_args("undo", args)
    text = session.undo()
    return CommandResult("Removed the last exchange.", HistoryChanged(restorable=text))


@command("clear", "/clear", "start a new conversation (system prompt and settings stay)")
def _cmd_clear(session: ChatSession, args: str) -> CommandResult:
    no_args("clear", args)
    session.clear()
    return CommandResult("Started a new conversation.", HistoryChanged())


@command("drop", "/drop [N]", "remove the N oldest exchanges (default 1) to free context")
def _cmd_drop(session: ChatSession, args: str) -> CommandResult:
    parts = args.split()
    if len(parts) > 1:
        raise CommandError("/drop takes one number: /drop N")
    available = session.exchanges()
    if available == 0:  # no range to offer ("from 1 to 1" on an empty chat)
        raise CommandError("/drop: the conversation has no exchange yet; nothing to drop")
    n = 1
    if parts:
        try:
            n = int(parts[0])
        except ValueError:
            raise CommandError(
                f"/drop needs a whole number from 1 to {available}, got {parts[0][:40]!r}"
            ) from None
        if n < 1:
            raise CommandError(f"/drop needs a whole number from 1 to {available}, got {n}")
    dropped = session.drop_oldest(n)
    used, limit = session.context_used(), session.context_limit()
    plural = "s" if dropped != 1 else ""
    use = context_use(used, limit)
    return CommandResult(
        f"Dropped the {dropped} oldest exchange{plural}; context {use} tokens.",
        HistoryChanged(),
    )


def _fmt_stats(session: ChatSession) -> str:
    used, limit = session.context_used(), session.context_limit()
    pct = 100.0 * used / limit if limit else 0.0
    lines = [
        f"- model: {session.backend.model_name or 'unknown'} ({session.backend.description})",
        f"- context: {context_use(used, limit)} tokens ({pct:.1f}%)",
        f"- turns: {session.exchanges()}",
    ]
    counting = getattr(session.backend, "token_counting", None)  # a remote backend says how
    if isinstance(counting, str):
        lines.insert(2, f"- token counts: {counting}")
    st = session.last_stats
    if st is None:
        lines.append("- last reply: none yet")
    else:
        lines.append(
            f"- last reply: {st.generated_tokens:,} tokens, {st.finish_reason or '?'}; "
            f"{st.decode_tok_s:,.1f} tok/s decode"
        )
        note = finish_note(st.finish_reason)
        if note is not None and st.finish_reason != "cancelled":
            lines.append(f"- the last reply was {note}")
        # two short lines: at 80 columns one long line wrapped between a figure and its unit
        lines.append(
            f"- last prompt: {st.prompt_tokens:,} tokens ({st.cached_tokens:,} from cache, "
            f"{st.prefilled_tokens:,} prefilled)"
        )
        lines.append(
            f"- prefill: {st.prefill_tok_s:,.0f} tok/s; first token after {st.ttft_s:.2f} s"
        )
    generated = sum(m.generated_tokens for m in session.messages if isinstance(m, Reply))
    lines.append(f"- generated this conversation: {generated:,} tokens")
    if session.transcript_path is not None:
        lines.append(f"- transcript: {session.transcript_path}")
    if session.autosave_error:
        lines.append(f"- autosave problem: {session.autosave_error}")
    return "\n".join(lines)


@command("stats", "/stats", "speed of the last reply and context use", read_only=True)
def _cmd_stats(session: ChatSession, args: str) -> CommandResult:
    no_args("stats", args)
    return CommandResult(_fmt_stats(session))


_THEME_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


@command("theme", "/theme [NAME]", "switch the colour theme; no NAME: list the themes")
def _cmd_theme(session: ChatSession, args: str) -> CommandResult:
    parts = args.split()
    if not parts:
        return CommandResult(effect=SwitchTheme(None))
    if len(parts) != 1:
        raise CommandError("/theme takes one theme name: /theme NAME (/theme lists them)")
    if not _THEME_NAME.fullmatch(parts[0]):
        raise CommandError(
            f"bad theme name {parts[0][:40]!r}: use letters, digits, '-', '_' or '.'"
        )
    return CommandResult(effect=SwitchTheme(parts[0]))


@command("reasoning", "/reasoning show|hide", "show or hide the reasoning", args=("show", "hide"))
def _cmd_reasoning(session: ChatSession, args: str) -> CommandResult:
    word = args.strip().lower()
    if word not in ("show", "hide"):
        got = f", got {args.strip()[:40]!r}" if word else ""
        raise CommandError(f"/reasoning takes show or hide{got}{suggest(word, ['show', 'hide'])}")
    return CommandResult(effect=ShowReasoning(word == "show"))


@command(
    "read",
    "/read PATH",
    "put a text file into your next message (shows its token cost first)",
    complete_arg=complete_path,
)
def _cmd_read(session: ChatSession, args: str) -> CommandResult:
    context = context_of(session)
    raw = one_path("read", args)
    if not raw:
        if not context.pending:
            raise CommandError("/read needs a file: /read PATH (~ and relative paths work)")
        names = ", ".join(f"`{a.name}`" for a in context.pending)
        return CommandResult(f"Going with your next message: {names}")
    attachment = read_attachment(raw, context.max_file_kb)
    context.pending.append(attachment)
    tokens = token_count(session, attachment.block())
    used, limit = session.context_used(), session.context_limit()
    room = f"; the chat uses {used:,} of {limit:,} tokens" if limit else ""
    more = f" ({len(context.pending)} files)" if len(context.pending) > 1 else ""
    return CommandResult(
        f"Attached `{attachment.name}` ({attachment.size / 1024:.1f} KB, {tokens:,} tokens"
        f"{room}): it goes into your next message{more}."
    )


def _preset_table(presets: Mapping[str, Any]) -> str:
    rows = ["| preset | sets |", "|---|---|"]
    for name, preset in presets.items():
        parts = []
        for key, value in preset.values.items():
            shown = " ".join(str(value).split())
            parts.append(f"{key} {shown[:40] + '…' if len(shown) > 40 else shown}")
        rows.append(f"| {name} | {', '.join(parts) or '(nothing)'} |".replace("\n", " "))
    return "\n".join(rows)


@command("preset", "/preset [NAME]", "list the config file's presets, or apply one")
def _cmd_preset(session: ChatSession, args: str) -> CommandResult:
    presets = context_of(session).presets
    name = args.strip()
    if not name:
        if not presets:
            return CommandResult(
                "No presets: add a `[presets.NAME]` table (a system prompt and any settings) "
                "to the config file (`smolchat config` names it)."
            )
        return CommandResult(_preset_table(presets))
    preset = presets.get(name)
    if preset is None:
        known = ", ".join(presets) or "none defined"
        raise CommandError(f"no preset {name!r} (presets: {known}){suggest(name, list(presets))}")
    values = dict(preset.values)
    try:
        apply_settings(session, values)
    except SmolchatError as error:
        raise CommandError(f"preset {name!r}: {error}") from None
    applied = [k for k in values if k in SESSION_KEYS]
    later = [k for k in values if k not in SESSION_KEYS and k != "theme"]
    message = f"Preset {name}: " + (", ".join(applied) or "nothing to change in the chat")
    if later:
        message += f" ({', '.join(later)} apply at start: smolchat --preset {name})"
    theme = values.get("theme")
    return CommandResult(message, SwitchTheme(theme) if isinstance(theme, str) else None)


@command("chats", "/chats [TEXT]", "the saved chats: search, open, rename, delete (Ctrl+L)")
def _cmd_chats(session: ChatSession, args: str) -> CommandResult:
    from smolchat.chat.library import ChatLibrary

    query = args.strip()
    library = ChatLibrary(context_of(session).folder)
    if query:
        lines = [
            f"- `{h.entry.id}` {h.entry.title}: {h.snippet}" for h in library.search(query, 10)
        ]
    else:
        lines = [f"- `{e.id}` {e.title} ({e.exchanges})" for e in library.entries(10)]
    listing = "\n".join(lines) or f"No saved chats in {library.root}."
    return CommandResult(listing + "\n\n`/load PATH` or `smolchat MODEL --resume ID` opens one.",
                         OpenChats(query))  # fmt: skip


@command("exit", "/exit", "leave smolchat", aliases=("quit", "q"))
def _cmd_exit(session: ChatSession, args: str) -> CommandResult:
    no_args("exit", args)
    return CommandResult(effect=Quit())


# --- completion ----------------------------------------------------------------------------


def complete(
    prefix: str,
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
    thinking_mode: bool = True,
) -> list[str]:
    """Completions of a partly typed line, as whole lines, sorted.

    ``"/se"`` gives ``["/set"]``; ``"/set te"`` gives ``["/set temperature"]``;
    ``"/reasoning s"`` gives ``["/reasoning show"]``. A prefix without ``/`` completes bare
    command names (``"he"`` gives ``["help"]``). ``choices`` adds argument values only the UI
    knows, by command name (``{"theme": ["dark", "light"]}``). ``thinking_mode=False`` (the
    backend's model has none) offers no thinking command or setting.
    """
    slash = prefix.startswith("/")
    body = prefix[1:] if slash else prefix
    lead = "/" if slash else ""
    commands = available_commands(thinking_mode=thinking_mode)
    if " " not in body:
        word = body.lower()
        return sorted(lead + c.name for c in commands if c.name.startswith(word))
    name, _, rest = body.partition(" ")
    cmd = find_command(name)
    if cmd is None or cmd not in commands or " " in rest.strip():
        return []
    extra = (choices or {}).get(cmd.name, ())
    found = cmd.arg_completions(rest.strip(), extra, thinking_mode=thinking_mode)
    return [f"{lead}{name} {a}" for a in found]
