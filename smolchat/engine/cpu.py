"""The CPU decode step: one token through the decoder with as few torch ops as possible.

At batch 1 on a CPU, a 135M-parameter model spends about as long dispatching small ops as in
its matmuls. The general ``CausalLM.forward`` (any T, masks, windows, float32 norms) issues
~35 ops a layer; this step issues ~20: fused RMSNorm (``F.rms_norm``), one q/k/v matvec, RoPE on
q and k together with a precomputed cos/sin row, K/V written straight into the cache, one
attention call over the cache, one gate/up matvec, SiLU x up, down-proj, residual adds. It
computes the same function as ``CausalLM.forward`` for one token (same weights, same cache),
in the model's dtype; tests check it against the general forward.

Used by :class:`smolchat.engine.engine.Engine` for every decode step on the CPU (prefill and
``Engine.logits`` keep the general forward). ``SMOLCHAT_CPU_STEP=0`` turns it off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smolchat.model.cache import KVCache
from smolchat.model.network import CausalLM, DecoderLayer

ENV_DISABLE = "SMOLCHAT_CPU_STEP"


def cpu_step_enabled(model: CausalLM, device: torch.device) -> bool:
    """On the CPU for plain causal models (no sliding window), unless turned off."""
    if device.type != "cpu" or model.has_window:
        return False
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv: nn.Module
    o: nn.Module
    gate_up: nn.Module
    down: nn.Module
    rope: bool


def _decoder_layers(model: CausalLM) -> list[DecoderLayer]:
    return [layer for layer in model.model.layers if isinstance(layer, DecoderLayer)]


class CPUDecoder:
    """``step(token_id, pos)``: the logits (V,) after feeding one token at ``pos``."""

    def __init__(self, model: CausalLM, cache: KVCache) -> None:
        cfg = model.config
        self.model, self.cache = model, cache
        self.eps = cfg.rms_norm_eps
        self.hidden = cfg.hidden_size
        self.n_heads, self.n_kv, self.hd = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.n_qk = (self.n_heads + self.n_kv) * self.hd
        self.inter = cfg.intermediate_size
        self.gqa = self.n_kv != self.n_heads
        backbone = model.model
        self.layers = [
            _Layer(
                layer.input_layernorm.weight,
                layer.post_attention_layernorm.weight,
                layer.self_attn.qkv_proj,
                layer.self_attn.o_proj,
                layer.mlp.gate_up_proj,
                layer.mlp.down_proj,
                layer.self_attn.use_rope,
            )
            for layer in _decoder_layers(model)
        ]
        self.embed, self.head = backbone.embed_tokens, model.lm_head
        self.norm = backbone.norm.weight
        self._rope_pos = -1
        self._cos = self._sin = torch.empty(0)

    def _rope(self, pos: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (hd,) for ``pos`` in float32, sin with the rotate-half sign folded in."""
        if pos != self._rope_pos:
            cos, sin = self.model.rotary(torch.tensor([pos]))  # (1, hd) float32
            half = self.hd // 2
            sin = sin.clone()
            sin[:, :half] = -sin[:, :half]  # rotate_half(x) * sin == roll(x) * signed sin
            self._cos, self._sin, self._rope_pos = cos, sin, pos
        return self._cos, self._sin

    @torch.inference_mode()
    def step(self, token_id: int, pos: int) -> torch.Tensor:
        cache, eps, c = self.cache, self.eps, (self.hidden,)
        h, kv, hd, n_qk = self.n_heads, self.n_kv, self.hd, self.n_qk
        x = self.embed(torch.tensor([[token_id]]))[0]  # (1, C)
        cos, sin = self._rope(pos, x.dtype)
        half = hd // 2
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(F.rms_norm(x, c, layer.ln1, eps))  # (1, (H + 2 n_kv) hd)
            qk = qkv[0, :n_qk].view(h + kv, hd)
            if layer.rope:  # q and k rotated together, in float32
                qf = qk.float()
                qk = (qf * cos + qf.roll(half, dims=-1) * sin).to(x.dtype)
            cache.k[i][0, :, pos] = qk[h:]
            cache.v[i][0, :, pos] = qkv[0, n_qk:].view(kv, hd)
            q = qk[:h].view(1, h, 1, hd)
            y = F.scaled_dot_product_attention(
                q, cache.k[i][:, :, : pos + 1], cache.v[i][:, :, : pos + 1], enable_gqa=self.gqa
            )  # (1, H, 1, hd)
            x = x + layer.o(y.view(1, h * hd))
            gu = layer.gate_up(F.rms_norm(x, c, layer.ln2, eps))  # (1, 2 I)
            x = x + layer.down(F.silu(gu[:, : self.inter]) * gu[:, self.inter :])
        return self.head(F.rms_norm(x, c, self.norm, eps))[0]  # (V,)
