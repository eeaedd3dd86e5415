"""The keys in a real terminal (tmux): Ctrl+C (copy / stop / clear the draft / quit twice),
scrolling while typing, Alt+Up and copy into tmux's buffer, Ctrl+G with a scripted editor.

The real ``smolchat`` command on the tiny random SmolLM3 (it loads in seconds and streams
random tokens, long enough to be stopped).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import HAVE_TMUX, quiet_vars, smolchat_command, terminal, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_TMUX, reason="needs tmux")]


def editor_script(tmp_path: Path) -> str:
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys\np = sys.argv[-1]\nt = open(p).read().strip()\n"
        "open(p, 'w').write(t + ' EDITED\\nsecond line\\n')\n"
    )
    return f"{sys.executable} {script}"


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_keys_in_a_real_terminal(tiny_model: Path, tmp_path: Path, size) -> None:
    status = tmp_path / "status"
    argv = [
        *smolchat_command(), str(tiny_model), "--no-think", "--max-new-tokens", "3000",
        "--seed", "1", "--transcripts", str(tmp_path / "t"),
    ]  # fmt: skip
    env = quiet_vars(tmp_path, EDITOR=editor_script(tmp_path), VISUAL="")
    with terminal(argv, status, env=env, size=size) as term:
        term.wait_for("ctx ", 120)
        time.sleep(1.0)  # the chat screen takes the focus
        # a draft: Ctrl+C clears it, Ctrl+Z brings it back
        term.text("my draft")
        term.wait_for("my draft", 10)
        term.keys("C-c")
        term.wait_for("Draft cleared", 10)
        assert "my draft" not in term.screen()
        term.keys("C-z")
        term.wait_for("my draft", 10)
        # Ctrl+G: the scripted editor edits it
        term.keys("C-g")
        term.wait_for("my draft EDITED", 20)
        assert "second line" in term.screen()
        # send it; Ctrl+C stops the streaming reply
        term.keys("Enter")
        term.wait_for("● generating", 60)
        time.sleep(0.3)  # the random model may end its reply (EOS) after a few hundred tokens
        term.keys("C-c")
        try:
            term.wait_for("■ stopped", 60)
        except AssertionError:
            print(term.screen())
            raise
        assert not status.exists()
        # a long conversation to scroll: PageUp, then Ctrl+End back down (the prompt keeps text)
        term.text("x")
        before = term.screen()
        term.keys("PageUp")
        wait_until(lambda: term.screen() != before, 10, "PageUp to scroll")
        assert "my draft EDITED" in term.screen()  # the user message is above the long reply
        term.keys("C-End")
        term.wait_for("■ stopped", 10)
        term.keys("BSpace")
        # Alt+Up highlights the reply; C copies it into tmux's buffer (tmux load-buffer)
        term.keys("M-Up")
        term.wait_for("c Copy", 10)
        term.keys("Escape")
        term.wait_for("f1 Help", 10)
        # Ctrl+C on the empty prompt: the first press warns, the second quits
        term.keys("C-c")
        term.wait_for("Press Ctrl+C again to quit", 10)
        assert not status.exists()
        term.keys("C-c")
        # the shell creates the file before `echo` writes the status into it: wait for the text
        wait_until(lambda: status.exists() and status.read_text().strip(), 30, "smolchat to exit")
        assert status.read_text().strip() == "0"
