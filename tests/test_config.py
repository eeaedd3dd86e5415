"""config.json parsing: both transformers spellings, derived fields, refusals."""

from __future__ import annotations

import json

import pytest

from smolchat.errors import ConfigError
from smolchat.model.config import GenerationConfig, ModelConfig

SMOLLM3_V5 = {
    "architectures": ["SmolLM3ForCausalLM"],
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "max_position_embeddings": 65536,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0},
    "eos_token_id": 128012,
    "bos_token_id": 128000,
    "pad_token_id": 128004,
    "no_rope_layer_interval": 4,
    "tie_word_embeddings": True,
    "some_future_key": {"ignored": True},
}


def test_smollm3_defaults_and_derived_fields():
    cfg = ModelConfig.from_dict(SMOLLM3_V5)
    assert cfg.head_dim == 128 and cfg.n_rep == 4
    assert cfg.rope.theta == 5e6 and cfg.rope.kind == "default"
    assert [i for i, r in enumerate(cfg.use_rope) if not r] == list(range(3, 36, 4))
    assert cfg.sliding_window == (None,) * 36
    assert cfg.eos_token_ids == (128012,)


def test_v4_spelling_with_yarn_equals_v5():
    v4 = {k: v for k, v in SMOLLM3_V5.items() if k != "rope_parameters"}
    v4 |= {
        "rope_theta": 5e6,
        "rope_scaling": {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 65536},
    }
    v5 = SMOLLM3_V5 | {
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 5e6,
            "factor": 2.0,
            "original_max_position_embeddings": 65536,
        }
    }
    assert ModelConfig.from_dict(v4) == ModelConfig.from_dict(v5)
    assert ModelConfig.from_dict(v4).rope.kind == "yarn"


def test_sliding_window_only_on_nope_layers():
    cfg = ModelConfig.from_dict(
        SMOLLM3_V5 | {"use_sliding_window": True, "sliding_window": 4096, "num_hidden_layers": 8}
    )
    assert cfg.sliding_window == (None, None, None, 4096, None, None, None, 4096)


def test_eos_list_and_generation_config(tmp_path):
    cfg = ModelConfig.from_dict(SMOLLM3_V5 | {"eos_token_id": [128001, 128012]})
    assert cfg.eos_token_ids == (128001, 128012)
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"eos_token_id": 128012, "temperature": 0.6, "top_p": 0.95}))
    gen = GenerationConfig.from_file(path)
    assert gen.eos_token_ids == (128012,)
    assert gen.sampling == {"temperature": 0.6, "top_p": 0.95}
    assert GenerationConfig.from_file(tmp_path / "absent.json") == GenerationConfig()


def test_llama_uses_rope_everywhere_and_defaults_untied():
    llama = SMOLLM3_V5 | {"architectures": ["LlamaForCausalLM"]}
    del llama["tie_word_embeddings"]
    cfg = ModelConfig.from_dict(llama)
    assert all(cfg.use_rope) and not cfg.tie_word_embeddings


def test_unknown_architecture_is_refused_by_name():
    with pytest.raises(ConfigError, match="MistralForCausalLM"):
        ModelConfig.from_dict(SMOLLM3_V5 | {"architectures": ["MistralForCausalLM"]})


def test_malformed_config_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_file(path)
    bad = dict(SMOLLM3_V5)
    del bad["hidden_size"]
    with pytest.raises(ConfigError, match="malformed"):
        ModelConfig.from_dict(bad)
