"""Llama (and SmolLM2, which is a Llama): RoPE on every layer, full attention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smolchat.model.network import CausalLM
from smolchat.model.registry import Architecture, LayerPattern, register


def layers(config: Mapping[str, Any], n_layers: int) -> LayerPattern:
    return (True,) * n_layers, (None,) * n_layers


LLAMA = register(Architecture("llama", "Llama", CausalLM, layers))
