"""Model resolution: local paths, the hub cache offline, clear errors when nothing is found."""

from __future__ import annotations

import shutil

import pytest

import smolchat
from smolchat.errors import ModelLoadError
from smolchat.model.hub import resolve


def fill_hub_cache(cache, repo_id: str, source) -> None:
    """Lay out ``source`` as huggingface_hub's cache does: refs/main -> snapshots/<sha>/."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(source, repo / "snapshots" / sha)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, tiny_model):
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-smollm3", tiny_model)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_loads_from_the_cache_offline(offline_cache):
    engine = smolchat.load("someone/tiny-smollm3", device="cpu")
    assert engine.model_name == "someone/tiny-smollm3"
    assert engine.tokenizer.encode("Paris")


def test_unknown_hub_id_offline_says_how_to_fix_and_suggests(offline_cache):
    with pytest.raises(ModelLoadError) as info:
        resolve("someone/tiny-smolm3")
    msg = str(info.value)
    assert "hf download" in msg and "HF_HUB_OFFLINE" in msg
    assert "someone/tiny-smollm3" in msg  # near match from the local cache
    assert "\n" not in msg


def test_local_folder_and_missing_paths(tmp_path, tiny_model):
    assert resolve(str(tiny_model)).kind == "dir"
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve(str(tmp_path / "nope" / "model.gguf"))
    with pytest.raises(ModelLoadError, match="neither a local path nor a hub id"):
        resolve("not a model")
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        resolve(str(text))
