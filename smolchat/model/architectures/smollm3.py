"""SmolLM3: Llama with NoPE layers (no rotary embedding on every 4th layer by default) and an
optional sliding window on the NoPE layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from smolchat.model.network import CausalLM
from smolchat.model.registry import Architecture, LayerPattern, register


def layers(config: Mapping[str, Any], n_layers: int) -> LayerPattern:
    interval = int(config.get("no_rope_layer_interval") or 4)
    flags = config.get("no_rope_layers")
    if flags is None:
        flags = [int((i + 1) % interval != 0) for i in range(n_layers)]
    use_rope = tuple(bool(flags[i]) for i in range(n_layers))
    window = config.get("sliding_window") if config.get("use_sliding_window") else None
    layer_types = config.get("layer_types")
    if layer_types is None:
        layer_types = [
            "sliding_attention" if window is not None and not use_rope[i] else "full_attention"
            for i in range(n_layers)
        ]
    sliding = tuple(
        int(window) if window is not None and layer_types[i] == "sliding_attention" else None
        for i in range(n_layers)
    )
    return use_rope, sliding


def gguf_config(key: Callable[[str, Any], Any], n_layers: int) -> dict[str, Any]:
    """llama.cpp stores no NoPE flag and hard-codes every 4th layer; use explicit metadata
    when a file has it."""
    flags = key("no_rope_layers", None)
    interval = int(key("no_rope_layer_interval", key("no_rope_layer_step", 4)))
    if flags is None:
        flags = [int((i + 1) % interval != 0) for i in range(n_layers)]
    out: dict[str, Any] = {
        "no_rope_layers": [int(x) for x in flags],
        "no_rope_layer_interval": interval,
        "use_sliding_window": False,
        "sliding_window": None,
    }
    window = key("attention.sliding_window", None)
    if window:
        out.update(use_sliding_window=True, sliding_window=int(window))
    return out


SMOLLM3 = register(
    Architecture(
        "smollm3", "SmolLM3", CausalLM, layers, tie_word_embeddings=True, gguf_config=gguf_config
    )
)
