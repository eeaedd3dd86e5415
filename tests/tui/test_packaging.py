"""The wheel ships every package, the TUI stylesheets and the themes (as smolchat/themes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "smolchat").rglob("*.py")
    }
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages"
    assert config["package-dir"] == {"smolchat.themes": "themes"}


@pytest.mark.slow
def test_wheel_ships_themes_and_stylesheets(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    for name in ("smolchat", "themes"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("smolchat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for theme in (ROOT / "themes").glob("*.tcss"):
        assert f"smolchat/themes/{theme.name}" in names
    for sheet in (ROOT / "smolchat" / "tui").glob("*.tcss"):
        assert f"smolchat/tui/{sheet.name}" in names
    # installed (unzipped) without the checkout, the themes are found inside the package
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from smolchat.tui.themes import available_themes as a; print(sorted(a().items()))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(site / "smolchat" / "themes" / "dark.tcss") in out.stdout
    assert str(ROOT) not in out.stdout
