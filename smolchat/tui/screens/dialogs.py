"""Modal screens: help, a yes/no question, and the search through past prompts."""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from smolchat.chat.commands import THINK_SUFFIX_NOTE, available_commands
from smolchat.chat.history import PromptHistory
from smolchat.chat.text import printable

KEY_NAMES = {"escape": "Esc", "pageup": "PageUp", "pagedown": "PageDown", "delete": "Del"}


def key_name(key: str) -> str:
    """``"ctrl+shift+up"`` -> ``"Ctrl+Shift+Up"``, ``"escape"`` -> ``"Esc"``."""
    return "+".join(KEY_NAMES.get(part, part.capitalize()) for part in key.split("+"))


def keys_help(bindings: Iterable[BindingType]) -> str:
    """A Markdown table of ``bindings`` (those with a description), generated from them.

    A binding's ``key_display`` (if set) names its keys, its ``tooltip`` (if set) says what it
    does, else its ``description``.
    """
    rows = ["| Key | Does |", "|---|---|"]
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        keys = binding.key_display or ", ".join(key_name(k) for k in binding.key.split(","))
        does = binding.tooltip or binding.description
        rows.append(f"| {_cell(keys)} | {_cell(does)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def commands_help(*, thinking_mode: bool = True) -> str:
    """The slash commands as a Markdown list (a list wraps better than a table); without a
    thinking mode, not the thinking commands."""
    commands = available_commands(thinking_mode=thinking_mode)
    lines = [f"- `{c.usage}`: {c.help}" for c in commands]
    if thinking_mode:
        lines += ["", THINK_SUFFIX_NOTE]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """The commands and the key bindings (or the help of one command)."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close")]

    def __init__(
        self, text: str | None = None, *, keys: str = "", thinking_mode: bool = True
    ) -> None:
        """``text``: the help of one command; None: all commands (without a thinking mode,
        not the thinking ones), then the ``keys`` table."""
        super().__init__(classes="dialog")
        if text is None:
            text = commands_help(thinking_mode=thinking_mode) + "\n\n" + keys
        self.help_text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static("Help  (Esc closes)", classes="dialog-title")
            with VerticalScroll():
                yield Markdown(self.help_text, id="help-text")


class ConfirmScreen(ModalScreen[bool]):
    """A question with two buttons; dismisses with True for yes."""

    BINDINGS = [Binding("escape,n", "answer(False)", "No"), Binding("y", "answer(True)", "Yes")]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "Cancel") -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.yes_label = yes
        self.no_label = no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(printable(self.question), markup=False, id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes_label, variant="primary", id="yes")
                yield Button(self.no_label, id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    @on(Button.Pressed)
    def _on_button(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HistorySearchScreen(ModalScreen[str | None]):
    """Ctrl+R: search the past prompts as you type; Enter takes the highlighted one."""

    BINDINGS = [
        Binding("escape,ctrl+c", "dismiss(None)", "Cancel"),
        Binding("up", "move(-1)", "Previous", show=False),
        Binding("down,ctrl+r", "move(1)", "Next", show=False),
    ]
    MAX_SHOWN = 200

    def __init__(self, history: PromptHistory, query: str = "") -> None:
        super().__init__(classes="dialog")
        self.history = history
        self.query_text = query
        self.matches: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Static(
                "Search past prompts  (Enter takes it, Esc cancels)", classes="dialog-title"
            )
            yield Input(self.query_text, placeholder="type to search", id="search-input")
            yield OptionList(id="search-results")

    def on_mount(self) -> None:
        self._refresh_matches(self.query_text)
        self.query_one(Input).focus()

    @on(Input.Changed)
    def _on_changed(self, event: Input.Changed) -> None:
        self._refresh_matches(event.value)

    def _refresh_matches(self, query: str) -> None:
        self.matches = self.history.search(query)[: self.MAX_SHOWN]
        results = self.query_one(OptionList)
        results.clear_options()
        results.add_options(
            [Option(printable(" ⏎ ".join(m.splitlines()))[:300]) for m in self.matches]
        )
        if self.matches:
            results.highlighted = 0

    def action_move(self, delta: int) -> None:
        results = self.query_one(OptionList)
        if self.matches:
            now = results.highlighted or 0
            results.highlighted = max(0, min(len(self.matches) - 1, now + delta))

    @on(Input.Submitted)
    def _on_submitted(self) -> None:
        index = self.query_one(OptionList).highlighted
        self.dismiss(self.matches[index] if self.matches and index is not None else None)

    @on(OptionList.OptionSelected)
    def _on_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.matches[event.option_index])
