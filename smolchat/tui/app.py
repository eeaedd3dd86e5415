"""The Textual app: a loading screen while the model loads, then the chat screen."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen
from textual.theme import Theme

from smolchat import clipboard
from smolchat.chat.history import PromptHistory
from smolchat.errors import SmolchatError, is_out_of_memory, out_of_memory_line
from smolchat.exit_codes import ExitCode
from smolchat.tui.palette import SmolchatCommands
from smolchat.tui.screens.chat import MESSAGE_WIDTH, ChatScreen
from smolchat.tui.screens.loading import LoadingScreen
from smolchat.tui.themes import DEFAULT_THEME, available_themes, load_theme, palette_for

if TYPE_CHECKING:
    from smolchat.chat.session import ChatSession

Progress = Callable[[str, int, "int | None"], None]
THEME_SOURCE = ("smolchat-theme", "")  # the stylesheet slot the current theme file fills
THEME_PRIORITY = 100  # theme rules win over the app's own rules of equal specificity
PROGRESS_EVERY_S = 0.05
# While the UI thread is busy drawing, a generation thread waiting for the GIL (after every
# torch call or sleep) waits up to the switch interval: 5 ms by default, which caps streaming
# near 200 tokens/s. 0.5 ms lets it back in quickly (measured: ~2.5x faster fake streams).
SWITCH_INTERVAL_S = 0.0005


@dataclass
class AppOptions:
    """What the app needs to start: how to load the engine and build the session."""

    model: str
    load_engine: Callable[[Progress], Any]  # called on a thread; reports progress
    make_session: Callable[[Any], ChatSession]  # called on the same thread, after loading
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    placement: Callable[[], tuple[str, str]] | None = None  # resolved (device, dtype)
    theme: str = DEFAULT_THEME
    show_reasoning: bool = False
    resume: Path | None = None  # a transcript to load once the session exists
    notices: list[str] = field(default_factory=list)  # shown once the chat opens
    history_file: Path | None = None  # the prompt history kept across runs (None: memory only)
    notes: list[str] = field(default_factory=list)  # shown in the conversation (Markdown-free)
    message_width: int | None = MESSAGE_WIDTH  # columns per message at most (None: no limit)


MAX_TOASTS = 2  # notifications shown at once (the newest): more stacked over the prompt
LOADER_EXIT_WAIT_S = 30.0  # the longest an exit mid-load waits for the loading thread


class LoadCancelled(Exception):
    """Raised inside the loader's progress callback when the app quits mid-load."""


