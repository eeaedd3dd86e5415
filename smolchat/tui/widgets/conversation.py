"""Entries of the conversation view: the user's messages, replies and command notes."""

from __future__ import annotations

from markdown_it import MarkdownIt
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from smolchat.backend.types import GenerationStats
from smolchat.chat.format import reply_line
from smolchat.chat.text import printable

THINKING_TITLE = "Thinking…"
REASONING_TITLE = "Reasoning"


class UserMessage(Static):
    """What the user sent (shown verbatim, never as markup; control characters made visible)."""

    def __init__(self, text: str) -> None:
        super().__init__(printable(text), markup=False, classes="message")
        self.text = text


class WelcomePanel(Static):
    """Shown in an empty chat: the model, where it runs, the context size, a few keys."""

    def __init__(self, text: str) -> None:
        super().__init__(printable(text), markup=False, id="welcome")


class NoteMessage(Markdown):
    """Output of a slash command (``/stats``, ``/set``, ...), rendered as Markdown."""

    def __init__(self, text: str) -> None:
        super().__init__(printable(text), classes="message")


class AssistantMessage(Vertical):
    """A reply: a dimmed, collapsible reasoning block above the Markdown answer.

    The reasoning is open while the model thinks and collapses when the answer starts
    (unless reasoning is set to stay shown). All methods run on the UI thread.
    """

    def __init__(self, *, show_reasoning: bool = False) -> None:
        super().__init__(classes="message")
        self.show_reasoning = show_reasoning
        self.reasoning_text = ""
        self.answer_text = ""
        self.finished = False
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        reasoning = Static("", markup=False, classes="reasoning-text")
        yield Collapsible(reasoning, title=THINKING_TITLE, collapsed=False, classes="reasoning")
        yield Markdown("", classes="answer")
        yield Static("", classes="footer")

    def on_mount(self) -> None:
        self.query_one(".reasoning", Collapsible).display = False
        self.query_one(".footer", Static).display = False

    @property
    def answer(self) -> Markdown:
        return self.query_one(".answer", Markdown)

    def add_reasoning(self, text: str) -> None:
        """Append streamed reasoning text."""
        if not text:
            return
        self.reasoning_text += text
        box = self.query_one(".reasoning", Collapsible)
        box.display = True
        box.query_one(".reasoning-text", Static).update(printable(self.reasoning_text.strip("\n")))

    async def add_answer(self, text: str) -> None:
        """Append streamed answer text (the first piece collapses the reasoning)."""
        if not text:
            return
        if not self.answer_text:
            self._end_thinking()
        self.answer_text += text
        if self._stream is None:
            self._stream = Markdown.get_stream(self.answer)
        await self._stream.write(printable(text))

    async def finish(
        self,
        reasoning: str,
        answer: str,
        *,
        finish_reason: str | None,
        stats: GenerationStats | None = None,
        error: str | None = None,
    ) -> None:
        """Show the complete reply: one full Markdown update, so no block is lost."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.finished = True
        self.reasoning_text = ""
        self.add_reasoning(reasoning)
        box = self.query_one(".reasoning", Collapsible)
        box.display = bool(reasoning.strip())
        self._end_thinking()
        self.answer_text = answer
        await self.answer.update(printable(answer))
        footer = self.query_one(".footer", Static)
        footer.update(_footer_text(finish_reason, stats, error))
        footer.display = True
        self.set_class(finish_reason == "cancelled", "-stopped")
        self.set_class(finish_reason == "error", "-error")

    def set_show_reasoning(self, show: bool) -> None:
        """Expand or collapse the reasoning (while it streams, it stays open)."""
        self.show_reasoning = show
        if self.answer_text or self.finished:
            self.query_one(".reasoning", Collapsible).collapsed = not show

    def code_blocks(self) -> list[str]:
        """The fenced or indented code blocks of the answer, in order."""
        return code_blocks(self.answer_text)

    def _end_thinking(self) -> None:
        box = self.query_one(".reasoning", Collapsible)
        box.title = REASONING_TITLE
        box.collapsed = not self.show_reasoning


def code_blocks(markdown: str) -> list[str]:
    """The contents of the code blocks of a Markdown text."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content for t in tokens if t.type in ("fence", "code_block")]


def _footer_text(
    finish_reason: str | None, stats: GenerationStats | None, error: str | None
) -> str:
    """One line under a reply: how it ended and its speed."""
    return reply_line(finish_reason, stats, error, marks=True)


def message_text(widget: Widget) -> str:
    """What copying an entry of the conversation copies (a reply: its answer)."""
    if isinstance(widget, UserMessage):
        return widget.text
    if isinstance(widget, AssistantMessage):
        return widget.answer_text
    if isinstance(widget, NoteMessage):
        return widget.source
    return ""


