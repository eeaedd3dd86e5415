"""Plain mode (``--plain``) and one-shot helpers: a line REPL with rich, no textual.

The same slash commands as the TUI (through :func:`smolchat.chat.commands.run_command`).
Generation runs on a thread so that Ctrl+C in the main thread can stop it: the partial
reply is kept; at the prompt Ctrl+C clears the line's text, and on an empty line (like Ctrl+D)
quits.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # Python 3.10
    from typing_extensions import assert_never

from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from smolchat.backend.types import GenerationStats
from smolchat.chat.commands import (
    Effect,
    HistoryChanged,
    OpenChats,
    Quit,
    ShowHelp,
    ShowReasoning,
    StreamReply,
    SwitchTheme,
)
from smolchat.chat.events import AnswerDelta, ChatEvent, ReasoningDelta, TurnFinished
from smolchat.chat.format import reply_line
from smolchat.chat.text import printable
from smolchat.errors import SmolchatError

if TYPE_CHECKING:
    from smolchat.chat.history import PromptHistory
    from smolchat.chat.session import ChatSession

T = TypeVar("T")
ProgressFn = Callable[[str, int, "int | None"], None]
STAGE_LABELS = {"download": "Downloading", "weights": "Loading weights"}


class PlainConsole(Console):
    """A rich Console whose closed stdout raises BrokenPipeError (rich's own default exits 1
    on the spot, skipping the generation thread's cancel and join and the documented 141)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError("stdout was closed")


def load_with_progress(load: Callable[[ProgressFn], T], console: Console) -> T:
    """Run ``load(progress)`` showing a transient progress bar on ``console`` (if a terminal)."""
    if not console.is_terminal:
        return load(lambda stage, done, total: None)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    download, count = DownloadColumn(), MofNCompleteColumn()

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(STAGE_LABELS.get(stage, stage), total=total, amount="")
        task_id = tasks[stage]
        bars.update(task_id, completed=done, total=total)
        task = bars.tasks[task_id]
        column = download if stage == "download" else count
        bars.update(task_id, amount=column.render(task))

    with bars:
        return load(progress)


def consume(
    stream: Iterator[ChatEvent],
    session: ChatSession,
    on_reasoning: Callable[[str], None],
    on_answer: Callable[[str], None],
) -> tuple[TurnFinished | None, bool]:
    """Drain ``stream`` on a thread, calling back on this one; Ctrl+C cancels the turn.

    Returns the final event (None if the stream raised nothing but ended early) and whether
    Ctrl+C was pressed. An exception raised by the stream is raised here.
    """
    events: queue.Queue[ChatEvent | BaseException | None] = queue.Queue()

    def pump() -> None:
        try:
            for event in stream:
                events.put(event)
        except BaseException as error:  # handed to the main thread
            events.put(error)
        events.put(None)

    thread = threading.Thread(target=pump, name="smolchat-generate", daemon=True)
    thread.start()
    interrupted = False
    finished: TurnFinished | None = None
    try:
        while True:
            try:
                item = events.get(timeout=0.1)
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, ReasoningDelta):
                    on_reasoning(item.text)
                elif isinstance(item, AnswerDelta):
                    on_answer(item.text)
                elif isinstance(item, TurnFinished):
                    finished = item
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # the turn ends within a token; keep draining
                interrupted = True
                session.cancel()
    finally:
        # Whatever ends this loop (a callback's BrokenPipeError when stdout is closed, ...),
        # the turn is cancelled and its thread joined before we go on: a generation thread
        # still running at interpreter exit aborts the process inside torch.
        if thread.is_alive():
            session.cancel()
        join_thread(thread, session)
    return finished, interrupted


def join_thread(thread: threading.Thread, session: ChatSession) -> None:
    """Wait for the generation thread; a Ctrl+C meanwhile re-cancels instead of abandoning it."""
    while thread.is_alive():
        try:
            thread.join(0.1)
        except KeyboardInterrupt:
            session.cancel()


