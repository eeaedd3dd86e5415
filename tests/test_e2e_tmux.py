"""End to end in a real terminal: the TUI over the real SmolLM2 GGUF, driven through tmux."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
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


def test_tui_answers_saves_and_exits(smollm2_gguf: Path, tmp_path: Path) -> None:
    session = f"smolchat-e2e-{uuid.uuid4().hex[:8]}"
    status = tmp_path / "status"
    saved = tmp_path / "e2e.md"
    command = shlex.join(
        [*smolchat_command(), str(smollm2_gguf), "--temperature", "0",
         "--transcripts", str(tmp_path / "transcripts")]
    )  # fmt: skip
    shell = f"cd {shlex.quote(str(ROOT))} && {command}; echo $? > {shlex.quote(str(status))}"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", shell)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

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
