"""Modal screens: help, and a yes/no question."""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Markdown, Static

from smolchat.chat.commands import COMMANDS
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


def commands_help() -> str:
    """The slash commands as a Markdown list (a list wraps better than a table)."""
    lines = [f"- `{c.usage}`: {c.help}" for c in COMMANDS.values()]
    lines.append("")
    lines.append("End a message with `/think` or `/no_think` to set the mode for it alone.")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """The commands and the key bindings (or the help of one command)."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close")]

    def __init__(self, text: str | None = None, *, keys: str = "") -> None:
        """``text``: the help of one command; None: all commands, then the ``keys`` table."""
        super().__init__(classes="dialog")
        self.help_text = text if text is not None else commands_help() + "\n\n" + keys

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
