"""Copy text to the user's clipboard: over SSH, inside tmux, and on a local desktop.

Two ways, both tried (no textual here; the TUI passes its terminal writer):

* **OSC 52**: an escape sequence asking the *terminal* to set its clipboard. It travels over
  SSH; inside tmux it is wrapped in tmux's passthrough (``ESC P tmux; ... ESC \\``) so that it
  reaches the outer terminal (tmux needs ``set -g allow-passthrough on``, or
  ``set -g set-clipboard on`` for the unwrapped form). Nothing confirms it arrived.
* **A clipboard tool** when one is present: ``tmux load-buffer -w -`` inside tmux (tmux's
  paste buffer, and the outer clipboard where tmux can reach it), else ``wl-copy``
  (Wayland), ``xclip`` / ``xsel`` (X11, needs ``$DISPLAY``), ``pbcopy`` (macOS). Its exit
  status says whether it worked.

:func:`copy` returns a :class:`CopyReport` whose :meth:`~CopyReport.describe` tells the user
which ways were used, or why none worked.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["OSC52_LIMIT", "CopyReport", "copy", "osc52", "tools_for"]

OSC52_LIMIT = 100_000  # bytes of base64; many terminals ignore longer sequences
TOOL_TIMEOUT_S = 2.0

Runner = Callable[..., subprocess.CompletedProcess[bytes]]


def osc52(text: str, *, tmux: bool = False) -> str:
    """The OSC 52 sequence that sets the clipboard to ``text``; wrapped for tmux if asked.

    Inside the passthrough wrapper every ESC of the inner sequence is doubled.
    """
    payload = base64.b64encode(text.encode("utf-8")).decode("ascii")
    sequence = f"\x1b]52;c;{payload}\x07"
    if tmux:
        return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return sequence


def tools_for(env: Mapping[str, str], which: Callable[[str], str | None]) -> list[list[str]]:
    """The clipboard commands that may work here, best first (each an argv list whose first
    item is the program's name; ``which`` finds it)."""
    candidates: list[list[str]] = []
    if env.get("TMUX"):
        candidates.append(["tmux", "load-buffer", "-w", "-"])
    if env.get("WAYLAND_DISPLAY"):
        candidates.append(["wl-copy"])
    if env.get("DISPLAY"):
        candidates.append(["xclip", "-selection", "clipboard", "-in"])
        candidates.append(["xsel", "--clipboard", "--input"])
    candidates.append(["pbcopy"])
    return [argv for argv in candidates if which(argv[0])]


@dataclass
class CopyReport:
    """How a copy went: the ways that worked and, for the others, why not."""

    chars: int
    used: list[str] = field(default_factory=list)  # e.g. ["xclip", "OSC 52"]
    problems: list[str] = field(default_factory=list)  # one short reason each

    @property
    def ok(self) -> bool:
        return bool(self.used)

    def describe(self, what: str) -> str:
        """One line for the user: ``Copied WHAT with xclip and OSC 52 (N characters).``, or
        why nothing worked."""
        if not self.used:
            why = "; ".join(self.problems) or "no way to reach a clipboard"
            return f"Could not copy {what}: {why}."
        line = f"Copied {what} with {' and '.join(self.used)} ({self.chars:,} characters)."
        if all(way.startswith("OSC 52") for way in self.used):
            line += " No clipboard tool was found: the terminal must accept OSC 52."
        return line


def copy(
    text: str,
    *,
    terminal: Callable[[str], None] | None,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    run: Runner = subprocess.run,
) -> CopyReport:
    """Put ``text`` on the clipboard every way available; never raises.

    ``terminal`` writes a string to the terminal (None: no terminal, e.g. headless).
    """
    env = os.environ if env is None else env
    report = CopyReport(chars=len(text))
    data = text.encode("utf-8")
    tools = tools_for(env, which)
    for argv in tools:
        name = _tool_name(argv)
        program = which(argv[0]) or argv[0]
        try:
            done = run(
                [program, *argv[1:]],
                input=data,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=TOOL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            report.problems.append(f"{name} failed ({type(error).__name__})")
            continue
        if done.returncode == 0:
            report.used.append(name)
            break
        report.problems.append(f"{name} exited with {done.returncode}")
    if not tools:
        report.problems.append(_no_tool_reason(env))
    if terminal is None:
        report.problems.append("no terminal for OSC 52")
        return report
    tmux = bool(env.get("TMUX"))
    sequence = osc52(text, tmux=tmux)
    if len(sequence) > OSC52_LIMIT:
        report.problems.append(f"too long for OSC 52 ({len(data):,} bytes)")
        return report
    try:
        terminal(sequence)
    except Exception as error:  # a closed terminal: report it, never crash a copy
        report.problems.append(f"OSC 52 could not be written ({type(error).__name__})")
        return report
    report.used.append("OSC 52 via tmux passthrough" if tmux else "OSC 52")
    return report


def _tool_name(argv: Sequence[str]) -> str:
    return "tmux load-buffer" if argv[0] == "tmux" else argv[0]


def _no_tool_reason(env: Mapping[str, str]) -> str:
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("TMUX")):
        return "no clipboard tool (no $DISPLAY or $WAYLAND_DISPLAY, and pbcopy not found)"
    return "no clipboard tool found (wl-copy, xclip, xsel, pbcopy)"
