"""Entries of the conversation view: the user's messages, replies and command notes."""

from __future__ import annotations

from markdown_it import MarkdownIt
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from smolchat.chat.text import printable
from smolchat.engine.types import GenerationStats

THINKING_TITLE = "Thinking…"
REASONING_TITLE = "Reasoning"


class UserMessage(Static):
    """What the user sent (shown verbatim, never as markup; control characters made visible)."""

    def __init__(self, text: str) -> None:
        super().__init__(printable(text), markup=False, classes="message")


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
        stats: GenerationStats | dict | None = None,
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
    finish_reason: str | None, stats: GenerationStats | dict | None, error: str | None
) -> str:
    """One line under a reply: how it ended and its speed."""
    parts: list[str] = []
    if finish_reason == "cancelled":
        parts.append("■ stopped")
    elif finish_reason == "length":
        parts.append("… cut at max_new_tokens")
    elif finish_reason == "error":
        parts.append(f"✗ {error or 'generation failed'}")
    if isinstance(stats, dict):
        stats = GenerationStats(
            **{k: v for k, v in stats.items() if k in GenerationStats.__dataclass_fields__}
        )
    if stats is not None:
        parts += stats.summary()
    return " · ".join(parts)
