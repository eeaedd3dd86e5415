"""Rotary position embeddings: inverse frequencies for default, linear, YaRN and llama3 scaling."""

from __future__ import annotations

import math

import torch

from smolchat.model.config import ModelConfig


def inv_frequencies(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """Return ``(inv_freq (head_dim/2,), attention_scaling)`` in float32, on the CPU.

    Computed on the CPU even inside ``torch.device("meta")`` (the loader's model build): an op
    on meta tensors imports ``torch._dynamo`` (seconds at start-up; see model/meta.py)."""
    r, dim = cfg.rope, cfg.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    inv_freq = 1.0 / (r.theta**exponents)
    if r.kind == "default":
        return inv_freq, 1.0
    if r.kind == "linear":
        return inv_freq / r.factor, 1.0
    original = r.original_max_position_embeddings or cfg.max_position_embeddings
    if r.kind == "llama3":
        return _llama3(inv_freq, r.factor, r.low_freq_factor, r.high_freq_factor, original), 1.0
    return _yarn(inv_freq, cfg, original)


def _yarn(inv_freq: torch.Tensor, cfg: ModelConfig, original: int) -> tuple[torch.Tensor, float]:
    r, dim = cfg.rope, cfg.head_dim
    factor = r.factor
    scaling = r.attention_factor
    if scaling is None:
        scaling = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(r.theta))

    low = max(math.floor(correction_dim(r.beta_fast)), 0)
    high: float = min(math.ceil(correction_dim(r.beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    index = torch.arange(dim // 2, dtype=torch.float32, device="cpu")
    ramp = ((index - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1 where high-frequency dims keep their original frequency
    interpolated = inv_freq / factor
    return interpolated * (1 - extrapolation) + inv_freq * extrapolation, float(scaling)


def _llama3(inv_freq: torch.Tensor, factor: float, low: float, high: float, original: int):
    low_wavelen, high_wavelen = original / low, original / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(torch.nn.Module):
    """Produces float32 cos/sin for given positions (rotate-half layout)."""

    inv_freq: torch.Tensor  # (hd/2,) float32, a non-persistent buffer

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inv_freq, self.scaling = inv_frequencies(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
        return emb.cos() * self.scaling, emb.sin() * self.scaling


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, hd) by float32 ``cos``/``sin`` (T, hd); result in x's dtype."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)
