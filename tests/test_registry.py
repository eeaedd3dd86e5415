"""Architectures register by ``model_type``: the two built in, and a new one from one file.

The new family's file is written into a folder on the architectures package's path, as a
developer would add ``smolchat/model/architectures/NAME.py``; the config reader, the loader,
the CPU decoder and the CUDA fast path's static step then run it, including its own decode
step (``network.decode``).
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from smolchat.engine.cpu import CPUDecoder
from smolchat.engine.fast import FastDecoder
from smolchat.errors import ConfigError
from smolchat.model import architectures, registry
from smolchat.model.cache import KVCache
from smolchat.model.config import ModelConfig
from tests.test_cache import ids_of, load_model
from tests.tiny import build_smollm3

TOY = '''
"""A toy family: Llama with no rotary embedding on any layer, and a decode step that counts."""

from smolchat.model.decode_step import PRE_NORM, DecodeStep
from smolchat.model.network import CausalLM
from smolchat.model.registry import Architecture, register

CALLS = []


def layer(ops, x, weights, kv):
    CALLS.append(type(ops).__name__)
    return PRE_NORM.layer(ops, x, weights, kv)


class ToyLM(CausalLM):
    decode = DecodeStep(layer=layer)


def layers(config, n_layers):
    return (False,) * n_layers, (None,) * n_layers


register(Architecture("toyllama", "ToyLlama", ToyLM, layers))
'''


def test_the_built_in_families():
    known = registry.known()
    assert {"llama", "smollm3"} <= set(known)
    assert known["smollm3"].tie_word_embeddings and not known["llama"].tie_word_embeddings
    assert registry.by_class_name("SmolLM3ForSequenceClassification") is known["smollm3"]
    assert registry.by_class_name("LlamaModel") is known["llama"]
    assert registry.by_class_name("MambaForCausalLM") is None
    with pytest.raises(ConfigError, match="LlamaForCausalLM and SmolLM3ForCausalLM"):
        ModelConfig.from_dict({"architectures": ["MambaForCausalLM"]})


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    folder = tmp_path / "more_architectures"
    folder.mkdir()
    (folder / "toyllama.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(architectures, "__path__", [*architectures.__path__, str(folder)])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.known()))
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        yield registry.known()["toyllama"]
    finally:
        sys.modules.pop("smolchat.model.architectures.toyllama", None)


@torch.inference_mode()
def test_a_new_family_is_one_file(toy_family, tmp_path):
    folder = build_smollm3(tmp_path / "m", arch="llama", with_tokenizer=False)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="toyllama", architectures=["ToyLlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder)
    assert type(model).__name__ == "ToyLM" and model.config.architecture == "toyllama"
    assert model.config.use_rope == (False,) * 4  # the family's own reading of config.json
    toy = sys.modules["smolchat.model.architectures.toyllama"]

    ids = ids_of(24, model.config.vocab_size, 1)
    expected = model(torch.tensor([ids]))[0, 16:]
    for make in (CPUDecoder, lambda m, c: FastDecoder(m, c, graphs=False, compile=False)):
        cache = KVCache(model.config, torch.device("cpu"), torch.float32, 64)
        cache.ensure_capacity(len(ids))
        model(torch.tensor([ids[:16]]), cache, 0)
        decoder = make(model, cache)
        toy.CALLS.clear()
        got = []
        for pos in range(16, len(ids)):
            if isinstance(decoder, CPUDecoder):
                got.append(decoder.step(ids[pos], pos))
            else:
                decoder.start(pos)
                decoder.stage(torch.tensor([ids[pos]]))
                decoder.step()
                got.append(decoder.logits[0])
        assert len(toy.CALLS) == 8 * 4  # the family's layer step ran, once per layer and token
        assert (torch.stack(got) - expected).abs().max().item() <= 2e-4
