"""File faults: an unwritable transcript folder, a full disk, and bad files or paths for /load.

Already covered elsewhere: a failed write leaves the earlier file intact, byte for byte, and no
temporary file (tests/test_transcript.py::test_failed_write_leaves_the_old_file_intact, which
simulates ENOSPC at every step of the atomic write); SIGKILL during writes never leaves a broken
file (::test_sigkill_during_writes_never_leaves_a_broken_file); malformed, binary, missing and
huge files are refused with one line (::test_malformed_files_are_refused_with_one_line,
::test_binary_missing_folder_and_huge_files_are_refused); autosave failures keep the chat going
(tests/test_session.py::test_autosave_off_and_failures); a failed /save is a notification in
the TUI (tests/tui/test_commands.py::test_failed_save_is_a_notification). SIGKILL of the real
``smolchat`` mid-reply is in test_tmux.py.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from smolchat.chat import transcript as tr
from smolchat.chat.session import ChatSession
from smolchat.chat.transcript import MAX_TRANSCRIPT_BYTES, TranscriptStore, read_transcript
from smolchat.plain import PlainChat
from tests.reliability.test_session_faults import EOFRead
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, running, submit, texts


class DiskFull:
    """While ``full``, every transcript write fails half-way with ENOSPC (like a full disk)."""

    def __init__(self, monkeypatch) -> None:
        self.full = False
        self.failures = 0
        real_fdopen = os.fdopen
        disk = self

        class HalfWriter:
            def __init__(self, f) -> None:
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self.f.close()

            def write(self, data: bytes) -> int:
                if disk.full:
                    disk.failures += 1
                    self.f.write(data[: len(data) // 2])
                    raise OSError(28, "No space left on device")
                return self.f.write(data)

            def flush(self) -> None:
                self.f.flush()

            def fileno(self) -> int:
                return self.f.fileno()

        monkeypatch.setattr(tr.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


async def test_disk_full_during_autosave(tmp_path: Path, monkeypatch) -> None:
    disk = DiskFull(monkeypatch)
    folder = tmp_path / "transcripts"
    async with running(make_app(transcripts=folder)) as (pilot, notes):
        screen = await submit(pilot, "first question")
        path = screen.session.transcript_path
        assert path is not None and len(read_transcript(path).messages) == 2
        before = path.read_bytes()
        disk.full = True
        await submit(pilot, "second question")
        assert disk.failures == 1
        errors = [n for n in notes if n.severity == "error"]
        assert errors and "No space left on device" in errors[-1].message
        assert errors[-1].title == "Autosave failed" and "\n" not in errors[-1].message
        assert len(screen.session.messages) == 4  # the conversation is kept
        assert path.read_bytes() == before and no_temp_files(folder)  # earlier file intact
        await command(pilot, "/undo")  # a history edit that cannot be saved is reported too
        assert disk.failures == 2 and sum(n.title == "Autosave failed" for n in notes) == 2
        await submit(pilot, "second question again")
        disk.full = False
        await submit(pilot, "third question")  # space again: everything is saved
        data = read_transcript(path)
        users = [m["content"] for m in data.messages if m["role"] == "user"]
        assert users == ["first question", "second question again", "third question"]
        assert pilot.app.is_running


def test_disk_full_in_plain_mode(tmp_path: Path, monkeypatch) -> None:
    disk = DiskFull(monkeypatch)
    store = TranscriptStore(tmp_path / "t")
    session = ChatSession(FakeEngine(lambda q: "ok"), store=store)
    out = io.StringIO()
    chat = PlainChat(session, Console(file=out, width=200))

    lines = iter(["one", "two", "/undo", "/stats"])

    def read(prompt: str) -> str:
        line = next(lines, None)
        if line is None:
            raise EOFError
        disk.full = line in ("two", "/undo")
        return line

    assert chat.run(read) == 0
    text = out.getvalue()
    assert text.count("autosave failed: could not save") == 2  # after "two" and after /undo
    assert "No space left on device" in text
    assert "autosave problem" in text  # /stats tells too
    assert len(session.messages) == 2 and disk.failures == 2
    assert len(read_transcript(session.transcript_path).messages) == 2


async def test_unwritable_transcripts_folder(tmp_path: Path) -> None:
    """The folder cannot be created (a file is in the way): told, and the chat goes on."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    async with running(make_app(transcripts=blocker / "transcripts")) as (pilot, notes):
        screen = await submit(pilot, "hello")
        await submit(pilot, "again")
        autosave = [n for n in notes if n.title == "Autosave failed"]
        assert len(autosave) == 2 and str(blocker) in autosave[0].message
        assert len(screen.session.messages) == 4
        elsewhere = tmp_path / "kept.md"
        await command(pilot, f"/save {elsewhere}")  # saving elsewhere works
        assert len(read_transcript(elsewhere).messages) == 4
    assert blocker.read_text() == "a file"


