"""Themes: ``.tcss`` files shipped in ``themes/`` (no textual import here, the CLI uses it).

A theme file starts with palette declarations (``$primary: #d79921;`` ...) that become a
Textual theme, so every built-in widget follows it; the rules after them style smolchat's
own widgets and may use any Textual variable (``$primary``, ``$text-muted``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import smolchat

DEFAULT_THEME = "dark"
PALETTE_KEYS = (
    "primary",
    "secondary",
    "accent",
    "warning",
    "error",
    "success",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_DECLARATION = re.compile(r"^\s*\$([a-z][a-z0-9-]*)\s*:\s*([^;]+);", re.MULTILINE)


@dataclass(frozen=True)
class ThemeSpec:
    """One theme file: its name, CSS source and the palette declared at its top."""

    name: str
    path: Path
    css: str  # the rules, without the palette declarations
    palette: dict[str, str]

    @property
    def dark(self) -> bool:
        """Whether the background is dark (decides Textual's light/dark derivations)."""
        return _brightness(self.palette.get("background", "#000000")) < 0.5


def theme_dirs() -> list[Path]:
    """Where shipped themes live: inside the installed package, or the checkout's ``themes/``."""
    package = Path(smolchat.__file__).resolve().parent
    return [package / "themes", package.parent / "themes"]


def available_themes() -> dict[str, Path]:
    """Theme name -> file, sorted by name (the first folder that has a name wins)."""
    found: dict[str, Path] = {}
    for folder in theme_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.tcss")):
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def load_theme(name: str) -> ThemeSpec:
    """Read a theme by name; ``KeyError`` (listing the known names) if there is none."""
    themes = available_themes()
    if name not in themes:
        raise KeyError(f"unknown theme {name!r}; themes: {', '.join(themes) or 'none found'}")
    path = themes[name]
    source = path.read_text(encoding="utf-8")
    palette = {k: v.strip() for k, v in _DECLARATION.findall(source) if k in PALETTE_KEYS}
    if "primary" not in palette:
        raise KeyError(f"theme {name!r} ({path}) declares no $primary colour")
    # the palette reaches the rules as Textual's own variables, through the Textual theme
    rules = _DECLARATION.sub(lambda m: "" if m.group(1) in PALETTE_KEYS else m.group(0), source)
    return ThemeSpec(name, path, rules, palette)


def _brightness(colour: str) -> float:
    """Perceived brightness (0..1) of a ``#rrggbb`` colour; 0 for anything else."""
    match = re.fullmatch(r"#([0-9a-fA-F]{6})", colour.strip())
    if not match:
        return 0.0
    r, g, b = (int(match.group(1)[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return 0.299 * r + 0.587 * g + 0.114 * b


# ---- 256-colour terminals -------------------------------------------------------------------
_CUBE = (0, 95, 135, 175, 215, 255)
XTERM_256 = [(r, g, b) for r in _CUBE for g in _CUBE for b in _CUBE] + [
    (v, v, v) for v in range(8, 248, 10)
]  # colours 16-255 (0-15 are the terminal's own, so never relied on)


def nearest_256(hex_colour: str) -> str:
    """The xterm-256 colour nearest to ``#rrggbb`` (Euclidean RGB), as ``#rrggbb``.

    Rich's own downgrade rounds each channel into the 6x6x6 cube unless the colour is nearly
    grey, which turns nord's blue-grey #2e3440 into teal #005f5f; the nearest colour is the
    dark grey #3a3a3a.
    """
    value = hex_colour.strip().lstrip("#")
    if len(value) != 6:
        return hex_colour
    try:
        r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        return hex_colour
    best = min(XTERM_256, key=lambda c: (c[0] - r) ** 2 + (c[1] - g) ** 2 + (c[2] - b) ** 2)
    return "#{:02x}{:02x}{:02x}".format(*best)


def palette_for(palette: dict[str, str], color_system: str | None) -> dict[str, str]:
    """``palette`` as the terminal can show it: on a 256-colour terminal every colour is
    replaced by its nearest xterm-256 colour (hue kept), elsewhere it is unchanged."""
    if color_system not in ("256", "eight_bit"):
        return dict(palette)
    return {name: nearest_256(colour) for name, colour in palette.items()}
