"""Weight loading: sharded safetensors, and clear errors for broken or unsafe checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import smolchat
from smolchat.errors import ConfigError, ModelLoadError
from tests.tiny import build_smollm3


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_model):
    """The tiny model re-saved by transformers in several shards with an index."""
    import transformers

    out = tmp_path_factory.mktemp("sharded")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    ref.save_pretrained(out, max_shard_size="60KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, out / name)
    assert len(list(out.glob("*.safetensors"))) > 2
    return out


def test_sharded_checkpoint_equals_single_file(sharded, tiny_model):
    ids = list(range(5, 40))
    a = smolchat.load(str(sharded), device="cpu").logits(ids)
    b = smolchat.load(str(tiny_model), device="cpu").logits(ids)
    assert torch.equal(a, b)


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors_is_a_clear_error(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="damaged or truncated"):
        smolchat.load(str(folder), device="cpu")


def test_garbage_safetensors_is_a_clear_error(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="damaged or truncated"):
        smolchat.load(str(folder), device="cpu")


def test_missing_shard_is_named(tmp_path, sharded):
    folder = copy_model(sharded, tmp_path / "m")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (folder / victim).unlink()
    with pytest.raises(ModelLoadError, match="lacks weight shards"):
        smolchat.load(str(folder), device="cpu")


def test_folder_without_config_or_weights(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json not found"):
        smolchat.load(str(folder), device="cpu")
    folder = copy_model(tiny_model, tmp_path / "m2")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        smolchat.load(str(folder), device="cpu")


def test_pickle_weights_are_refused(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="never loads"):
        smolchat.load(str(folder), device="cpu")


def test_weights_that_do_not_match_the_config(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not match"):
        smolchat.load(str(folder), device="cpu")


def test_missing_tokenizer_is_a_clear_error(tmp_path, tiny_model):
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer"):
        smolchat.load(str(folder), device="cpu")


def test_bf16_checkpoint_on_cpu_follows_the_cpu_features(tmp_path, monkeypatch):
    from smolchat.model import device as loader

    folder = build_smollm3(tmp_path / "bf16", dtype="bfloat16")
    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: False)
    engine = smolchat.load(str(folder), device="cpu")
    assert engine.dtype == torch.float32  # dtype="auto" on a CPU without AVX-512 BF16 / AMX
    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: True)
    assert smolchat.load(str(folder), device="cpu").dtype == torch.bfloat16
    engine = smolchat.load(str(folder), device="cpu", dtype="bfloat16")
    assert engine.dtype == torch.bfloat16