def stats_line(stats: GenerationStats | None, finish_reason: str | None) -> str:
    """``42 tokens · 35.0 tok/s · TTFT 0.12s`` plus how the reply ended, if unusual."""
    return reply_line(None if finish_reason == "error" else finish_reason, stats)


MULTILINE = '"""'


def read_message(read: Callable[[str], str]) -> str | None:
    '''One message: a line, or the lines between ``"""`` and ``"""`` (as ollama does).

    A line that starts with ``"""`` opens a block; the block ends at the line that ends with
    ``"""``; the text in between (quotes removed) is one message, newlines kept. Ctrl+C in a
    block gives it up (None); EOF in a block sends what was typed. A pasted text with newlines
    (bracketed paste) is one line already.
    '''
    line = read("\n> ")
    start = line.lstrip()
    if not start.startswith(MULTILINE):
        return line
    first = start[len(MULTILINE) :]
    if first.rstrip().endswith(MULTILINE):  # three quotes, the message, three quotes
        return first.rstrip()[: -len(MULTILINE)]
    parts = [first] if first.strip() else []
    while True:
        try:
            more = read("... ")
        except KeyboardInterrupt:
            return None
        except EOFError:
            break
        if more.rstrip().endswith(MULTILINE):
            parts.append(more.rstrip()[: -len(MULTILINE)])
            break
        parts.append(more)
    return "\n".join(parts).strip("\n")


