"""The SmolLM3 / Llama decoder: RMSNorm, GQA attention with RoPE or NoPE, SwiGLU MLP."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from smolchat.model.cache import KVCache
from smolchat.model.config import ModelConfig
from smolchat.model.decode_step import (
    PRE_NORM,
    DecodeStep,
    DecodeWeights,
    Head,
    LayerSpec,
    LayerWeights,
)
from smolchat.model.rope import RotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, scaled in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FUSED_RMS_NORM and x.is_cuda:  # one kernel; on CPUs the op is slower than these
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


_FUSED_RMS_NORM = hasattr(F, "rms_norm")


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.hd = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.gqa = self.n_kv != self.n_heads
        self.use_rope = cfg.use_rope[layer]
        self.window = cfg.sliding_window[layer]
        bias = cfg.attention_bias
        self.splits = (self.n_heads * self.hd, self.n_kv * self.hd, self.n_kv * self.hd)
        # q, k and v in one matrix: one matmul per step instead of three
        self.qkv_proj = nn.Linear(cfg.hidden_size, sum(self.splits), bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=bias)
        self.fused_parts = fused_parts("qkv_proj", ("q_proj", "k_proj", "v_proj"), self.splits)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        cos: torch.Tensor,  # (T, hd) float32
        sin: torch.Tensor,
        cache: KVCache | None,
        start: int,
        mask: torch.Tensor | None,  # (T, S) or (B, 1, T, S) bool, True = attend; None = causal
    ) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv_proj(x)
        n_qk = (self.n_heads + self.n_kv) * self.hd
        qk = qkv[..., :n_qk].reshape(b, t, self.n_heads + self.n_kv, self.hd).transpose(1, 2)
        if self.use_rope:  # q and k rotated together: one pass instead of two
            qk = apply_rotary(qk, cos, sin)
        q, k = qk.split((self.n_heads, self.n_kv), dim=1)  # (B, H, T, hd), (B, n_kv, T, hd)
        v = qkv[..., n_qk:].reshape(b, t, self.n_kv, self.hd).transpose(1, 2)
        if cache is not None:
            cache.write(self.layer, start, k, v)
            k, v = cache.view(self.layer, start + t)  # (B, n_kv, S, hd)
        if self.window is not None and mask is not None:
            mask = _window(mask, start, self.window)
        if mask is not None and mask.dim() == 2 and self.window is None and t > 1 and q.is_cuda:
            y = _lower_right_causal(q, k, v, mask, self.gqa)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and t > 1, enable_gqa=self.gqa
            )  # (B, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.hd))


def fused_parts(
    target: str, names: tuple[str, ...], sizes: tuple[int, ...]
) -> dict[str, tuple[str, int, int]]:
    """Checkpoint module name -> (fused module, first row, rows) for weights stored apart."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return {n: (target, o, s) for n, o, s in zip(names, offsets, sizes, strict=True)}


_FLASH_OK: list[bool] = [True]
_LOWER_RIGHT_OK: list[bool] = [True]


def _lower_right_causal(q, k, v, mask, gqa: bool) -> torch.Tensor:
    """Chunk i of a prompt after cached tokens: flash attention's bottom-right causal mask.

    Same result as the explicit (T, S) mask, without materializing it: FlashAttention's
    ``is_causal`` aligns the mask bottom-right when there are more keys than queries, and it
    takes fewer k/v heads than q heads. Falls back to ``causal_lower_right``, then the mask.
    """
    if _FLASH_OK[0] and q.dtype in (torch.float16, torch.bfloat16):
        try:
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0]
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, ValueError):
            _FLASH_OK[0] = False
    if _LOWER_RIGHT_OK[0]:
        from torch.nn.attention.bias import causal_lower_right

        try:
            bias = causal_lower_right(q.shape[2], k.shape[2])
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=gqa)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, ValueError):
            _LOWER_RIGHT_OK[0] = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def _window(mask: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """``mask`` (T, S) or (B, 1, T, S) narrowed to the last ``window`` keys of each query."""
    t, s = mask.shape[-2:]
    q_pos = torch.arange(start, start + t, device=mask.device)[:, None]
    k_pos = torch.arange(s, device=mask.device)[None, :]
    return mask & (k_pos > q_pos - window)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        bias, inter = cfg.mlp_bias, cfg.intermediate_size
        # gate and up in one matrix: one matmul per step instead of two
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * inter, bias=bias)
        self.down_proj = nn.Linear(inter, cfg.hidden_size, bias=bias)
        self.inter = inter
        self.fused_parts = fused_parts("gate_up_proj", ("gate_proj", "up_proj"), (inter, inter))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache, start, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


W = TypeVar("W")


class Backbone(nn.Module):
    """``model.*`` in checkpoint names: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    """SmolLM3ForCausalLM / LlamaForCausalLM with the same parameter names.

    ``forward`` runs any number of tokens (prefill, verification); ``decode`` is the one-token
    step the CPU decoder and the CUDA fast path run (on :meth:`decode_weights`)."""

    decode: ClassVar[DecodeStep] = PRE_NORM

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg)
        self.has_window = any(w is not None for w in cfg.sliding_window)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def layer_spec(self, i: int) -> LayerSpec:
        """Layer ``i``'s static facts for the one-token decode step."""
        cfg = self.config
        return LayerSpec(
            n_heads=cfg.num_attention_heads,
            n_kv=cfg.num_key_value_heads,
            head_dim=cfg.head_dim,
            inter=cfg.intermediate_size,
            eps=cfg.rms_norm_eps,
            rope_scaling=float(self.rotary.scaling),
            use_rope=bool(cfg.use_rope[i]),
            window=cfg.sliding_window[i],
        )

    def decode_weights(self, weight: Callable[[nn.Module], W]) -> DecodeWeights[W]:
        """The weights of :func:`smolchat.model.decode_step.decode_step`, each linear module
        passed through ``weight`` (into whatever the caller's ops take)."""
        layers = []
        for i, module in enumerate(self.model.layers):
            layer = cast(DecoderLayer, module)
            att, mlp = layer.self_attn, layer.mlp
            layers.append(
                LayerWeights(
                    layer.input_layernorm.weight,
                    weight(att.qkv_proj),
                    weight(att.o_proj),
                    layer.post_attention_layernorm.weight,
                    weight(mlp.gate_up_proj),
                    weight(mlp.down_proj),
                    self.layer_spec(i),
                )
            )
        head = Head(self.model.norm.weight, self.config.rms_norm_eps, weight(self.lm_head))
        return DecodeWeights(tuple(layers), head)

    def forward(
        self,
        ids: torch.Tensor,  # (B, T) int64
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, V), or (B, 1, V) with ``last_only``; writes K/V at ``start``."""
        t = ids.shape[1]
        positions = torch.arange(start, start + t, device=ids.device)
        cos, sin = self.rotary(positions)
        mask = self._mask(t, start, ids.device)
        x = self.model.embed_tokens(ids)  # (B, T, C)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, start, mask)
        if last_only:
            x = x[:, -1:]
        x = self.model.norm(x)
        return self.lm_head(x)

    def _mask(self, t: int, start: int, device: torch.device) -> torch.Tensor | None:
        """None when SDPA's own causal flag (or no mask at all for one query) is exact."""
        if start == 0 and not self.has_window:
            return None
        if t == 1 and not self.has_window:
            return None
        q_pos = torch.arange(start, start + t, device=device)[:, None]
        k_pos = torch.arange(start + t, device=device)[None, :]
        return k_pos <= q_pos  # (T, S)
