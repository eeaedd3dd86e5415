"""Helpers of the reliability tests: the real ``smolchat`` command, its one-line errors, tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "smolchat: error: "


def smolchat_command() -> list[str]:
    """The installed ``smolchat`` script next to this Python, else ``python -m smolchat``."""
    script = Path(sys.executable).parent / "smolchat"
    return [str(script)] if script.exists() else [sys.executable, "-m", "smolchat"]


def quiet_vars(tmp: Path, **extra: str) -> dict[str, str]:
    """Variables that keep smolchat away from the user's data and the network."""
    env = {
        "HOME": str(tmp / "home"),
        "XDG_DATA_HOME": str(tmp / "data"),
        "HF_HUB_CACHE": str(tmp / "hub-cache"),
        "HF_HOME": str(tmp / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


def quiet_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment plus :func:`quiet_vars`."""
    return {**os.environ, **quiet_vars(tmp, **extra)}


def run_smolchat(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``smolchat`` command (bytes in and out)."""
    return subprocess.run(
        [*smolchat_command(), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """Check the CLI error contract (one line on stderr, status 1, no traceback, no stdout)."""
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, (result.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR_PREFIX), err
    assert result.stdout == b"", result.stdout
    return lines[0].removeprefix(ERROR_PREFIX)


ANSWERED = (0, 3)  # exit statuses of a -p answer: complete, or cut (a tiny --max-new-tokens)
CUT_NOTE = "smolchat: note: the answer was cut"


def without_cut_note(stderr: bytes) -> str:
    """stderr less the one-line note of a cut -p answer (tests that cut replies to be fast)."""
    lines = stderr.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith(CUT_NOTE))


# ---- tmux --------------------------------------------------------------------------------
HAVE_TMUX = shutil.which("tmux") is not None


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class Terminal:
    """One tmux session running a command; ``screen()`` is what a user sees."""

    def __init__(self, name: str) -> None:
        self.name = name

    def screen(self) -> str:
        return tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        tmux("send-keys", "-t", self.name, *keys)

    def text(self, text: str) -> None:
        tmux("send-keys", "-t", self.name, "-l", text)

    def program_pid(self) -> int:
        """The pid of the program the pane's shell runs (its only child)."""
        shell = tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").strip()
        out = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout
        children = [int(p) for p in out.split()]
        assert len(children) == 1, children
        return children[0]

    def resize(self, width: int, height: int) -> None:
        tmux("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        wait_until(lambda: needle in self.screen(), timeout, f"{needle!r} on the screen")


@contextmanager
def terminal(
    argv: list[str], status: Path, *, env: dict[str, str], size: tuple[int, int] = (100, 30)
) -> Iterator[Terminal]:
    """Run ``argv`` in a fresh tmux session (``env``: variables to set); its exit status lands
    in ``status``."""
    name = f"smolchat-rel-{uuid.uuid4().hex[:8]}"
    script = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(status))}"
    width, height = size
    variables = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    tmux(
        "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
        "-c", str(ROOT), *variables, "bash", "--norc", "--noprofile", "-c", script,
        ";", "set-option", "-t", name, "remain-on-exit", "on",  # the last screen stays readable
    )  # fmt: skip
    try:
        yield Terminal(name)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
