"""The command line: ``smolchat [MODEL] [OPTIONS]``.

Picks the TUI (default), one-shot (``-p``) or plain (``--plain``) mode. Importing this module
stays fast: torch, transformers and textual are imported inside the command.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from smolchat import __version__
from smolchat.chat.attachments import DEFAULT_MAX_FILE_KB
from smolchat.chat.config import DEFAULT, KEYS, Effective, Source
from smolchat.cli.options import DEFAULT_MODEL, MODEL_PANEL, LoadOptions, with_load_options
from smolchat.engine.types import SamplingParams
from smolchat.errors import (
    ContextOverflowError,
    SamplingError,
    SmolchatError,
    is_out_of_memory,
    out_of_memory_line,
)
from smolchat.exit_codes import ExitCode

if TYPE_CHECKING:
    from smolchat.chat.library import ChatEntry, SearchHit
    from smolchat.chat.session import ChatSession

# -p stops here unless --max-new-tokens says otherwise: a script waits for a bounded answer
# (a looping small model ran 5 minutes at the chat's 4096); a cut answer is reported (exit 3)
ONE_SHOT_MAX_NEW_TOKENS = 2048


@dataclass
class RunConfig:
    """Everything the command line decided; the modes read it."""

    model: str = DEFAULT_MODEL
    model_given: bool = True  # False: no MODEL on the command line, config or environment
    server: str | None = None  # an OpenAI-compatible API base: chat through it (model = served id)
    api_key: str | None = field(default=None, repr=False)  # a secret: never printed or saved
    tokenizer: str | None = None  # with server: exact token counts
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    exact: bool | None = None
    system: str | None = None
    think: bool | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # only the options given
    max_new_tokens: int | None = None
    theme: str | None = None
    message_width: int | None = None  # None: the TUI's default; 0: the full width
    transcripts: Path | None = None
    autosave: bool = True
    resume: str | None = None  # None: a new chat; "": the newest; else an id, prefix or path
    prompt: str | None = None
    show_reasoning: bool = False
    json: bool = False  # -p: one JSON object on stdout instead of the streamed answer
    plain: bool = False
    debug: bool = False
    files: list[Path] = field(default_factory=list)  # -f: attached to the -p message
    max_file_kb: int = DEFAULT_MAX_FILE_KB
    effective: Effective | None = None  # every setting with its source (None: built directly)
    notes: list[str] = field(default_factory=list)  # warnings, once the chat starts
    resumed: list[str] = field(default_factory=list)  # what --resume loaded, and which won
    resume_path: Path | None = None  # what ``resume`` named, once resolved


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smolchat {__version__}")
        raise typer.Exit()


def _check_theme(value: str | None) -> str | None:
    from smolchat.tui.themes import available_themes

    if value is not None and value not in available_themes():
        raise typer.BadParameter(
            f"unknown theme {value!r}; themes: {', '.join(available_themes())}"
        )
    return value


def _range(name: str) -> dict[str, Any]:
    low, high = SamplingParams.RANGES[name]
    return {"min": low, "max": high, "help": "Default: the model's generation_config."}


def _themes_help() -> str:
    from smolchat.tui.themes import DEFAULT_THEME, available_themes

    return f"TUI theme: {', '.join(available_themes())} (default {DEFAULT_THEME})."


_THEMES_HELP = _themes_help()


# ---- sub-commands ----------------------------------------------------------------------
# ``smolchat NAME ...`` where NAME is a key here runs that sub-command; anything else is the
# chat (a model folder named like a sub-command is given as ./chats). Adding one is one
# decorated function: @subcommand("serve", "...").
SUBCOMMANDS: dict[str, typer.Typer] = {}
_CONTEXT = {"help_option_names": ["-h", "--help"]}


def subcommand(name: str, help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn`` as ``smolchat NAME`` (its parameters are its options, as with typer)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        app = typer.Typer(
            add_completion=False, pretty_exceptions_enable=False, context_settings=_CONTEXT
        )
        app.command(name=name, help=help, cls=_HelpCommand)(fn)
        SUBCOMMANDS[name] = app
        return fn

    return register


class _HelpCommand(TyperCommand):
    """A command whose --help shows no value for flags (typer would print ``--plain <bool>``,
    although ``--plain false`` is an error) and never cuts a type name across lines."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # the --help option too
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value
        super().format_help(ctx, formatter)


