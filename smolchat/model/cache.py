"""A dynamic KV cache: memory follows the tokens held, growing by doubling.

Each layer keeps K and V as ``(1, n_kv, capacity, head_dim)`` buffers; ``length`` tokens
are valid. Capacity starts small and doubles when full (a "bucket"), so memory stays within
2x of what is held and never preallocates the context limit. A fixed capacity per bucket is
what a CUDA-graph decode step needs: it is captured once per bucket.
"""

from __future__ import annotations

import torch

from smolchat.model.config import ModelConfig

MIN_CAPACITY = 256


class KVCache:
    def __init__(
        self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, max_tokens: int
    ) -> None:
        self.n_layers = cfg.num_hidden_layers
        self.shape_tail = (cfg.num_key_value_heads, cfg.head_dim)
        self.device, self.dtype = device, dtype
        self.max_tokens = max_tokens
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.length = 0
        self.capacity = 0

    # --- bookkeeping -------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def reset(self) -> None:
        """Drop everything and free the buffers."""
        self.k, self.v, self.length, self.capacity = [], [], 0, 0

    def crop(self, n: int) -> None:
        """Keep the first ``n`` tokens (to reuse a shared prefix, or to retry)."""
        self.length = max(0, min(n, self.length))

    def ensure_capacity(self, needed: int) -> bool:
        """Grow (by doubling) to hold ``needed`` tokens; return True if buffers changed."""
        if needed > self.max_tokens:
            raise ValueError(f"the KV cache holds at most {self.max_tokens} tokens")
        if needed <= self.capacity:
            return False
        new_cap = max(MIN_CAPACITY, self.capacity)
        while new_cap < needed:
            new_cap *= 2
        new_cap = min(new_cap, self.max_tokens)
        n_kv, hd = self.shape_tail
        for store in (self.k, self.v):
            for i in range(self.n_layers):
                buf = torch.zeros(1, n_kv, new_cap, hd, device=self.device, dtype=self.dtype)
                if i < len(store):
                    buf[:, :, : self.length] = store[i][:, :, : self.length]
                    store[i] = buf
                else:
                    store.append(buf)
        self.capacity = new_cap
        return True

    # --- per-layer access ----------------------------------------------------------
    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``k``/``v`` (1, n_kv, T, hd) at positions ``start .. start+T``."""
        t = k.shape[2]
        self.k[layer][:, :, start : start + t] = k
        self.v[layer][:, :, start : start + t] = v

    def view(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]
