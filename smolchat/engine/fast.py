"""The CUDA fast decode path: one token per CUDA-graph replay.

- The step's math is the model's own one-token step (``model.decode``, a
  :class:`~smolchat.model.decode_step.DecodeStep`: ``layer`` = ``attention_input``,
  ``attention``, ``attention_output``; then ``logits``); this module only supplies the ops it
  runs with and compiles / captures it. :class:`StaticTorchOps`: RMSNorm, the fused q/k/v
  and gate/up projections (dense or NF4 through bitsandbytes' ``gemm_4bit``), RoPE, K/V
  written at a *device* position with ``index_put``, attention over the whole cache bucket
  with the mask ``k_pos <= pos`` (and the sliding window). ``torch.compile`` (Inductor)
  compiles the model's ``decode.layer`` with these ops once, the cache length dynamic, so
  every bucket reuses the same code; with coordinate-descent tuning, Inductor turns the
  batch-1 matmuls into reductions that fuse the norms and activations in.
  :class:`TritonOps`: our kernels.
- The whole step (embedding, every layer, final norm, head, greedy argmax, position + 1) is
  captured as one ``torch.cuda.CUDAGraph`` per cache bucket. The cache grows by doubling, so
  there is at most one capture per doubling (a re-capture, not a recompile).
- Static inputs: ``tok`` and ``pos`` (device tensors). The graph writes the greedy next token
  into ``tok`` itself, so greedy decoding needs no host work but reading the id; other
  sampling runs on the GPU on the graph's logits and writes its token into ``tok``.

Three ways to fill the step (``FastDecoder.kernels``), best first:

- ``"triton"`` (dense or NF4 weights): our Triton kernels only (:mod:`smolchat.engine.kernels`):
  per layer one matvec with RMSNorm fused (q/k/v), split-K attention with RoPE and the K/V
  write fused (2 kernels), o-proj + residual, gate/up with RMSNorm and SiLU fused, down +
  residual. NF4 weights are read as bitsandbytes stores them (packed codes, double-quantized
  scales) and dequantized in registers. Six launches a layer, no torch.compile; the matvec
  tuner's choices are kept on disk (:mod:`smolchat.engine.tuning`), so only a GPU's first
  launch tunes.
- ``"inductor"`` (a model with biases, or NF4 layouts the kernel does not read: see
  :func:`triton_unsupported`): the model's ``attention_input`` and ``attention_output``
  compiled by Inductor (static shapes), attention by the Triton kernel.
- without Triton (or a head size it cannot take): the whole layer compiled, attention included.

``SMOLCHAT_NO_CUDA_GRAPHS=1`` turns the path off (plain eager decoding);
``SMOLCHAT_NO_COMPILE=1`` keeps the graphs but skips torch.compile (faster start, slower steps);
``SMOLCHAT_DECODE_KERNELS=inductor`` picks the Inductor variant where both are possible.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from smolchat.engine.sampling import apply_repetition_penalty_mask, pick
from smolchat.engine.types import SamplingParams
from smolchat.model.cache import KVCache
from smolchat.model.decode_step import DecodeWeights, Head, LayerSpec
from smolchat.model.network import CausalLM
from smolchat.model.rope import apply_rotary

if TYPE_CHECKING:  # kernels imports triton, which only CUDA machines need
    from smolchat.engine.kernels import DecodeAttention

log = logging.getLogger(__name__)

ENV_DISABLE = "SMOLCHAT_NO_CUDA_GRAPHS"
ENV_NO_COMPILE = "SMOLCHAT_NO_COMPILE"
ENV_KERNELS = "SMOLCHAT_DECODE_KERNELS"
COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {
    "coordinate_descent_tuning": True
}

# A linear layer as the step sees it: ("dense", weight, bias) or
# ("nf4", packed, shape, absmax, blocksize, absmax_8bit, absmax_code, absmax_offset, bias).
LinearSpec = tuple


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def fast_path_enabled(device: torch.device) -> bool:
    """The fast path runs on CUDA unless ``SMOLCHAT_NO_CUDA_GRAPHS`` is set."""
    return device.type == "cuda" and not _env_on(ENV_DISABLE)


# --- the ops the step runs with (the step itself is the model's: model/decode_step.py) -----


class DeviceKV(NamedTuple):
    """One layer's cache slot for the captured step: the position lives on the device."""

    k: torch.Tensor  # (1, n_kv, S, hd), S = bucket capacity
    v: torch.Tensor
    pos: torch.Tensor  # (1,) int64, position of this token
    inv_freq: torch.Tensor  # (hd/2,) float32


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


