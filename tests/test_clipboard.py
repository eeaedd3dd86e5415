"""smolchat.clipboard: OSC 52 (plain and wrapped for tmux) and real clipboard tools."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from smolchat.clipboard import OSC52_LIMIT, copy, osc52, tools_for

TEXT = "naïve code:\n  print('hi')\n"


def fake_tool(folder: Path, name: str, *, status: int = 0) -> Path:
    """A real executable ``name`` on a PATH of its own that saves its stdin in ``name.out``."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f'#!/bin/sh\ncat > "{folder}/{name}.out"\nexit {status}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def which_in(folder: Path):
    return lambda name: shutil.which(name, path=str(folder))


def test_osc52_plain_and_tmux_passthrough() -> None:
    payload = base64.b64encode(TEXT.encode()).decode()
    assert osc52(TEXT) == f"\x1b]52;c;{payload}\x07"
    # tmux: DCS "tmux;" + the sequence with every ESC doubled + ST
    assert osc52(TEXT, tmux=True) == f"\x1bPtmux;\x1b\x1b]52;c;{payload}\x07\x1b\\"


def test_tools_follow_the_environment(tmp_path: Path) -> None:
    for name in ("wl-copy", "xclip", "xsel", "pbcopy", "tmux"):
        fake_tool(tmp_path, name)
    which = which_in(tmp_path)
    assert [t[0] for t in tools_for({}, which)] == ["pbcopy"]
    assert [t[0] for t in tools_for({"DISPLAY": ":0"}, which)] == ["xclip", "xsel", "pbcopy"]
    assert tools_for({"WAYLAND_DISPLAY": "w", "TMUX": "/s,1,0"}, which)[0] == [
        "tmux", "load-buffer", "-w", "-",
    ]  # fmt: skip
    assert tools_for({"DISPLAY": ":0"}, lambda name: None) == []


def test_copy_uses_a_real_tool_and_osc52(tmp_path: Path) -> None:
    fake_tool(tmp_path, "xclip")
    written: list[str] = []
    report = copy(TEXT, terminal=written.append, env={"DISPLAY": ":0"}, which=which_in(tmp_path))
    assert report.used == ["xclip", "OSC 52"]
    assert (tmp_path / "xclip.out").read_text() == TEXT
    assert written == [osc52(TEXT)]
    assert report.describe("the reply") == (
        f"Copied the reply with xclip and OSC 52 ({len(TEXT)} characters)."
    )


def test_a_failing_tool_falls_back_to_the_next(tmp_path: Path) -> None:
    fake_tool(tmp_path, "xclip", status=1)
    fake_tool(tmp_path, "xsel")
    report = copy(TEXT, terminal=None, env={"DISPLAY": ":0"}, which=which_in(tmp_path))
    assert report.used == ["xsel"] and report.problems[0] == "xclip exited with 1"
    assert (tmp_path / "xsel.out").read_text() == TEXT


def test_osc52_alone_says_so_and_nothing_says_why() -> None:
    written: list[str] = []
    report = copy(TEXT, terminal=written.append, env={}, which=lambda name: None)
    assert report.used == ["OSC 52"] and written
    assert "the terminal must accept OSC 52" in report.describe("it")
    report = copy(TEXT, terminal=None, env={}, which=lambda name: None)
    assert not report.ok
    assert report.describe("it") == (
        "Could not copy it: no clipboard tool (no $DISPLAY or $WAYLAND_DISPLAY, and pbcopy "
        "not found); no terminal for OSC 52."
    )


def test_too_long_for_osc52_and_a_broken_terminal() -> None:
    big = "x" * OSC52_LIMIT
    report = copy(big, terminal=lambda s: None, env={}, which=lambda name: None)
    assert not report.ok and "too long for OSC 52" in report.describe("it")

    def closed(text: str) -> None:
        raise OSError("closed")

    report = copy(TEXT, terminal=closed, env={}, which=lambda name: None)
    assert not report.ok and "OSC 52 could not be written (OSError)" in report.describe("it")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_inside_tmux_the_text_lands_in_the_tmux_buffer(tmp_path: Path) -> None:
    socket = tmp_path / "tmux.sock"
    name = f"keys-clip-{uuid.uuid4().hex[:6]}"
    subprocess.run(["tmux", "-S", str(socket), "new-session", "-d", "-s", name], check=True)
    try:
        env = {**os.environ, "TMUX": f"{socket},0,0"}
        written: list[str] = []
        old = os.environ.get("TMUX")
        os.environ["TMUX"] = env["TMUX"]  # the real tmux client finds its server through it
        try:
            report = copy(TEXT, terminal=written.append, env=env)
        finally:
            if old is None:
                del os.environ["TMUX"]
            else:
                os.environ["TMUX"] = old
        assert report.used[0] == "tmux load-buffer"
        assert report.used[-1] == "OSC 52 via tmux passthrough"
        assert written == [osc52(TEXT, tmux=True)]
        shown = subprocess.run(
            ["tmux", "-S", str(socket), "show-buffer"], capture_output=True, text=True, check=True
        ).stdout
        assert shown == TEXT
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True)