class SmolchatApp(App[None]):
    """smolchat's TUI. ``error`` holds the one-line reason when it exits with code 1."""

    TITLE = "smolchat"
    CSS_PATH = "app.tcss"
    COMMANDS = {SmolchatCommands}  # Ctrl+P: our commands and keys, not Textual's own
    BINDINGS = [
        # Priority, so that it closes a dialog whatever has the focus there (a modal screen
        # hides the app's ordinary bindings); on the chat screen it stands aside (check_action)
        # for the screen's ordinary Ctrl+C, which runs in order with the typed keys.
        Binding("ctrl+c", "stop_or_quit", "", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, tooltip="quit"),
    ]

    class Loaded(Message):
        """The engine and the session are ready."""

        def __init__(self, session: ChatSession) -> None:
            super().__init__()
            self.session = session

    class LoadFailed(Message):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def __init__(self, options: AppOptions) -> None:
        super().__init__()
        self.options = options
        self.error: str | None = None
        self.last_copy: clipboard.CopyReport | None = None
        self.theme_name = DEFAULT_THEME
        self._quitting = threading.Event()
        self._loader: threading.Thread | None = None
        self._switch_interval = sys.getswitchinterval()  # restored when the app ends
        self._theme_error = None if self._set_theme(options.theme) else options.theme
        if self._theme_error:
            self._set_theme(DEFAULT_THEME)

    # ---- themes -----------------------------------------------------------------------
    def _refresh_notifications(self) -> None:
        """Only the newest MAX_TOASTS notifications stay (Textual shows them all, stacked down
        over the prompt); the CSS keeps those in the top half of the screen."""
        for old in list(self._notifications)[:-MAX_TOASTS]:
            self._unnotify(old, refresh=False)
        super()._refresh_notifications()

    def apply_theme(self, name: str | None) -> bool:
        """Switch to a theme from ``themes/``; an unknown name is reported, not raised;
        ``None`` lists the themes."""
        if name is None:
            themes = ", ".join(available_themes())
            current = self.theme_name or DEFAULT_THEME
            self.notify(f"Themes: {themes} (now {current}); /theme NAME switches", markup=False)
            return True
        if self._set_theme(name):
            self.notify(f"Theme: {name}", markup=False)
            return True
        themes = ", ".join(available_themes())
        self.notify(f"Unknown theme {name!r}. Themes: {themes}", severity="error", markup=False)
        return False

    def _set_theme(self, name: str) -> bool:
        try:
            spec = load_theme(name)
        except (KeyError, OSError):
            return False
        # a 256-colour terminal gets each colour's nearest displayable one (Rich's rounding
        # turns some blue-greys teal)
        p = palette_for(spec.palette, getattr(self.console, "color_system", None))
        theme = Theme(
            name=f"smolchat-{spec.name}",
            dark=spec.dark,
            primary=p["primary"],
            secondary=p.get("secondary"),
            warning=p.get("warning"),
            error=p.get("error"),
            success=p.get("success"),
            accent=p.get("accent"),
            foreground=p.get("foreground"),
            background=p.get("background"),
            surface=p.get("surface"),
            panel=p.get("panel"),
            boost=p.get("boost"),
        )
        self.register_theme(theme)
        self.stylesheet.add_source(spec.css, read_from=THEME_SOURCE, tie_breaker=THEME_PRIORITY)
        self.theme_name = spec.name
        if self.theme == theme.name:
            if self.is_running:
                self.refresh_css(animate=False)
        else:
            self.theme = theme.name
        return True

    # ---- loading ----------------------------------------------------------------------
    def on_mount(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        opts = self.options
        screen = LoadingScreen(
            opts.model, device=opts.device, dtype=opts.dtype, quantize=opts.quantize
        )
        self.push_screen(screen)
        if self._theme_error:
            self.apply_theme(self._theme_error)  # notifies, listing the themes
        # A daemon thread, not a Textual worker: those run in asyncio's executor, which the app
        # waits for when it ends, so quitting mid-load would hang until the load is done.
        loader = threading.Thread(target=self.load, args=(screen,), name="smolchat-load")
        loader.daemon = True
        self._loader = loader
        loader.start()

    def wait_for_loader(self, timeout: float = LOADER_EXIT_WAIT_S) -> bool:
        """After the app quit mid-load: wait (at most ``timeout`` seconds) for the loading
        thread, which stops at its next progress report. A process that exits while that
        thread is inside torch aborts ("terminate called without an active exception", exit
        134) instead of ending with its own status. True if no load is running any more."""
        loader = self._loader
        if loader is None:
            return True
        loader.join(timeout)
        return not loader.is_alive()

    def load(self, screen: LoadingScreen) -> None:
        """Load the engine and build the session, posting progress to the loading screen.

        Runs on its own thread; everything reaches the UI as posted messages.
        """
        opts = self.options
        try:
            if opts.placement is not None:
                screen.post_message(LoadingScreen.Placement(*opts.placement()))
            engine = opts.load_engine(self._progress_poster(screen))
            session = opts.make_session(engine)
        except LoadCancelled:
            return
        except SmolchatError as error:
            self.post_message(self.LoadFailed(str(error)))
            return
        except Exception as error:
            self.log.error(error)
            if is_out_of_memory(error):
                self.post_message(self.LoadFailed(out_of_memory_line(error, "loading the model")))
            else:
                self.post_message(
                    self.LoadFailed(f"internal error: {type(error).__name__}: {error}")
                )
            return
        self.post_message(self.Loaded(session))

    def _progress_poster(self, screen: LoadingScreen) -> Progress:
        """A progress callback for the loading thread (posts at most every 50 ms per stage)."""
        last: dict[str, float] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if self._quitting.is_set():
                raise LoadCancelled
            now = time.monotonic()
            if done == total or now - last.get(stage, 0.0) >= PROGRESS_EVERY_S:
                last[stage] = now
                screen.post_message(LoadingScreen.Progress(stage, done, total))

        return progress

    @on(Loaded)
    async def _on_loaded(self, message: Loaded) -> None:
        session = message.session
        if self.options.resume is not None:
            try:
                session.load(self.options.resume)
                self.notify(f"Resumed {self.options.resume}", markup=False)
            except SmolchatError as error:
                self.notify(str(error), severity="error", markup=False)
        loading = self.screen if isinstance(self.screen, LoadingScreen) else None
        history = PromptHistory(self.options.history_file)
        chat = ChatScreen(
            session,
            show_reasoning=self.options.show_reasoning,
            history=history,
            message_width=self.options.message_width,
        )
        if loading is not None and loading.typed:  # type-ahead goes to the prompt
            chat.draft = loading.typed
            chat.send_draft = loading.send_when_ready
        await self.switch_screen(chat)
        for note in self.options.notes:
            chat.note(note)
        for notice in self.options.notices:
            self.notify(notice, severity="warning", markup=False)
        if history.problem:
            self.notify(history.problem, severity="warning", markup=False)

    @on(LoadFailed)
    def _on_load_failed(self, message: LoadFailed) -> None:
        self.error = message.message
        self.exit(return_code=1)

    # ---- quitting ---------------------------------------------------------------------
    def on_unmount(self) -> None:
        sys.setswitchinterval(self._switch_interval)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The app's Ctrl+C is off on the chat screen: the screen's own binding handles it."""
        return action != "stop_or_quit" or not isinstance(self.screen, ChatScreen)

    def action_stop_or_quit(self) -> None:
        """Ctrl+C: on the chat screen see :meth:`ChatScreen.interrupt`; a dialog closes; while
        loading, quit as interrupted (exit status 130, as Ctrl+C while loading in --plain or -p)."""
        screen = self.screen
        if isinstance(screen, ChatScreen):
            screen.interrupt()
        elif isinstance(screen, ModalScreen):
            screen.dismiss()
        elif isinstance(screen, LoadingScreen):
            self.exit(return_code=ExitCode.INTERRUPTED)
        else:
            self.exit()

    # ---- clipboard --------------------------------------------------------------------
    def copy_to_clipboard(self, text: str) -> None:
        """Every copy of the app (the text area's own included) goes through
        :func:`smolchat.clipboard.copy`: OSC 52 (wrapped inside tmux) and a clipboard tool."""
        self.copy_text(text, "the selection")

    def copy_text(self, text: str, what: str) -> clipboard.CopyReport:
        """Copy ``text`` and tell the user how (or why it failed); ``what`` names it."""
        self._clipboard = text  # what Ctrl+V pastes inside the app
        driver = self._driver
        report = clipboard.copy(text, terminal=driver.write if driver is not None else None)
        self.last_copy = report
        self.notify(
            report.describe(what), severity="information" if report.ok else "error", markup=False
        )
        return report

    def exit(self, *args: Any, **kwargs: Any) -> None:
        self._quitting.set()  # a load in progress stops at its next progress report
        super().exit(*args, **kwargs)