class StaticTorchOps:
    """The step's ops in torch for a fixed cache bucket and a device position, on (1, C)
    rows, written for Inductor; weights are :func:`linear_spec` tuples.

    ``fused``: attention as plain reductions (scores, softmax, weighted sum) that Inductor
    fuses and splits over S itself; else SDPA with the mask ``k_pos <= pos``.
    """

    def __init__(self, fused: bool) -> None:
        self.fused = fused

    def norm_linear(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: LinearSpec
    ) -> torch.Tensor:
        return _linear(_rms(x, norm, eps), w)

    def norm_linear_gated(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: LinearSpec, inter: int
    ) -> torch.Tensor:
        gate, up = _linear(_rms(x, norm, eps), w).split(inter, dim=-1)
        return F.silu(gate) * up

    def linear_residual(self, x: torch.Tensor, w: LinearSpec, res: torch.Tensor) -> torch.Tensor:
        return res + _linear(x, w)

    def attention(self, qkv: torch.Tensor, spec: LayerSpec, kv: DeviceKV) -> torch.Tensor:
        n_heads, n_kv, hd = spec.n_heads, spec.n_kv, spec.head_dim
        rep = n_heads // n_kv
        q, k, v = qkv.split((n_heads * hd, n_kv * hd, n_kv * hd), dim=-1)
        q = q.view(1, n_heads, 1, hd)
        k = k.view(1, n_kv, 1, hd)
        v = v.view(1, n_kv, 1, hd)
        pos, k_cache, v_cache = kv.pos, kv.k, kv.v
        if spec.use_rope:
            freqs = pos.float()[:, None] * kv.inv_freq[None, :]  # (1, hd/2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos() * spec.rope_scaling, emb.sin() * spec.rope_scaling
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k_cache[:, :, pos] = k  # index_put at the device position: no host sync
        v_cache[:, :, pos] = v
        s = k_cache.shape[2]
        k_pos = torch.arange(s, device=qkv.device)
        valid = k_pos <= pos  # (S,)
        if spec.window is not None:
            valid = valid & (k_pos > pos - spec.window)
        if self.fused:
            qg = q.view(n_kv, rep, 1, hd).float()
            scores = (qg * k_cache[0].unsqueeze(1).float()).sum(-1) * (1.0 / math.sqrt(hd))
            scores = scores.masked_fill(~valid, float("-inf"))  # (n_kv, rep, S)
            probs = torch.softmax(scores, dim=-1)
            y = (probs.unsqueeze(-1) * v_cache[0].unsqueeze(1).float()).sum(2)  # (n_kv, rep, hd)
        else:
            y = F.scaled_dot_product_attention(
                q.view(1, n_kv, rep, hd), k_cache, v_cache, attn_mask=valid[None, None, None, :]
            )
        return y.to(qkv.dtype).reshape(1, n_heads * hd)


SDPA_TORCH_OPS = StaticTorchOps(fused=False)
FUSED_TORCH_OPS = StaticTorchOps(fused=True)  # what Inductor compiles


class TritonOps:
    """The step's ops as our Triton kernels (:mod:`smolchat.engine.kernels`) on (C,) vectors:
    RMSNorm, SiLU gate and residual fused into the matvecs, RoPE and the K/V write into the
    split-K attention. Weights are :func:`triton_weight` (dense tensors or ``NF4Matrix``);
    :func:`triton_unsupported` says which models they take."""

    def __init__(self, att: DecodeAttention) -> None:
        from smolchat.engine.kernels import matvec

        self.att, self._matvec = att, matvec

    def norm_linear(self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: Any) -> torch.Tensor:
        return self._matvec(x, w, norm=norm, eps=eps)

    def norm_linear_gated(
        self, x: torch.Tensor, norm: torch.Tensor, eps: float, w: Any, inter: int
    ) -> torch.Tensor:
        return self._matvec(x, w, norm=norm, eps=eps, gated=True)

    def linear_residual(self, x: torch.Tensor, w: Any, res: torch.Tensor) -> torch.Tensor:
        return self._matvec(x, w, res=res, out=res)  # the residual stream updated in place

    def attention(self, qkv: torch.Tensor, spec: LayerSpec, kv: DeviceKV) -> torch.Tensor:
        return self.att(
            qkv,
            kv.k,
            kv.v,
            kv.pos,
            kv.inv_freq,
            use_rope=spec.use_rope,
            window=spec.window,
            rope_scaling=spec.rope_scaling,
        )