def line_reader(
    history: PromptHistory | None, console: Console, *, thinking_mode: bool = True
) -> Callable[[str], str]:
    """``input`` with GNU readline on a terminal: line editing, ``history`` (Up/Down, Ctrl+R),
    bracketed paste (a pasted multi-line text is one line) and Tab completion of commands
    (without a thinking mode, not the thinking ones). Without a terminal (or without
    readline): the console's own input."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return console.input
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return console.input
    from smolchat.chat.commands import complete

    readline.parse_and_bind("set enable-bracketed-paste on")  # CPython turns it off
    readline.parse_and_bind("tab: complete")
    readline.set_auto_history(False)  # whole messages go in, not the lines of a block
    readline.clear_history()
    for entry in (history.entries if history is not None else [])[-1000:]:
        readline.add_history(entry)
    readline.set_completer_delims("")

    def completer(text: str, state: int) -> str | None:
        line = readline.get_line_buffer()
        matches = complete(line, thinking_mode=thinking_mode) if text.startswith("/") else []
        return matches[state] if state < len(matches) else None

    readline.set_completer(completer)

    def read(prompt: str) -> str:
        if prompt.startswith("\n"):  # a newline inside readline's prompt upsets its redraw
            print()
            prompt = prompt[1:]
        while True:
            try:
                return input(prompt)
            except KeyboardInterrupt:
                if not readline.get_line_buffer():  # Ctrl+C on an empty line: the caller's
                    raise
                print()  # Ctrl+C with text on the line clears it (as bash does): ask again

    return read


def remember(text: str, history: PromptHistory | None) -> None:
    """Put a sent message in the history file and, if readline is on, in its Up/Down list."""
    if history is not None:
        history.add(text)
    readline = sys.modules.get("readline")
    if readline is not None:
        readline.add_history(text.replace("\0", ""))  # readline's C strings end at a NUL


class PlainChat:
    """The ``--plain`` REPL over a session."""

    def __init__(
        self, session: ChatSession, console: Console | None = None, *, show_reasoning: bool = True
    ) -> None:
        self.session = session
        self.console = console or PlainConsole(highlight=False)
        self.show_reasoning = show_reasoning

    def run(
        self, read: Callable[[str], str] | None = None, *, history: PromptHistory | None = None
    ) -> int:
        """Read messages until /exit, EOF or Ctrl+C at the prompt; return the exit status.

        ``read`` reads one line (default: readline's ``input`` on a terminal, with line editing,
        ``history`` and bracketed paste; the console's input otherwise).
        """
        backend = self.session.backend
        if read is None:
            read = line_reader(history, self.console, thinking_mode=backend.has_thinking_mode)
        self.console.print(
            Text(f"smolchat · {backend.model_name} · {backend.description}", style="bold")
        )
        self.console.print(
            Text(
                '/help lists the commands; Ctrl+C stops a reply; """ starts and ends a '
                "multi-line message.",
                style="dim",
            )
        )
        while True:
            try:
                line = read_message(read)
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return 0
            if line is None:  # a multi-line message given up with Ctrl+C
                self.console.print(Text("(message discarded)", style="dim"))
                continue
            if not line.strip():
                continue
            remember(line.strip(), history)
            try:
                if not self.handle(line.strip()):
                    return 0
            except BrokenPipeError:  # stdout is gone: nobody can read a message about it
                raise
            except SmolchatError as error:
                self.console.print(Text(printable(f"error: {error}"), style="red"))
            except Exception as error:  # a bug must not end the conversation (it is autosaved)
                detail = " ".join(f"{type(error).__name__}: {error}".split())
                self.console.print(Text(printable(f"internal error: {detail}"), style="red"))

    def handle(self, line: str) -> bool:
        """Send a message or run a command; False when the REPL should end."""
        from smolchat.chat.commands import is_command, run_command
        from smolchat.chat.context import compose

        if not is_command(line):
            self.answer(self.session.send(compose(self.session, line)))
            return True
        result = run_command(self.session, line)
        if result.effect is None:
            if result.message:
                self.console.print(Markdown(printable(result.message)))
            return True
        return self.apply_effect(result.effect, result.message)

    def apply_effect(self, effect: Effect, message: str) -> bool:
        """Carry out what a command asked for; False when the REPL should end."""
        match effect:
            case Quit():
                return False
            case StreamReply(stream=stream):
                self.answer(stream)
            case ShowReasoning(show=show):
                self.show_reasoning = show
                self.console.print(Text(f"reasoning {'shown' if show else 'hidden'}", style="dim"))
            case SwitchTheme():
                self.console.print(Text("themes apply to the TUI only", style="dim"))
            case HistoryChanged() | ShowHelp() | OpenChats():  # plain: the message says it all
                if message:
                    self.console.print(Markdown(printable(message)))
                if isinstance(effect, HistoryChanged):
                    self._autosave_problem()
            case _:
                assert_never(effect)
        return True

    def _autosave_problem(self) -> None:
        """Tell the user if the last autosave failed."""
        problem = self.session.autosave_error
        if problem:
            if not problem.lower().startswith("autosave"):
                problem = f"autosave failed: {problem}"
            self.console.print(Text(printable(problem), style="yellow"))

    def answer(self, stream: Iterator[ChatEvent]) -> None:
        """Stream a reply: reasoning dimmed (if shown), then the answer text as it comes."""
        out = self.console
        state = {"reasoning": False, "answer": False}

        def on_reasoning(text: str) -> None:
            if self.show_reasoning:
                if not state["reasoning"]:
                    text = text.lstrip()
                state["reasoning"] = True
                out.print(Text(printable(text), style="dim italic"), end="", soft_wrap=True)

        def on_answer(text: str) -> None:
            if not state["answer"]:
                text = text.lstrip()
                if not text:
                    return
                if state["reasoning"]:
                    out.print("\n")
            state["answer"] = True
            out.print(Text(printable(text)), end="", soft_wrap=True)

        started = time.monotonic()
        finished, _ = consume(stream, self.session, on_reasoning, on_answer)
        out.print()
        if finished is None:
            out.print(Text("error: the reply ended unexpectedly", style="red"))
            return
        if finished.error:
            out.print(Text(printable(f"error: {finished.error}"), style="red"))
        line = stats_line(finished.stats, finished.finish_reason)
        if not line:
            line = f"{time.monotonic() - started:.1f}s"
        out.print(Text(line, style="dim"))
        self._autosave_problem()
