"""Session fixtures for the remote backend's tests (imported by the test modules that use them).

``transformers_serve``: one real ``transformers serve`` on the SmolLM2 weights for the whole run
(skipped, with the reason, only when ``transformers[serving]`` is not installed).
``scripted``: a fresh :class:`~tests.remote.servers.ScriptedServer` per test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.servers import ScriptedServer, TransformersServe, smollm2_folder


@pytest.fixture(scope="session")
def smollm2_safetensors(smollm2_gguf: Path) -> Path:
    return smollm2_folder(smollm2_gguf)


@pytest.fixture(scope="session")
def transformers_serve(
    smollm2_safetensors: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServe]:
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers[serving] is not installed (no {', '.join(missing)})")
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    server = TransformersServe(smollm2_safetensors, log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.stop()
