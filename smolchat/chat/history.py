"""The prompt history: what the user sent, newest last, kept across restarts.

One JSON string per line (``history.jsonl`` in the user's state folder, see
:func:`smolchat.chat.paths.default_history_file`), so multi-line prompts survive; the file is
created with mode 0600 (prompts can be private) and holds at most ``limit`` entries (older ones
are dropped when it is rewritten). A damaged line is skipped; a file that cannot be read or
written never stops a chat: :attr:`PromptHistory.problem` says why, and the history goes on in
memory. Used by the TUI's prompt (Up/Down, Ctrl+R) and by ``--plain`` (readline).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DEFAULT_LIMIT", "PromptHistory"]

DEFAULT_LIMIT = 1000  # entries kept
MAX_ENTRY_CHARS = 100_000  # a longer prompt (a big paste) is not kept


class PromptHistory:
    """Past prompts, oldest first; ``path=None`` keeps them in memory only."""

    def __init__(self, path: Path | None = None, *, limit: int = DEFAULT_LIMIT) -> None:
        self.path = path
        self.limit = limit
        self.problem: str | None = None
        self.entries: list[str] = []
        self._lines_in_file = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as error:
            self.problem = f"prompt history not read from {path}: {error.strerror}"
            return
        lines = raw.splitlines()
        self._lines_in_file = len(lines)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, str) and entry.strip():
                self.entries.append(entry)
        self.entries = self.entries[-self.limit :]

    def add(self, text: str, *, persist: bool = True) -> None:
        """Remember ``text`` last (not twice in a row); ``persist``: also in the file."""
        if not text.strip() or len(text) > MAX_ENTRY_CHARS:
            return
        if self.entries and self.entries[-1] == text:
            return
        self.entries.append(text)
        if len(self.entries) > self.limit:
            del self.entries[: len(self.entries) - self.limit]
        if persist and self.path is not None:
            self._append(text)

    def search(self, query: str) -> list[str]:
        """Entries containing ``query`` (any case), newest first, each once."""
        needle = query.casefold()
        seen: set[str] = set()
        found = []
        for entry in reversed(self.entries):
            if needle in entry.casefold() and entry not in seen:
                seen.add(entry)
                found.append(entry)
        return found

    def _append(self, text: str) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lines_in_file >= 2 * self.limit:  # trim: rewrite with the last `limit`
                self._rewrite()
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(json.dumps(text, ensure_ascii=False) + "\n")
            self._lines_in_file += 1
        except OSError as error:
            self.problem = f"prompt history not saved to {self.path}: {error.strerror}"

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for entry in self.entries:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self._lines_in_file = len(self.entries)
