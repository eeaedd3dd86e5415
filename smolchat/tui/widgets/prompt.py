"""The prompt: a multi-line text area with history and slash-command completion."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Static, TextArea

from smolchat.chat.history import PromptHistory
from smolchat.chat.text import lf_line_ends

NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")


class PromptInput(TextArea):
    """Enter sends; Shift+Enter / Ctrl+J add a newline; Up/Down at the first/last line walk the
    history; Tab completes a slash command.

    Its own keys are listed in ``BINDINGS`` (so the help shows them like every other key) but
    handled in :meth:`_on_key`, in the widget's own queue, in order with the typed characters.
    Priority bindings would run at the app as each key arrives, before the characters typed
    just ahead of it reached the text area: Enter sent half a message (or nothing, and a second
    Enter sent it), the rest stayed in the prompt.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send", show=False, tooltip="send"),
        Binding(
            ",".join(NEWLINE_KEYS),
            "newline",
            "New line",
            show=False,
            tooltip="new line",
        ),
        Binding(
            "up",
            "history_up",
            "History",
            show=False,
            key_display="Up / Down",
            tooltip="earlier / later prompts (at the first / last line)",
        ),
        Binding("down", "history_down", "", show=False),  # listed with Up
        Binding(
            "tab",
            "complete",
            "Complete",
            show=False,
            tooltip="complete a /command or its argument",
        ),
        Binding(
            "f7",
            "select_all",
            "Select all",
            show=False,
            tooltip="select the whole draft (then type or Backspace to replace it)",
        ),
        Binding("ctrl+z", "undo", "Undo", show=False, tooltip="undo an edit of the draft"),
    ]

    class Submitted(Message):
        """The user pressed Enter on a non-empty prompt."""

        def __init__(self, prompt: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

        @property
        def control(self) -> PromptInput:
            return self.prompt

    class Completions(Message):
        """Tab found several completions: ``matches`` (whole lines), to show the user."""

        def __init__(self, matches: list[str]) -> None:
            super().__init__()
            self.matches = matches

    def __init__(
        self,
        *,
        completer: Callable[[str], list[str]] | None = None,
        id: str | None = None,
        placeholder: str = "",
        history: PromptHistory | None = None,
    ) -> None:
        super().__init__(
            "",
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            compact=True,
            highlight_cursor_line=False,
            placeholder=placeholder,
        )
        self.completer = completer
        self.prompt_history = history if history is not None else PromptHistory()
        self._history_index: int | None = None  # None: editing the draft
        self._draft = ""

    def load_text(self, text: str) -> None:
        """Replace the draft; its line ends become ``\n`` (TextArea would keep a ``\r`` it
        found first as the line end of the whole draft, and send it so)."""
        super().load_text(lf_line_ends(text))

    async def _on_paste(self, event: events.Paste) -> None:
        event.text = lf_line_ends(event.text)  # TextArea._on_paste (next in the MRO) inserts it

    async def _on_key(self, event: events.Key) -> None:
        action = _key_actions().get(event.key)
        if action is None:
            return  # TextArea._on_key (next in the MRO) inserts it, or a binding handles it
        event.stop()
        event.prevent_default()  # TextArea's own handler would insert Enter as a newline
        await self.run_action(action)

    def action_submit(self) -> None:
        self.submit()

    def action_newline(self) -> None:
        self.insert("\n")

    def action_history_up(self) -> None:
        if self.cursor_at_first_line and self.past_prompts:
            self.history_back()
        else:
            self.action_cursor_up()

    def action_history_down(self) -> None:
        if self.cursor_at_last_line and self._history_index is not None:
            self.history_forward()
        else:
            self.action_cursor_down()

    def action_complete(self) -> None:
        if self.text.startswith("/") and self.completer is not None:
            self.complete_command()
        else:
            self.screen.focus_next()

    def submit(self) -> None:
        """Send the prompt's text (as Enter does); an empty prompt sends nothing."""
        text = lf_line_ends(self.text).strip()
        if not text:
            return
        self.prompt_history.add(text)
        self._history_index = None
        self._draft = ""
        self.clear()
        self.post_message(self.Submitted(self, text))

    @property
    def past_prompts(self) -> list[str]:
        """The history, oldest first (what Up walks through)."""
        return self.prompt_history.entries

    def remember(self, text: str) -> None:
        """Put ``text`` last in the history for this session only (Up brings it back)."""
        self.prompt_history.add(text, persist=False)
        self._history_index = None

    def history_back(self) -> None:
        """Show the previous entry of the history (the draft is kept)."""
        if self._history_index is None:
            self._draft = self.text
            self._history_index = len(self.past_prompts)
        if self._history_index > 0:
            self._history_index -= 1
            self._show(self.past_prompts[self._history_index], at_end=False)

    def history_forward(self) -> None:
        """Show the next entry of the history, then the draft again."""
        assert self._history_index is not None
        self._history_index += 1
        if self._history_index >= len(self.past_prompts):
            self._history_index = None
            self._show(self._draft, at_end=True)
        else:
            self._show(self.past_prompts[self._history_index], at_end=True)

    def _show(self, text: str, *, at_end: bool) -> None:
        self.load_text(text)
        # older entries open at their first line (so Up keeps going), newer at their end
        self.move_cursor(self.document.end if at_end else (0, len(self.document[0])))

    def complete_command(self) -> None:
        """Complete a command name or argument to the longest prefix its matches share."""
        assert self.completer is not None
        if "\n" in self.text:
            return
        matches = self.completer(self.text)
        if not matches:
            return
        common = matches[0]
        for match in matches[1:]:
            while not match.startswith(common):
                common = common[:-1]
        single = len(matches) == 1 and not matches[0].endswith("/")  # a folder: go on typing
        completed = common + (" " if single else "")
        if len(completed) > len(self.text):
            self.load_text(completed)
            self.move_cursor(self.document.end)
        if len(matches) > 1:
            self.post_message(self.Completions(matches))


def _key_actions() -> dict[str, str]:
    """Key -> action of :class:`PromptInput`'s own keys (from its ``BINDINGS``)."""
    actions: dict[str, str] = {}
    for binding in PromptInput.BINDINGS:
        assert isinstance(binding, Binding)
        for key in binding.key.split(","):
            actions[key.strip()] = binding.action
    return actions


class CommandHint(Static):
    """A line above the prompt listing the slash commands that match what is typed."""

    def __init__(self, usages: dict[str, str], *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)
        self.usages = usages  # "/name" -> "usage — help"
        self.display = False

    def show_for(self, text: str) -> None:
        """Update for the prompt's text: shown only while typing a command name."""
        first = text.split(" ", 1)[0]
        if not text.startswith("/") or "\n" in text:
            self.display = False
            return
        if " " in text:  # the name is typed: show its usage
            matches = [u for name, u in self.usages.items() if name == first]
        else:
            matches = [u for name, u in self.usages.items() if name.startswith(first)]
        self.display = bool(matches)
        self.update("\n".join(matches[:8]))