class ConversationView(VerticalScroll):
    """The conversation. Focused (Alt+Up/Down from the prompt), one message is highlighted and
    keys act on it: copy it, copy its code blocks one by one, retry from it, edit it.

    It only posts typed messages (:class:`Copy`, :class:`Retry`, :class:`Edit`,
    :class:`Leave`); the chat screen carries them out.
    """

    BINDINGS = [
        Binding("up,alt+up", "move(-1)", "Previous", show=False),
        Binding("down,alt+down", "move(1)", "Next", show=False),
        Binding("c,y", "copy", "Copy", tooltip="(on a highlighted message) copy it"),
        Binding("o", "copy_code", "Copy code", tooltip="(on a message) copy its next code block"),
        Binding("r", "retry", "Retry", tooltip="(on a message) generate its reply again"),
        Binding("e", "edit", "Edit", tooltip="(on your message) edit it and send it again"),
        Binding(
            "escape",
            "leave(True)",
            "Back to prompt",
            tooltip="(on a message) back to the prompt; while a reply streams, also stop it",
        ),
        Binding("i", "leave", "", show=False),  # listed with Esc
    ]

    class Copy(Message):
        """Copy ``text``; ``what`` names it for the notification."""

        def __init__(self, text: str, what: str) -> None:
            super().__init__()
            self.text = text
            self.what = what

    class Retry(Message):
        """Generate the reply of exchange ``exchange`` (0 = the first) again."""

        def __init__(self, exchange: int) -> None:
            super().__init__()
            self.exchange = exchange

    class Edit(Message):
        """Edit the user message of exchange ``exchange``; ``text`` is what it says now."""

        def __init__(self, exchange: int, text: str) -> None:
            super().__init__()
            self.exchange = exchange
            self.text = text

    class Leave(Message):
        """Back to the prompt; ``escape``: by Esc, which also stops a streaming reply (one Esc
        stops it wherever the focus is)."""

        def __init__(self, *, escape: bool = False) -> None:
            super().__init__()
            self.escape = escape

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.selected: Widget | None = None
        self._code_index = 0  # the code block "o" copies next

    def entries(self) -> list[Widget]:
        return [w for w in self.children if w.has_class("message")]

    def select(self, widget: Widget | None) -> None:
        """Highlight ``widget`` (None: nothing) and bring it into view."""
        if self.selected is not None:
            self.selected.remove_class("-selected")
        self.selected = widget
        self._code_index = 0
        if widget is not None:
            widget.add_class("-selected")
            self.scroll_to_widget(
                widget, animate=False, top=widget.outer_size.height > self.size.height
            )

    def action_move(self, delta: int) -> None:
        """Highlight the previous (-1) or next (+1) message; from none, the last one."""
        entries = self.entries()
        if not entries:
            return
        if self.selected not in entries:
            self.select(entries[-1])
            return
        assert self.selected is not None
        index = max(0, min(len(entries) - 1, entries.index(self.selected) + delta))
        self.select(entries[index])

    def exchange_of(self, widget: Widget) -> int | None:
        """The exchange (0 = the first) ``widget`` belongs to; None for notes."""
        if not isinstance(widget, (UserMessage, AssistantMessage)):
            return None
        users = 0
        for entry in self.entries():
            if isinstance(entry, UserMessage):
                users += 1
            if entry is widget:
                return users - 1 if users else None
        return None

    def action_copy(self) -> None:
        if self.selected is not None:
            text = message_text(self.selected)
            if text:
                self.post_message(self.Copy(text, "the message"))

    def action_copy_code(self) -> None:
        if self.selected is None:
            return
        blocks = code_blocks(message_text(self.selected))
        if not blocks:
            self.notify("This message has no code block.", severity="warning", markup=False)
            return
        index = self._code_index % len(blocks)
        self._code_index = index + 1
        self.post_message(self.Copy(blocks[index], f"code block {index + 1} of {len(blocks)}"))

    def action_retry(self) -> None:
        exchange = None if self.selected is None else self.exchange_of(self.selected)
        if exchange is not None:
            self.post_message(self.Retry(exchange))

    def action_edit(self) -> None:
        if self.selected is None:
            return
        exchange = self.exchange_of(self.selected)
        if exchange is None:
            return
        users = [e for e in self.entries() if isinstance(e, UserMessage)]
        self.post_message(self.Edit(exchange, users[exchange].text))

    def action_leave(self, escape: bool = False) -> None:
        self.post_message(self.Leave(escape=escape))

    def on_blur(self) -> None:
        self.select(None)
