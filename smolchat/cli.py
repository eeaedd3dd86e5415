"""The command line: ``smolchat [MODEL] [OPTIONS]``.

Picks the TUI (default), one-shot (``-p``) or plain (``--plain``) mode. Importing this module
stays fast: torch, transformers and textual are imported inside the command.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smolchat import __version__
from smolchat.engine.types import SamplingParams
from smolchat.errors import SamplingError, SmolchatError, is_out_of_memory, out_of_memory_line

if TYPE_CHECKING:
    from smolchat.chat.session import ChatSession

DEFAULT_MODEL = "HuggingFaceTB/SmolLM3-3B"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
EXIT_INTERRUPTED = 130


class DType(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Quantize(str, Enum):
    nf4 = "nf4"


@dataclass
class RunConfig:
    """Everything the command line decided; the modes read it."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    system: str | None = None
    think: bool | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # only the options given
    max_new_tokens: int | None = None
    theme: str | None = None
    transcripts: Path | None = None
    autosave: bool = True
    resume: bool = False
    prompt: str | None = None
    show_reasoning: bool = False
    plain: bool = False
    debug: bool = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smolchat {__version__}")
        raise typer.Exit()


def _check_device(value: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not a device; use {DEVICE_HELP}")
    return value


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


cli = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="A terminal chat for SmolLM3, running in-process on PyTorch.",
)

SAMPLING = "Sampling"
MODEL = "Model"
CHAT = "Chat"


