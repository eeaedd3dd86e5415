"""Model configuration parsed from ``config.json`` (transformers 4.x and 5.x spellings)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolchat.errors import ConfigError
from smolchat.model import registry


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings. ``kind``: default, linear, yarn or llama3."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0


@dataclass(frozen=True)
class ModelConfig:
    """Every field of SmolLM3Config that the network needs; unknown keys are ignored."""

    architecture: str = "smollm3"
    vocab_size: int = 128256
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 65536
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    use_rope: tuple[bool, ...] = ()  # per layer; False = NoPE layer
    sliding_window: tuple[int | None, ...] = ()  # per layer; None = full attention
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @property
    def n_rep(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        arch_list = d.get("architectures") or []
        arch_name = arch_list[0] if arch_list else None
        if arch_name is None:
            family = registry.by_model_type(str(d.get("model_type", "")))
            arch_name = family.causal_lm_class if family else d.get("model_type", "<none>")
        known = registry.known().values()
        arch = next((a for a in known if a.causal_lm_class == arch_name), None)
        if arch is None:
            raise ConfigError(
                f"unsupported architecture {arch_name!r}: smolchat runs "
                f"{' and '.join(registry.causal_lm_classes())} checkpoints"
            )
        try:
            return _build(cls, arch, d)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config.json is malformed ({exc}); re-download the model") from exc

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        return cls.from_dict(read_json(path, "config.json"))


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{what} not found at {path}: this folder is not a complete model; download it "
            "again (e.g. `hf download REPO`) or pass the folder that holds config.json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what} at {path} is not valid JSON ({exc}); re-download it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} at {path} is not a JSON object; re-download it")
    return data


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _rope(d: dict[str, Any]) -> RopeConfig:
    # transformers 5.x: rope_parameters {rope_type, rope_theta, ...};
    # 4.x: rope_theta + rope_scaling {type|rope_type, factor, ...} or None.
    params = dict(d.get("rope_parameters") or {})
    scaling = dict(d.get("rope_scaling") or {})
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", d.get("rope_theta", 10000.0))
    kind = merged.get("rope_type") or merged.get("type") or "default"
    if kind not in ("default", "linear", "yarn", "llama3"):
        raise ConfigError(f"unsupported RoPE scaling {kind!r}: use default, linear, yarn or llama3")
    orig = merged.get("original_max_position_embeddings")
    return RopeConfig(
        theta=float(theta),
        kind=kind,
        factor=float(merged.get("factor", 1.0) or 1.0),
        original_max_position_embeddings=int(orig) if orig else None,
        beta_fast=float(merged.get("beta_fast") or 32.0),
        beta_slow=float(merged.get("beta_slow") or 1.0),
        attention_factor=merged.get("attention_factor"),
        low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
        high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
    )


def _build(cls: type[ModelConfig], arch: registry.Architecture, d: dict[str, Any]) -> ModelConfig:
    n_layers = int(d["num_hidden_layers"])
    n_heads = int(d["num_attention_heads"])
    hidden = int(d["hidden_size"])
    head_dim = d.get("head_dim") or hidden // n_heads
    use_rope, sliding = arch.layers(d, n_layers)
    if d.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConfigError(f"unsupported activation {d.get('hidden_act')!r}: only silu is supported")
    return cls(
        architecture=arch.model_type,
        vocab_size=int(d["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(d["intermediate_size"]),
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=int(d.get("num_key_value_heads") or n_heads),
        head_dim=int(head_dim),
        hidden_act="silu",
        max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope=_rope(d),
        use_rope=use_rope,
        sliding_window=sliding,
        attention_bias=bool(d.get("attention_bias", False)),
        mlp_bias=bool(d.get("mlp_bias", False)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", arch.tie_word_embeddings)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_ids=_ids(d.get("eos_token_id")),
        pad_token_id=d.get("pad_token_id"),
    )


@dataclass(frozen=True)
class GenerationConfig:
    """``generation_config.json``: extra eos ids and default sampling values."""

    eos_token_ids: tuple[int, ...] = ()
    sampling: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationConfig:
        sampling = {}
        if d.get("do_sample") is False:
            sampling["temperature"] = 0.0
        for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
            if d.get(key) is not None and key not in sampling:
                sampling[key] = d[key]
        return cls(eos_token_ids=_ids(d.get("eos_token_id")), sampling=sampling)

    @classmethod
    def from_file(cls, path: Path) -> GenerationConfig:
        if not Path(path).exists():
            return cls()
        return cls.from_dict(read_json(path, "generation_config.json"))
