"""Markdown transcripts that read well and load back exactly.

A transcript is a Markdown file for people with a machine layer for smolchat, carried by HTML
comments (invisible when the Markdown is rendered)::

    <!-- smolchat-transcript v1 NONCE -->            first line: format, version, nonce
    <!-- smolchat:NONCE meta {JSON} -->              model, dates, settings, ...
    <!-- smolchat:NONCE message {JSON} -->           one per message: role, stats, ...
    <!-- smolchat:NONCE text {"field": "content"} -->
    the text, verbatim
    <!-- smolchat:NONCE end -->

Every text (system prompt, message content, reasoning) is written verbatim between a ``text``
marker line and an ``end`` marker line, so the file shows it as Markdown and an edit of it is
honoured on load. The nonce is random per save and chosen so that it occurs nowhere in the texts:
a text that contains Markdown headers, fences, ``<details>``, HTML or even marker lines (with
another nonce) cannot be mistaken for structure. The JSON in markers is escaped so that it never
contains ``<``, ``>`` or ``&`` (hence never ``-->``). Everything outside markers and texts
(headings, ``<details>``, stats lines) is for people and ignored on load.

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``), so a
crash or a kill at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smolchat.chat.paths import default_transcripts_dir
from smolchat.errors import TranscriptError

__all__ = [
    "MAX_TRANSCRIPT_BYTES",
    "Transcript",
    "TranscriptStore",
    "atomic_write_text",
    "default_transcripts_dir",
    "is_transcript",
    "read_transcript",
    "render_transcript",
    "shown",
    "slugify",
    "user_path",
    "write_transcript",
]

FORMAT_VERSION = 1
MAX_TRANSCRIPT_BYTES = 20 * 1024 * 1024
TEXT_FIELDS = ("content", "reasoning")  # message fields written as verbatim text blocks
ROLES = ("user", "assistant")

_FIRST_LINE = re.compile(r"<!-- smolchat-transcript v(\d+) ([0-9a-f]{16}) -->\r?\n")


@dataclass
class Transcript:
    """Everything a transcript file holds."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    system_prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    created: str = ""  # ISO 8601 with offset: when the conversation started
    extra: dict[str, Any] = field(default_factory=dict)  # other session data (JSON-ready)


# --- paths -------------------------------------------------------------------------------
MAX_SHOWN_PATH = 160


def shown(path: Path | str) -> str:
    """``path`` for a message: one line, a very long one shortened in the middle."""
    text = " ".join(str(path).split()).encode("utf-8", "replace").decode("utf-8")
    if len(text) <= MAX_SHOWN_PATH:
        return text
    return text[:60] + "…" + text[-(MAX_SHOWN_PATH - 61) :]


def user_path(raw: Path | str) -> Path:
    """A path the user typed, ``~`` expanded; TranscriptError if no file can have it."""
    text = str(raw)
    if "\x00" in text:
        raise TranscriptError("a file path cannot contain a NUL character")
    try:
        os.fsencode(text)
    except UnicodeError:  # e.g. half of a surrogate pair: no file system takes it
        raise TranscriptError(f"{shown(text)} is not a valid file name; choose another") from None
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~user of an unknown user, or no home folder
        raise TranscriptError(f"cannot expand {shown(text)}: unknown user or home folder") from None


# --- writing -----------------------------------------------------------------------------


