"""smolchat: a terminal chat for SmolLM3, running in-process on PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smolchat.engine.types import GenerationEvent, GenerationStats, SamplingParams
from smolchat.errors import SmolchatError

__version__ = "0.1.0"
__all__ = [
    "GenerationEvent",
    "GenerationStats",
    "SamplingParams",
    "SmolchatError",
    "__version__",
    "load",
]

if TYPE_CHECKING:
    from smolchat.engine.engine import Engine


def load(model: str = "HuggingFaceTB/SmolLM3-3B", **kwargs: Any) -> Engine:
    """Load a model: a hub id, a local folder or a .gguf file. See :func:`smolchat.loader.load`."""
    from smolchat.loader import load as _load

    return _load(model, **kwargs)
