"""smolchat.editor: which editor runs, and the text that comes back (a real scripted editor)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from smolchat.editor import edit_text, editor_command
from smolchat.errors import SmolchatError


def test_editor_command_order() -> None:
    def which(name: str) -> str | None:
        return None

    env = {"VISUAL": "code --wait", "EDITOR": "vim"}
    assert editor_command(env, which) == ["code", "--wait"]
    assert editor_command({"EDITOR": "vim -u NONE"}, which) == ["vim", "-u", "NONE"]
    assert editor_command(
        {"VISUAL": "  ", "EDITOR": ""}, lambda n: "/bin/vi" if n == "vi" else None
    ) == ["vi"]
    assert editor_command({}, lambda n: "/usr/bin/nano") == ["nano"]
    with pytest.raises(SmolchatError, match="no editor found: set \\$VISUAL or \\$EDITOR"):
        editor_command({}, which)
    with pytest.raises(SmolchatError, match="\\$EDITOR is not a valid command line"):
        editor_command({"EDITOR": "vim 'unbalanced"}, which)


def test_edit_text_round_trip_and_cleanup(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = tmp_path / "ed.py"
    script.write_text(
        "import os, stat, sys\n"
        "p = sys.argv[-1]\n"
        f"open({str(seen)!r}, 'w').write(p + '\\n' + oct(stat.S_IMODE(os.stat(p).st_mode)))\n"
        "t = open(p).read()\n"
        "open(p, 'w').write(t.replace('draft', 'text') + '\\n\\n')\n"
    )
    out = edit_text("my draft", env={"EDITOR": f"{sys.executable} {script}"})
    assert out == "my text"
    path, mode = seen.read_text().splitlines()
    assert path.endswith(".md") and mode == "0o600"
    assert not Path(path).exists()  # removed afterwards


def test_sigint_while_the_editor_runs_is_left_to_the_editor(tmp_path: Path) -> None:
    """Ctrl+C in a terminal reaches smolchat too: while the editor runs it is ignored, and the
    previous handler is back afterwards (also when the editor fails)."""
    before = signal.getsignal(signal.SIGINT)
    script = tmp_path / "ed.sh"
    script.write_text('#!/bin/sh\nkill -INT $PPID\nsleep 0.2\necho edited > "$1"\n')
    script.chmod(0o755)
    assert edit_text("draft", env={"EDITOR": str(script)}) == "edited"
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(SmolchatError, match="exited with status 1; the draft is unchanged"):
        edit_text("draft", env={"EDITOR": "false"})
    assert signal.getsignal(signal.SIGINT) is before
    script.write_text("#!/bin/sh\nkill -INT $$\n")  # the editor itself dies of Ctrl+C
    with pytest.raises(SmolchatError, match="was interrupted; the draft is unchanged"):
        edit_text("draft", env={"EDITOR": str(script)})
