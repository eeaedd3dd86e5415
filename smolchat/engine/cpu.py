"""The CPU decode step: one token through the decoder with as few torch ops as possible.

At batch 1 on a CPU, a 135M-parameter model spends about as long dispatching small ops as in
its matmuls. The general ``CausalLM.forward`` (any T, masks, windows, float32 norms) issues
~35 ops a layer; this step issues ~20: fused RMSNorm (``F.rms_norm``), one q/k/v matvec, RoPE on
q and k together with a precomputed cos/sin row, K/V written straight into the cache, one
attention call over the cache, one gate/up matvec, SiLU x up, down-proj, residual adds. It
computes the same function as ``CausalLM.forward`` for one token (same weights, same cache),
in the model's dtype; tests check it against the general forward.

The layer math is the model's own one-token step (:mod:`smolchat.model.decode_step`) run
with :class:`~smolchat.model.decode_step.TorchOps`; this module holds the per-token host state
(the rope row, the cache slots). Used by :class:`smolchat.engine.engine.Engine` for every
decode step on the CPU (prefill and ``Engine.logits`` keep the general forward), sliding-window
models included. ``SMOLCHAT_CPU_STEP=0`` turns it off.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from smolchat.model.cache import KVCache
from smolchat.model.decode_step import DecodeWeights, HostKV, TorchOps, rope_row
from smolchat.model.network import CausalLM

ENV_DISABLE = "SMOLCHAT_CPU_STEP"


def cpu_step_enabled(model: CausalLM, device: torch.device) -> bool:
    """On the CPU, unless turned off."""
    if device.type != "cpu":
        return False
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("0", "false", "no", "off")


def _module(linear: nn.Module) -> nn.Module:
    return linear


class CPUDecoder:
    """``step(token_id, pos)``: the logits (V,) after feeding one token at ``pos``."""

    def __init__(self, model: CausalLM, cache: KVCache, ops: TorchOps | None = None) -> None:
        self.model, self.cache = model, cache
        self.ops = ops or TorchOps()
        self.weights: DecodeWeights[nn.Module] = model.decode_weights(_module)
        self.embed = model.model.embed_tokens
        self._rope_pos = -1
        self._rope: tuple[torch.Tensor, ...] = ()

    def _rope_at(self, pos: int) -> tuple[torch.Tensor, ...]:
        if pos != self._rope_pos:
            self._rope, self._rope_pos = rope_row(self.model.rotary, pos, torch.device("cpu")), pos
        return self._rope

    @torch.inference_mode()
    def step(self, token_id: int, pos: int) -> torch.Tensor:
        cos, sin = self._rope_at(pos)
        x = self.embed(torch.tensor([[token_id]]))[0]  # (1, C)
        kvs = [HostKV(k, v, pos, cos, sin) for k, v in zip(self.cache.k, self.cache.v, strict=True)]
        return self.model.decode.run(self.ops, x, self.weights, kvs)[0]  # (V,)
