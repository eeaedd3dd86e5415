"""Where smolchat keeps its files, per platform (through platformdirs).

Linux and other Unixes follow the XDG base directories: data in ``$XDG_DATA_HOME/smolchat``
(``~/.local/share/smolchat``), the config file in ``$XDG_CONFIG_HOME/smolchat``
(``~/.config/smolchat``), caches in ``$XDG_CACHE_HOME/smolchat`` (``~/.cache/smolchat``); a
relative ``XDG_*`` value is ignored, as the XDG spec says. macOS and Windows get their usual
places (``~/Library/Application Support/smolchat``, ``%LOCALAPPDATA%\\smolchat``). Nothing is
created here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP_NAME = "smolchat"
CONFIG_FILE = "config.toml"


def _xdg(var: str, fallback: str, finder: Callable[..., Path]) -> Path:
    value = os.environ.get(var, "")
    if sys.platform not in ("win32", "darwin") and value and not os.path.isabs(value):
        return Path.home() / fallback / APP_NAME  # the spec: a relative value is ignored
    return Path(finder(APP_NAME, appauthor=False))


def user_data_dir() -> Path:
    """The per-user data folder (transcripts live under it)."""
    return _xdg("XDG_DATA_HOME", ".local/share", platformdirs.user_data_path)


def user_config_dir() -> Path:
    """The per-user config folder (``config.toml``)."""
    return _xdg("XDG_CONFIG_HOME", ".config", platformdirs.user_config_path)


def user_cache_dir() -> Path:
    """The per-user cache folder (things smolchat can rebuild)."""
    return _xdg("XDG_CACHE_HOME", ".cache", platformdirs.user_cache_path)


def default_transcripts_dir() -> Path:
    """The folder where conversations are autosaved by default."""
    return user_data_dir() / "transcripts"


def default_config_file() -> Path:
    """``config.toml`` in :func:`user_config_dir`, or the file ``SMOLCHAT_CONFIG`` names."""
    named = os.environ.get("SMOLCHAT_CONFIG")
    return Path(named).expanduser() if named else user_config_dir() / CONFIG_FILE


def user_state_dir() -> Path:
    """The per-user state folder (``$XDG_STATE_HOME/smolchat``: the prompt history)."""
    return _xdg("XDG_STATE_HOME", ".local/state", platformdirs.user_state_path)


def default_history_file() -> Path:
    """The prompt history shared by the TUI and ``--plain``."""
    return user_state_dir() / "history.jsonl"
