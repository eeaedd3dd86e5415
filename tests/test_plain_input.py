"""--plain input: the \"\"\" multi-line syntax (unit), and in a real terminal (tmux): bracketed
paste is one message, readline editing, and the history across restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.plain import read_message
from tests.reliability.helpers import (
    HAVE_TMUX,
    quiet_vars,
    smolchat_command,
    terminal,
    tmux,
    wait_until,
)


def reader(*lines: str | type[BaseException]):
    queue = list(lines)
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        item = queue.pop(0)
        if isinstance(item, type):
            raise item()
        return item

    return read, prompts


def test_triple_quotes_make_one_multiline_message() -> None:
    read, prompts = reader('"""first line', "", "  indented", 'last"""')
    assert read_message(read) == "first line\n\n  indented\nlast"
    assert prompts == ["\n> ", "... ", "... ", "... "]
    read, _ = reader('"""', "a", '"""')
    assert read_message(read) == "a"
    read, _ = reader('"""one line"""')
    assert read_message(read) == "one line"
    read, _ = reader("plain line")
    assert read_message(read) == "plain line"
    read, _ = reader('"""', "half", KeyboardInterrupt)
    assert read_message(read) is None  # Ctrl+C gives the block up
    read, _ = reader('"""', "typed", EOFError)
    assert read_message(read) == "typed"  # EOF sends what was typed
    read, _ = reader('say """hi""" to me')
    assert read_message(read) == 'say """hi""" to me'  # quotes inside a line are text


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TMUX, reason="needs tmux")
def test_plain_paste_multiline_and_history_in_tmux(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "t"
    argv = [
        *smolchat_command(), str(tiny_model), "--plain", "--no-think", "--max-new-tokens", "3",
        "--transcripts", str(folder),
    ]  # fmt: skip
    env = quiet_vars(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"))
    status = tmp_path / "status"
    with terminal(argv, status, env=env, size=(80, 24)) as term:
        term.wait_for("/help lists the commands", 120)
        time.sleep(0.5)
        # a pasted multi-line text (tmux pastes it bracketed, as a terminal does)
        buffer = f"keys-paste-{tmp_path.name}"
        tmux("set-buffer", "-b", buffer, "pasted one\npasted two\npasted three")
        tmux("paste-buffer", "-p", "-d", "-b", buffer, "-t", term.name)
        time.sleep(0.5)
        term.keys("Enter")
        term.wait_for("tok/s", 60)
        # a \"\"\" block
        term.text('"""block one')
        term.keys("Enter")
        term.text('block two"""')
        term.keys("Enter")
        term.wait_for("... ", 5)  # the continuation prompt of the block
        wait_until(lambda: term.screen().count("tok/s") >= 2, 60, "the second reply")
        # line editing: Left/Right move inside the line, no ^[[D printed
        term.text("/stat")
        term.keys("Left", "Left", "Right", "Right", "End")
        term.text("s")
        term.keys("Enter")
        term.wait_for("turns: 2", 30)
        assert "^[[" not in term.screen()
        print(term.screen())  # what a user sees (pytest -s)
        term.keys("C-d")
        wait_until(status.exists, 30, "the REPL to end on Ctrl+D")
    messages = read_transcript(TranscriptStore(folder).latest()).messages
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == ["pasted one\npasted two\npasted three", "block one\nblock two"]
    # the history survives: a new run brings the last message back with Up
    status2 = tmp_path / "status2"
    with terminal(argv, status2, env=env, size=(80, 24)) as term:
        term.wait_for("/help lists the commands", 120)
        time.sleep(0.5)
        term.keys("Up")
        term.wait_for("/stats", 10)
        term.keys("Up")
        term.wait_for("block two", 10)
        # Ctrl+C with text on the line clears the line (trial3 #9: it quit); on an empty one, quits
        term.keys("C-c")
        wait_until(lambda: term.screen().rstrip().endswith(">"), 10, "a fresh empty prompt")
        time.sleep(0.5)
        assert not status2.exists()
        term.text("/stats")
        term.keys("Enter")
        term.wait_for("turns:", 30)  # the REPL goes on
        print(term.screen())
        term.keys("C-c")
        wait_until(status2.exists, 30, "the REPL to end on Ctrl+C")
    assert status2.read_text().strip() == "0"
