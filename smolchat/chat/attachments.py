"""Files put into the conversation: ``/read PATH`` in a chat, ``-f PATH`` with ``-p``.

A text file goes into the next user message as a fenced code block headed by its name, so the
model (and the transcript, which keeps the message as sent) sees exactly which file it was.
Binary files (a NUL byte, or not UTF-8), files over the size limit (the ``max_file_kb``
setting), folders, missing and unreadable files are refused with one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smolchat.errors import SmolchatError

__all__ = [
    "DEFAULT_MAX_FILE_KB",
    "Attachment",
    "AttachmentError",
    "message_with",
    "read_attachment",
]

DEFAULT_MAX_FILE_KB = 100


class AttachmentError(SmolchatError):
    """A file that cannot be attached; the message is one line."""


@dataclass(frozen=True)
class Attachment:
    """A text file read for the next message."""

    path: Path  # as resolved (``~`` expanded, relative to the working folder)
    name: str  # the file name shown to the model
    text: str
    size: int  # bytes

    def block(self) -> str:
        """The file as Markdown: its name, then a fence longer than any backtick run in it."""
        runs = [len(r) for r in re.findall(r"`+", self.text)]
        fence = "`" * max(3, max(runs, default=0) + 1)
        lang = self.path.suffix.lstrip(".").lower()
        lang = lang if re.fullmatch(r"[a-z0-9+#-]{1,16}", lang) else ""
        body = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
        return f"File `{self.name}`:\n\n{fence}{lang}\n{body}{fence}"


def _shown(raw: str) -> str:
    printable = raw.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    return " ".join(printable.split())[:160] or repr(raw)


def read_attachment(raw: str | os.PathLike[str], max_kb: int = DEFAULT_MAX_FILE_KB) -> Attachment:
    """Read ``raw`` (``~`` and relative paths work) as a UTF-8 text file of at most ``max_kb`` KB.

    Raises AttachmentError: missing, a folder, unreadable, binary, or too large.
    """
    text_path = os.fspath(raw)
    if not text_path.strip():
        raise AttachmentError("give a file: /read PATH")
    if "\x00" in text_path:
        raise AttachmentError("a file path cannot contain a NUL character")
    try:
        path = Path(text_path).expanduser()
    except RuntimeError:
        raise AttachmentError(f"cannot expand {_shown(text_path)}: unknown user") from None
    limit = max_kb * 1024
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise AttachmentError(
                    f"{_shown(text_path)} is {size / 1024:.0f} KB, over the {max_kb} KB limit; "
                    "attach a part of it, or raise max_file_kb (config file or --max-file-kb)"
                )
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise AttachmentError(f"no such file: {_shown(text_path)}") from None
    except IsADirectoryError:
        raise AttachmentError(f"{_shown(text_path)} is a folder; give a file in it") from None
    except PermissionError:
        raise AttachmentError(f"cannot read {_shown(text_path)}: permission denied") from None
    except OSError as error:
        raise AttachmentError(
            f"cannot read {_shown(text_path)}: {error.strerror or error}"
        ) from None
    except UnicodeEncodeError:  # a lone surrogate: no file system can name it
        raise AttachmentError(
            f"no such file: {_shown(text_path)} (not a valid file name)"
        ) from None
    if len(data) > limit:  # grew while reading, or a special file
        raise AttachmentError(f"{_shown(text_path)} is over the {max_kb} KB limit")
    if b"\x00" in data:
        raise AttachmentError(f"{_shown(text_path)} is a binary file; only text files can be read")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise AttachmentError(
            f"{_shown(text_path)} is not UTF-8 text (byte {error.start}); "
            "only text files can be read"
        ) from None
    return Attachment(path=path, name=path.name, text=text, size=len(data))


def message_with(attachments: Sequence[Attachment], text: str) -> str:
    """The user message: each file's block, then the text typed (if any)."""
    parts = [a.block() for a in attachments]
    if text.strip():
        parts.append(text)
    return "\n\n".join(parts)