# ---- /load of bad files, bad paths ------------------------------------------------------------


def bad_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (/load argument, words of the one-line error)."""
    good = ChatSession(FakeEngine()).save(tmp_path / "good.md")
    text = good.read_text()
    (tmp_path / "notes.md").write_text("# my notes\n\nnot a transcript\n")
    (tmp_path / "cut.md").write_text(text[: len(text) // 2])
    (tmp_path / "binary.md").write_bytes(text.encode()[:80] + b"\xff\xfe\x00" * 50)
    with open(tmp_path / "huge.md", "wb") as f:  # sparse: costs no disk
        f.write(text.encode())
        f.truncate(MAX_TRANSCRIPT_BYTES + 1)
    (tmp_path / "bad-settings.md").write_text(
        text.replace('"temperature":', '"temperature":"hot","x":', 1)
    )
    return {
        "not a transcript": (str(tmp_path / "notes.md"), "first line"),
        "cut short": (str(tmp_path / "cut.md"), "not a valid smolchat transcript"),
        "binary": (str(tmp_path / "binary.md"), "not UTF-8"),
        "huge": (str(tmp_path / "huge.md"), "MB are refused"),
        "bad settings": (str(tmp_path / "bad-settings.md"), "invalid settings"),
        "missing": (str(tmp_path / "missing.md"), "no such transcript"),
        "folder": (str(tmp_path), "is a folder"),
        "device": ("/dev/zero", "refused"),
        "NUL in the path": ("chat\x00.md", "NUL character"),
        "unknown user": ("~no-such-user-xyz/chat.md", "cannot expand"),
        "name too long": (str(tmp_path / ("x" * 5000)), "File name too long"),
        "unbalanced quotes": ('"chat.md', "unbalanced quotes"),
        "no path": ("", "needs a path"),
    }


async def test_load_of_bad_files_in_the_tui(tmp_path: Path) -> None:
    cases = bad_files(tmp_path)
    async with running(make_app()) as (pilot, notes):
        screen = await submit(pilot, "keep me")
        before = list(screen.session.messages)
        for name, (arg, words) in cases.items():
            await command(pilot, f"/load {arg}".rstrip())
            message = texts(notes)[-1]
            assert words in message, (name, message)
            assert notes[-1].severity == "error" and "\n" not in message
            assert len(message) < 400, (name, len(message))
            assert screen.session.messages == before, name  # nothing changed
        assert pilot.app.is_running and (await chat_screen(pilot)) is screen


@pytest.mark.parametrize("verb", ["/save", "/load"])
def test_bad_paths_in_plain_mode(tmp_path: Path, verb: str) -> None:
    session = ChatSession(FakeEngine(lambda q: "ok"))
    out = io.StringIO()
    chat = PlainChat(session, Console(file=out, width=300))
    args = ["chat\x00.md", "~no-such-user-xyz/chat.md", str(tmp_path / ("x" * 5000))]
    assert chat.run(EOFRead(["hello", *(f"{verb} {a}" for a in args), "/stats"])) == 0
    text = out.getvalue()
    assert "NUL character" in text and "cannot expand" in text
    assert "File name too long" in text and "internal error" not in text
    assert "turns: 1" in text  # the REPL went on to /stats
