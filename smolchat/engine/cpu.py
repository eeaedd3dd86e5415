"""The CPU decode step: one token through the decoder with as few torch ops as possible.

At batch 1 on a CPU, a 135M-parameter model spends about as long dispatching small ops as in
its matmuls (measured on the 2-core Xeon: ~1-2 us per elementwise op, ~45 us per int4
matvec). The layer math is the model's own one-token step (``model.decode``, see
:mod:`smolchat.model.decode_step`);
:class:`CPUOps` runs it with ~15 real ops a layer:

- the quantized linears are called as their bare kernels (:class:`MatVec`): bf16 in, bf16
  out, one cast of the normed input, no reshapes; results are added into the residual stream
  in place, in its dtype (a mixed-dtype ``add_`` is one op, no cast);
- RoPE on q and k together is one (H + n_kv, hd) x (hd, hd) matmul with the position's
  rotation matrix, built once per token (:func:`rotation`);
- K/V are copied straight into the cache slots; attention over cache views is
  baddbmm/softmax/bmm in float32 (measured 1.2-1.45x faster than SDPA at 64-4000 keys; SDPA
  in bf16, where it keeps float32 scores).

It computes the same function as ``CausalLM.forward`` for one token (same weights, same
cache), in the model's dtype (float32 rounding differences only); tests check it against the
general forward. Used by :class:`smolchat.engine.engine.Engine` for every decode step on the
CPU (prefill and ``Engine.logits`` keep the general forward), sliding-window models included.
``SMOLCHAT_CPU_STEP=0`` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from smolchat.model.cache import KVCache
from smolchat.model.decode_step import DecodeWeights, LayerSpec
from smolchat.model.network import CausalLM
from smolchat.model.qcpu import KERNEL_DTYPE, Int4Linear, Int8Linear

ENV_DISABLE = "SMOLCHAT_CPU_STEP"


def cpu_step_enabled(model: CausalLM, device: torch.device) -> bool:
    """On the CPU, unless turned off."""
    if device.type != "cpu":
        return False
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("0", "false", "no", "off")


class MatVec(NamedTuple):
    """A linear layer as :class:`CPUOps` calls it: ``fn`` takes (1, K) in ``dtype``.

    For the int4/int8 layers ``fn`` is the bare kernel (bf16 in, bf16 out); otherwise the
    module itself, in the model's dtype.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype


def matvec(module: nn.Module, dtype: torch.dtype) -> MatVec:
    if isinstance(module, (Int4Linear, Int8Linear)) and module.bias is None:
        return MatVec(module.kernel, KERNEL_DTYPE)
    return MatVec(module, dtype)


class CPUSlot(NamedTuple):
    """One layer's cache slot for :class:`CPUOps`: buffers, host position, RoPE rotation."""

    k: torch.Tensor  # (1, n_kv, S, hd), S > pos
    v: torch.Tensor
    k3: torch.Tensor  # k[0], v[0]: (n_kv, S, hd) views, made once per cache buffer
    v3: torch.Tensor
    pos: int
    rot: torch.Tensor  # (hd, hd) float32, see :func:`rotation`


def rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The RoPE rotation (hd, hd) at one position: ``x @ R == x * cos + rotate_half(x) * sin``.

    ``cos``/``sin`` (hd,) float32 in the rotate-half layout. Each output is the same two
    products summed as in the elementwise form (the other terms are exact zeros).
    """
    half = cos.shape[-1] // 2
    r = torch.diag(cos)
    idx = torch.arange(half)
    r[idx + half, idx] = -sin[:half]  # out[j] (j < half) takes -x[j + half] * sin[j]
    r[idx, idx + half] = sin[half:]  # out[j + half] takes x[j] * sin[j + half]
    return r


class CPUOps:
    """:class:`~smolchat.model.decode_step.DecodeOps` on ``(1, C)`` rows for the CPU: weights
    are :class:`MatVec`, cache slots :class:`CPUSlot`; activations in ``dtype`` (the model's).

    Kernel inputs are written into preallocated buffers (one per dtype and width: each is
    consumed by the next kernel call before it is written again). In float32 the RMSNorm is
    ``x * norm * r`` with ``r = 1 / sqrt(mean(x^2) + eps)`` taken on the host from one dot
    product: three ops instead of the ~11 that ``F.rms_norm`` dispatches on the CPU.
    """

    def __init__(self, dtype: torch.dtype, hidden: int) -> None:
        self.dtype = dtype
        self._zeros = torch.zeros(1, hidden)
        self._zero = torch.zeros(())
        self._bufs: dict[tuple[torch.dtype, int], torch.Tensor] = {}
        self._x = self._x1 = torch.empty(0)  # the residual stream (1, C) and its (C,) view

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The embedded token (1, C) copied into the step's residual-stream buffer."""
        if self._x.shape != x.shape or self._x.dtype != x.dtype:
            self._x = torch.empty_like(x)
            self._x1 = self._x.view(-1)
        return self._x.copy_(x)

    def _buf(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        buf = self._bufs.get((dtype, n))
        if buf is None:
            buf = self._bufs[(dtype, n)] = torch.empty(1, n, dtype=dtype)
        return buf

    def _normed(self, x: torch.Tensor, norm: torch.Tensor, eps: float, dtype: torch.dtype):
        """``rms_norm(x) * norm`` (1, C) in ``dtype``."""
        if x.dtype != torch.float32 or norm.dtype != torch.float32:
            return F.rms_norm(x, norm.shape, norm, eps).to(dtype)
        flat = self._x1 if x is self._x else x.view(-1)
        r = (torch.dot(flat, flat).item() / flat.numel() + eps) ** -0.5
        return torch.addcmul(self._zeros, x, norm, value=r, out=self._buf(dtype, flat.numel()))

    def _cast(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x if x.dtype == dtype else self._buf(dtype, x.shape[-1]).copy_(x)

    def norm_linear(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: MatVec
    ) -> torch.Tensor:
        """(1, C) -> (1, N) in ``w.dtype`` (the kernel's: bf16 for the quantized layers)."""
        return w.fn(self._normed(x, norm, eps, w.dtype))

    def norm_linear_gated(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: MatVec, inter: int
    ) -> torch.Tensor:
        """``silu(gate) * up`` (1, I): computed in ``dtype``, returned in ``w.dtype``."""
        gu = self.norm_linear(x, norm, eps, w)  # (1, 2 I)
        gate, up = gu.split(inter, dim=1)
        if gu.dtype == self.dtype:
            return F.silu(gate) * up
        return torch.mul(
            F.silu(gate.to(self.dtype), inplace=True), up, out=self._buf(gu.dtype, inter)
        )

    def linear_residual(self, x: torch.Tensor, w: MatVec, res: torch.Tensor) -> torch.Tensor:
        return res.add_(w.fn(self._cast(x, w.dtype)))  # in res's dtype, whatever the kernel's

    def attention(self, qkv: torch.Tensor, spec: LayerSpec, kv: CPUSlot) -> torch.Tensor:
        h, n_kv, hd, pos = spec.n_heads, spec.n_kv, spec.head_dim, kv.pos
        qk, v = qkv.view(-1, hd).split((h + n_kv, n_kv))  # (H + n_kv, hd), (n_kv, hd)
        if spec.use_rope:  # q and k rotated together, in float32
            qk = torch.mm(qk if qk.dtype == torch.float32 else qk.float(), kv.rot)
        q, k = qk.split((h, n_kv))
        kv.k3.select(1, pos).copy_(k)
        kv.v3.select(1, pos).copy_(v)
        if q.dtype != kv.k.dtype:
            q = q.to(kv.k.dtype)
        first = 0 if spec.window is None else max(0, pos + 1 - spec.window)
        n = pos + 1 - first
        if kv.k.dtype == torch.float32:  # bmm/softmax/bmm: 1.2-1.45x faster than SDPA here
            scores = torch.baddbmm(
                self._zero,
                q.view(n_kv, h // n_kv, hd),  # q heads grouped by their k/v head
                kv.k3.narrow(1, first, n).transpose(1, 2),
                beta=0,
                alpha=hd**-0.5,
            )  # (n_kv, H / n_kv, n)
            return torch.bmm(torch.softmax(scores, -1), kv.v3.narrow(1, first, n)).view(1, h * hd)
        y = F.scaled_dot_product_attention(  # bf16/fp16: SDPA keeps float32 scores
            q.view(1, h, 1, hd),
            kv.k.narrow(2, first, n),
            kv.v.narrow(2, first, n),
            enable_gqa=n_kv != h,
        )  # (1, H, 1, hd)
        return y.view(1, h * hd)


class CPUDecoder:
    """``step(token_id, pos)``: the logits (V,) after feeding one token at ``pos``."""

    def __init__(self, model: CausalLM, cache: KVCache) -> None:
        self.model, self.cache = model, cache
        dtype = model.model.norm.weight.dtype
        self.ops = CPUOps(dtype, model.config.hidden_size)
        head = model.lm_head

        def weight(m: nn.Module) -> MatVec:  # the head keeps its module: logits in its dtype
            return MatVec(m, dtype) if m is head else matvec(m, dtype)

        self.weights: DecodeWeights[MatVec] = model.decode_weights(weight)
        self.embed = model.model.embed_tokens
        self._rope_pos = -1
        self._rot = torch.empty(0)
        self._cached: list[torch.Tensor] = []  # the cache buffers the views below are of
        self._views: list[tuple[torch.Tensor, ...]] = []

    def forget(self) -> None:
        """Drop the views of the cache's buffers (after ``KVCache.reset``, so they can be freed)."""
        self._cached, self._views = [], []

    def _slots(self, pos: int) -> list[CPUSlot]:
        cache = self.cache
        if len(self._cached) != len(cache.k) or any(
            a is not b for a, b in zip(self._cached, cache.k, strict=True)
        ):
            self._cached = list(cache.k)
            self._views = [(k, v, k[0], v[0]) for k, v in zip(cache.k, cache.v, strict=True)]
        rot = self._rot_at(pos)
        return [CPUSlot(k, v, k3, v3, pos, rot) for k, v, k3, v3 in self._views]

    def _rot_at(self, pos: int) -> torch.Tensor:
        if pos != self._rope_pos:
            cos, sin = self.model.rotary(torch.tensor([pos]))  # (1, hd) float32
            self._rot, self._rope_pos = rotation(cos[0], sin[0]), pos
        return self._rot

    @torch.inference_mode()
    def step(self, token_id: int, pos: int) -> torch.Tensor:
        x = self.ops.residual(self.embed(torch.tensor([[token_id]]))[0])  # (1, C), in place
        return self.model.decode.run(self.ops, x, self.weights, self._slots(pos))[0]  # (V,)