@cli.command()
def chat(
    model: Annotated[
        str, typer.Argument(help="Hub id, local folder or .gguf file.", show_default=True)
    ] = DEFAULT_MODEL,
    device: Annotated[
        str, typer.Option(help=DEVICE_HELP, callback=_check_device, rich_help_panel=MODEL)
    ] = "auto",
    dtype: Annotated[DType, typer.Option(case_sensitive=False, rich_help_panel=MODEL)] = DType.auto,
    quantize: Annotated[
        Quantize | None,
        typer.Option(help="Quantize the weights (4-bit NF4).", rich_help_panel=MODEL),
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
    theme: Annotated[
        str | None,
        typer.Option(help=_THEMES_HELP, callback=_check_theme, rich_help_panel=CHAT),
    ] = None,
    transcripts: Annotated[
        Path | None,
        typer.Option(help="Folder for transcripts.", file_okay=False, rich_help_panel=CHAT),
    ] = None,
    no_autosave: Annotated[
        bool, typer.Option("--no-autosave", help="Save only on /save.", rich_help_panel=CHAT)
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest transcript.", rich_help_panel=CHAT)
    ] = False,
    prompt: Annotated[
        str | None,
        typer.Option(
            "-p", "--prompt", help="Answer this (- reads stdin), print the answer alone, exit."
        ),
    ] = None,
    show_reasoning: Annotated[
        bool, typer.Option("--show-reasoning", help="With -p: write the reasoning to stderr.")
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="A plain line REPL instead of the TUI.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Chat with SmolLM3 (or another SmolLM / Llama model) in the terminal."""
    given = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
    }
    sampling = {k: v for k, v in given.items() if v is not None}
    try:
        SamplingParams().with_(**sampling)
    except SamplingError as error:
        name = next((n for n in sampling if str(error).startswith(n)), None)
        hint = f"--{name.replace('_', '-')}" if name else None
        raise typer.BadParameter(str(error), param_hint=hint) from None
    if prompt == "-":
        prompt = read_stdin().removesuffix("\n").removesuffix("\r")
    config = RunConfig(
        model=model,
        device=device,
        dtype=dtype.value,
        quantize=quantize.value if quantize else None,
        system=system,
        think=think,
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        theme=theme,
        transcripts=transcripts,
        autosave=not no_autosave,
        resume=resume,
        prompt=prompt,
        show_reasoning=show_reasoning,
        plain=plain,
        debug=debug,
    )
    raise typer.Exit(run(config))


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
    try:
        if config.prompt is not None:
            return one_shot(config)
        if config.plain:
            return plain_repl(config)
        return tui(config)
    except SmolchatError as error:
        if config.debug:
            traceback.print_exc()
        _error_line(str(error))
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        if config.debug:
            traceback.print_exc()
            return 1
        if is_out_of_memory(error):  # e.g. the CPU allocator, which torch reports as RuntimeError
            _error_line(out_of_memory_line(error, "loading or running the model"))
            return 1
        _error_line(
            f"internal error: {type(error).__name__}: {error} (--debug shows the traceback)"
        )
        return 1


def _error_line(message: str) -> None:
    first = " ".join(message.split()) or "unknown error"
    print(f"smolchat: error: {first}", file=sys.stderr)


# ---- wiring shared by the modes --------------------------------------------------------
def load_engine(config: RunConfig, progress: Any = None) -> Any:
    """``smolchat.load`` with the command line's model options."""
    import smolchat

    return smolchat.load(
        config.model,
        device=config.device,
        dtype=config.dtype,
        quantize=config.quantize,
        progress=progress,
    )


def make_session(engine: Any, config: RunConfig, *, store: bool = True) -> ChatSession:
    """A session with the command line's system prompt, sampling and transcript options."""
    from smolchat.chat.session import ChatSession
    from smolchat.chat.transcript import TranscriptStore

    transcripts = TranscriptStore(config.transcripts, autosave=config.autosave) if store else None
    session = ChatSession(engine, system_prompt=config.system, store=transcripts)
    settings = session.settings
    settings.sampling = settings.sampling.with_(**config.sampling)
    if config.max_new_tokens is not None:
        settings.max_new_tokens = config.max_new_tokens
    if config.think is not None:
        settings.thinking = config.think
    return session


def _latest_transcript(config: RunConfig) -> tuple[Path | None, list[str]]:
    from smolchat.chat.transcript import TranscriptStore

    store = TranscriptStore(config.transcripts, autosave=config.autosave)
    latest = store.latest()
    if latest is None:
        return None, [f"No transcript to resume in {store.folder}: starting a new chat."]
    return latest, []


# ---- the modes -------------------------------------------------------------------------
def one_shot(config: RunConfig) -> int:
    """``-p``: the answer alone on stdout (reasoning on stderr with --show-reasoning)."""
    from rich.console import Console

    from smolchat.chat.text import printable
    from smolchat.plain import consume, load_with_progress

    assert config.prompt is not None
    if not config.prompt.strip():
        raise SmolchatError("the prompt is empty: give text with -p, or pipe it with -p -")
    err = Console(stderr=True)
    # to a terminal, control characters are shown, not obeyed; to a pipe, the text is exact
    out_filter = printable if sys.stdout.isatty() else str
    err_filter = printable if sys.stderr.isatty() else str
    engine = load_with_progress(lambda progress: load_engine(config, progress), err)
    # one-shot answers are not autosaved unless a transcripts folder is given
    session = make_session(engine, config, store=config.transcripts is not None)
    started = {"answer": False}

    def on_answer(text: str) -> None:
        if not started["answer"]:
            text = text.lstrip()
            started["answer"] = bool(text)
        sys.stdout.write(out_filter(text))
        sys.stdout.flush()

    def on_reasoning(text: str) -> None:
        if config.show_reasoning:
            sys.stderr.write(err_filter(text))
            sys.stderr.flush()

    finished, interrupted = consume(session.send(config.prompt), session, on_reasoning, on_answer)
    if config.show_reasoning and finished is not None and finished.reasoning:
        sys.stderr.write("\n")
    if finished is not None and finished.answer and not finished.answer.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    if interrupted:
        return EXIT_INTERRUPTED
    if finished is None or finished.error:
        raise SmolchatError(finished.error if finished else "the reply ended unexpectedly")
    return 0


def plain_repl(config: RunConfig) -> int:
    """``--plain``: the line REPL."""
    from rich.console import Console

    from smolchat.plain import PlainChat, load_with_progress

    console = Console(highlight=False)
    if getattr(sys.stdin, "errors", None) == "strict" and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # a bad byte typed or piped must not end the REPL
    engine = load_with_progress(lambda progress: load_engine(config, progress), console)
    session = make_session(engine, config)
    if config.resume:
        latest, notes = _latest_transcript(config)
        for note in notes:
            console.print(note, style="yellow")
        if latest is not None:
            session.load(latest)
            console.print(f"Resumed {latest} ({len(session.messages)} messages)", style="dim")
    return PlainChat(session, console, show_reasoning=True).run()


def tui(config: RunConfig) -> int:
    """The Textual app."""
    from smolchat.tui.app import AppOptions, SmolchatApp
    from smolchat.tui.themes import DEFAULT_THEME

    resume, notices = _latest_transcript(config) if config.resume else (None, [])

    def placement() -> tuple[str, str]:
        from smolchat.loader import pick_device, pick_dtype

        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        return str(device), str(dtype).removeprefix("torch.")

    app = SmolchatApp(
        AppOptions(
            model=config.model,
            load_engine=lambda progress: load_engine(config, progress),
            make_session=lambda engine: make_session(engine, config),
            device=config.device,
            dtype=config.dtype,
            quantize=config.quantize,
            placement=placement,
            theme=config.theme or DEFAULT_THEME,
            resume=resume,
            notices=notices,
        )
    )
    app.run()
    if app.error:
        raise SmolchatError(app.error)
    return app.return_code or 0


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="smolchat")


if __name__ == "__main__":
    main()