def _json(value: Any) -> str:
    """Compact ASCII JSON that can sit inside an HTML comment on one line."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _inline(text: str, limit: int = 80) -> str:
    """``text`` on one line, shortened and escaped for Markdown prose."""
    line = _inline_raw(text, limit)
    return re.sub(r"([\\`*\[\]<>|#&!])", r"\\\1", line)


def _code_span(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    text = " ".join(text.split()).encode("utf-8", "replace").decode("utf-8")
    runs = [len(r) for r in re.findall(r"`+", text)]
    ticks = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _unclosed_fence(text: str) -> str | None:
    """The fence line that would close a code block left open at the end of ``text``."""
    open_fence: tuple[str, int] | None = None
    for line in re.split(r"\r\n|\r|\n", text):  # CommonMark's line endings
        m = re.match(r" {0,3}(`{3,}|~{3,})(.*)$", line)
        if not m:
            continue
        run, rest = m.group(1), m.group(2)
        if open_fence is None:
            if run[0] == "`" and "`" in rest:
                continue  # not a fence opener (backticks in the info string)
            open_fence = (run[0], len(run))
        elif run[0] == open_fence[0] and len(run) >= open_fence[1] and not rest.strip():
            open_fence = None
    if open_fence is None:
        return None
    return open_fence[0] * open_fence[1]


def _fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run in ``text`` (so nothing inside closes it)."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    return "`" * max(3, max(runs, default=0) + 1)


def _title(text: str) -> str:
    """The heading's title: the first words as typed; a code span where Markdown would act."""
    line = _inline_raw(text, 60)
    if re.search(r"[\\`*_\[\]<>&!#|~]", line):
        return _code_span(line)
    return line


def _inline_raw(text: str, limit: int) -> str:
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line.encode("utf-8", "replace").decode("utf-8")


_FINISH_WORDS = {
    "length": "length (cut at max_new_tokens)",
    "context": "context (cut: the context window was full)",
}


def _fmt_stats(msg: dict[str, Any]) -> str:
    stats = msg.get("stats") or {}
    finish = str(msg.get("finish_reason") or "?")
    parts = [_FINISH_WORDS.get(finish, finish)]
    n = stats.get("generated_tokens")
    if isinstance(n, int):
        parts.append(f"{n} tokens")
    decode_s = stats.get("decode_s")
    if isinstance(n, int) and n > 1 and isinstance(decode_s, (int, float)) and decode_s > 0:
        parts.append(f"{(n - 1) / decode_s:.1f} tok/s")
    ttft = stats.get("ttft_s")
    if isinstance(ttft, (int, float)) and ttft > 0:
        parts.append(f"first token {ttft:.2f} s")
    pre, cached = stats.get("prefilled_tokens"), stats.get("cached_tokens")
    if isinstance(pre, int) and isinstance(cached, int):
        parts.append(f"prompt {pre} new + {cached} cached")
    if msg.get("thinking") is False:
        parts.append("thinking off")
    if msg.get("error"):
        parts.append("error: " + _inline(str(msg["error"]), 200))
    return "*" + " · ".join(parts) + "*"


class _Writer:
    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.out: list[str] = []
        self.markers = 0

    def line(self, text: str = "") -> None:
        self.out.append(text + "\n")

    def marker(self, kind: str, payload: Any = None) -> None:
        tail = "" if payload is None else " " + _json(payload)
        self.line(f"<!-- smolchat:{self.nonce} {kind}{tail} -->")
        self.markers += 1

    def display_only(self, text: str) -> None:
        """A text kept in the JSON (it cannot be written as UTF-8), shown as a code block."""
        text = text.encode("utf-8", "replace").decode("utf-8")
        fence = _fence_for(text)
        self.line(fence)
        self.line(text)
        self.line(fence)

    def text(self, field_name: str, text: str, *, literal: bool = False) -> None:
        """``text`` verbatim between a text and an end marker.

        ``literal``: shown as typed, in a fenced code block (user text: its ``<think>``, ``**``
        or ``#`` are not Markdown). Otherwise a code block the text leaves open is closed
        before the end marker, so that the marker never shows inside it. Either way the
        text marker names the added lines (``fence`` / ``close``) and the loader strips them.
        """
        spec: dict[str, str] = {"field": field_name}
        before = after = ""
        if literal:
            before = after = _fence_for(text)
            spec["fence"] = before
        else:
            close = _unclosed_fence(text)
            if close:
                after = spec["close"] = close
        self.marker("text", spec)
        if before:
            self.line(before)
        self.out.append(text + "\n")
        if after:
            self.line(after)
        self.marker("end")


