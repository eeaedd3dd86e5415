"""Text hygiene: valid Unicode for the tokenizer, and terminal-safe text for display.

Text reaches smolchat from many places: typed or pasted into the TUI, piped to ``-p -`` (where
undecodable bytes become lone surrogates), loaded from a transcript, or produced by the model.
Two rules keep that harmless:

* :func:`valid_text`: the tokenizer only takes valid Unicode, so lone surrogates become U+FFFD.
* :func:`lf_line_ends`: a prompt's lines end with ``\n`` only, however they were pasted.
* :func:`printable`: a terminal obeys control characters, so text shown on screen never carries
  them: an ESC in a reply could clear the screen, retitle the window or write the clipboard
  (OSC 52). C0 controls (except newline and tab) are shown as their Unicode "control pictures"
  (ESC as ␛), DEL as ␡, C1 controls and lone surrogates as U+FFFD, and carriage returns go.
  Only what is displayed changes; the conversation keeps the text as it was.
"""

from __future__ import annotations

import re

__all__ = ["lf_line_ends", "printable", "valid_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls except \t and \n, DEL, C1 controls, lone surrogates
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the rest unchanged)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def lf_line_ends(text: str) -> str:
    """``text`` with its line ends as ``\n``: a terminal's paste may carry ``\r\n`` or a lone
    ``\r`` (what the Enter key sends) between lines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _picture(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if char == "\r":
        return ""
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ .. ␟
    if code == 0x7F:
        return "\u2421"  # ␡
    return "\ufffd"


def printable(text: str) -> str:
    """``text`` safe to show in a terminal: no control character survives (see the module)."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_picture, text.replace("\r\n", "\n"))
