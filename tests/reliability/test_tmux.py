"""The real ``smolchat`` over the real SmolLM2 GGUF in a real terminal (tmux): Ctrl+C while
loading, typing while loading, a resize while streaming, Ctrl+C while generating, and SIGKILL
in the middle of a reply (the autosaved transcript holds every completed turn and loads back).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from smolchat.chat.commands import HistoryChanged, run_command
from smolchat.chat.session import ChatSession
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.chat.turns import to_record
from tests.reliability.helpers import HAVE_TMUX, quiet_vars, smolchat_command, terminal, wait_until
from tests.tui.fake_engine import FakeEngine

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_TMUX, reason="needs tmux")]

QUESTION = "What is the capital of France?"
STORY = "Write a very long story about a dragon who learns to fly."


def test_ctrl_c_while_loading_quits_at_once(smollm2_gguf: Path, tmp_path: Path) -> None:
    status = tmp_path / "status"
    argv = [*smolchat_command(), str(smollm2_gguf), "--transcripts", str(tmp_path / "t")]
    with terminal(argv, status, env=quiet_vars(tmp_path)) as term:
        term.wait_for(smollm2_gguf.name, 60)  # the loading screen
        assert "ctx " not in term.screen()  # not loaded yet
        term.keys("C-c")
        pressed = time.monotonic()
        wait_until(status.exists, 30, "smolchat to exit")
        took = time.monotonic() - pressed
        assert status.read_text().strip() == "130"  # interrupted (README: exit statuses)
        assert "Traceback" not in term.screen() and "Error" not in term.screen()
    assert took < 15, f"Ctrl+C while loading took {took:.1f}s to quit"
    assert not (tmp_path / "t").exists()  # nothing was saved: there was no conversation


def test_typeahead_resize_stop_and_sigkill(smollm2_gguf: Path, tmp_path: Path) -> None:
    status = tmp_path / "status"
    folder = tmp_path / "transcripts"
    argv = [
        *smolchat_command(), str(smollm2_gguf), "--temperature", "0",
        "--max-new-tokens", "400", "--transcripts", str(folder),
    ]  # fmt: skip
    with terminal(argv, status, env=quiet_vars(tmp_path), size=(100, 30)) as term:
        # 1. type while the model loads: kept, and sent once it is ready
        term.wait_for(smollm2_gguf.name, 60)
        term.text(QUESTION)
        term.keys("Enter")
        term.wait_for("sends when the model is ready", 30)
        term.wait_for("Paris", 180)
        wait_until(lambda: "tok/s" in term.screen(), 120, "the first reply to finish")

        # 2. a resize while streaming: the reply keeps streaming and the app keeps running
        term.text(STORY)
        term.keys("Enter")
        term.wait_for("● generating", 60)
        time.sleep(1.0)
        term.resize(60, 20)
        time.sleep(0.5)
        narrow = term.screen()
        assert max(len(line) for line in narrow.splitlines()) <= 60  # redrawn at the new size
        wait_until(lambda: term.screen() != narrow, 10, "the reply to go on streaming, narrow")
        term.resize(120, 40)
        time.sleep(0.5)
        wide = term.screen()
        assert len(wide.splitlines()) == 40 and "● generating" in wide
        wait_until(lambda: term.screen() != wide, 10, "the reply to go on streaming, wide")

        # 3. Ctrl+C while generating: the reply stops, kept and marked, and smolchat goes on
        term.keys("C-c")
        term.wait_for("■ stopped", 30)
        assert not status.exists()

        # 4. SIGKILL in the middle of the next reply
        term.text("Tell me a long story about a brave knight.")
        term.keys("Enter")
        term.wait_for("● generating", 60)
        time.sleep(1.5)
        os.kill(term.program_pid(), signal.SIGKILL)
        wait_until(status.exists, 30, "the shell to see smolchat die")
        assert status.read_text().strip() == str(128 + signal.SIGKILL)

    latest = TranscriptStore(folder).latest()
    assert latest is not None and len(list(folder.glob("*.md"))) == 1
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file
    data = read_transcript(latest)  # valid, and it holds every completed turn
    roles = [m["role"] for m in data.messages]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert data.messages[0]["content"] == QUESTION
    assert "Paris" in data.messages[1]["content"]
    assert data.messages[1]["finish_reason"] == "stop"
    assert data.messages[2]["content"] == STORY
    assert data.messages[3]["finish_reason"] == "cancelled" and data.messages[3]["content"]
    # /load accepts it and the conversation can go on
    session = ChatSession(FakeEngine())
    result = run_command(session, f"/load {latest}")
    assert result.effect == HistoryChanged() and re.search(r"Loaded 2 turns", result.message)
    assert [to_record(m) for m in session.messages] == data.messages
    for _ in session.send("And the capital of Italy?"):
        pass
    assert len(session.messages) == 6
