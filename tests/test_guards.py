"""CI guards run as tests, so the README's test command covers them: mypy over the package at
its configured strictness, and the import contracts of GUIDE section 2 (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    """The console script installed beside this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def check(args: list[str]) -> None:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]


@pytest.mark.slow
def test_mypy_finds_no_errors_in_the_package():
    check([sys.executable, "-m", "mypy", "smolchat"])


def test_the_import_contracts_of_the_layers_are_kept():
    check([tool("lint-imports")])
