"""The CUDA fast decode path: one token per CUDA-graph replay.

- One decoder layer's decode step is a single function (RMSNorm, fused QKV matvec, RoPE, K/V
  written at a *device* position with ``index_put``, attention over the whole cache bucket with
  the mask ``k_pos <= pos`` (and the sliding window), o-proj + residual, RMSNorm, fused
  gate/up, SiLU, down-proj + residual). ``torch.compile`` (Inductor) compiles it once with the
  cache length dynamic, so every bucket reuses the same code; with coordinate-descent tuning,
  Inductor turns the batch-1 matmuls into reductions that fuse the norms and activations in.
  NF4 weights go through bitsandbytes' fused ``gemm_4bit`` op, opaque to Inductor.
- The whole step (embedding, every layer, final norm, head, greedy argmax, position + 1) is
  captured as one ``torch.cuda.CUDAGraph`` per cache bucket. The cache grows by doubling, so
  there is at most one capture per doubling (a re-capture, not a recompile).
- Static inputs: ``tok`` and ``pos`` (device tensors). The graph writes the greedy next token
  into ``tok`` itself, so greedy decoding needs no host work but reading the id; other
  sampling runs on the GPU on the graph's logits and writes its token into ``tok``.

``SMOLCHAT_NO_CUDA_GRAPHS=1`` turns the path off (plain eager decoding);
``SMOLCHAT_NO_COMPILE=1`` keeps the graphs but skips torch.compile (faster start, slower steps).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smolchat.model.cache import KVCache
from smolchat.model.network import CausalLM
from smolchat.model.rope import apply_rotary

log = logging.getLogger(__name__)

ENV_DISABLE = "SMOLCHAT_NO_CUDA_GRAPHS"
ENV_NO_COMPILE = "SMOLCHAT_NO_COMPILE"
COMPILE_OPTIONS = {"coordinate_descent_tuning": True}

# A linear layer as the step sees it: ("dense", weight, bias) or
# ("nf4", packed, shape, absmax, blocksize, absmax_8bit, absmax_code, absmax_offset, bias).
LinearSpec = tuple


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def fast_path_enabled(device: torch.device) -> bool:
    """The fast path runs on CUDA unless ``SMOLCHAT_NO_CUDA_GRAPHS`` is set."""
    return device.type == "cuda" and not _env_on(ENV_DISABLE)


# --- the step, written for Inductor ------------------------------------------------------


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def _linear(x: torch.Tensor, spec: LinearSpec) -> torch.Tensor:
    """``x (1, K) @ W.T (+ b)`` for a dense or an NF4 weight."""
    if spec[0] == "dense":
        return F.linear(x, spec[1], spec[2])
    _, packed, shape, absmax, blocksize, absmax8, code2, offset, bias = spec
    return torch.ops.bitsandbytes.gemm_4bit.default(
        x, packed, shape, absmax, blocksize, "nf4", bias, absmax8, code2, offset
    )


def _layer_step(
    x: torch.Tensor,  # (1, C) residual stream
    pos: torch.Tensor,  # (1,) int64, position of this token
    inv_freq: torch.Tensor,  # (hd/2,) float32
    w: tuple,  # (ln1, qkv, o, ln2, gate_up, down)
    k_cache: torch.Tensor,  # (1, n_kv, S, hd), S = bucket capacity
    v_cache: torch.Tensor,
    consts: tuple,  # (n_heads, n_kv, hd, inter, eps, rope_scaling, use_rope, window, fused)
) -> torch.Tensor:
    n_heads, n_kv, hd, inter, eps, scaling, use_rope, window, fused = consts
    ln1, qkv_spec, o_spec, ln2, gu_spec, down_spec = w
    rep = n_heads // n_kv
    q, k, v = _linear(_rms(x, ln1, eps), qkv_spec).split(
        (n_heads * hd, n_kv * hd, n_kv * hd), dim=-1
    )
    q = q.view(1, n_heads, 1, hd)
    k = k.view(1, n_kv, 1, hd)
    v = v.view(1, n_kv, 1, hd)
    if use_rope:
        freqs = pos.float()[:, None] * inv_freq[None, :]  # (1, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * scaling, emb.sin() * scaling
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k_cache[:, :, pos] = k
    v_cache[:, :, pos] = v
    s = k_cache.shape[2]
    k_pos = torch.arange(s, device=x.device)
    valid = k_pos <= pos  # (S,)
    if window is not None:
        valid = valid & (k_pos > pos - window)
    if fused:
        # Reductions Inductor fuses and splits over S itself: scores, softmax, weighted sum.
        qg = q.view(n_kv, rep, 1, hd).float()
        scores = (qg * k_cache[0].unsqueeze(1).float()).sum(-1) * (1.0 / math.sqrt(hd))
        scores = scores.masked_fill(~valid, float("-inf"))  # (n_kv, rep, S)
        probs = torch.softmax(scores, dim=-1)
        y = (probs.unsqueeze(-1) * v_cache[0].unsqueeze(1).float()).sum(2)  # (n_kv, rep, hd)
    else:
        y = F.scaled_dot_product_attention(
            q.view(1, n_kv, rep, hd), k_cache, v_cache, attn_mask=valid[None, None, None, :]
        )
    x = x + _linear(y.to(x.dtype).reshape(1, n_heads * hd), o_spec)
    gate, up = _linear(_rms(x, ln2, eps), gu_spec).split(inter, dim=-1)
    return x + _linear(F.silu(gate) * up, down_spec)


def _head_step(x: torch.Tensor, norm: torch.Tensor, eps: float, head: LinearSpec):
    logits = _linear(_rms(x, norm, eps), head)  # (1, V)
    return logits, logits.argmax(dim=-1)


_COMPILED: dict[str, Callable[..., Any]] = {}


def _compiled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """One torch.compile wrapper per function per process, so engines share compiled code."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, fullgraph=True, options=COMPILE_OPTIONS)
    return _COMPILED[name]