def _split_text_fields(msg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Message -> (JSON part, verbatim text part)."""
    meta: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for key, value in msg.items():
        if (
            key in TEXT_FIELDS
            and isinstance(value, str)
            and value
            and not _has_lone_surrogate(value)
        ):
            texts[key] = value
        else:
            meta[key] = value
    return meta, texts


def _render(data: Transcript, nonce: str) -> tuple[str, int]:
    w = _Writer(nonce)
    w.line(f"<!-- smolchat-transcript v{FORMAT_VERSION} {nonce} -->")
    first_user = next((m for m in data.messages if m.get("role") == "user"), None)
    named = data.extra.get("title")  # given by the chat library's rename
    if isinstance(named, str) and named.strip():
        title = _title(named)
    else:
        title = _title(str(first_user.get("content", ""))) if first_user else "new conversation"
    w.line(f"# smolchat · {title or 'conversation'}")
    w.line()
    s = data.settings
    w.line(f"- **Model:** {_code_span(data.model or 'unknown')}")
    if data.created:
        w.line(f"- **Started:** {_inline(data.created)}")
    w.line(f"- **Saved:** {datetime.now().astimezone().isoformat(timespec='seconds')}")
    if "thinking" in s:
        w.line(f"- **Thinking:** {'on' if s['thinking'] else 'off'}")
    sampling = [f"{k} {'none' if v is None else v}" for k, v in s.items() if k != "thinking"]
    if sampling:
        w.line(f"- **Settings:** {_inline(' · '.join(sampling), 400)}")
    turns = sum(1 for m in data.messages if m.get("role") == "user")
    w.line(f"- **Turns:** {turns}")
    w.line()
    meta = {
        "format": "smolchat-transcript",
        "version": FORMAT_VERSION,
        "model": data.model,
        "created": data.created,
        "settings": data.settings,
        "extra": data.extra,
    }
    sys_prompt = data.system_prompt
    if sys_prompt is not None and _has_lone_surrogate(sys_prompt):
        meta["system_prompt"] = sys_prompt
    w.marker("meta", meta)
    w.line()
    w.line("## System prompt")
    w.line()
    if sys_prompt is None:
        w.line("*(none: the model's default)*")
    elif "system_prompt" in meta:
        w.display_only(sys_prompt)
    else:
        w.text("system_prompt", sys_prompt, literal=True)
    turn = 0
    for msg in data.messages:
        role = msg.get("role")
        if role == "user":
            turn += 1
            w.line()
            w.line("---")
            w.line()
            w.line(f"## Turn {turn}")
        w.line()
        w.line(f"### {'User' if role == 'user' else 'Assistant' if role == 'assistant' else role}")
        w.line()
        json_part, texts = _split_text_fields(msg)
        w.marker("message", json_part)
        for key in TEXT_FIELDS:  # human view of texts that had to go into the JSON
            if isinstance(json_part.get(key), str) and json_part[key]:
                w.display_only(json_part[key])
        if texts.get("reasoning"):
            w.line("<details><summary>Reasoning</summary>")
            w.line()
            w.text("reasoning", texts["reasoning"])
            w.line()
            w.line("</details>")
            w.line()
        if "content" in texts:
            w.text("content", texts["content"], literal=role == "user")
        for key, value in texts.items():
            if key not in ("reasoning", "content"):
                w.text(key, value)
        if role == "assistant":
            w.line()
            w.line(_fmt_stats(msg))
    return "".join(w.out), w.markers + 1


def render_transcript(data: Transcript) -> str:
    """The Markdown text of a transcript (with a fresh nonce absent from every text)."""
    for _ in range(100):
        nonce = secrets.token_hex(8)
        text, expected = _render(data, nonce)
        if text.count(nonce) == expected:
            return text
    raise TranscriptError("could not pick a transcript marker absent from the conversation")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that it is either fully old or fully new.

    ``mode``: file permissions; default: keep an existing file's, else 0o600 (private).
    Raises OSError; the earlier file is never damaged and no temporary file is left.
    """
    path = Path(path)
    data = text.encode("utf-8")
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_transcript(path: Path, data: Transcript, *, mode: int | None = None) -> Path:
    """Save ``data`` as a Markdown transcript at ``path`` (atomically); return the path.

    Raises TranscriptError (one line) if the file cannot be written.
    """
    path = user_path(path)
    try:
        text = render_transcript(data)
    except (TypeError, ValueError) as e:
        raise TranscriptError(f"could not save the transcript: unsupported data ({e})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text, mode)
    except OSError as e:
        reason = e.strerror or str(e)
        raise TranscriptError(f"could not save the transcript to {shown(path)}: {reason}") from None
    return path


# --- reading -----------------------------------------------------------------------------


def _bad(path: Path, why: str) -> TranscriptError:
    return TranscriptError(f"{shown(path)} is not a valid smolchat transcript: {why}")


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_TRANSCRIPT_BYTES:
                raise TranscriptError(
                    f"{shown(path)} is {size / 2**20:.1f} MB; transcripts over "
                    f"{MAX_TRANSCRIPT_BYTES // 2**20} MB are refused (is it really a transcript?)"
                )
            raw = f.read(MAX_TRANSCRIPT_BYTES + 1)
    except FileNotFoundError:
        raise TranscriptError(f"no such transcript: {shown(path)}") from None
    except IsADirectoryError:
        raise TranscriptError(f"{shown(path)} is a folder, not a transcript file") from None
    except OSError as e:
        raise TranscriptError(f"could not read {shown(path)}: {e.strerror or e}") from None
    if len(raw) > MAX_TRANSCRIPT_BYTES:
        raise TranscriptError(f"{shown(path)} is over {MAX_TRANSCRIPT_BYTES // 2**20} MB; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"not UTF-8 text (byte {e.start})") from None
    return text.removeprefix("\ufeff")


def is_transcript(path: Path) -> bool:
    """True if ``path`` starts like a smolchat transcript (cheap check, no full parse)."""
    try:
        with open(path, "rb") as f:
            head = f.read(128).decode("utf-8", "replace").removeprefix("\ufeff")
    except (OSError, ValueError):
        return False
    return _FIRST_LINE.match(head) is not None


def _parse_json(path: Path, payload: str | None, line: int) -> Any:
    if payload is None:
        raise _bad(path, f"marker without data on line {line}")
    try:
        return json.loads(payload)
    except ValueError:
        raise _bad(path, f"broken marker data on line {line}") from None


def _strip_display(value: str, spec: dict[str, Any]) -> str:
    """A text block without the display-only fence lines its marker names (if still there)."""
    fence, close = spec.get("fence"), spec.get("close")
    if isinstance(fence, str) and fence:
        if value.startswith(fence + "\n") and value.endswith("\n" + fence):
            value = value[len(fence) + 1 : -(len(fence) + 1)]
    elif isinstance(close, str) and close and value.endswith("\n" + close):
        value = value[: -(len(close) + 1)]
    return value


def read_transcript(path: Path) -> Transcript:
    """Load a transcript written by :func:`write_transcript`; TranscriptError if malformed."""
    path = user_path(path)
    text = _read_text(path)
    head = _FIRST_LINE.match(text)
    if head is None:
        raise _bad(path, "the first line is not a smolchat-transcript marker")
    version, nonce = int(head.group(1)), head.group(2)
    if version > FORMAT_VERSION:
        raise TranscriptError(
            f"{shown(path)} was written by a newer smolchat (format v{version}); upgrade smolchat"
        )
    if head.group(0).endswith("\r\n"):  # line endings converted by an editor
        text = text.replace("\r\n", "\n")
    marker = re.compile(
        rf"^<!-- smolchat:{nonce} (meta|message|text|end)(?: ([^<>\n]*?))? -->$", re.MULTILINE
    )
    data = Transcript()
    meta_seen = False
    current: dict[str, Any] | None = None
    pos = head.end() if not head.group(0).endswith("\r\n") else len(head.group(0)) - 1
    while True:
        m = marker.search(text, pos)
        if m is None:
            break
        kind, payload = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if kind == "meta":
            if meta_seen:
                raise _bad(path, f"a second header on line {line}")
            meta = _parse_json(path, payload, line)
            if not isinstance(meta, dict) or meta.get("format") != "smolchat-transcript":
                raise _bad(path, f"bad header on line {line}")
            meta_seen = True
            data.model = str(meta.get("model") or "")
            data.created = str(meta.get("created") or "")
            settings, extra = meta.get("settings") or {}, meta.get("extra") or {}
            if not isinstance(settings, dict) or not isinstance(extra, dict):
                raise _bad(path, f"bad header on line {line}")
            data.settings, data.extra = settings, extra
            if "system_prompt" in meta:
                sp = meta["system_prompt"]
                if sp is not None and not isinstance(sp, str):
                    raise _bad(path, f"bad system prompt on line {line}")
                data.system_prompt = sp
            pos = m.end()
        elif not meta_seen:
            raise _bad(path, f"{kind} marker before the header on line {line}")
        elif kind == "message":
            msg = _parse_json(path, payload, line)
            if not isinstance(msg, dict) or msg.get("role") not in ROLES:
                raise _bad(path, f"bad message on line {line}")
            current = msg
            data.messages.append(msg)
            pos = m.end()
        elif kind == "text":
            spec = _parse_json(path, payload, line)
            name = spec.get("field") if isinstance(spec, dict) else None
            if not isinstance(name, str):
                raise _bad(path, f"bad text marker on line {line}")
            if text[m.end() : m.end() + 1] != "\n":
                raise _bad(path, f"the text starting on line {line} is not closed")
            start = m.end() + 1  # after the marker line's newline
            end = marker.search(text, start - 1)
            if end is None or end.group(1) != "end" or end.start() < start:
                raise _bad(path, f"the text starting on line {line} is not closed")
            if text[end.start() - 1] != "\n":
                raise _bad(path, f"the text starting on line {line} is not closed")
            value = _strip_display(text[start : end.start() - 1], spec)
            if name == "system_prompt" and current is None:
                data.system_prompt = value
            elif current is not None and name in TEXT_FIELDS:
                current[name] = value
            else:
                raise _bad(path, f"unexpected text field {name!r} on line {line}")
            pos = end.end()
        else:  # a stray end marker
            raise _bad(path, f"unexpected end marker on line {line}")
    if not meta_seen:
        raise _bad(path, "the header marker is missing")
    for i, msg in enumerate(data.messages):
        for key in TEXT_FIELDS:
            if key in msg and not isinstance(msg[key], (str, type(None))):
                raise _bad(path, f"message {i + 1} has a non-text {key}")
        if not isinstance(msg.get("content"), str):
            raise _bad(path, f"message {i + 1} has no text")
    return data


# --- the autosave folder -----------------------------------------------------------------


def slugify(text: str, limit: int = 40) -> str:
    """A short ASCII file-name slug of ``text`` ("chat" if nothing usable is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            if not slug:
                slug = word[:limit]
            break
        slug = candidate
    return slug or "chat"


class TranscriptStore:
    """The folder where conversations are autosaved, one file per conversation.

    ``folder=None`` means :func:`default_transcripts_dir`. With ``autosave=False`` the session
    writes nothing unless asked (``/save``); :meth:`latest` still works.
    """

    def __init__(self, folder: Path | None = None, autosave: bool = True) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_transcripts_dir()
        self.autosave = autosave

    def new_path(self, started: datetime, first_message: str) -> Path:
        """A fresh file name: start time + slug of the first message (never an existing file)."""
        stem = f"{started:%Y-%m-%d_%H%M%S}_{slugify(first_message)}"
        path = self.folder / f"{stem}.md"
        n = 2
        while path.exists():
            path = self.folder / f"{stem}-{n}.md"
            n += 1
        return path

    def contains(self, path: Path) -> bool:
        """True if ``path`` lies directly in this store's folder."""
        try:
            return Path(path).expanduser().resolve().parent == self.folder.resolve()
        except OSError:
            return False

    def list(self) -> list[Path]:
        """Transcripts in the folder, most recently written first."""
        try:
            entries = [
                p
                for p in self.folder.iterdir()
                if p.suffix == ".md" and not p.name.startswith(".") and p.is_file()
            ]
        except OSError:
            return []
        stamped = []
        for p in entries:
            with contextlib.suppress(OSError):
                stamped.append((p.stat().st_mtime_ns, p.name, p))
        stamped.sort(reverse=True)
        return [p for _, _, p in stamped if is_transcript(p)]

    def latest(self) -> Path | None:
        """The most recently written transcript (for ``--resume``), or None."""
        found = self.list()
        return found[0] if found else None
