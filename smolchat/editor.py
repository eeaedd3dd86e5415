"""Edit a draft in the user's editor (Ctrl+G in the TUI): ``$VISUAL``, then ``$EDITOR``, then a
sensible default (``nano`` where it exists, else ``vi``).

The draft goes to a private temporary file (mode 0600) with a ``.md`` suffix, the editor runs
on it in the foreground, and the file's text comes back without its trailing newline; the file
is removed afterwards. No textual here: the TUI suspends itself around :func:`edit_text`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from smolchat.errors import SmolchatError

__all__ = ["editor_command", "edit_text", "sigint_ignored"]

FALLBACKS = ("nano", "vi")


def editor_command(
    env: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The editor to run, as an argv list (``$VISUAL`` and ``$EDITOR`` may carry options)."""
    env = os.environ if env is None else env
    for name in ("VISUAL", "EDITOR"):
        value = env.get(name, "").strip()
        if value:
            try:
                argv = shlex.split(value)
            except ValueError:
                raise SmolchatError(
                    f"${name} is not a valid command line: {value[:60]!r}"
                ) from None
            if argv:
                return argv
    for name in FALLBACKS:
        if which(name):
            return [name]
    raise SmolchatError("no editor found: set $VISUAL or $EDITOR (e.g. export EDITOR=nano)")


def _ignore(signum: int, frame: object) -> None:
    """A caught (not ignored) SIGINT: the editor, started by exec, gets the default back."""


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl+C in the terminal while the editor runs reaches the whole foreground process
    group: inside this block smolchat lets it pass (the editor handles it), then the previous
    handler comes back, also on errors. A no-op off the main thread (signals are set there only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _ignore)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def edit_text(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> str:
    """Open ``text`` in the editor and return what was saved (trailing newlines stripped).

    Raises SmolchatError (one line) if the editor cannot start or exits with an error (Ctrl+C
    in it included: smolchat itself ignores SIGINT meanwhile); the caller keeps its draft then.
    """
    argv = editor_command(env)
    fd, name = tempfile.mkstemp(prefix="smolchat-draft-", suffix=".md")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + ("\n" if text and not text.endswith("\n") else ""))
        try:
            with sigint_ignored():
                done = run([*argv, str(path)], check=False)
        except OSError as error:
            raise SmolchatError(
                f"could not start the editor {argv[0]!r}: {error.strerror}"
            ) from None
        if done.returncode == -signal.SIGINT:
            raise SmolchatError(f"the editor {argv[0]!r} was interrupted; the draft is unchanged")
        if done.returncode != 0:
            raise SmolchatError(
                f"the editor {argv[0]!r} exited with status {done.returncode}; "
                "the draft is unchanged"
            )
        return path.read_text(encoding="utf-8", errors="replace").rstrip("\n")
    finally:
        path.unlink(missing_ok=True)
