"""Modal screens: help, and a yes/no question."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Markdown, Static

from smolchat.chat.commands import COMMANDS
from smolchat.chat.text import printable

KEYS_HELP = """\
| Key | Does |
|---|---|
| Enter | send |
| Shift+Enter, Ctrl+J | new line |
| Up / Down | history (at the first / last line) |
| Tab | complete a /command |
| Esc, Ctrl+C | stop the reply (Ctrl+C when idle: quit) |
| Ctrl+Y | copy the last reply |
| Ctrl+B | copy the last code block |
| Ctrl+R | show / hide reasoning |
| Ctrl+T | think / no_think |
| F1 | this help |
"""


def commands_help() -> str:
    """The slash commands as a Markdown list (a list wraps better than a table)."""
    lines = [f"- `{c.usage}`: {c.help}" for c in COMMANDS.values()]
    lines.append("")
    lines.append("End a message with `/think` or `/no_think` to set the mode for it alone.")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """The commands and the key bindings (or the help of one command)."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close")]

    def __init__(self, text: str | None = None) -> None:
        super().__init__(classes="dialog")
        self.help_text = text if text is not None else commands_help() + "\n\n" + KEYS_HELP

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
