"""Modules built on the meta device, without running their weight initialisers.

The loader builds every network on ``torch.device("meta")`` and then assigns the checkpoint's
tensors, so initial values are never used. Running the initialisers anyway is not free:
``nn.Embedding``'s ``normal_`` on a meta tensor goes through ``torch._refs``, whose wrapper
imports ``torch._dynamo`` (and with it sympy and the FSDP modules): 4.2 s on a 2-core CPU and
~6-9 s on the H200 machine, on every launch, for nothing. transformers skips them the same way
(``no_init_weights``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_INITIALISED = (nn.Linear, nn.Embedding)


@contextmanager
def on_meta() -> Iterator[None]:
    """``with on_meta(): net = Net(cfg)``: parameters on meta, ``reset_parameters`` skipped.

    Only ``nn.Linear`` and ``nn.Embedding`` (the modules with initialisers that our networks
    and bitsandbytes' ``Linear4bit`` use) are affected, and only inside the block."""
    saved = {cls: cls.__dict__["reset_parameters"] for cls in _INITIALISED}
    try:
        for cls in _INITIALISED:
            cls.reset_parameters = _skip  # type: ignore[method-assign]
        with torch.device("meta"):
            yield
    finally:
        for cls, method in saved.items():
            cls.reset_parameters = method  # type: ignore[method-assign]


def _skip(self: nn.Module) -> None:
    """A meta tensor has no values to initialise."""
