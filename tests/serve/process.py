"""``smolchat serve ...`` and ``smolchat ...`` as real subprocesses (the commands a user runs),
for tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BANNER = re.compile(r"on (http://\S+/v1)")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's smolchat


def command(*args: str) -> list[str]:
    """``smolchat ARGS`` as an argument list (``python -m smolchat``: this checkout's)."""
    return [sys.executable, "-m", "smolchat", *args]


def run_smolchat(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``smolchat ARGS`` to its end (stdin empty); its exit status, stdout and stderr."""
    return subprocess.run(
        command(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
    )


class ServeProcess:
    """Starts ``smolchat serve ARGS --port 0`` and waits for its banner; ``url`` ends in /v1;
    ``stderr_lines`` collects what it writes on stderr (read on a thread)."""

    def __init__(self, *args: str, timeout: float = 180.0, env: dict[str, str] | None = None):
        self.args = args
        self.timeout = timeout
        self.env = {**ENV, **(env or {})}
        self.stderr_lines: list[str] = []
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self._banner = threading.Event()

    def start(self, wait_for_banner: bool = True) -> ServeProcess:
        self.proc = subprocess.Popen(
            command("serve", *self.args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if wait_for_banner:
            self.wait_for(lambda: bool(self.url), "the server's banner")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            match = BANNER.search(line)
            if match and not self.url:
                self.url = match.group(1)

    def wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader take the last lines
                raise AssertionError(f"smolchat serve exited: {self.stderr_lines}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {self.timeout}s: {self.stderr_lines}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
