"""Where smolchat keeps user data (transcripts), per platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "smolchat"


def user_data_dir() -> Path:
    """The per-user data folder for smolchat (not created here).

    Linux and other Unixes: ``$XDG_DATA_HOME/smolchat`` or ``~/.local/share/smolchat``
    (a relative ``XDG_DATA_HOME`` is ignored, as the XDG spec says). macOS:
    ``~/Library/Application Support/smolchat`` unless ``XDG_DATA_HOME`` is set. Windows:
    ``%LOCALAPPDATA%\\smolchat`` (falling back to ``%APPDATA%``, then the home folder).
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
        return root / APP_NAME
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    return Path.home() / ".local" / "share" / APP_NAME


def default_transcripts_dir() -> Path:
    """The folder where conversations are autosaved by default."""
    return user_data_dir() / "transcripts"