def _head_step(
    logits_fn: Callable[..., torch.Tensor],
    ops: StaticTorchOps,
    x: torch.Tensor,
    head: Head[LinearSpec],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's ``decode.logits`` and the greedy pick, compiled together."""
    logits = logits_fn(ops, x, head)  # (1, V)
    return logits, logits.argmax(dim=-1)


_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One torch.compile wrapper per function per process, so engines share compiled code."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, fullgraph=True, options=COMPILE_OPTIONS)
    return _COMPILED[fn]


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def is_quantized(module: nn.Module) -> bool:
    return getattr(getattr(module, "weight", None), "quant_state", None) is not None


# --- weights as the step sees them ---------------------------------------------------------


def _nf4_supported(module: nn.Module) -> bool:
    """Whether our NF4 matvec kernel reads this bitsandbytes weight as it is stored."""
    from smolchat.engine.kernels import NF4Matrix

    qs: Any = getattr(module.weight, "quant_state", None)  # bitsandbytes' QuantState
    if qs.quant_type != "nf4" or getattr(qs, "packing_format_for_cpu", False):
        return False
    n, k = (int(d) for d in qs.shape)
    nested = qs.state2.blocksize if qs.nested else None
    return NF4Matrix.supports(n, k, int(qs.blocksize), nested)


def triton_unsupported(model: CausalLM) -> str | None:
    """Why our Triton matvecs cannot run this model's layers (None: they can). They take
    dense weights without a bias and the NF4 layouts :class:`NF4Matrix` reads; the attention
    kernel declares its head sizes itself (``DecodeAttention.supports``)."""
    mods = [m for layer in model.model.layers for m in layer.modules() if m is not layer]
    if any(getattr(m, "bias", None) is not None for m in mods):
        return "linear layers with a bias"
    if not all(_nf4_supported(m) for m in mods if is_quantized(m)):
        return "an NF4 layout the kernel does not read"
    return None


def triton_weight(module: nn.Module) -> Any:
    """The weight as the Triton matvec takes it: a dense (N, K) tensor or an ``NF4Matrix``."""
    if not is_quantized(module):
        return module.weight
    from smolchat.engine.kernels import NF4Matrix

    weight: Any = module.weight  # bitsandbytes' Params4bit
    return NF4Matrix.from_quant_state(weight.data, weight.quant_state)


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
        kernels: str | None = None,
    ) -> None:
        self.model, self.cache = model, cache
        self.device = cache.device
        cfg = model.config
        # graphs=False runs the same static-input step eagerly (CPU tests of the host loop)
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if compile is None:
            compile = self.graphs and not _env_on(ENV_NO_COMPILE)
        self.compile = compile
        self.att: DecodeAttention | None = None  # Triton decode attention, when it can run
        self.triton_ops: TritonOps | None = None
        self.kernels = "eager"
        # kernels="triton" with graphs=False runs the Triton step eagerly (interpreter tests)
        use_triton = self.graphs or kernels == "triton"
        if use_triton and _triton_ok():
            from smolchat.engine.kernels import DecodeAttention

            if DecodeAttention.supports(cfg.head_dim):
                self.att = DecodeAttention(
                    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, self.device
                )
                self.triton_ops = TritonOps(self.att)
                why = triton_unsupported(model)
                want = kernels or os.environ.get(ENV_KERNELS, "").strip().lower() or "triton"
                self.kernels = "triton" if want == "triton" and why is None else "inductor"
                if want == "triton" and why is not None:
                    log.info("Triton matvecs do not take %s; using Inductor", why)
        if self.att is None and self.compile:
            self.kernels = "inductor"
        # the model's step with torch ops (fused attention reductions when Inductor compiles)
        self.torch_ops = FUSED_TORCH_OPS if self.compile else SDPA_TORCH_OPS
        self.weights: DecodeWeights[LinearSpec] = model.decode_weights(linear_spec)
        self.triton_weights: DecodeWeights[Any] | None = None
        if self.kernels == "triton":
            self.triton_weights = model.decode_weights(triton_weight)
        self.tok = torch.zeros(1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._host = torch.zeros(1, dtype=torch.long, pin_memory=self.graphs)
        self._event = torch.cuda.Event() if self.graphs else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # (1, V), valid after a replay
        self._key: tuple | None = None
        self._pool: torch.cuda._POOL_HANDLE | None = None  # the graphs' shared memory pool
        self.failed: str | None = None
        # sampling inside the step (None: the greedy argmax); its generator and seen-ids mask
        self.sampling: SamplingParams | None = None
        self.sample_in_graph_failed = False
        self._gen: torch.Generator | None = None
        self.seen: torch.Tensor | None = None  # (V,) bool, with a repetition penalty
        self._tuned = False
        self.tuning: dict[str, tuple] = {}  # matvec -> (config, seconds) on this GPU
        self.tuning_cached = False  # every choice came from the on-disk cache
        self.timings: dict[str, float] = {}  # start-up stages: tune_s, first_capture_s
        self.captures: list[tuple[int, float]] = []  # (bucket capacity, seconds) per capture
        self._bind()

    def _bind(self) -> None:
        """The model's step functions, compiled by Inductor unless the Triton kernels run."""
        step = self.model.decode
        fns: dict[str, Callable[..., Any]] = {"layer": step.layer, "head": _head_step}
        fns.update(pre=step.attention_input, post=step.attention_output)
        if self.compile and self.kernels != "triton":
            fns = {name: _compiled(fn) for name, fn in fns.items()}
        self._layer_fn, self._pre_fn = fns["layer"], fns["pre"]
        self._post_fn, self._head_fn = fns["post"], fns["head"]

    def _kvs(self) -> list[DeviceKV]:
        inv_freq = self.model.rotary.inv_freq
        pairs = zip(self.cache.k, self.cache.v, strict=True)
        return [DeviceKV(k, v, self.pos, inv_freq) for k, v in pairs]

    # --- the step ------------------------------------------------------------------------
    def _body(self) -> torch.Tensor:
        if self.kernels == "triton":
            return self._body_triton()
        self._mark_seen()
        x = F.embedding(self.tok, self.model.model.embed_tokens.weight)  # (1, C)
        ops = self.torch_ops
        for w, kv in zip(self.weights.layers, self._kvs(), strict=True):
            if self.triton_ops is None:
                x = self._layer_fn(ops, x, w, kv)  # the whole layer, compiled
                continue
            # the phases around attention compiled, our Triton attention between them
            qkv = self._pre_fn(ops, x, w)  # (1, (H + 2 KV) * hd)
            y = self.triton_ops.attention(qkv.view(-1), w.spec, kv)  # (H * hd,)
            x = self._post_fn(ops, x, y.view(1, -1), w)
        logits, nxt = self._head_fn(self.model.decode.logits, ops, x, self.weights.head)
        if self.sampling is None:
            self.tok.copy_(nxt)
        else:
            self._pick(logits.view(-1))
        self.pos.add_(1)
        return logits

    def _mark_seen(self) -> None:
        """The step's input token joins the ids the repetition penalty sees."""
        if self.sampling is not None and self.seen is not None:
            self.seen.index_fill_(0, self.tok, True)

    def _pick(self, logits: torch.Tensor) -> None:
        """Sample the next token from ``logits`` (V,) into ``tok``, as the engine's sampler."""
        p = self.sampling
        assert p is not None
        scores = logits.float()
        if self.seen is not None:
            scores = apply_repetition_penalty_mask(scores, self.seen, p.repetition_penalty)
        self.tok.copy_(pick(scores, p, self._gen).view(1))

    def _body_triton(self) -> torch.Tensor:
        from smolchat.engine.kernels import argmax

        assert self.triton_ops is not None and self.triton_weights is not None
        self._mark_seen()
        x = F.embedding(self.tok, self.model.model.embed_tokens.weight)[0]  # (C,), updated in place
        logits = self.model.decode.run(self.triton_ops, x, self.triton_weights, self._kvs())
        if self.sampling is None:
            argmax(logits, self.tok)
        else:
            self._pick(logits)
        self.pos.add_(1)
        return logits.view(1, -1)

    def _tune(self) -> None:
        """Pick each matvec's kernel config on this GPU (once per shape: the choices are kept
        on disk, see :mod:`smolchat.engine.tuning`, so later launches only read them)."""
        from smolchat.engine.kernels import tune_gemv
        from smolchat.engine.tuning import Platform, TuningCache, default_path

        t0 = time.perf_counter()
        cache = TuningCache(default_path())
        platform = Platform.current(self.device)
        assert self.triton_weights is not None
        layers = self.triton_weights.layers
        ln1, ln2 = layers[0].ln1, layers[0].ln2
        dt, dev = ln1.dtype, self.device
        x = torch.randn(ln1.shape[0], device=dev, dtype=dt)
        mats = {
            "qkv": [w.qkv for w in layers],
            "o": [w.o for w in layers],
            "gu": [w.gate_up for w in layers],
            "down": [w.down for w in layers],
        }
        y = torch.randn(mats["o"][0].shape[1], device=dev, dtype=dt)
        a = torch.randn(mats["down"][0].shape[1], device=dev, dtype=dt)
        c, pf = cache, platform
        found = {
            "qkv": tune_gemv(x, mats["qkv"], norm=ln1, cache=c, platform=pf),
            "o": tune_gemv(y, mats["o"], res=x, cache=c, platform=pf),
            "gate_up": tune_gemv(x, mats["gu"], norm=ln2, gated=True, cache=c, platform=pf),
            "down": tune_gemv(a, mats["down"], res=x, cache=c, platform=pf),
            "head": tune_gemv(x, [self.triton_weights.head.weight], norm=ln1, cache=c, platform=pf),
        }
        self.tuning = {name: (cfg, secs) for name, (cfg, secs, _) in found.items()}
        self.tuning_cached = all(hit for _, _, hit in found.values())
        if not self.tuning_cached:
            cache.save()
        self.timings["tune_s"] = time.perf_counter() - t0

    @torch.inference_mode()  # the same grad mode whoever calls: no recompiles
    def _capture(self) -> None:
        t0 = time.perf_counter()
        self.graph, self.logits, self._key = None, None, None
        if self.compile and self.kernels != "triton":  # only Inductor reads the marks; touching
            for t in self.cache.k + self.cache.v:  # torch._dynamo imports it (4-5 s at start)
                torch._dynamo.maybe_mark_dynamic(t, 2)
        if self.kernels == "triton" and not self._tuned:
            self._tune()
            self._tuned = True
        tok, pos = self.tok.clone(), self.pos.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        sampling, self.sampling = self.sampling, None  # warm-ups draw nothing: the seeded
        try:  # stream stays the one the engine's first token started
            with torch.cuda.stream(side):
                for _ in range(2):  # compiles on first use; K/V only at pos (not yet valid)
                    self._body()
                    self.tok.copy_(tok)
                    self.pos.copy_(pos)
        finally:
            self.sampling = sampling
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        if self.sampling is not None and not self.sampling.greedy:
            graph.register_generator_state(self.generator())  # replays continue its stream
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = self._body()
        torch.cuda.synchronize(self.device)
        self.graph, self.logits = graph, logits
        self._key = self._cache_key()
        self.captures.append((self.cache.capacity, time.perf_counter() - t0))
        self.timings.setdefault("first_capture_s", time.perf_counter() - t0)

    def _cache_key(self) -> tuple:
        ptr = self.cache.k[0].data_ptr() if self.cache.k else 0
        return (self.cache.capacity, ptr, self.sampling)

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
            if self.sampling is not None:  # keep the kernels; the engine samples on the host
                log.warning("sampling inside the CUDA graph failed (%s); sampling outside", exc)
                self.sampling, self.sample_in_graph_failed = None, True
                return self.prepare()
            if self.kernels == "triton":
                log.warning("Triton decode kernels failed (%s); using Inductor", exc)
                self.kernels = "inductor" if self.compile else "eager"
                self.att = self.triton_ops = None
                self._bind()
                return self.prepare()
            if not self.compile:
                self.failed = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("CUDA graph decode disabled: %s", self.failed)
                raise
            log.warning("torch.compile failed (%s); capturing the uncompiled step", exc)
            self.compile = False
            self.kernels = "eager"
            self.torch_ops = SDPA_TORCH_OPS
            self._bind()
            self._capture()

    # --- the host loop's verbs ----------------------------------------------------------
    def generator(self) -> torch.Generator:
        """The generator sampling inside the step draws from (the engine seeds it)."""
        if self._gen is None:
            self._gen = torch.Generator(device=self.device)
        return self._gen

    def set_sampling(self, p: SamplingParams, seen: torch.Tensor | None) -> bool:
        """Sample inside the step with ``p`` from now on (greedy without a penalty: the
        argmax); ``seen``: ids (device, long) the repetition penalty starts from. Returns
        whether the step samples (False: the caller samples the logits itself). A change of
        settings (not of the seed) captures again (milliseconds)."""
        want: SamplingParams | None = dataclasses.replace(p, seed=None)
        if p.greedy and p.repetition_penalty == 1.0:
            want = None
        if self.sample_in_graph_failed and want is not None:
            self.sampling = None
            return False
        self.sampling = want
        if want is not None and want.repetition_penalty != 1.0:
            if self.seen is None:
                vocab = self.model.config.vocab_size
                self.seen = torch.zeros(vocab, dtype=torch.bool, device=self.device)
            self.seen.zero_()
            if seen is not None and seen.numel():
                self.seen.index_fill_(0, seen, True)
        return True

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
        if self.kernels == "triton":
            return "cuda-graph+triton"
        base = "cuda-graph+compile" if self.compile else "cuda-graph"
        return base + ("+triton-attention" if self.att is not None else "")
