"""What a chat's slash commands need beyond the session: presets, files, the library folder.

Kept beside the session (not in it) so that the session stays about the conversation: the CLI
sets a :class:`ChatContext` for the session it builds; commands read it with
:func:`context_of` (a session without one gets the defaults).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolchat.chat.attachments import DEFAULT_MAX_FILE_KB, Attachment, message_with

__all__ = ["ChatContext", "compose", "context_of", "set_context", "token_count"]


@dataclass
class ChatContext:
    """Per-chat state of the UI-independent commands (/read, /preset, /chats)."""

    presets: dict[str, Any] = field(default_factory=dict)  # name -> config.Preset
    max_file_kb: int = DEFAULT_MAX_FILE_KB
    folder: Path | None = None  # the transcripts folder (None: the default one)
    pending: list[Attachment] = field(default_factory=list)  # /read files for the next message


_CONTEXTS: weakref.WeakKeyDictionary[Any, ChatContext] = weakref.WeakKeyDictionary()


def set_context(session: Any, context: ChatContext) -> None:
    _CONTEXTS[session] = context


def context_of(session: Any) -> ChatContext:
    """The session's context (created with the defaults on first use)."""
    context = _CONTEXTS.get(session)
    if context is None:
        folder = getattr(getattr(session, "store", None), "folder", None)
        context = _CONTEXTS[session] = ChatContext(folder=folder)
    return context


def compose(session: Any, text: str) -> str:
    """The message to send: the files read with /read (then forgotten), then ``text``."""
    context = context_of(session)
    if not context.pending:
        return text
    message = message_with(context.pending, text)
    context.pending = []
    return message


def token_count(session: Any, text: str) -> int:
    """How many tokens ``text`` costs with the session's tokenizer (an estimate without one)."""
    backend = getattr(session, "backend", None)
    if backend is not None:
        try:
            return int(backend.count_text(text))
        except Exception:  # a tokenizer that cannot encode this: fall back to the estimate
            pass
    return max(1, len(text) // 4)
