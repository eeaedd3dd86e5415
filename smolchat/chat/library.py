"""The chat library: the saved conversations of a transcripts folder, listed, searched, resolved.

Torch-free and UI-agnostic: ``smolchat chats``, ``--resume ID`` and the TUI's chat browser
share it. Listing reads only the head of each file (the first line, the heading, the header
list and the ``meta`` marker, a few hundred bytes); search reads whole files but keeps their
text in memory keyed by (size, mtime), so typing a search in the browser re-reads nothing.

A chat's **id** is the first 7 hex digits of a hash of its file name: stable as long as the
file keeps its name (renaming a chat changes its title, not its file). Any unambiguous prefix
of an id resolves, as does a file name, a stem or a path.

Deleting moves the file into the folder's ``.trash`` subfolder (the store's listing ignores it);
``restore`` moves it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smolchat.chat.transcript import (
    Transcript,
    TranscriptStore,
    read_transcript,
    shown,
    user_path,
    write_transcript,
)
from smolchat.errors import SmolchatError, TranscriptError

__all__ = [
    "ID_LENGTH",
    "TRASH",
    "ChatEntry",
    "ChatLibrary",
    "LibraryError",
    "SearchHit",
    "chat_id",
]

ID_LENGTH = 7
TRASH = ".trash"
HEAD_BYTES = 4096  # enough for the header of any transcript smolchat writes
SNIPPET = 90  # characters of a search snippet

_FIRST = re.compile(r"<!-- smolchat-transcript v\d+ ([0-9a-f]{16}) -->")
_HEADING = re.compile(r"^# smolchat · (.*)$", re.MULTILINE)
_TURNS = re.compile(r"^- \*\*Turns:\*\* (\d+)$", re.MULTILINE)


class LibraryError(SmolchatError):
    """A chat id, prefix or path that names no chat (or more than one)."""


def chat_id(path: Path) -> str:
    """The short id of the chat saved at ``path`` (from its file name)."""
    return hashlib.blake2b(path.name.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()[
        :ID_LENGTH
    ]


@dataclass(frozen=True)
class ChatEntry:
    """One saved conversation, as the list shows it."""

    path: Path
    id: str
    title: str  # the first words of the first message, or the name given by rename
    updated: datetime  # when the file was last written (local time)
    exchanges: int  # user turns
    model: str
    created: str = ""  # ISO 8601, when the conversation started

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "updated": self.updated.isoformat(timespec="seconds"),
            "created": self.created,
            "exchanges": self.exchanges,
            "model": self.model,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class SearchHit:
    """A chat with a message that matched, and where."""

    entry: ChatEntry
    where: str  # "user", "reply" or "reasoning"
    snippet: str  # one line around the first match
    matches: int = 1  # messages (texts) that matched in this chat

    def to_json(self) -> dict[str, Any]:
        return {**self.entry.to_json(), "where": self.where, "snippet": self.snippet}


def _unescape_title(raw: str) -> str:
    """The heading's title as typed: a code span unwrapped, backslash escapes undone (old files)."""
    m = re.fullmatch(r"(`+)(.*?)\1", raw)
    if m:
        inner = m.group(2)
        if inner.startswith(" ") and inner.endswith(" ") and inner.strip():
            inner = inner[1:-1]
        return inner
    return re.sub(r"\\([\\`*\[\]<>|#&!_~])", r"\1", raw)


