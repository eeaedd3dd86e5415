"""A real uvicorn serving smolchat's engine on 127.0.0.1 (a free port), one per module."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")


@pytest.fixture(scope="module")
def tiny_engine(tiny_model):
    import smolchat

    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")
