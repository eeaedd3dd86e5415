"""The decoder families smolchat runs, registered by config.json's ``model_type``.

An architecture is one module in :mod:`smolchat.model.architectures` that calls
:func:`register` with an :class:`Architecture`: how its config.json (and GGUF metadata) names
per-layer facts, and the network class, which owns the forward pass and the one-token decode
step (:mod:`smolchat.model.decode_step`) that the CPU decoder and the CUDA fast path run.
Every module in that package is imported on the first lookup, so adding a family is adding
one file there.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smolchat.model.network import CausalLM

# (use_rope per layer, sliding window per layer) from config.json and the layer count
LayerPattern = tuple[tuple[bool, ...], tuple[int | None, ...]]


def _no_gguf_extras(key: Callable[[str, Any], Any], n_layers: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Architecture:
    """One decoder family (e.g. SmolLM3 = Llama + NoPE layers)."""

    model_type: str  # config.json's model_type; also GGUF's general.architecture
    class_prefix: str  # transformers' classes: prefix + "ForCausalLM", "Model", ...
    network: type[CausalLM]  # owns forward() and the one-token decode step
    layers: Callable[[Mapping[str, Any], int], LayerPattern]  # config.json -> per-layer facts
    tie_word_embeddings: bool = False  # when config.json does not say
    # GGUF metadata (``key(name, default)`` reads ``{arch}.{name}``) -> extra config.json keys
    gguf_config: Callable[[Callable[[str, Any], Any], int], dict[str, Any]] = _no_gguf_extras

    @property
    def causal_lm_class(self) -> str:
        return self.class_prefix + "ForCausalLM"


_REGISTRY: dict[str, Architecture] = {}
_discovered = False


def register(arch: Architecture) -> Architecture:
    """Make ``arch`` known under its ``model_type`` (a later registration replaces it)."""
    _REGISTRY[arch.model_type] = arch
    return arch


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    from smolchat.model import architectures

    for info in pkgutil.iter_modules(architectures.__path__):
        importlib.import_module(f"{architectures.__name__}.{info.name}")


def known() -> dict[str, Architecture]:
    """Every registered architecture by ``model_type``."""
    _discover()
    return dict(_REGISTRY)


def by_model_type(model_type: str) -> Architecture | None:
    return known().get(model_type)


def by_class_name(name: str) -> Architecture | None:
    """The family of a transformers class name (``SmolLM3ForCausalLM``, ``LlamaModel``...),
    longest prefix first."""
    for arch in sorted(known().values(), key=lambda a: -len(a.class_prefix)):
        if name.startswith(arch.class_prefix):
            return arch
    return None


def causal_lm_classes() -> list[str]:
    return [a.causal_lm_class for a in known().values()]