class _Dispatch(_HelpCommand):
    """The chat command, which hands ``smolchat SUBCOMMAND ...`` to that sub-command."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        extra.update(complete_var=complete_var, standalone_mode=standalone_mode)
        extra.update(windows_expand_args=windows_expand_args)
        argv = list(sys.argv[1:] if args is None else args)
        for i, arg in enumerate(argv):  # a bare --resume (last, or before an option): the newest
            if arg == "--":
                break
            if arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
                argv[i] = "--resume="
        if argv and argv[0] in SUBCOMMANDS:
            command = typer.main.get_command(SUBCOMMANDS[argv[0]])
            name = f"{prog_name or 'smolchat'} {argv[0]}"
            return command.main(argv[1:], prog_name=name, **extra)
        return super().main(argv, prog_name=prog_name, **extra)


cli = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=_CONTEXT,
    help="A terminal chat for SmolLM3, running in-process on PyTorch.",
)

SAMPLING = "Sampling"
MODEL = MODEL_PANEL
CHAT = "Chat"
EPILOG = (
    "Also: smolchat chats (the saved conversations: list, --search, --restore), "
    "smolchat config (the settings in force and where each came from). "
    "Defaults come from the config file, then SMOLCHAT_* variables; options win over both."
)


@cli.command(cls=_Dispatch, epilog=EPILOG)
@with_load_options
def chat(
    load: LoadOptions,  # MODEL, --device, --dtype, --quantize, --exact (cli/options.py)
    server: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Chat through an OpenAI-compatible server (vLLM, SGLang, llama-server, "
            "transformers serve): its API base, e.g. http://127.0.0.1:8000/v1; MODEL is then "
            "the served id (default: the first it lists).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="With --server: the API key (default: $SMOLCHAT_API_KEY, then $OPENAI_API_KEY).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            metavar="PATH|ID",
            help="With --server: the model's tokenizer (folder or hub id) for exact token counts.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.", rich_help_panel=CHAT)] = None,
    think: Annotated[
        bool | None,
        typer.Option("--think/--no-think", help="Reason before answering.", rich_help_panel=CHAT),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(rich_help_panel=SAMPLING, **_range("temperature"))
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(rich_help_panel=SAMPLING, **_range("top_p"))
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(rich_help_panel=SAMPLING, min=0, help="0 disables it.")
    ] = None,
    min_p: Annotated[
        float | None, typer.Option(rich_help_panel=SAMPLING, **_range("min_p"))
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(rich_help_panel=SAMPLING, **_range("repetition_penalty"))
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest reply, in tokens.", rich_help_panel=SAMPLING)
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Repeatable sampling.", rich_help_panel=SAMPLING)
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="A \\[presets.NAME] table of the config file.", rich_help_panel=CHAT),
    ] = None,
    theme: Annotated[
        str | None,
        typer.Option(help=_THEMES_HELP, callback=_check_theme, rich_help_panel=CHAT),
    ] = None,
    message_width: Annotated[
        int | None,
        typer.Option(
            help="TUI: columns a message takes at most (default 110; 0: the full width).",
            min=0,
            rich_help_panel=CHAT,
        ),
    ] = None,
    transcripts: Annotated[
        Path | None,
        typer.Option(help="Folder for transcripts.", file_okay=False, rich_help_panel=CHAT),
    ] = None,
    autosave: Annotated[
        bool | None,
        typer.Option(
            "--autosave/--no-autosave",
            help="Save after every reply (--no-autosave: only on /save).",
            rich_help_panel=CHAT,
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="[ID|PATH]",
            help="Continue a saved chat: the newest, or one named by id (smolchat chats) or path.",
            rich_help_panel=CHAT,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "-p", "--prompt", help="Answer this (- reads stdin), print the answer alone, exit."
        ),
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option(
            "-f", "--file", help="With -p: put this text file into the message (repeatable)."
        ),
    ] = None,
    max_file_kb: Annotated[
        int | None, typer.Option(min=1, help="Largest file -f and /read accept, in KB.")
    ] = None,
    show_reasoning: Annotated[
        bool, typer.Option("--show-reasoning", help="With -p: write the reasoning to stderr.")
    ] = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With -p: print one JSON object (answer, reasoning, finish_reason, tokens).",
        ),
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="A plain line REPL instead of the TUI.")
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Show the settings in force and their sources; exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Chat with SmolLM3 (or another SmolLM / Llama model) in the terminal."""
    loading = load.given()
    given = {
        **{name: value for name, value in loading.items() if name in KEYS},
        "server": server,
        "tokenizer": tokenizer,
        "system": system,
        "think": think,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "theme": theme,
        "message_width": message_width,
        "transcripts": transcripts,
        "autosave": autosave,
        "max_file_kb": max_file_kb,
        "preset": preset,
    }
    command_line = {k: v for k, v in given.items() if v is not None}
    sampling = {k: v for k, v in command_line.items() if k in SAMPLING_KEYS}
    try:
        SamplingParams().with_(**sampling)
    except SamplingError as error:
        name = next((n for n in sampling if str(error).startswith(n)), None)
        hint = f"--{name.replace('_', '-')}" if name else None
        raise typer.BadParameter(str(error), param_hint=hint) from None
    try:
        effective = effective_settings(command_line, lenient=print_config)
    except SmolchatError as error:
        if debug:
            traceback.print_exc()
        _error_line(str(error))
        raise typer.Exit(1) from None
    if print_config:
        raise typer.Exit(_print_config(effective))
    config = run_config(effective)
    if config.server is not None:
        given_local = [LoadOptions.option(name) for name in loading if name != "model"]
        if given_local:
            raise typer.BadParameter(
                f"{given_local[0]} has no effect with --server (the server loads the model)",
                param_hint="--server",
            )
    else:
        if api_key is not None or tokenizer is not None:
            name = "--api-key" if api_key is not None else "--tokenizer"
            raise typer.BadParameter(f"{name} goes with --server URL", param_hint=name)
    if file and prompt is None:
        raise typer.BadParameter("-f/--file goes with -p (in a chat, use /read PATH)")
    if prompt == "-":
        prompt = read_stdin().removesuffix("\n").removesuffix("\r")
    config.resume = resume
    config.prompt = prompt
    config.files = list(file or [])
    config.show_reasoning = show_reasoning
    config.json = json_output
    if json_output and prompt is None:
        raise typer.BadParameter("--json goes with -p", param_hint="--json")
    config.plain = plain
    config.debug = debug
    for name, value in loading.items():  # the loading options that are no settings (--exact)
        if name not in KEYS:
            setattr(config, name, value)
    if config.server is not None:
        config.api_key = (
            api_key or os.environ.get("SMOLCHAT_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
    raise typer.Exit(run(config))


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")


def effective_settings(command_line: dict[str, Any], *, lenient: bool = False) -> Effective:
    """Command line > SMOLCHAT_* > preset > config file; a theme from a file is checked here.

    Raises SettingsError (one line) for a bad file, key, value or variable; ``lenient`` (the
    commands that must work while the config has a typo): that setting is left out and its
    line goes to ``Effective.problems``.
    """
    from smolchat.chat.config import SettingsError, resolve
    from smolchat.tui.themes import available_themes

    effective = resolve(command_line, lenient=lenient)
    theme = effective.get("theme")
    if theme is not None and theme not in available_themes():
        error = SettingsError(
            f"{effective.sources['theme']}: unknown theme {theme!r}; "
            f"themes: {', '.join(available_themes())}"
        )
        if not lenient:
            raise error
        effective.problems.append(str(error))
        del effective.values["theme"], effective.sources["theme"]
    return effective


def run_config(effective: Effective) -> RunConfig:
    """The RunConfig for the settings in force (before the mode-only options)."""
    values = effective.values
    quantize = values.get("quantize")
    server = values.get("server")
    return RunConfig(
        model=values.get("model", "" if server else DEFAULT_MODEL),
        model_given="model" in values or bool(server),
        server=server,
        tokenizer=values.get("tokenizer"),
        device=values.get("device", "auto"),
        dtype=values.get("dtype", "auto"),
        quantize=None if quantize in (None, "none") else quantize,
        system=values.get("system"),
        think=values.get("think"),
        sampling={k: values[k] for k in SAMPLING_KEYS if k in values},
        max_new_tokens=values.get("max_new_tokens"),
        theme=values.get("theme"),
        message_width=values.get("message_width"),
        transcripts=values.get("transcripts"),
        autosave=values.get("autosave", True),
        max_file_kb=values.get("max_file_kb", DEFAULT_MAX_FILE_KB),
        effective=effective,
    )


def _print_config(effective: Effective) -> int:
    """Print every setting's value in force and its source (:func:`config_lines`, to the
    terminal's width when stdout is one); the exit status (1 when a setting had to be left
    out)."""
    config = effective.config
    if config is not None:
        state = "" if config.exists else " (not found: the built-in defaults)"
        if effective.problems:
            n = len(effective.problems)
            state = f" ({n} problem{'s' if n != 1 else ''}: left out below, see stderr)"
        typer.echo(f"config file: {config.path}{state}")
        if config.presets:
            typer.echo(f"presets: {', '.join(config.presets)}")
    import shutil

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in config_lines(effective.table(_defaults(effective)), width):
        typer.echo(line)
    for problem in effective.problems:
        _error_line(f"{problem} (left out above; fix it: a chat does not start until then)")
    return ExitCode.ERROR if effective.problems else ExitCode.OK


def config_lines(rows: Sequence[tuple[str, str, str]], width: int | None = None) -> list[str]:
    """``(key, value, source)`` rows in columns, one line each; values and sources are never
    cut. ``width``: a row wider than this puts its source on a line of its own, under the
    values (None: every row on one line, for scripts)."""
    key_width = max((len(k) for k, _, _ in rows), default=0)
    value_width = max((len(v) for _, v, _ in rows if len(v) <= 40), default=0)
    out: list[str] = []
    for key, value, source in rows:
        line = f"{key:<{key_width}}  {value:<{value_width}}  {source}"
        if width is None or len(line) <= width:
            out.append(line)
        else:
            out += [f"{key:<{key_width}}  {value}", " " * (key_width + 2) + source]
    return out


def _defaults(effective: Effective) -> dict[str, tuple[Any, Source]]:
    """What each setting is when nothing sets it, and where that comes from: the model's
    ``generation_config.json`` (read here for a local folder), else the built-in value."""
    from smolchat.chat.paths import default_transcripts_dir
    from smolchat.chat.settings import DEFAULT_MAX_NEW_TOKENS
    from smolchat.tui.screens.chat import MESSAGE_WIDTH
    from smolchat.tui.themes import DEFAULT_THEME

    built_in = Source(DEFAULT)
    server = effective.get("server")
    out: dict[str, tuple[Any, Source]] = {
        "model": ("the server's first" if server else DEFAULT_MODEL, built_in),
        "device": ("auto", built_in),
        "dtype": ("auto", built_in),
        "quantize": ("none", built_in),
        "max_new_tokens": (
            DEFAULT_MAX_NEW_TOKENS,
            Source(DEFAULT, f"{ONE_SHOT_MAX_NEW_TOKENS} with -p"),
        ),
        "think": (True, built_in),
        "theme": (DEFAULT_THEME, built_in),
        "message_width": (MESSAGE_WIDTH, built_in),
        "transcripts": (default_transcripts_dir(), built_in),
        "autosave": (True, built_in),
        "max_file_kb": (DEFAULT_MAX_FILE_KB, built_in),
    }
    for name in ("server", "tokenizer", "system", "preset"):
        out[name] = (None, built_in)
    params = SamplingParams()
    model_sets, source = _model_sampling(None if server else effective.get("model", DEFAULT_MODEL))
    for name in SAMPLING_KEYS:
        if name in model_sets:
            out[name] = (model_sets[name], source)
            continue
        note = ""
        if server and name in ("top_k", "min_p", "repetition_penalty"):
            note = "not sent: the server's own applies"
        elif source.layer == DEFAULT and name != "seed":
            note = source.where  # a hub model: its file may set it
        out[name] = (getattr(params, name), Source(DEFAULT, note))
    return out


def _model_sampling(model: str | None) -> tuple[dict[str, Any], Source]:
    """The sampling values ``model``'s ``generation_config.json`` sets, and that file as their
    source: a local folder's, or a hub model's in the local hub cache (no network). ``{}``
    for a GGUF file or a folder without one; ``{}`` and a note for a hub model not cached."""
    import json

    from smolchat.chat.settings import sampling_from_defaults

    if model is None:
        return {}, Source(DEFAULT)
    path = Path(model).expanduser()
    if path.is_dir():
        file = path / "generation_config.json"
    elif path.exists():
        return {}, Source(DEFAULT)  # a GGUF file carries no generation config
    else:
        from smolchat.model.hub import cached_file, is_hub_id

        found = cached_file(model, "generation_config.json") if is_hub_id(model) else None
        if found is None:
            return {}, Source(DEFAULT, "unless generation_config.json sets it")
        file = found
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none (the built-in values apply), or not JSON
        return {}, Source(DEFAULT)
    if not isinstance(data, dict):
        return {}, Source(DEFAULT)
    params = sampling_from_defaults(data)
    given = {n for n in SAMPLING_KEYS if data.get(n) is not None}
    if data.get("do_sample") is False:
        given.add("temperature")
    return {n: getattr(params, n) for n in sorted(given)}, Source("model", str(file))


@subcommand(
    "config", "Show the settings in force (config file, SMOLCHAT_*) and where each came from."
)
def config_command() -> None:
    try:
        effective = effective_settings({}, lenient=True)
    except SmolchatError as error:
        _error_line(str(error))
        raise typer.Exit(1) from None
    raise typer.Exit(_print_config(effective))


@subcommand("chats", "The saved conversations, newest first: list, search, delete, restore.")
def chats_command(
    search: Annotated[
        str | None,
        typer.Option("--search", "-s", help="Only chats with a message containing this."),
    ] = None,
    transcripts: Annotated[
        Path | None, typer.Option(help="The transcripts folder.", file_okay=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    trash: Annotated[bool, typer.Option("--trash", help="List the trash instead.")] = False,
    delete: Annotated[
        str | None, typer.Option(metavar="ID", help="Move this chat to the trash.")
    ] = None,
    restore: Annotated[
        str | None, typer.Option(metavar="ID", help="Bring this chat back from the trash.")
    ] = None,
) -> None:
    from smolchat.chat.library import ChatLibrary

    try:
        folder = transcripts
        if folder is None:
            effective = effective_settings({}, lenient=True)
            for problem in effective.problems:
                typer.echo(f"smolchat: warning: {problem} (ignored here)", err=True)
            folder = effective.get("transcripts")
        library = ChatLibrary(folder)
        if delete is not None or restore is not None:
            moved = library.delete(delete) if delete is not None else library.restore(restore or "")
            verb = "moved to the trash" if delete is not None else "restored"
            typer.echo(f"{moved.name} {verb} (smolchat chats --{'restore' if delete else 'trash'})")
            return
        rows: list[tuple[ChatEntry, SearchHit | None]]
        if search is not None and not search.strip():
            _error_line("--search needs a word to look for: smolchat chats --search WORD")
            raise typer.Exit(ExitCode.USAGE)
        if search is not None:
            hits = library.search(search, limit=limit)
            rows = [(h.entry, h) for h in hits]
        else:
            rows = [(e, None) for e in library.entries(limit, trash=trash)]
    except SmolchatError as error:
        _error_line(str(error))
        raise typer.Exit(1) from None
    if as_json:
        import json

        for entry, hit in rows:
            typer.echo(json.dumps(hit.to_json() if hit else entry.to_json(), ensure_ascii=False))
        return
    if not rows:
        where = "the trash" if trash else str(library.root)
        what = f"no chat mentions {search!r}" if search is not None else "no saved chats"
        typer.echo(f"{what} in {where}", err=True)
        return
    from smolchat.chat.text import printable

    for entry, hit in rows:
        typer.echo(printable(_chat_line(entry)))
        if hit is not None:
            typer.echo(printable(f"    {hit.where}: {hit.snippet}"))


@subcommand(
    "serve",
    "Serve the model over the OpenAI API (/v1/chat/completions, /v1/models, /health): "
    "one engine, requests answered in arrival order. Needs the serve extra: "
    "pip install 'smolchat[serve]'.",
)
@with_load_options
def serve_command(
    load: LoadOptions,  # MODEL, --device, --dtype, --quantize, --exact (cli/options.py)
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Answer only requests with 'Authorization: Bearer KEY' "
            "(default: $SMOLCHAT_API_KEY).",
            show_default=False,
        ),
    ] = None,
    served_model_name: Annotated[
        str | None,
        typer.Option(help="The model id clients see and send (default: the model's name)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per request on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    config = RunConfig(**{"model": DEFAULT_MODEL, **load.given()}, debug=debug)
    key = api_key if api_key is not None else os.environ.get("SMOLCHAT_API_KEY") or None
    raise typer.Exit(
        _run_guarded(config, lambda: serve_mode(config, key, host, port, quiet, served_model_name))
    )


def serve_mode(
    config: RunConfig,
    api_key: str | None,
    host: str,
    port: int,
    quiet: bool,
    served_model_name: str | None,
) -> int:
    """``smolchat serve``: load the model, then serve it until Ctrl+C."""
    from rich.console import Console

    from smolchat.plain import load_with_progress

    try:
        from smolchat.serve.app import ServeOptions
        from smolchat.serve.server import bind, log_to_stderr, serve, warn_if_exposed
    except ImportError as error:
        raise SmolchatError(
            f"smolchat serve needs FastAPI and uvicorn ({error.name} is missing): "
            "pip install 'smolchat[serve]'"
        ) from None
    from smolchat.backend.local import LocalBackend

    if api_key is not None and not api_key.strip():
        raise SmolchatError("--api-key is empty: give a key, or leave the option out")
    warn_if_exposed(host, api_key)
    sock = bind(host, port)  # a taken port fails now, not after loading the model
    engine = load_with_progress(
        lambda progress: load_engine(config, progress), Console(stderr=True)
    )
    backend = LocalBackend(engine)
    name = served_model_name or backend.model_name or config.model
    aliases = tuple({config.model, Path(config.model).name, Path(config.model).stem} - {name})
    options = ServeOptions(
        model_id=name, aliases=aliases, api_key=api_key, log=None if quiet else log_to_stderr
    )
    serve(backend, options, sock)
    return ExitCode.OK


MODEL_COLUMN = 24  # cells of the model name in ``smolchat chats``; a longer one ends in …


def _chat_line(entry: ChatEntry) -> str:
    """``2026-12-01 07:30  3f2a1bc   3 exchanges  SmolLM3-3B  title``."""
    from rich.text import Text

    model = Text(entry.model.rstrip("/").rsplit("/", 1)[-1] or "?")
    model.truncate(MODEL_COLUMN, overflow="ellipsis", pad=True)  # in cells: wide letters count 2
    n = entry.exchanges
    exchanges = f"{n:>3} exchange{'s' if n != 1 else ' '}"
    when = entry.updated.strftime("%Y-%m-%d %H:%M")
    return f"{when}  {entry.id}  {exchanges}  {model.plain}  {entry.title}"


def read_stdin() -> str:
    """All of stdin as text: UTF-8, undecodable bytes replaced by U+FFFD (with a warning)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text-only stream: it may still carry escaped bytes (surrogates)
        from smolchat.chat.text import valid_text

        return valid_text(sys.stdin.read())
    raw = buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        text = raw.decode("utf-8", errors="replace")
        print(
            f"smolchat: warning: stdin is not valid UTF-8 (byte {error.start}); "
            "undecodable bytes were replaced by \ufffd",
            file=sys.stderr,
        )
    return text.removeprefix("\ufeff")


def run(config: RunConfig) -> int:
    """Run the chosen mode; a SmolchatError becomes one line on stderr and status 1."""
    return _run_guarded(config, lambda: _run_mode(config))


def _run_mode(config: RunConfig) -> int:
    if config.resume is not None:  # a wrong id fails now, not after loading the model
        config.resume_path = _resume_path(config)
        if config.resume_path is not None and not config.model_given:
            config.model = _recorded_model(config.resume_path, config.model)
    if config.prompt is not None:
        return one_shot(config)
    if config.plain:
        return plain_repl(config)
    return tui(config)


def _run_guarded(config: RunConfig, mode: Callable[[], int]) -> int:
    """``mode()``; a SmolchatError becomes one line on stderr and status 1, and so on."""
    try:
        return mode()
    except BrokenPipeError:  # stdout closed early (`| head`): end quietly, like other tools
        silence_stdout()
        return ExitCode.BROKEN_PIPE
    except SmolchatError as error:
        if config.debug:
            traceback.print_exc()
        _error_line(str(error))
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as error:
        if config.debug:
            traceback.print_exc()
            return ExitCode.ERROR
        if is_out_of_memory(error):  # e.g. the CPU allocator, which torch reports as RuntimeError
            _error_line(out_of_memory_line(error, "loading or running the model"))
            return ExitCode.ERROR
        _error_line(
            f"internal error: {type(error).__name__}: {error} (--debug shows the traceback)"
        )
        return ExitCode.ERROR


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit cannot fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass


def _error_line(message: str) -> None:
    first = " ".join(message.split()) or "unknown error"
    print(f"smolchat: error: {first}", file=sys.stderr)


# ---- wiring shared by the modes --------------------------------------------------------
def load_engine(config: RunConfig, progress: Any = None) -> Any:
    """``smolchat.load`` with the command line's model options; with ``--server``, the
    :class:`~smolchat.backend.remote.RemoteBackend` (connected: it has listed the models)."""
    if config.server is not None:
        from smolchat.backend.remote import RemoteBackend

        return RemoteBackend(
            config.server,
            config.model or None,
            api_key=config.api_key,
            tokenizer=config.tokenizer,
        )
    import smolchat

    return smolchat.load(
        config.model,
        device=config.device,
        dtype=config.dtype,
        quantize=config.quantize,
        progress=progress,
        exact=config.exact,
    )


def make_session(engine: Any, config: RunConfig, *, store: bool = True) -> ChatSession:
    """A session with the settings in force; with ``--resume``, the saved chat loaded.

    A resumed chat keeps its saved settings except those given on the command line; a line
    saying which won goes to ``config.notes``.
    """
    from smolchat.backend.local import LocalBackend
    from smolchat.backend.types import Backend
    from smolchat.chat.config import apply_on_resume
    from smolchat.chat.session import ChatSession
    from smolchat.chat.transcript import TranscriptStore

    transcripts = TranscriptStore(config.transcripts, autosave=config.autosave) if store else None
    backend = engine if isinstance(engine, Backend) else LocalBackend(engine)
    session = ChatSession(backend, system_prompt=config.system, store=transcripts)
    local = Path(config.model).expanduser() if config.model and not config.server else None
    if local is not None and local.exists():
        session.model_path = str(local.resolve())
    if config.server is not None:
        from smolchat.backend.remote import safe_url

        session.server_url = safe_url(config.server)
    settings = session.settings
    settings.sampling = settings.sampling.with_(**config.sampling)
    if config.max_new_tokens is not None:
        settings.max_new_tokens = config.max_new_tokens
    if config.think is not None:
        settings.thinking = config.think
    if config.resume_path is not None:
        try:
            session.load(config.resume_path)
        except SmolchatError as error:
            config.notes.append(f"Could not resume: {error}")
            return session
        effective = config.effective or Effective()
        how = apply_on_resume(session, effective)
        n = session.exchanges()
        config.resumed.append(
            f"Resumed {config.resume_path.name} ({n} exchange{'s' if n != 1 else ''}), {how}"
        )
    return session


def attach_context(session: ChatSession, config: RunConfig) -> ChatSession:
    """Give the session's slash commands the presets, the file limit and the library folder."""
    from smolchat.chat.context import ChatContext, set_context

    effective = config.effective
    presets = effective.config.presets if effective and effective.config else {}
    set_context(
        session,
        ChatContext(
            presets=dict(presets), max_file_kb=config.max_file_kb, folder=config.transcripts
        ),
    )
    return session


def _recorded_model(path: Path, default: str) -> str:
    """The model a resumed chat was made with, when no MODEL was given: the recorded full
    path if it still exists, else the recorded model if it is an existing path or a hub id;
    ``default`` for a chat that recorded none. A bare file name that no longer resolves is a
    :class:`ModelLoadError` naming the command to give it."""
    from smolchat.chat.library import chat_id
    from smolchat.chat.session import MODEL_PATH, SERVER
    from smolchat.chat.transcript import read_transcript
    from smolchat.errors import ModelLoadError
    from smolchat.model.hub import is_hub_id

    data = read_transcript(path)
    server = data.extra.get(SERVER)
    if isinstance(server, str) and server:  # a served id, not a file: name the server
        served = f" {data.model.strip()}" if data.model.strip() else ""
        raise ModelLoadError(
            f"the chat was made through the server {server}; give it: "
            f"smolchat --server {server}{served} --resume {chat_id(path)}"
        )
    full = data.extra.get(MODEL_PATH)
    if isinstance(full, str) and full and Path(full).exists():
        return full
    model = data.model.strip()
    if not model:
        return default
    if Path(model).expanduser().exists() or is_hub_id(model):
        return model
    raise ModelLoadError(
        f"the chat was made with {model}; give it: smolchat {model} --resume {chat_id(path)}"
    )


def _resume_path(config: RunConfig) -> Path | None:
    """The transcript ``--resume`` names (None, with a note, when bare and there is none)."""
    from smolchat.chat.library import ChatLibrary, LibraryError
    from smolchat.chat.session import read_chat
    from smolchat.errors import TranscriptError

    library = ChatLibrary(config.transcripts)
    if not config.resume:
        latest = library.latest()
        if latest is None:
            config.notes.append(f"No transcript to resume in {library.root}: starting a new chat.")
            return None
        try:  # a damaged newest chat stops here, before the model loads
            read_chat(latest)
        except TranscriptError as error:
            raise TranscriptError(
                f"the newest chat cannot be resumed: {error} (pick another: smolchat chats "
                "lists them; then smolchat --resume ID)"
            ) from None
        return latest
    try:
        path = library.resolve(config.resume)
        read_chat(path)  # a damaged file or not a transcript: stop before the model loads
        return path
    except LibraryError as error:
        if "/" in config.resume and config.model == DEFAULT_MODEL:
            raise LibraryError(
                f"{error} (to resume the newest chat with a model, put the model first: "
                f"smolchat {config.resume} --resume)"
            ) from None
        raise


# ---- the modes -------------------------------------------------------------------------
def one_shot(config: RunConfig) -> int:
    """``-p``: the answer alone on stdout (reasoning on stderr with --show-reasoning)."""
    from rich.console import Console

    from smolchat.chat.text import printable
    from smolchat.plain import consume, load_with_progress

    assert config.prompt is not None
    if not config.prompt.strip():
        raise SmolchatError("the prompt is empty: give text with -p, or pipe it with -p -")
    from smolchat.chat.attachments import message_with, read_attachment

    # before loading: a missing, binary or huge file is one line, at once
    files = [read_attachment(path, config.max_file_kb) for path in config.files]
    err = Console(stderr=True)
    # to a terminal, control characters are shown, not obeyed; to a pipe, the text is exact
    out_filter = printable if sys.stdout.isatty() else str
    err_filter = printable if sys.stderr.isatty() else str
    engine = load_with_progress(lambda progress: load_engine(config, progress), err)
    # one-shot answers are not autosaved unless a transcripts folder is given
    session = make_session(engine, config, store=config.transcripts is not None)
    if config.max_new_tokens is None:
        limit = min(session.settings.max_new_tokens, ONE_SHOT_MAX_NEW_TOKENS)
        session.settings.max_new_tokens = limit
    started = {"answer": False}

    def on_answer(text: str) -> None:
        if config.json:  # the whole answer goes out at the end, inside the object
            return
        if not started["answer"]:
            text = text.lstrip()
            started["answer"] = bool(text)
        sys.stdout.write(out_filter(text))
        sys.stdout.flush()

    def on_reasoning(text: str) -> None:
        if config.show_reasoning:
            sys.stderr.write(err_filter(text))
            sys.stderr.flush()

    message = message_with(files, config.prompt)
    if files:
        from smolchat.chat.context import token_count

        for f in files:
            tokens = token_count(session, f.block())
            print(f"smolchat: attached {f.name} ({tokens} tokens)", file=sys.stderr)
    for note in config.notes + config.resumed:
        print(f"smolchat: {note}", file=sys.stderr)
    try:
        finished, interrupted = consume(session.send(message), session, on_reasoning, on_answer)
    except ContextOverflowError as error:  # the chat's advice (/drop, /set) means nothing here
        raise SmolchatError(one_shot_overflow(error, session)) from None
    if config.show_reasoning and finished is not None and finished.reasoning:
        sys.stderr.write("\n")
    if config.json:
        if finished is not None and not finished.error:
            sys.stdout.write(one_shot_json(finished) + "\n")
    elif finished is not None and finished.answer and not finished.answer.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    if interrupted:
        return ExitCode.INTERRUPTED
    if session.autosave_error:  # the answer is out, but it was to be kept: say so, exit 1
        problem = session.autosave_error.removeprefix("autosave failed: ")
        if not problem.startswith("could not save"):
            problem = f"could not save the transcript: {problem}"
        raise SmolchatError(f"{problem} (give a writable --transcripts folder)")
    if finished is None or finished.error:
        raise SmolchatError(finished.error if finished else "the reply ended unexpectedly")
    if finished.finish_reason != "stop":
        limit = session.settings.max_new_tokens
        print(f"smolchat: note: {cut_note(finished, limit)}", file=sys.stderr)
        return ExitCode.CUT
    return ExitCode.OK


def one_shot_overflow(error: ContextOverflowError, session: ChatSession) -> str:
    """The context-full line for ``-p``: its options, not the chat's slash commands."""
    if error.drop is not None:  # a resumed chat's earlier turns take the room
        return (
            f"{error.what}: the resumed chat is too long for this prompt; start a new chat "
            "(without --resume) or shorten the prompt"
        )
    system = " or the system prompt (--system)" if session.system_prompt else ""
    return f"{error.what}: shorten the prompt{system} or lower --max-new-tokens"


def one_shot_json(finished: Any) -> str:
    """The ``-p --json`` object: the answer, the reasoning and how the reply ended.

    ``finish_reason`` is one of stop, length (max_new_tokens reached), context (the context
    window is full) or cancelled (Ctrl+C); the exit status says the same (README).
    """
    import json

    stats = finished.stats
    return json.dumps(
        {
            "answer": finished.answer.lstrip(),
            "reasoning": finished.reasoning,
            "finish_reason": finished.finish_reason,
            "prompt_tokens": stats.prompt_tokens if stats else None,
            "generated_tokens": stats.generated_tokens if stats else None,
            "ttft_s": round(stats.ttft_s, 4) if stats else None,
            "decode_tok_s": round(stats.decode_tok_s, 2) if stats else None,
        },
        ensure_ascii=False,
    )


def cut_note(finished: Any, max_new_tokens: int) -> str:
    """Why a -p answer is incomplete, and what to do: one line for stderr."""
    generated = finished.stats.generated_tokens if finished.stats is not None else 0
    if finished.finish_reason == "length":  # the engine tells this from a full context
        return (
            f"the answer was cut at max_new_tokens ({max_new_tokens} tokens); "
            "raise --max-new-tokens for a longer one (exit status 3)"
        )
    if finished.finish_reason == "context":
        return (
            f"the answer was cut after {generated} tokens: the context window is full; "
            "shorten the prompt (exit status 3)"
        )
    return f"the answer is incomplete (finish reason {finished.finish_reason}; exit status 3)"


def plain_repl(config: RunConfig) -> int:
    """``--plain``: the line REPL."""

    from smolchat.plain import PlainChat, PlainConsole, load_with_progress

    console = PlainConsole(highlight=False)
    if getattr(sys.stdin, "errors", None) == "strict" and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # a bad byte typed or piped must not end the REPL
    engine = load_with_progress(lambda progress: load_engine(config, progress), console)
    session = make_session(engine, config)
    attach_context(session, config)
    for note in config.notes:
        console.print(note, style="yellow")
    for note in config.resumed:
        console.print(note, style="dim")
    from smolchat.chat.history import PromptHistory
    from smolchat.chat.paths import default_history_file

    history = PromptHistory(default_history_file())
    if history.problem:
        console.print(history.problem, style="yellow")
    return PlainChat(session, console, show_reasoning=True).run(history=history)


def _remote_label(config: RunConfig) -> str:
    """What the loading screen names while connecting (the URL without credentials)."""
    from smolchat.backend.remote import safe_url

    assert config.server is not None
    where = safe_url(config.server)
    return f"{config.model} on {where}" if config.model else where


def tui(config: RunConfig) -> int:
    """The Textual app."""
    from smolchat.chat.paths import default_history_file
    from smolchat.tui.app import AppOptions, SmolchatApp
    from smolchat.tui.screens.chat import MESSAGE_WIDTH
    from smolchat.tui.themes import DEFAULT_THEME

    def placement() -> tuple[str, str]:
        from smolchat.loader import pick_device, pick_dtype

        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        return str(device), str(dtype).removeprefix("torch.")

    remote = config.server is not None
    if not remote and config.model:
        from smolchat.model.hub import check_model_argument

        check_model_argument(config.model)  # before the full-screen app: a plain error line
    width = config.message_width
    message_width = MESSAGE_WIDTH if width is None else (width or None)
    app = SmolchatApp(
        AppOptions(
            model=_remote_label(config) if remote else config.model,
            load_engine=lambda progress: load_engine(config, progress),
            make_session=lambda engine: attach_context(make_session(engine, config), config),
            device=config.device,
            dtype=config.dtype,
            quantize=config.quantize,
            placement=None if remote else placement,  # no device to pick (nor torch to load)
            theme=config.theme or DEFAULT_THEME,
            history_file=default_history_file(),
            notices=config.notes,  # make_session adds to both (on the loading thread)
            notes=config.resumed,
            message_width=message_width,
        )
    )
    app.run()
    app.wait_for_loader()  # quit mid-load: let the loading thread stop before Python exits
    if app.error:
        raise SmolchatError(app.error)
    return app.return_code or 0


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="smolchat")
    except BrokenPipeError:  # e.g. `smolchat --help | head -1`
        silence_stdout()
        sys.exit(ExitCode.BROKEN_PIPE)


if __name__ == "__main__":
    main()