def _snippet(text: str, start: int, length: int) -> str:
    """One line of about SNIPPET characters around ``text[start:start+length]``."""
    before = max(0, start - SNIPPET // 3)
    after = min(len(text), start + length + SNIPPET - (start - before))
    piece = " ".join(text[before:after].split())
    return ("…" if before > 0 else "") + piece + ("…" if after < len(text) else "")


@dataclass
class _Cached:
    stamp: tuple[int, int]
    entry: ChatEntry | None = None
    text: str | None = None  # the whole file, for search
    data: Transcript | None = None


@dataclass
class ChatLibrary:
    """The chats of one transcripts folder (``None``: the default folder)."""

    folder: Path | None = None
    _cache: dict[Path, _Cached] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.folder = TranscriptStore(self.folder).folder

    @property
    def root(self) -> Path:
        assert self.folder is not None
        return self.folder

    @property
    def trash_folder(self) -> Path:
        return self.root / TRASH

    # --- listing -----------------------------------------------------------------------
    def entries(self, limit: int | None = None, *, trash: bool = False) -> list[ChatEntry]:
        """The chats, newest first (by when they were last written); unreadable files skipped."""
        folder = self.trash_folder if trash else self.root
        out: list[ChatEntry] = []
        for path, stamp in self._files(folder):
            entry = self._entry(path, stamp)
            if entry is not None:
                out.append(entry)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def _files(self, folder: Path) -> list[tuple[Path, tuple[int, int]]]:
        stamped: list[tuple[int, str, Path, tuple[int, int]]] = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if not e.name.endswith(".md") or e.name.startswith("."):
                        continue
                    with contextlib.suppress(OSError):
                        if e.is_file():
                            st = e.stat()
                            stamp = (st.st_size, st.st_mtime_ns)
                            stamped.append((st.st_mtime_ns, e.name, Path(e.path), stamp))
        except OSError:
            return []
        stamped.sort(reverse=True)
        return [(p, stamp) for _, _, p, stamp in stamped]

    def _entry(self, path: Path, stamp: tuple[int, int]) -> ChatEntry | None:
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp and cached.entry is not None:
            return cached.entry
        try:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES).decode("utf-8", "replace").removeprefix("\ufeff")
                first = _FIRST.match(head)
                if first is None:
                    return None
                meta_at = head.find(f"\n<!-- smolchat:{first.group(1)} meta ")
                if meta_at < 0 or "\n" not in head[meta_at + 1 :]:  # a long header: read on
                    head += f.read().decode("utf-8", "replace")
        except OSError:
            return None
        entry = self._parse_head(path, head, first.group(1), stamp)
        if cached is not None and cached.stamp == stamp:
            cached.entry = entry
        else:
            self._cache[path] = _Cached(stamp, entry=entry)
        return entry

    def _parse_head(
        self, path: Path, head: str, nonce: str, stamp: tuple[int, int]
    ) -> ChatEntry | None:
        meta: dict[str, Any] = {}
        tag = f"\n<!-- smolchat:{nonce} meta "
        at = head.find(tag)
        if at >= 0:
            line = head[at + len(tag) : head.find("\n", at + 1)].removesuffix("\r")
            with contextlib.suppress(ValueError):
                loaded = json.loads(line.removesuffix(" -->"))
                if isinstance(loaded, dict):
                    meta = loaded
        extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
        assert isinstance(extra, dict)
        heading = _HEADING.search(head)
        title = extra.get("title")
        if not isinstance(title, str) or not title.strip():
            title = _unescape_title(heading.group(1).strip()) if heading else ""
        turns = _TURNS.search(head)
        return ChatEntry(
            path=path,
            id=chat_id(path),
            title=title or "(untitled)",
            updated=datetime.fromtimestamp(stamp[1] / 1e9).astimezone(),
            exchanges=int(turns.group(1)) if turns else 0,
            model=str(meta.get("model") or ""),
            created=str(meta.get("created") or ""),
        )

    # --- search ------------------------------------------------------------------------
    def search(self, text: str, limit: int | None = None) -> list[SearchHit]:
        """Chats with a message (user text, reply or reasoning) containing ``text``.

        Case-insensitive; newest first; one hit per chat (its first matching message).
        """
        needle = text.casefold().strip()
        if not needle:
            return []
        hits: list[SearchHit] = []
        for path, stamp in self._files(self.root):
            hit = self._search_one(path, stamp, needle)
            if hit is not None:
                hits.append(hit)
                if limit is not None and len(hits) >= limit:
                    break
        return hits

    def _search_one(self, path: Path, stamp: tuple[int, int], needle: str) -> SearchHit | None:
        cached = self._cache.get(path)
        if cached is None or cached.stamp != stamp:
            cached = self._cache[path] = _Cached(stamp)
        if cached.text is None:
            try:
                cached.text = path.read_bytes().decode("utf-8", "replace").casefold()
            except OSError:
                return None
        if needle not in cached.text:  # fast path: most files do not match at all
            return None
        data = self.transcript(path, cached)
        if data is None:
            return None
        first: tuple[str, str, int] | None = None
        count = 0
        for msg in data.messages:
            for key, where in (("content", None), ("reasoning", "reasoning")):
                value = msg.get(key)
                if not isinstance(value, str):
                    continue
                at = value.casefold().find(needle)
                if at < 0:
                    continue
                count += 1
                if first is None:
                    label = where or ("user" if msg.get("role") == "user" else "reply")
                    first = (label, value, at)
        if first is None:
            return None
        entry = self._entry(path, stamp)
        if entry is None:
            return None
        label, value, at = first
        return SearchHit(entry, label, _snippet(value, at, len(needle)), count)

    def transcript(self, path: Path, cached: _Cached | None = None) -> Transcript | None:
        """The parsed transcript at ``path`` (cached), or None if it does not parse."""
        if cached is None:
            try:
                st = path.stat()
            except OSError:
                return None
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._cache.get(path)
            if cached is None or cached.stamp != stamp:
                cached = self._cache[path] = _Cached(stamp)
        if cached.data is None:
            try:
                cached.data = read_transcript(path)
            except TranscriptError:
                return None
        return cached.data

    # --- naming a chat -----------------------------------------------------------------
    def resolve(self, ref: str, *, trash: bool = False) -> Path:
        """The transcript named by an id, id prefix, file name, stem or path.

        Raises LibraryError (one line) when nothing or more than one chat matches.
        """
        ref = ref.strip()
        if not ref:
            raise LibraryError("give a chat id (see `smolchat chats`) or a transcript path")
        folder = self.trash_folder if trash else self.root
        looks_like_path = "/" in ref or os.sep in ref or ref.startswith("~") or ref.endswith(".md")
        if looks_like_path:
            path = user_path(ref)
            if path.is_file():
                return path
            if not path.is_absolute() and (folder / path).is_file():
                return folder / path
            raise LibraryError(f"no such transcript: {shown(path)}")
        files = [p for p, _ in self._files(folder)]
        by_name = [p for p in files if p.stem == ref or p.name == ref]
        if by_name:
            return by_name[0]
        found = [p for p in files if chat_id(p).startswith(ref.lower())]
        if len(found) == 1:
            return found[0]
        where = "the trash" if trash else shown(folder)
        if not found:
            if Path(ref).is_file():  # a file in the working folder named without a slash
                return Path(ref)
            lister = "smolchat chats --trash" if trash else "smolchat chats"
            raise LibraryError(f"no chat with id {ref!r} in {where}; `{lister}` lists them")
        ids = ", ".join(sorted(chat_id(p) for p in found)[:5])
        raise LibraryError(f"{ref!r} matches {len(found)} chats ({ids}); give more of the id")

    def latest(self) -> Path | None:
        """The newest chat, or None."""
        entries = self.entries(limit=1)
        return entries[0].path if entries else None

    # --- changing chats ----------------------------------------------------------------
    def rename(self, ref: str | Path, title: str) -> ChatEntry:
        """Give a chat a title (kept in the transcript; the file name and id stay)."""
        path = ref if isinstance(ref, Path) else self.resolve(ref)
        title = " ".join(title.split())
        if not title:
            raise LibraryError("the new title is empty")
        data = read_transcript(path)
        data.extra = {**data.extra, "title": title}
        st = path.stat()
        write_transcript(path, data)
        with contextlib.suppress(OSError):  # keep its place in the list
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self._cache.pop(path, None)
        st = path.stat()
        entry = self._entry(path, (st.st_size, st.st_mtime_ns))
        assert entry is not None
        return entry

    def delete(self, ref: str | Path) -> Path:
        """Move a chat to the trash; returns its path there."""
        path = ref if isinstance(ref, Path) else self.resolve(ref)
        return self._move(path, self.trash_folder)

    def restore(self, ref: str | Path) -> Path:
        """Move a chat back from the trash; returns its path in the folder."""
        path = ref if isinstance(ref, Path) else self.resolve(ref, trash=True)
        return self._move(path, self.root)

    def _move(self, path: Path, folder: Path) -> Path:
        target = folder / path.name
        n = 2
        while target.exists():
            target = folder / f"{path.stem}-{n}{path.suffix}"
            n += 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            st = path.stat()
            os.replace(path, target)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as e:
            raise LibraryError(f"could not move {shown(path)}: {e.strerror or e}") from None
        self._cache.pop(path, None)
        return target