# --- weights as the step sees them ---------------------------------------------------------


def linear_spec(module: nn.Module) -> LinearSpec:
    """Describe a linear layer (nn.Linear or bitsandbytes Linear4bit) for the step."""
    bias = getattr(module, "bias", None)
    weight = module.weight
    qs = getattr(weight, "quant_state", None)
    if qs is None:
        return ("dense", weight, bias)
    if qs.quant_type != "nf4" or getattr(qs, "packing_format_for_cpu", False):
        raise RuntimeError(f"unsupported 4-bit weight ({qs.quant_type}) for the CUDA fast path")
    if qs.nested:
        if qs.state2.blocksize != 256:
            raise RuntimeError("nested NF4 statistics need blocksize 256 for the fast path")
        absmax, absmax8, code2, offset = qs.state2.absmax, qs.absmax, qs.state2.code, qs.offset
        offset = offset.float().reshape(()) if torch.is_tensor(offset) else offset
    else:
        absmax, absmax8, code2, offset = qs.absmax, None, None, None
    shape = [int(d) for d in qs.shape]
    return ("nf4", weight.data, shape, absmax, int(qs.blocksize), absmax8, code2, offset, bias)


class FastDecoder:
    """Static-input decode step for one model and its KV cache, captured per cache bucket."""

    def __init__(
        self,
        model: CausalLM,
        cache: KVCache,
        *,
        compile: bool | None = None,
        graphs: bool | None = None,
    ) -> None:
        self.model, self.cache = model, cache
        self.device = cache.device
        cfg = model.config
        # graphs=False runs the same static-input step eagerly (CPU tests of the host loop)
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if compile is None:
            compile = self.graphs and not _env_on(ENV_NO_COMPILE)
        self.compile = compile
        self.eps = cfg.rms_norm_eps
        self.layer_weights = []
        self.layer_consts = []
        for i, layer in enumerate(model.model.layers):
            att, mlp = layer.self_attn, layer.mlp
            self.layer_weights.append(
                (
                    layer.input_layernorm.weight,
                    linear_spec(att.qkv_proj),
                    linear_spec(att.o_proj),
                    layer.post_attention_layernorm.weight,
                    linear_spec(mlp.gate_up_proj),
                    linear_spec(mlp.down_proj),
                )
            )
            self.layer_consts.append(
                (
                    cfg.num_attention_heads,
                    cfg.num_key_value_heads,
                    cfg.head_dim,
                    cfg.intermediate_size,
                    cfg.rms_norm_eps,
                    float(model.rotary.scaling),
                    bool(cfg.use_rope[i]),
                    cfg.sliding_window[i],
                    self.compile,
                )
            )
        self.head = linear_spec(model.lm_head)
        self.tok = torch.zeros(1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._host = torch.zeros(1, dtype=torch.long, pin_memory=self.graphs)
        self._event = torch.cuda.Event() if self.graphs else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # (1, V), valid after a replay
        self._key: tuple[int, int] | None = None
        self._pool = None
        self.failed: str | None = None
        self.captures: list[tuple[int, float]] = []  # (bucket capacity, seconds) per capture
        self._bind()

    def _bind(self) -> None:
        if self.compile:
            self._layer_fn = _compiled("layer", _layer_step)
            self._head_fn = _compiled("head", _head_step)
        else:
            self._layer_fn, self._head_fn = _layer_step, _head_step

    # --- the step ------------------------------------------------------------------------
    def _body(self) -> torch.Tensor:
        x = F.embedding(self.tok, self.model.model.embed_tokens.weight)  # (1, C)
        inv_freq = self.model.rotary.inv_freq
        for i, (w, consts) in enumerate(zip(self.layer_weights, self.layer_consts, strict=True)):
            x = self._layer_fn(x, self.pos, inv_freq, w, self.cache.k[i], self.cache.v[i], consts)
        logits, nxt = self._head_fn(x, self.model.model.norm.weight, self.eps, self.head)
        self.tok.copy_(nxt)
        self.pos.add_(1)
        return logits

    @torch.inference_mode()  # the same grad mode whoever calls: no recompiles
    def _capture(self) -> None:
        t0 = time.perf_counter()
        self.graph, self.logits, self._key = None, None, None
        if self.compile:
            for t in self.cache.k + self.cache.v:
                torch._dynamo.maybe_mark_dynamic(t, 2)
        tok, pos = self.tok.clone(), self.pos.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles on first use; writes K/V only at pos (not yet valid)
                self._body()
                self.tok.copy_(tok)
                self.pos.copy_(pos)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = self._body()
        torch.cuda.synchronize(self.device)
        self.graph, self.logits = graph, logits
        self._key = self._cache_key()
        self.captures.append((self.cache.capacity, time.perf_counter() - t0))

    def _cache_key(self) -> tuple[int, int]:
        return (self.cache.capacity, self.cache.k[0].data_ptr() if self.cache.k else 0)

    def prepare(self) -> None:
        """Capture (and on first use compile) for the cache's current bucket if needed.

        If torch.compile fails, falls back to capturing the uncompiled step; if capture fails,
        ``failed`` says why and the engine decodes eagerly.
        """
        if not self.graphs or (self._key == self._cache_key() and self.graph is not None):
            return
        try:
            self._capture()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compiler or capture trouble: degrade, never break decoding
            if not self.compile:
                self.failed = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("CUDA graph decode disabled: %s", self.failed)
                raise
            log.warning("torch.compile failed (%s); capturing the uncompiled step", exc)
            self.compile = False
            self.layer_consts = [c[:-1] + (False,) for c in self.layer_consts]
            self._bind()
            self._capture()

    # --- the host loop's verbs ----------------------------------------------------------
    def start(self, pos: int) -> None:
        """Next replay writes the token at ``pos``."""
        self.pos.fill_(pos)

    def stage(self, token: torch.Tensor) -> None:
        """Make ``token`` (device, (1,)) the step's input; start copying it to the host."""
        if token is not self.tok:
            self.tok.copy_(token.view(1))
        self._host.copy_(self.tok, non_blocking=self.graphs)
        if self._event is not None:
            self._event.record()

    def staged_id(self) -> int:
        """The id passed to :meth:`stage`, once it reached the host (not waiting for steps)."""
        if self._event is not None:
            self._event.synchronize()
        return int(self._host[0])

    def step(self) -> None:
        """Queue one step for the staged token (asynchronous); logits land in ``self.logits``."""
        if not self.graphs:
            with torch.inference_mode():
                self.logits = self._body()
            return
        self.prepare()
        assert self.graph is not None
        self.graph.replay()

    @property
    def mode(self) -> str:
        if not self.graphs:
            return "static-step"
        return "cuda-graph+compile" if self.compile else "cuda-graph"
