"""The chat browser (Ctrl+L, ``/chats``): search as you type, a preview, open, rename, delete.

Built from Textual's own widgets: an ``Input`` for the search, an ``OptionList`` of chats and a
``Static`` preview. Listing and searching run on a thread worker (``exclusive=True``, so a newer
keystroke cancels an older search); results reach the screen as posted messages. The screen
dismisses with the path of the chat to open (None when closed).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from smolchat.chat.library import ChatEntry, ChatLibrary, SearchHit
from smolchat.chat.text import printable
from smolchat.errors import SmolchatError
from smolchat.tui.screens.dialogs import ConfirmScreen

PREVIEW_CHARS = 6000
LIST_LIMIT = 500


class RenameScreen(ModalScreen[str | None]):
    """One line: the chat's new title (Enter) or nothing (Esc)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog")
        self.old_title = title

    def compose(self) -> ComposeResult:
        with Vertical(id="rename-box"):
            yield Static("Rename the chat  (Enter saves, Esc cancels)", classes="dialog-title")
            yield Input(self.old_title, id="rename-input", select_on_focus=True)

    @on(Input.Submitted, "#rename-input")
    def _on_submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)


class ChatsScreen(ModalScreen[Path | None]):
    """The saved chats of a transcripts folder."""

    CSS_PATH = "../chats.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="close the chat list"),
        Binding("down", "move(1)", "Next", show=False, priority=True),
        Binding("up", "move(-1)", "Previous", show=False, priority=True),
        Binding("pagedown", "move(10)", "", show=False, priority=True),
        Binding("pageup", "move(-10)", "", show=False, priority=True),
        Binding("f2", "rename", "Rename", priority=True, tooltip="rename the chat"),
        Binding("f8", "delete", "Delete", priority=True, tooltip="move the chat to the trash"),
    ]

    class Found(Message):
        """The chats to show (a listing or a search's hits) for ``query``."""

        def __init__(self, query: str, rows: list[tuple[ChatEntry, SearchHit | None]]) -> None:
            super().__init__()
            self.query = query
            self.rows = rows

    def __init__(self, library: ChatLibrary, query: str = "") -> None:
        super().__init__(classes="dialog")
        self.library = library
        self.initial_query = query
        self.rows: list[tuple[ChatEntry, SearchHit | None]] = []
        self.shown_query: str | None = None  # the query the list currently answers

    def compose(self) -> ComposeResult:
        with Vertical(id="chats-box"):
            yield Static(
                "Chats  (type to search every message · Enter opens · F2 rename · "
                "F8 delete · Esc closes)",
                classes="dialog-title",
            )
            yield Input(self.initial_query, placeholder="Search…", id="chats-search")
            with Horizontal(id="chats-body"):
                yield OptionList(id="chats-list")
                with VerticalScroll(id="chats-preview-box"):
                    yield Static("", id="chats-preview", markup=False)
            yield Static("", id="chats-status", markup=False)

    def on_mount(self) -> None:
        self.query_one("#chats-search", Input).focus()
        self.find(self.initial_query)

    # ---- finding ----------------------------------------------------------------------
    @on(Input.Changed, "#chats-search")
    def _on_search(self, event: Input.Changed) -> None:
        self.find(event.value)

    @work(thread=True, exclusive=True, group="chats-find", exit_on_error=False)
    def find(self, query: str) -> None:
        """List (empty query) or search the chats on a thread; post what was found."""
        rows: list[tuple[ChatEntry, SearchHit | None]]
        if query.strip():
            rows = [(h.entry, h) for h in self.library.search(query, LIST_LIMIT)]
        else:
            rows = [(e, None) for e in self.library.entries(LIST_LIMIT)]
        self.post_message(self.Found(query, rows))

    @on(Found)
    def _on_found(self, message: Found) -> None:
        if message.query != self.query_one("#chats-search", Input).value:
            return  # an older search finished after a newer keystroke
        self.rows = message.rows
        self.shown_query = message.query
        options = self.query_one("#chats-list", OptionList)
        options.clear_options()
        options.add_options([Option(self._label(e, h), id=str(e.path)) for e, h in self.rows])
        if self.rows:
            options.highlighted = 0
        self._status()
        self._preview()

    def _label(self, entry: ChatEntry, hit: SearchHit | None) -> Text:
        label = Text(no_wrap=True, overflow="ellipsis")
        label.append(entry.updated.strftime("%m-%d %H:%M "), style="dim")
        label.append(printable(entry.title))
        label.append(f"  {entry.exchanges}", style="dim")
        if hit is not None:
            label.append(f"\n  {hit.where}: ", style="dim")
            label.append(printable(hit.snippet), style="italic")
        return label

    def _status(self) -> None:
        n = len(self.rows)
        if self.shown_query:
            text = f"{n} chat{'s' if n != 1 else ''} mention {self.shown_query!r}"
        else:
            text = f"{n} chat{'s' if n != 1 else ''} in {self.library.root}"
        self.query_one("#chats-status", Static).update(text)

    # ---- the selection ----------------------------------------------------------------
    def selected(self) -> ChatEntry | None:
        index = self.query_one("#chats-list", OptionList).highlighted
        if index is None or not 0 <= index < len(self.rows):
            return None
        return self.rows[index][0]

    def action_move(self, step: int) -> None:
        options = self.query_one("#chats-list", OptionList)
        if not self.rows:
            return
        current = options.highlighted if options.highlighted is not None else 0
        options.highlighted = max(0, min(len(self.rows) - 1, current + step))

    @on(OptionList.OptionHighlighted, "#chats-list")
    def _on_highlight(self, event: OptionList.OptionHighlighted) -> None:
        self._preview()

    def _preview(self) -> None:
        entry = self.selected()
        preview = self.query_one("#chats-preview", Static)
        if entry is None:
            preview.update("No chats." if not self.shown_query else "Nothing matches.")
            return
        data = self.library.transcript(entry.path)
        if data is None:
            preview.update(f"{entry.path.name} cannot be read.")
            return
        text = Text()
        text.append(printable(entry.title) + "\n", style="bold")
        n = entry.exchanges
        text.append(
            f"{entry.model} · {n} exchange{'s' if n != 1 else ''} · {entry.id}\n", style="dim"
        )
        if data.system_prompt:
            text.append("\nSystem: ", style="bold dim")
            text.append(printable(data.system_prompt[:300]) + "\n", style="dim")
        for msg in data.messages:
            if len(text) > PREVIEW_CHARS:
                text.append("\n…", style="dim")
                break
            you = msg.get("role") == "user"
            text.append("\nYou: " if you else "\nAssistant: ", style="bold")
            text.append(printable(str(msg.get("content", ""))[:1500]) + "\n")
        preview.update(text)

    # ---- actions ----------------------------------------------------------------------
    @on(Input.Submitted, "#chats-search")
    def _on_search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._open()

    @on(OptionList.OptionSelected, "#chats-list")
    def _on_selected(self, event: OptionList.OptionSelected) -> None:
        self._open()

    def _open(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.dismiss(entry.path)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def done(title: str | None) -> None:
            if title is None or not title.strip():
                return
            try:
                self.library.rename(entry.path, title)
            except SmolchatError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            self.notify(f"Renamed to {' '.join(title.split())}", markup=False)
            self.find(self.query_one("#chats-search", Input).value)

        self.app.push_screen(RenameScreen(entry.title), done)

    def action_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.library.delete(entry.path)
            except SmolchatError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            self.notify(
                f"Moved to the trash: smolchat chats --restore {entry.id} brings it back",
                markup=False,
            )
            self.find(self.query_one("#chats-search", Input).value)

        question = f"Move “{entry.title}” to the trash?"
        self.app.push_screen(ConfirmScreen(question, yes="Move to trash"), done)
