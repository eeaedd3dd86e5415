"""The chat screen: conversation, prompt, status bar, and the generation worker."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # Python 3.10
    from typing_extensions import assert_never

from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, TextArea
from textual.worker import get_current_worker

from smolchat.chat.commands import (
    Effect,
    HistoryChanged,
    OpenChats,
    Quit,
    ShowHelp,
    ShowReasoning,
    StreamReply,
    SwitchTheme,
    available_commands,
    complete,
    is_command,
    is_read_only,
    run_command,
)
from smolchat.chat.context import compose, context_of
from smolchat.chat.events import (
    AnswerDelta,
    ChatEvent,
    PrefillProgress,
    ReasoningDelta,
    TurnFinished,
)
from smolchat.chat.history import PromptHistory
from smolchat.chat.library import ChatLibrary
from smolchat.chat.thinking import resolve_thinking
from smolchat.chat.turns import Reply, UserTurn
from smolchat.editor import edit_text, sigint_ignored
from smolchat.errors import ContextOverflowError, SmolchatError
from smolchat.tui.screens.chats import ChatsScreen
from smolchat.tui.screens.dialogs import (
    ConfirmScreen,
    HelpScreen,
    HistorySearchScreen,
    keys_help,
)
from smolchat.tui.themes import available_themes
from smolchat.tui.widgets.conversation import (
    AssistantMessage,
    ConversationView,
    NoteMessage,
    UserMessage,
    WelcomePanel,
)
from smolchat.tui.widgets.prompt import CommandHint, PromptInput
from smolchat.tui.widgets.status import StatusBar, StatusInfo

if TYPE_CHECKING:
    from smolchat.chat.session import ChatSession

StreamFactory = Callable[[], Iterator[ChatEvent]]
FRAME_S = 1 / 30  # the worker posts streamed text at most this often
MESSAGE_WIDTH = 110  # columns a message may take at most (None: the full width)
QUIT_WINDOW_S = 2.0  # Ctrl+C on an empty prompt quits only if pressed again within this


class ChatScreen(Screen[None]):
    """One conversation with a loaded model."""

    CSS_PATH = "../chat.tcss"
    # Ctrl+C, Ctrl+G and Ctrl+R are ordinary (not priority) bindings: a key reaches them after
    # the focused widget (the prompt, or the conversation) has handled the keys typed before
    # it, so a burst such as "draft" + Ctrl+G edits the whole draft. The prompt's own Ctrl+C
    # (copy) gives way when nothing is selected.
    BINDINGS = [
        Binding(
            "ctrl+c",
            "interrupt",
            "Stop / quit",
            show=False,
            tooltip="copy the selection; else stop the reply; else clear the draft (Ctrl+Z "
            "brings it back); on an empty prompt, twice within 2 s: quit",
        ),
        Binding("escape", "stop", "Stop", tooltip="stop the reply"),
        Binding("ctrl+y", "copy_reply", "Copy reply", priority=True, tooltip="copy the last reply"),
        Binding("ctrl+o", "copy_code", "Copy code", tooltip="copy the last code block"),
        Binding("f2", "toggle_reasoning", "Reasoning", tooltip="show / hide reasoning"),
        Binding(
            "ctrl+t",
            "toggle_think",
            "Think",
            tooltip="think / no_think; while it reasons: stop thinking and answer now",
        ),
        Binding(
            "ctrl+l", "chats", "Chats", show=False, tooltip="saved chats: search, open, delete"
        ),
        Binding("f1", "help", "Help", tooltip="this help"),
        Binding(
            "pageup",
            "scroll('page_up')",
            "Page up",
            show=False,
            priority=True,
            key_display="PageUp / PageDown",
            tooltip="scroll the conversation a page",
        ),
        Binding("pagedown", "scroll('page_down')", "", show=False, priority=True),
        Binding(
            "ctrl+up,shift+pageup",
            "scroll('up')",
            "Scroll",
            show=False,
            priority=True,
            key_display="Ctrl+Up / Ctrl+Down",
            tooltip="scroll the conversation a few lines",
        ),
        Binding("ctrl+down,shift+pagedown", "scroll('down')", "", show=False, priority=True),
        Binding(
            "ctrl+home",
            "scroll('home')",
            "Top",
            show=False,
            priority=True,
            key_display="Ctrl+Home / Ctrl+End",
            tooltip="to the first / last message",
        ),
        Binding("ctrl+end", "scroll('end')", "", show=False, priority=True),
        Binding(
            "alt+up",
            "select_message(-1)",
            "Messages",
            show=False,
            priority=True,
            key_display="Alt+Up / Alt+Down",
            tooltip="highlight a message (then C: copy, O: its code blocks, R: retry, E: edit)",
        ),
        Binding("alt+down", "select_message(1)", "", show=False, priority=True),
        Binding(
            "ctrl+g",
            "open_editor",
            "Editor",
            show=False,
            tooltip="edit the draft in $VISUAL / $EDITOR",
        ),
        Binding(
            "ctrl+r",
            "search_history",
            "Search",
            show=False,
            tooltip="search the past prompts (also those of earlier runs)",
        ),
    ]
    SCROLL_LINES = 3

    class Chunk(Message):
        """Streamed text gathered by the worker since its last post."""

        def __init__(self, reasoning: str, answer: str, tokens: int = 0) -> None:
            super().__init__()
            self.reasoning = reasoning
            self.answer = answer
            self.tokens = tokens  # deltas streamed so far in this turn (about one per token)

    class Sent(Message):
        """The turn's prompt is planned: ``tokens`` it takes in the context (before the reply)."""

        def __init__(self, tokens: int) -> None:
            super().__init__()
            self.tokens = tokens

    class Prefill(Message):
        """The backend is reading a long prompt: ``progress.done`` of ``progress.total``."""

        def __init__(self, progress: PrefillProgress) -> None:
            super().__init__()
            self.progress = progress

    class TurnDone(Message):
        """The session finished the turn (stopped and failed turns included)."""

        def __init__(self, event: TurnFinished) -> None:
            super().__init__()
            self.event = event

    class TurnFailed(Message):
        """The turn raised before or while streaming; ``message`` is one line."""

        def __init__(self, message: str, *, overflow: bool = False, drop: int = 0) -> None:
            super().__init__()
            self.message = message
            self.overflow = overflow
            self.drop = drop  # after an overflow: the oldest exchanges to drop (0: none helps)

    def __init__(
        self,
        session: ChatSession,
        *,
        show_reasoning: bool = False,
        history: PromptHistory | None = None,
        message_width: int | None = MESSAGE_WIDTH,
    ) -> None:
        super().__init__()
        self.session = session
        self.history = history if history is not None else PromptHistory()
        self.show_reasoning = show_reasoning
        self.turn: Turn | None = None  # the turn being generated
        self.draft = ""  # text for the prompt at start (typed while the model loaded)
        self.send_draft = False  # and send it at once
        # back-pressure: the worker posts the next chunk only after the last one was drawn,
        # so a busy UI gets fewer, larger chunks instead of a queue (and leaves CPU to the model)
        self._drawn = threading.Event()
        self._drawn.set()
        self._quit_armed_at = -QUIT_WINDOW_S  # monotonic time of the last idle Ctrl+C
        self.editing: int | None = None  # the exchange the prompt's text will replace
        self._context_at_start = 0  # context the streaming turn's prompt takes (Sent)
        self._streamed = 0  # reply tokens streamed so far in this turn
        self._prefill: PrefillProgress | None = None  # while a long prompt is read
        self.message_width = message_width

    # ---- layout -----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield ConversationView(id="conversation")
        commands = available_commands(thinking_mode=self.session.backend.has_thinking_mode)
        yield CommandHint({f"/{c.name}": _usage_line(c) for c in commands}, id="hint")
        yield PromptInput(
            id="prompt",
            completer=self.complete_line,
            placeholder="Message (Enter sends, Shift+Enter or Ctrl+J: new line, /help)",
            history=self.history,
        )
        yield StatusBar(id="status")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        if self.message_width:  # wide terminals: lines short enough to read
            self.app.stylesheet.add_source(
                f"#conversation > .message {{ max-width: {self.message_width}; }}",
                read_from=("smolchat-message-width", ""),
            )
            self.app.refresh_css(animate=False)
        self.conversation.anchor()
        await self.rebuild()
        self.prompt.focus()
        if self.draft:
            self.prompt.load_text(self.draft)
            self.prompt.move_cursor(self.prompt.document.end)
            if self.send_draft:
                self.prompt.submit()

    @property
    def generating(self) -> bool:
        return self.turn is not None

    def on_unmount(self) -> None:
        if self.generating:
            self.session.cancel()

    @property
    def conversation(self) -> ConversationView:
        return self.query_one("#conversation", ConversationView)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    # ---- the view of the history ------------------------------------------------------
    async def rebuild(self) -> None:
        """Show the session's history afresh (at start, and after /load, /undo, /clear, /drop)."""
        await self.conversation.remove_children()
        widgets: list[UserMessage | AssistantMessage] = []
        for m in self.session.messages:
            if isinstance(m, UserTurn):
                widgets.append(UserMessage(m.content))
            else:
                widgets.append(AssistantMessage(show_reasoning=self.show_reasoning))
        await self.conversation.mount_all(widgets)
        replies = iter(w for w in widgets if isinstance(w, AssistantMessage))
        for m in self.session.messages:
            if isinstance(m, Reply):
                await next(replies).finish(
                    m.reasoning or "",
                    m.content,
                    finish_reason=m.finish_reason,
                    stats=m.stats,
                    error=m.error,
                )
        if not widgets:
            await self.conversation.mount(WelcomePanel(self.welcome_text()))
        self.conversation.scroll_end(animate=False)
        self.refresh_status()

    def welcome_text(self) -> str:
        """The panel of an empty chat: the model, where it runs, the context, three keys."""
        backend = self.session.backend
        return (
            f"{backend.model_name}\n"
            f"{backend.description} · context {self.session.context_limit():,} tokens\n\n"
            "Enter sends · F1 keys and commands · Ctrl+P palette"
        )

    def refresh_status(self, streamed: int | None = None) -> None:
        """Redraw the status bar; ``streamed``: reply tokens so far (while a reply is on its
        way the context meter counts the prompt as sent plus these)."""
        if streamed is not None:
            self._streamed = streamed
        backend = self.session.backend
        settings = self.session.settings
        self.query_one(StatusBar).show(
            StatusInfo(
                model=backend.model_name,
                where=backend.description,
                thinking=settings.thinking if backend.has_thinking_mode else None,
                temperature=settings.sampling.temperature,
                top_p=settings.sampling.top_p,
                context_used=self._context_at_start + self._streamed
                if self.generating
                else self.session.context_used(),
                context_limit=self.session.context_limit(),
                last_stats=self.session.last_stats,
                busy=self.generating,
                prefill=self._prefill if self.generating else None,
            )
        )

    def note(self, text: str) -> None:
        """Show a command's output in the conversation."""
        self.conversation.mount(NoteMessage(text))

    # ---- input ------------------------------------------------------------------------
    @on(TextArea.Changed, "#prompt")
    def _on_prompt_changed(self, event: TextArea.Changed) -> None:
        if self.editing is None:  # while editing, the hint says so
            self.query_one(CommandHint).show_for(event.text_area.text)

    @on(PromptInput.Submitted)
    async def _on_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text
        if self.generating and is_read_only(text):  # /stats, /help only read: run them now
            await self.run_slash(text)
            return
        if self.generating:
            self.notify(
                "Still answering: press Esc to stop it first.", severity="warning", markup=False
            )
            event.prompt.load_text(text)
            return
        if is_command(text):
            await self.run_slash(text)
        elif self.editing is not None:
            exchange = self.editing
            self.end_edit()
            await self.start_turn(
                lambda: self.session.send(text, replace=exchange),
                user_text=text,
                cut=self._exchange_widget(exchange),
            )
        else:
            message = compose(self.session, text)  # with the files of /read, if any
            await self.start_turn(lambda: self.session.send(message), user_text=message)

    async def run_slash(self, line: str) -> None:
        """Run a slash command through the shared implementation and carry out its effect."""
        try:
            result = run_command(self.session, line)
        except SmolchatError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        except Exception as error:  # a bug must not take the app (and the chat) down
            self.log.error(error)
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            self.notify(f"internal error: {detail}", severity="error", markup=False)
            return
        if result.effect is not None:
            await self.apply_effect(result.effect, result.message)
        elif result.message:
            self.note(result.message)
        self.refresh_status()

    async def apply_effect(self, effect: Effect, message: str) -> None:
        """Carry out what a command asked for; ``message`` is its output (shown here)."""
        match effect:
            case Quit():
                self.app.exit()
            case StreamReply(stream=stream):
                await self.start_turn(lambda: stream, user_text=None)
            case SwitchTheme(name=name):
                self.app.apply_theme(name)  # type: ignore[attr-defined]
            case ShowReasoning(show=show):
                self.set_show_reasoning(show)
                self.notify(f"Reasoning {'shown' if show else 'hidden'}.", markup=False)
            case HistoryChanged(restorable=removed):
                await self.rebuild()
                if self.session.autosave_error:
                    self.notify(
                        self.session.autosave_error,
                        title="Autosave failed",
                        severity="error",
                        markup=False,
                    )
                if removed:
                    # Not put back into the prompt: what the user types next would be appended
                    # to it and sent as one message. Up brings it back.
                    self.prompt.remember(removed)
                    self.notify("Removed. Press ↑ to bring the message back.", markup=False)
                if message:
                    self.note(message)
            case ShowHelp(topic=topic):
                self.app.push_screen(
                    HelpScreen(
                        message if topic else None,
                        keys=self.keys_help(),
                        thinking_mode=self.session.backend.has_thinking_mode,
                    )
                )
            case OpenChats(query=query):
                self.open_chats(query)
            case _:
                assert_never(effect)

    def keys_help(self) -> str:
        """The key table of the help, generated from the prompt's, this screen's and the app's
        bindings."""
        return keys_help([*PromptInput.BINDINGS, *self.BINDINGS, *self.app.BINDINGS])

    # ---- a turn -----------------------------------------------------------------------
    async def start_turn(
        self,
        factory: StreamFactory,
        *,
        user_text: str | None,
        drop: int = 0,
        cut: Widget | None = None,
    ) -> None:
        """Show the user's message and an empty reply, then stream into it from a thread.

        ``cut``: the entry the turn replaces, shown no more with everything after it (an edit,
        a retry from an earlier message); else /retry replaces the last reply.
        """
        for panel in self.conversation.query(WelcomePanel):
            await panel.remove()
        entries = self.conversation.entries()
        if cut is not None and cut in entries:
            for widget in entries[entries.index(cut) :]:
                await widget.remove()
        elif user_text is None:  # /retry: the reply it replaces goes
            replies = self.conversation.query(AssistantMessage)
            if replies:
                await replies.last().remove()
        reply = AssistantMessage(show_reasoning=self.show_reasoning)
        turn = Turn(factory, user_text, reply, drop, rewinds=cut is not None)
        await self.conversation.mount_all(turn.widgets)
        self.conversation.anchor()
        self.turn = turn
        self._prefill = None
        self._context_at_start = self.session.context_used()  # until Sent says the prompt's
        self.refresh_status(streamed=0)
        self._drawn.set()
        self.generate(factory, drop)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def generate(self, factory: StreamFactory, drop: int) -> None:
        """Consume the session's stream; post text at most every FRAME_S, then the end.

        ``drop``: the oldest exchanges to drop first (the answer to a context overflow).
        """
        worker = get_current_worker()
        reasoning: list[str] = []
        answer: list[str] = []
        last_post = 0.0
        streamed = 0
        try:
            if drop:
                self.session.drop_oldest(drop)
            # send() checks the context when called, a generator when first advanced
            stream = factory()
            self.post_message(self.Sent(self.session.context_sent()))
            for event in stream:
                if worker.is_cancelled:
                    self.session.cancel()
                if isinstance(event, ReasoningDelta):
                    reasoning.append(event.text)
                    streamed += 1
                elif isinstance(event, AnswerDelta):
                    answer.append(event.text)
                    streamed += 1
                elif isinstance(event, TurnFinished):
                    self.post_message(self.Chunk("".join(reasoning), "".join(answer)))
                    self.post_message(self.TurnDone(event))
                    return
                elif isinstance(event, PrefillProgress):  # one per prefill chunk: few
                    self.post_message(self.Prefill(event))
                    continue
                now = time.monotonic()
                if now - last_post >= FRAME_S and self._drawn.is_set():
                    self._drawn.clear()  # set again once the UI has drawn this chunk
                    self.post_message(self.Chunk("".join(reasoning), "".join(answer), streamed))
                    reasoning.clear()
                    answer.clear()
                    last_post = now
            self.post_message(self.TurnFailed("the reply ended without finishing"))
        except ContextOverflowError as error:
            self.post_message(self.TurnFailed(str(error), overflow=True, drop=error.drop or 0))
        except SmolchatError as error:
            self.post_message(self.TurnFailed(str(error)))
        except Exception as error:  # never crash the UI; the log keeps the traceback
            self.log.error(error)
            self.post_message(self.TurnFailed(f"internal error: {type(error).__name__}: {error}"))

    @on(Sent)
    def _on_sent(self, message: Sent) -> None:
        if self.turn is not None:
            self._context_at_start = message.tokens
            self.refresh_status()

    @on(Prefill)
    def _on_prefill(self, message: Prefill) -> None:
        if self.turn is not None:
            self._prefill = message.progress
            self.refresh_status()

    @on(Chunk)
    async def _on_chunk(self, message: Chunk) -> None:
        if self.turn is not None:
            self.turn.reply.add_reasoning(message.reasoning)
            await self.turn.reply.add_answer(message.answer)
            if message.tokens:
                self._prefill = None  # the reply has begun: the usual figures again
                self.refresh_status(streamed=message.tokens)
        self.call_after_refresh(self._drawn.set)

    @on(TurnDone)
    async def _on_turn_done(self, message: TurnDone) -> None:
        event = message.event
        turn, self.turn = self.turn, None
        if turn is not None:
            await turn.reply.finish(
                event.reasoning,
                event.answer,
                finish_reason=event.finish_reason,
                stats=event.stats,
                error=event.error,
            )
        if event.error:
            self.notify(event.error, title="Generation failed", severity="error", markup=False)
        if self.session.autosave_error:
            self.notify(
                self.session.autosave_error, title="Autosave failed", severity="error", markup=False
            )
        retry_failed = turn is not None and turn.user_text is None and event.error is not None
        if turn is not None and (turn.drop or retry_failed):
            # the oldest turns went, or a failed /retry kept the reply it was to replace:
            # show the history as it is
            await self.rebuild()
        self.refresh_status()

    @on(TurnFailed)
    async def _on_turn_failed(self, message: TurnFailed) -> None:
        """The session recorded nothing: take the turn back and give the text back to edit."""
        turn, self.turn = self.turn, None
        if turn is None:
            return
        for widget in turn.widgets:
            await widget.remove()
        if turn.user_text is None or turn.rewinds:  # show what it was to replace again
            await self.rebuild()
        if turn.user_text is not None and not self.prompt.text.strip():
            self.prompt.load_text(turn.user_text)
            self.prompt.move_cursor(self.prompt.document.end)
        self.refresh_status()
        drop = message.drop if message.overflow else 0
        if drop and turn.user_text is not None:  # offer to make room
            question = f"{message.message}\n\nDrop the {drop} oldest exchange(s) and send?"
            self.app.push_screen(
                ConfirmScreen(question, yes=f"Drop {drop} and send"),
                lambda yes: self._after_overflow(bool(yes), turn, drop),
            )
            return
        self.notify(message.message, title="Generation failed", severity="error", markup=False)

    async def _after_overflow(self, yes: bool, turn: Turn, drop: int) -> None:
        if yes:
            self.prompt.clear()
            await self.start_turn(turn.factory, user_text=turn.user_text, drop=drop)

    # ---- moving around the conversation -----------------------------------------------
    def action_scroll(self, where: str) -> None:
        """Scroll the conversation while the prompt keeps the focus."""
        view = self.conversation
        match where:
            case "page_up":
                view.scroll_page_up(animate=False)
            case "page_down":
                view.scroll_page_down(animate=False)
            case "up":
                view.scroll_relative(y=-self.SCROLL_LINES, animate=False)
            case "down":
                view.scroll_relative(y=self.SCROLL_LINES, animate=False)
            case "home":
                view.scroll_home(animate=False)
            case "end":
                view.scroll_end(animate=False)

    def action_select_message(self, delta: int) -> None:
        """Alt+Up/Down: highlight a message (the conversation takes the focus)."""
        view = self.conversation
        if not view.entries():
            self.notify("No messages yet.", markup=False)
            return
        if view.has_focus:
            view.action_move(delta)
        else:
            view.focus()
            view.action_move(-1)  # from the prompt: the newest message first

    def _exchange_widget(self, exchange: int) -> Widget | None:
        users = self.conversation.query(UserMessage)
        return users[exchange] if 0 <= exchange < len(users) else None

    @on(ConversationView.Leave)
    def _on_conversation_leave(self, message: ConversationView.Leave) -> None:
        self.prompt.focus()
        if message.escape and self.generating:
            self.action_stop()

    @on(ConversationView.Copy)
    def _on_copy(self, message: ConversationView.Copy) -> None:
        self.app.copy_text(message.text, message.what)  # type: ignore[attr-defined]

    @on(ConversationView.Retry)
    async def _on_retry(self, message: ConversationView.Retry) -> None:
        if self.generating:
            self.notify("Still answering: press Esc to stop it first.", severity="warning")
            return
        exchange = message.exchange
        users = self.conversation.query(UserMessage)
        if exchange >= len(users):
            return
        after = users[exchange]
        entries = self.conversation.entries()
        following = entries[entries.index(after) + 1 :]
        cut = following[0] if following else None
        self.prompt.focus()
        try:
            stream = self.session.retry(exchange)
        except SmolchatError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        await self.start_turn(lambda: stream, user_text=None, cut=cut)

    @on(ConversationView.Edit)
    def _on_edit(self, message: ConversationView.Edit) -> None:
        if self.generating:
            self.notify("Still answering: press Esc to stop it first.", severity="warning")
            return
        self.editing = message.exchange
        self.prompt.load_text(message.text)
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()
        hint = self.query_one(CommandHint)
        hint.update(
            f"✎ Editing message {message.exchange + 1}: Enter sends it in place of the original "
            "and every later message; Esc cancels."
        )
        hint.display = True

    def end_edit(self) -> None:
        """Leave edit mode (the prompt's text stays)."""
        self.editing = None
        self.query_one(CommandHint).show_for(self.prompt.text)

    # ---- the command palette's entry points -------------------------------------------
    def prefill(self, text: str) -> None:
        """Put ``text`` into the prompt (a command that needs its argument typed)."""
        self.prompt.load_text(text)
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()

    def run_slash_soon(self, line: str) -> None:
        """Run a slash command once the palette has closed."""
        self.call_later(self.run_slash, line)

    # ---- completion -------------------------------------------------------------------
    def complete_line(self, text: str) -> list[str]:
        """Tab: the commands' own completions plus the theme names, which the TUI knows."""
        return complete(
            text,
            choices={"theme": list(available_themes())},
            thinking_mode=self.session.backend.has_thinking_mode,
        )

    @on(PromptInput.Completions)
    def _on_completions(self, message: PromptInput.Completions) -> None:
        """Several matches: list them above the prompt (the last word of each)."""
        words = [m.rsplit(" ", 1)[-1] if " " in m else m for m in message.matches]
        hint = self.query_one(CommandHint)
        shown = "  ".join(words[:40]) + ("  …" if len(words) > 40 else "")
        hint.update(f"{len(words)} matches: {shown}")
        hint.display = True

    # ---- the prompt history ------------------------------------------------------------
    def action_search_history(self) -> None:
        """Ctrl+R: pick a past prompt (searched as you type) into the prompt."""
        if not self.history.entries:
            self.notify("No past prompts yet.", markup=False)
            return

        def picked(text: str | None) -> None:
            if text is not None:
                self.prompt.replace(text, (0, 0), self.prompt.document.end)
                self.prompt.move_cursor(self.prompt.document.end)
            self.prompt.focus()

        self.app.push_screen(HistorySearchScreen(self.history), picked)

    # ---- the external editor ----------------------------------------------------------
    def action_open_editor(self) -> None:
        """Ctrl+G: the draft opens in the user's editor; the app suspends until it exits."""
        draft = self.prompt.text
        edited: str | SmolchatError
        try:
            # Ctrl+C goes to the editor only; Textual resumes only when the block ends normally
            with sigint_ignored(), self.app.suspend():
                edited = edit_draft(draft)
        except SuspendNotSupported:  # no real terminal (tests): run it as it is
            edited = edit_draft(draft)
        if isinstance(edited, SmolchatError):
            self.notify(str(edited), severity="error", markup=False)
            return
        text = edited
        self.prompt.replace(text, (0, 0), self.prompt.document.end)  # Ctrl+Z undoes it
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()
        self.refresh()

    # ---- actions ----------------------------------------------------------------------
    def action_stop(self) -> None:
        """Esc: stop the reply being generated (the partial reply is kept, marked stopped);
        else cancel an edit."""
        if self.generating:
            self.session.cancel()
            for worker in self.workers:
                if worker.group == "generate":
                    worker.cancel()
        elif self.editing is not None:
            self.end_edit()
            self.prompt.clear()
            self.notify("Edit cancelled.", markup=False)

    def action_interrupt(self) -> None:
        self.interrupt()

    def interrupt(self) -> None:
        """Ctrl+C: copy the selection if there is one; else stop the streaming reply; else
        clear a non-empty draft (Ctrl+Z or Up brings it back); on an empty prompt, quit only
        when pressed twice within QUIT_WINDOW_S (the first press says so)."""
        selected = self.prompt.selected_text or (self.get_selected_text() or "")
        if selected:
            self.app.copy_text(selected, "the selection")  # type: ignore[attr-defined]
            self.clear_selection()
            return
        if self.generating:
            self.action_stop()
            return
        draft = self.prompt.text
        if draft.strip():
            self.prompt.remember(draft.strip())
            self.prompt.clear()  # an edit: Ctrl+Z undoes it
            self.notify("Draft cleared: Ctrl+Z or ↑ brings it back.", markup=False)
            return
        now = time.monotonic()
        if now - self._quit_armed_at <= QUIT_WINDOW_S:
            self.app.exit()
            return
        self._quit_armed_at = now
        self.notify(
            "Press Ctrl+C again to quit (Ctrl+Q quits at once).",
            timeout=QUIT_WINDOW_S,
            markup=False,
        )

    def _last_reply(self) -> AssistantMessage | None:
        replies = [r for r in self.conversation.query(AssistantMessage) if r.answer_text]
        return replies[-1] if replies else None

    def action_copy_reply(self) -> None:
        reply = self._last_reply()
        if reply is None:
            self.notify("No reply to copy yet.", severity="warning", markup=False)
            return
        self.app.copy_text(reply.answer_text, "the last reply")  # type: ignore[attr-defined]

    def action_copy_code(self) -> None:
        for reply in reversed(list(self.conversation.query(AssistantMessage))):
            blocks = reply.code_blocks()
            if blocks:
                lines = len(blocks[-1].splitlines())
                what = f"the last code block ({lines} line{'s' if lines != 1 else ''})"
                self.app.copy_text(blocks[-1], what)  # type: ignore[attr-defined]
                return
        self.notify("No code block to copy.", severity="warning", markup=False)

    def action_toggle_reasoning(self) -> None:
        self.set_show_reasoning(not self.show_reasoning)
        self.notify(
            f"Reasoning {'shown' if self.show_reasoning else 'hidden'} by default.", markup=False
        )

    def set_show_reasoning(self, show: bool) -> None:
        """Set whether finished replies show their reasoning, for old and new replies."""
        self.show_reasoning = show
        for reply in self.conversation.query(AssistantMessage):
            reply.set_show_reasoning(show)

    async def action_toggle_think(self) -> None:
        """Ctrl+T: think / no_think for the next turns; while a reply reasons, stop thinking
        now (the reasoning is closed and the answer follows)."""
        if self.generating:
            reply = self.turn.reply if self.turn is not None else None
            if reply is not None and reply.reasoning_text and not reply.answer_text:
                if self.session.end_thinking():
                    self.notify("Stopped thinking: the answer follows.", markup=False)
                else:
                    self.notify("This backend cannot stop the reasoning early.", severity="warning")
            return
        await self.run_slash("/no_think" if self.session.settings.thinking else "/think")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No think toggle for a model whose template has no thinking mode (SmolLM2)."""
        return action != "toggle_think" or self.session.backend.has_thinking_mode

    def action_help(self) -> None:
        thinking = self.session.backend.has_thinking_mode
        self.app.push_screen(HelpScreen(keys=self.keys_help(), thinking_mode=thinking))

    def action_chats(self) -> None:
        self.open_chats()

    def open_chats(self, query: str = "") -> None:
        """The chat browser; the chat chosen there replaces this conversation."""
        library = ChatLibrary(context_of(self.session).folder)

        async def chosen(path: Path | None) -> None:
            if path is not None:
                await self.open_chat(path)

        self.app.push_screen(ChatsScreen(library, query), chosen)

    async def open_chat(self, path: Path) -> None:
        """Load a saved chat: history, system prompt and settings (the KV cache is rebuilt
        on the next turn, from the common prefix)."""
        if self.generating:
            self.notify("Still answering: press Esc to stop it first.", severity="warning")
            return
        try:
            self.session.load(path)
        except SmolchatError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        await self.rebuild()
        self.refresh_status()
        n = self.session.exchanges()
        self.notify(f"Opened {path.name} ({n} exchange{'s' if n != 1 else ''})", markup=False)


def edit_draft(draft: str) -> str | SmolchatError:
    """The editor's text for ``draft``, or the error (returned, not raised: it must not leave
    the app suspended)."""
    try:
        return edit_text(draft)
    except SmolchatError as error:
        return error


@dataclass
class Turn:
    """A turn being generated: how it was started and the widgets it added."""

    factory: StreamFactory
    user_text: str | None  # None for /retry
    reply: AssistantMessage
    drop: int = 0  # oldest exchanges dropped before it (after a context overflow)
    rewinds: bool = False  # replaces an earlier part of the conversation (edit, retry from)
    widgets: list[Widget] = field(init=False)

    def __post_init__(self) -> None:
        # shown as the history records it: a trailing /think or /no_think flag is taken off
        # (it set this turn's mode), so the view matches the transcript and a /load of it
        shown = None if self.user_text is None else resolve_thinking(self.user_text, True)[0]
        user = [] if shown is None else [UserMessage(shown)]
        self.widgets = [*user, self.reply]


def _usage_line(command: Any) -> str:
    return f"{command.usage}  —  {command.help}"
