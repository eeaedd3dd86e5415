"""One token through the decoder: the layer's decode step, written once against an ops seam.

The step is the model's math for batch 1, one token (pre-norm residual layer, fused q/k/v,
attention over the KV cache, SwiGLU MLP)::

    qkv = norm_linear(x, ln1, qkv)                      # attention_input
    y   = attention(qkv, spec, kv)                      # RoPE, K/V write, attention
    x   = linear_residual(y, o, x)                      # attention_output ...
    a   = norm_linear_gated(x, ln2, gate_up, inter)
    x   = linear_residual(a, down, x)

and, after the last layer, ``logits = norm_linear(x, final_norm, lm_head)``: the functions
below, bundled as :data:`PRE_NORM` (a :class:`DecodeStep`), which a network class names as
its ``decode`` (see :mod:`smolchat.model.registry`). *How* each op
runs is the caller's choice: a :class:`DecodeOps` implementation. :class:`TorchOps` (here) is
the plain torch one (any device, eager, host position); the engine has the CUDA-graph ops
(device position, fixed cache bucket, compiled by Inductor) and the Triton-kernel ops
(:mod:`smolchat.engine.fast`), and the lean CPU decoder uses :class:`TorchOps`
(:mod:`smolchat.engine.cpu`). All of them run these functions, so a test of the step with any
ops against :meth:`CausalLM.forward` pins the code the fast paths run.

Weights reach the ops as ``W``, whatever that ops' linear takes (an ``nn.Module``, a
weight description, a kernel's matrix); the model says which module is which
(:func:`smolchat.model.network.CausalLM.decode_weights`). ``K`` is one layer's KV-cache slot
and position as that ops' attention takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

W = TypeVar("W")
K = TypeVar("K")
W_contra = TypeVar("W_contra", contravariant=True)
K_contra = TypeVar("K_contra", contravariant=True)


class LayerSpec(NamedTuple):
    """A layer's static facts: all the step needs besides tensors (constants when compiled)."""

    n_heads: int
    n_kv: int
    head_dim: int
    inter: int  # MLP width: gate rows [0, inter), up rows [inter, 2 inter)
    eps: float  # RMSNorm epsilon
    rope_scaling: float  # attention scaling folded into cos/sin (YaRN), else 1.0
    use_rope: bool  # False: a NoPE layer
    window: int | None  # sliding window (keys), None = full attention


class LayerWeights(NamedTuple, Generic[W]):
    """One decoder layer's weights as the ops take them (a tuple: cheap to guard, to pass)."""

    ln1: torch.Tensor  # (C,) input RMSNorm
    qkv: W  # (H hd + 2 n_kv hd, C)
    o: W  # (C, H hd)
    ln2: torch.Tensor  # (C,) post-attention RMSNorm
    gate_up: W  # (2 I, C)
    down: W  # (C, I)
    spec: LayerSpec


class Head(NamedTuple, Generic[W]):
    """The final RMSNorm and the LM head."""

    norm: torch.Tensor  # (C,)
    eps: float
    weight: W  # (V, C)


class DecodeWeights(NamedTuple, Generic[W]):
    layers: tuple[LayerWeights[W], ...]
    head: Head[W]


class DecodeOps(Protocol[W_contra, K_contra]):
    """The ops one decode step is made of. Shapes are the implementation's own (``(1, C)``
    rows for torch, ``(C,)`` vectors for the Triton kernels); dtypes stay the model's."""

    def norm_linear(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: W_contra
    ) -> torch.Tensor:
        """``linear(rms_norm(x) * norm, w)``: (.., K) -> (.., N)."""
        ...

    def norm_linear_gated(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: W_contra, inter: int
    ) -> torch.Tensor:
        """``silu(gate) * up`` of :meth:`norm_linear` (gate: first ``inter`` outputs)."""
        ...

    def linear_residual(self, x: torch.Tensor, w: W_contra, res: torch.Tensor) -> torch.Tensor:
        """``res + linear(x, w)``; may write the result into ``res`` and return it."""
        ...

    def attention(self, qkv: torch.Tensor, spec: LayerSpec, kv: K_contra) -> torch.Tensor:
        """One query over the cache: split ``qkv`` (H hd + 2 n_kv hd) into q, k, v, rotate q
        and k (``spec.use_rope``), write k and v at the token's position in ``kv``, attend
        over positions <= it (within ``spec.window``): (.., H hd) in the model dtype."""
        ...


def attention_input(ops: DecodeOps[W, K], x: torch.Tensor, layer: LayerWeights[W]) -> torch.Tensor:
    """The input RMSNorm and the fused q/k/v projection: (C) -> (H hd + 2 n_kv hd)."""
    return ops.norm_linear(x, layer.ln1, layer.spec.eps, layer.qkv)


