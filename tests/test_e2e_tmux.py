"""End to end in a real terminal: the TUI over the real SmolLM2 GGUF, driven through tmux."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.helpers import tmux, wait_until

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


def smolchat_command() -> list[str]:
    """The installed ``smolchat`` script next to this Python, else ``python -m smolchat``."""
    script = Path(sys.executable).parent / "smolchat"
    return [str(script)] if script.exists() else [sys.executable, "-m", "smolchat"]


def start_tui(args: list[str], status: Path, env: str = "") -> tuple[str, Callable[[], str]]:
    """Start ``smolchat ARGS`` in a new 100x30 tmux session (its exit status goes to
    ``status``; the pane stays a while after); return the session's name and a screen reader."""
    session = f"smolchat-e2e-{uuid.uuid4().hex[:8]}"
    command = shlex.join([*smolchat_command(), *args])
    shell = (
        f"cd {shlex.quote(str(ROOT))} && {env}{command}; "
        f"echo $? > {shlex.quote(str(status))}; sleep 60"
    )
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", shell)
    return session, lambda: tmux("capture-pane", "-p", "-t", session)


def test_tui_answers_saves_and_exits(smollm2_gguf: Path, tmp_path: Path) -> None:
    status = tmp_path / "status"
    saved = tmp_path / "e2e.md"
    session, screen = start_tui(
        [str(smollm2_gguf), "--temperature", "0", "--transcripts", str(tmp_path / "transcripts")],
        status,
    )
    try:
        wait_until(lambda: "ctx " in screen(), 180, "the chat screen")
        tmux("send-keys", "-t", session, "What is the capital of France?", "Enter")
        wait_until(lambda: "Paris" in screen() and "tok/s" in screen(), 180, "the answer")
        tmux("send-keys", "-t", session, f"/save {saved}", "Enter")
        wait_until(saved.exists, 30, "the saved transcript")
        tmux("send-keys", "-t", session, "/exit", "Enter")
        # the shell creates the file before `echo` writes the status into it: wait for the text
        wait_until(lambda: status.exists() and status.read_text().strip(), 30, "smolchat to exit")
        assert status.read_text().strip() == "0"
        text = saved.read_text()
        assert "What is the capital of France?" in text and "Paris" in text
        assert list((tmp_path / "transcripts").glob("*.md"))  # autosaved too
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_ctrl_c_in_the_external_editor_keeps_smolchat_and_the_draft(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    """The terminal sends Ctrl+C's SIGINT to the whole foreground group: the editor ends, and
    smolchat (suspended meanwhile) comes back with the draft instead of quitting."""
    status, started = tmp_path / "status", tmp_path / "editor-started"
    editor = tmp_path / "slow.sh"
    editor.write_text(f'#!/bin/sh\ntouch {shlex.quote(str(started))}\nsleep 60\necho x > "$1"\n')
    editor.chmod(0o755)
    session, screen = start_tui(
        [str(smollm2_gguf), "--transcripts", str(tmp_path / "tr")],
        status,
        env=f"EDITOR={shlex.quote(str(editor))} ",
    )
    try:
        wait_until(lambda: "ctx " in screen(), 180, "the chat screen")
        tmux("send-keys", "-t", session, "-l", "my precious draft")
        wait_until(lambda: "my precious draft" in screen(), 30, "the draft")
        tmux("send-keys", "-t", session, "C-g")
        wait_until(started.exists, 30, "the editor")
        tmux("send-keys", "-t", session, "C-c")
        wait_until(lambda: "interrupted" in screen() or status.exists(), 30, "the chat again")
        assert not status.exists(), screen()
        assert "my precious draft" in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