def attention_output(
    ops: DecodeOps[W, K], x: torch.Tensor, y: torch.Tensor, layer: LayerWeights[W]
) -> torch.Tensor:
    """o-proj + residual, RMSNorm, gate/up, SiLU x up, down-proj + residual: the new x (C)."""
    x = ops.linear_residual(y, layer.o, x)
    a = ops.norm_linear_gated(x, layer.ln2, layer.spec.eps, layer.gate_up, layer.spec.inter)
    return ops.linear_residual(a, layer.down, x)


def decode_layer(
    ops: DecodeOps[W, K], x: torch.Tensor, layer: LayerWeights[W], kv: K
) -> torch.Tensor:
    """One decoder layer for one token: residual stream x (C) in, x (C) out."""
    y = ops.attention(attention_input(ops, x, layer), layer.spec, kv)
    return attention_output(ops, x, y, layer)


def decode_logits(ops: DecodeOps[W, K], x: torch.Tensor, head: Head[W]) -> torch.Tensor:
    """The final RMSNorm and the LM head: x (C) -> logits (V)."""
    return ops.norm_linear(x, head.norm, head.eps, head.weight)


@dataclass(frozen=True)
class DecodeStep:
    """A family's one-token step: the functions the decoders run and the fast path compiles.

    ``layer`` composes the family's ``attention_input`` and ``attention_output`` around
    ``ops.attention``; a family that changes a phase supplies its own ``layer`` too."""

    attention_input: Callable[..., torch.Tensor] = attention_input
    attention_output: Callable[..., torch.Tensor] = attention_output
    layer: Callable[..., torch.Tensor] = decode_layer
    logits: Callable[..., torch.Tensor] = decode_logits

    def run(
        self, ops: DecodeOps[W, K], x: torch.Tensor, weights: DecodeWeights[W], kvs: Sequence[K]
    ) -> torch.Tensor:
        """The embedded token ``x`` through every layer and the head: the logits (V)."""
        for layer, kv in zip(weights.layers, kvs, strict=True):
            x = self.layer(ops, x, layer, kv)
        return self.logits(ops, x, weights.head)


PRE_NORM = DecodeStep()  # Llama / SmolLM3: pre-norm residual layers, SwiGLU MLP


# --- the plain torch ops ---------------------------------------------------------------------


class HostKV(NamedTuple):
    """One layer's cache slot for :class:`TorchOps`: the position is a host int."""

    k: torch.Tensor  # (1, n_kv, S, hd), S > pos
    v: torch.Tensor
    pos: int
    cos: torch.Tensor  # (1, hd) float32 at pos (attention scaling folded in)
    sin: torch.Tensor  # (1, hd) float32, rotate-half sign folded in: see :func:`rope_row`


def rope_row(rotary: nn.Module, pos: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """cos and signed sin (1, hd) float32 at ``pos``: ``rotate_half(x) * sin`` equals
    ``roll(x, hd/2) * signed_sin``, one op instead of a slice, a negation and a concat."""
    cos, sin = rotary(torch.tensor([pos], device=device))
    half = sin.shape[-1] // 2
    sin = sin.clone()
    sin[:, :half] = -sin[:, :half]
    return cos, sin


class TorchOps:
    """The step in eager torch ops on ``(1, C)`` rows; weights are the model's own linear
    modules (``nn.Linear``, bitsandbytes ``Linear4bit``, the CPU int4/int8 modules)."""

    def norm_linear(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: nn.Module
    ) -> torch.Tensor:
        return w(F.rms_norm(x, norm.shape, norm, eps))

    def norm_linear_gated(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: nn.Module, inter: int
    ) -> torch.Tensor:
        gu = w(F.rms_norm(x, norm.shape, norm, eps))  # (1, 2 I)
        return F.silu(gu[:, :inter]) * gu[:, inter:]

    def linear_residual(self, x: torch.Tensor, w: nn.Module, res: torch.Tensor) -> torch.Tensor:
        return res + w(x)

    def attention(self, qkv: torch.Tensor, spec: LayerSpec, kv: HostKV) -> torch.Tensor:
        h, n_kv, hd = spec.n_heads, spec.n_kv, spec.head_dim
        n_qk = (h + n_kv) * hd
        pos = kv.pos
        qk = qkv[0, :n_qk].view(h + n_kv, hd)
        if spec.use_rope:  # q and k rotated together, in float32
            qf = qk.float()
            qk = (qf * kv.cos + qf.roll(hd // 2, dims=-1) * kv.sin).to(qkv.dtype)
        kv.k[0, :, pos] = qk[h:]
        kv.v[0, :, pos] = qkv[0, n_qk:].view(n_kv, hd)
        first = 0 if spec.window is None else max(0, pos + 1 - spec.window)
        y = F.scaled_dot_product_attention(
            qk[:h].view(1, h, 1, hd),
            kv.k[:, :, first : pos + 1],
            kv.v[:, :, first : pos + 1],
            enable_gqa=n_kv != h,
        )  # (1, H, 1, hd)
        return y.view(1, h * hd)
