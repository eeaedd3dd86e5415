"""Triton kernels for the batch-1 decode step on CUDA.

- :func:`gemv`: ``out = W @ x`` for one token, with the RMSNorm before it (``norm``), the SiLU
  gate after it (``gated``: rows ``[0, I)`` are the gate, ``[I, 2I)`` the up projection, the
  output is ``silu(gate) * up``) or the residual add (``res``) fused in. Every rounding to
  the model dtype happens where the eager network rounds, so results match it closely.
- :func:`decode_attention`: split-K ("flash-decoding") attention of one query over the cache
  bucket, reading the position from device memory, so one CUDA graph serves every step. It
  applies RoPE to q and the new k itself and writes the new k/v into the cache.

Import needs ``triton`` (shipped with CUDA builds of torch). ``tests/test_cuda.py`` checks them
against torch on the GPU; they also run in Triton's CPU interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from smolchat.engine.tuning import Platform, TuningCache

# (BLOCK_N, BLOCK_K, num_warps) tried per matrix shape when tuning; the first is the default.
# "torch" (cuBLAS plus separate norm / activation / residual kernels) competes too.
GEMV_CONFIGS = (
    (4, 512, 4),
    (2, 1024, 4),
    (4, 1024, 8),
    (8, 256, 4),
    (8, 512, 8),
    (16, 256, 8),
    (16, 512, 8),
    (32, 128, 4),
    (32, 256, 8),
    (1, 2048, 4),
)
ATTN_BLOCK_N = 64
MAX_SPLITS = 64
_tuned: dict[tuple, tuple | str] = {}  # a config, or "torch"


@triton.jit
def _gemv_kernel(
    X,
    W,
    OUT,
    RES,
    NW,
    N,
    K,
    eps,
    NORM: tl.constexpr,
    GATED: tl.constexpr,
    RESID: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    ks = tl.arange(0, BLOCK_K)
    dtype = OUT.dtype.element_ty
    wrow = rows.to(tl.int64)[:, None] * K
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    if GATED:
        wrow2 = (rows + N).to(tl.int64)[:, None] * K
        acc2 = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    if NORM:
        ss = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + ks
        cmask = cols < K
        xf = tl.load(X + cols, mask=cmask, other=0.0).to(tl.float32)
        if NORM:  # one pass: W @ (x * nw) now, times rstd (a scalar) at the end
            ss += xf * xf
            xf = xf * tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
        m2 = rmask[:, None] & cmask[None, :]
        w = tl.load(W + wrow + cols[None, :], mask=m2, other=0.0)
        acc += w.to(tl.float32) * xf[None, :]
        if GATED:
            w2 = tl.load(W + wrow2 + cols[None, :], mask=m2, other=0.0)
            acc2 += w2.to(tl.float32) * xf[None, :]
    out = tl.sum(acc, 1)
    if NORM:
        rstd = tl.rsqrt(tl.sum(ss, 0) / K + eps)
        out = out * rstd
    if GATED:  # silu(gate) * up, each rounded like the eager ops
        up = tl.sum(acc2, 1)
        if NORM:
            up = up * rstd
        g = out.to(dtype).to(tl.float32)
        u = up.to(dtype).to(tl.float32)
        out = (g * tl.sigmoid(g)).to(dtype).to(tl.float32) * u
    if RESID:
        r = tl.load(RES + rows, mask=rmask, other=0.0).to(tl.float32)
        out = r + out.to(dtype).to(tl.float32)
    tl.store(OUT + rows, out.to(dtype), mask=rmask)


def gemv(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    norm: torch.Tensor | None = None,
    eps: float = 1e-6,
    gated: bool = False,
    res: torch.Tensor | None = None,
    config: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """One token through a linear layer: ``(K,) -> (N,)`` (``gated``: ``(N/2,)``)."""
    n, k = w.shape
    if gated:
        n //= 2
    cfg = config or _tuned.get(_key(w, norm, gated, res), GEMV_CONFIGS[0])
    if isinstance(cfg, str):  # "torch"
        return _torch_gemv(x, w, out=out, norm=norm, eps=eps, gated=gated, res=res)
    if out is None:
        out = torch.empty(n, device=x.device, dtype=x.dtype)
    block_n, block_k, warps = cfg
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        w,
        out,
        res if res is not None else out,
        norm if norm is not None else w,
        n,
        k,
        eps,
        NORM=norm is not None,
        GATED=gated,
        RESID=res is not None,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=warps,
    )
    return out


def _torch_gemv(x, w, *, out=None, norm=None, eps=1e-6, gated=False, res=None) -> torch.Tensor:
    """The same operation from torch ops (cuBLAS matvec + elementwise kernels)."""
    h = torch.nn.functional.rms_norm(x, norm.shape, norm, eps) if norm is not None else x
    y = torch.nn.functional.linear(h, w)
    if gated:
        n = y.shape[0] // 2
        y = torch.nn.functional.silu(y[:n]) * y[n:]
    if res is not None:
        y = res + y
    if out is None:
        return y
    return out.copy_(y)


def _key(w: torch.Tensor | NF4Matrix, norm, gated: bool, res) -> tuple:
    return (tuple(w.shape), w.dtype, norm is not None, gated, res is not None)


def matvec(x: torch.Tensor, w: torch.Tensor | NF4Matrix, **kwargs) -> torch.Tensor:
    """:func:`gemv` for a dense weight, :func:`nf4_gemv` for an :class:`NF4Matrix`."""
    if isinstance(w, NF4Matrix):
        return nf4_gemv(x, w, **kwargs)
    return gemv(x, w, **kwargs)


def tune_gemv(
    x: torch.Tensor,
    weights: list,
    *,
    norm: torch.Tensor | None = None,
    gated: bool = False,
    res: torch.Tensor | None = None,
    cache: TuningCache | None = None,
    platform: Platform | None = None,
) -> tuple[tuple | str, float, bool]:
    """Pick the fastest config for one matrix shape on this GPU.

    Returns ``(config, seconds per matvec, from_cache)``. ``weights`` are dense ``(N, K)``
    tensors or :class:`NF4Matrix` (one per layer). Each candidate runs once per layer's matrix
    (so the weights stream from memory, not L2, as in a real step), captured in a CUDA graph
    (so launch overhead does not hide it). With ``cache`` and ``platform``, a stored choice is
    used as it is and a new one is stored.
    """
    key = _key(weights[0], norm, gated, res)
    if key in _tuned and key in _tuned_s:
        return _tuned[key], _tuned_s[key], True
    if cache is not None and platform is not None:
        hit = cache.get(platform, key)
        if hit is not None:
            _tuned[key], _tuned_s[key] = hit
            return hit[0], hit[1], True
    nf4 = isinstance(weights[0], NF4Matrix)
    configs: tuple = NF4_CONFIGS if nf4 else GEMV_CONFIGS
    best: tuple | str = configs[0]
    best_t = math.inf
    for cfg in (*configs, "torch"):
        try:
            t = _time_graph(
                lambda cfg=cfg: [
                    matvec(x, w, norm=norm, gated=gated, res=res, config=cfg) for w in weights
                ]
            )
        except Exception:  # a config this device cannot run (resources): skip it
            torch.cuda.synchronize()
            continue
        t /= len(weights)
        if t < best_t:
            best, best_t = cfg, t
    _tuned[key], _tuned_s[key] = best, best_t
    if cache is not None and platform is not None and math.isfinite(best_t):
        cache.put(platform, key, best, best_t)
    return best, best_t, False


_tuned_s: dict[tuple, float] = {}


def _time_graph(fn, replays: int = 5) -> float:
    """Seconds per ``fn()``, from replays of a CUDA graph of it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compile (first use) outside the capture
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / replays


# --- NF4 (bitsandbytes' storage, read as it is) ---------------------------------------------

# (BLOCK_N rows, BLOCK_G 64-weight blocks per step, num_warps) tried per NF4 shape.
NF4_CONFIGS = (
    (8, 8, 4),
    (4, 16, 4),
    (4, 8, 4),
    (16, 4, 4),
    (2, 16, 4),
    (8, 16, 8),
    (2, 32, 4),
    (1, 32, 4),
)
NF4_BLOCK = 64
# True: round each dequantized weight to the model dtype before the product, exactly as
# bitsandbytes' dequantize-then-matmul does. False: the block's scale applied in float32 after
# the block's sum (one rounding fewer than bnb, within bf16 rounding of its output; 5-8%
# faster on an H200). The benchmark measures both.
NF4_ROUND_WEIGHTS = False


@triton.jit
def _nf4_gemv_kernel(
    X,
    P,
    CODE,
    A,
    A2,
    CODE2,
    OFFSET,
    OUT,
    RES,
    NW,
    N,
    K,
    KB,
    NB,
    eps,
    NESTED: tl.constexpr,
    NORM: tl.constexpr,
    GATED: tl.constexpr,
    RESID: tl.constexpr,
    ROUND_W: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    kb = KB  # packed bytes per row (K / 2)
    nb = NB  # 64-weight blocks per row (K / 64)
    gs = tl.arange(0, BLOCK_G)
    es = tl.arange(0, 32)
    dtype = OUT.dtype.element_ty
    r64 = rows.to(tl.int64)
    acc = tl.zeros([BLOCK_N, BLOCK_G], tl.float32)
    if GATED:
        acc2 = tl.zeros([BLOCK_N, BLOCK_G], tl.float32)
    if NORM:
        ss = tl.zeros([BLOCK_G, 32], tl.float32)
    if NESTED:
        offset = tl.load(OFFSET)
    for g0 in range(0, nb, BLOCK_G):
        g = g0 + gs  # block index within the row
        gmask = g < nb
        byte = g[:, None] * 32 + es[None, :]  # (BLOCK_G, 32) byte within the row
        xmask = gmask[:, None]
        xe = tl.load(X + 2 * byte, mask=xmask, other=0.0).to(tl.float32)  # each pair's first
        xo = tl.load(X + 2 * byte + 1, mask=xmask, other=0.0).to(tl.float32)
        if NORM:  # one pass: W @ (x * nw) now, times rstd (a scalar) at the end
            ss += xe * xe + xo * xo
            xe = xe * tl.load(NW + 2 * byte, mask=xmask, other=0.0).to(tl.float32)
            xo = xo * tl.load(NW + 2 * byte + 1, mask=xmask, other=0.0).to(tl.float32)
        m3 = rmask[:, None, None] & gmask[None, :, None]
        m2 = rmask[:, None] & gmask[None, :]
        for half in tl.static_range(2 if GATED else 1):
            rr = r64 + half * N
            bidx = rr[:, None] * nb + g[None, :]
            if NESTED:  # absmax = code2[a8] * absmax2[block // 256] + offset
                a8 = tl.load(A + bidx, mask=m2, other=0).to(tl.int32)
                scale = tl.load(CODE2 + a8) * tl.load(A2 + bidx // 256, mask=m2, other=0.0)
                scale = scale + offset
            else:
                scale = tl.load(A + bidx, mask=m2, other=0.0)
            p = tl.load(P + rr[:, None, None] * kb + byte[None, :, :], mask=m3, other=0)
            p = p.to(tl.int32)
            wa = tl.load(CODE + (p >> 4))  # the high nibble is the first weight
            wb = tl.load(CODE + (p & 15))
            if ROUND_W:  # each weight rounded to the model dtype, as bnb's dequantize does
                s3 = scale[:, :, None]
                wa = (wa * s3).to(dtype).to(tl.float32)
                wb = (wb * s3).to(dtype).to(tl.float32)
                part = tl.sum(wa * xe[None, :, :] + wb * xo[None, :, :], 2)
            else:  # one scale per block, after the block's sum
                part = tl.sum(wa * xe[None, :, :] + wb * xo[None, :, :], 2) * scale
            if half == 0:
                acc += part
            else:
                acc2 += part
    out = tl.sum(acc, 1)
    if NORM:
        rstd = tl.rsqrt(tl.sum(tl.sum(ss, 1), 0) / K + eps)
        out = out * rstd
    if GATED:  # silu(gate) * up, each rounded like the eager ops
        up = tl.sum(acc2, 1)
        if NORM:
            up = up * rstd
        gt = out.to(dtype).to(tl.float32)
        u = up.to(dtype).to(tl.float32)
        out = (gt * tl.sigmoid(gt)).to(dtype).to(tl.float32) * u
    if RESID:
        r = tl.load(RES + rows, mask=rmask, other=0.0).to(tl.float32)
        out = r + out.to(dtype).to(tl.float32)
    tl.store(OUT + rows, out.to(dtype), mask=rmask)


class NF4Matrix:
    """A bitsandbytes NF4 weight ``(N, K)`` as it is stored, described for the matvec kernel.

    - ``packed``: uint8 ``(N * K / 2,)``, two codes a byte, the first weight in the high nibble.
    - ``absmax``: the per-64-weight scales: float32 ``(N * K / 64,)``, or, double-quantized
      (``nested``), uint8 codes into ``code2`` (256 float32) times ``absmax2`` (float32, one per
      256 blocks) plus ``offset`` (float32 scalar tensor).
    - ``code``: the 16 NF4 values (float32).
    """

    def __init__(self, packed, n, k, code, absmax, absmax2=None, code2=None, offset=None):
        self.packed = packed.reshape(-1)
        self.n, self.k = int(n), int(k)
        self.code = code.float().contiguous()
        self.absmax = absmax.reshape(-1)
        self.nested = absmax2 is not None
        self.absmax2 = absmax2.reshape(-1) if absmax2 is not None else self.absmax
        self.code2 = code2.float().contiguous() if code2 is not None else self.code
        if offset is None:
            offset = torch.zeros((), dtype=torch.float32)
        elif not torch.is_tensor(offset):
            offset = torch.tensor(float(offset), dtype=torch.float32)
        self.offset = offset.to(device=self.packed.device, dtype=torch.float32).reshape(1)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.k)

    @property
    def dtype(self) -> str:
        return "nf4" + ("-nested" if self.nested else "")

    @staticmethod
    def supports(n: int, k: int, blocksize: int, nested_blocksize: int | None) -> bool:
        return blocksize == NF4_BLOCK and k % NF4_BLOCK == 0 and nested_blocksize in (None, 256)

    @classmethod
    def from_quant_state(cls, packed: torch.Tensor, qs) -> NF4Matrix:
        """From a bitsandbytes ``Params4bit`` tensor and its ``QuantState`` (NF4, blocksize 64)."""
        n, k = (int(d) for d in qs.shape)
        if qs.nested:
            return cls(
                packed, n, k, qs.code, qs.absmax, qs.state2.absmax, qs.state2.code, qs.offset
            )
        return cls(packed, n, k, qs.code, qs.absmax)

    def dequantize(self) -> torch.Tensor:
        """float32 ``(N, K)``: the weights as bitsandbytes' dequantize computes them."""
        b = self.packed.long()
        codes = torch.stack([b >> 4, b & 15], 1).reshape(-1)
        if self.nested:
            blocks = torch.arange(self.absmax.numel(), device=b.device) // 256
            scale = self.code2[self.absmax.long()] * self.absmax2[blocks] + self.offset
        else:
            scale = self.absmax.float()
        w = self.code[codes].reshape(-1, NF4_BLOCK) * scale[:, None]
        return w.reshape(self.n, self.k)


def nf4_gemv(
    x: torch.Tensor,
    w: NF4Matrix,
    *,
    out: torch.Tensor | None = None,
    norm: torch.Tensor | None = None,
    eps: float = 1e-6,
    gated: bool = False,
    res: torch.Tensor | None = None,
    config: tuple | str | None = None,
) -> torch.Tensor:
    """:func:`gemv` for an NF4 weight: ``(K,) -> (N,)`` (``gated``: ``(N/2,)``), dequantizing
    in registers (fp32 products, fp32 accumulation), nothing dequantized to memory."""
    n, k = w.shape
    if gated:
        n //= 2
    cfg = config or _tuned.get(_key(w, norm, gated, res), NF4_CONFIGS[0])
    if isinstance(cfg, str):  # "torch"
        return _torch_nf4_gemv(x, w, out=out, norm=norm, eps=eps, gated=gated, res=res)
    if out is None:
        out = torch.empty(n, device=x.device, dtype=x.dtype)
    block_n, block_g, warps = cfg
    _nf4_gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        w.packed,
        w.code,
        w.absmax,
        w.absmax2,
        w.code2,
        w.offset,
        out,
        res if res is not None else out,
        norm if norm is not None else x,
        n,
        k,
        k // 2,
        k // NF4_BLOCK,
        eps,
        NESTED=w.nested,
        NORM=norm is not None,
        GATED=gated,
        RESID=res is not None,
        ROUND_W=NF4_ROUND_WEIGHTS,
        BLOCK_N=block_n,
        BLOCK_G=block_g,
        num_warps=warps,
    )
    return out


def _torch_nf4_gemv(x, w: NF4Matrix, *, out=None, norm=None, eps=1e-6, gated=False, res=None):
    """The same operation through bitsandbytes' 4-bit matvec plus torch ops."""
    h = torch.nn.functional.rms_norm(x, norm.shape, norm, eps) if norm is not None else x
    if w.nested:  # bnb's op takes the nested scales as absmax, the uint8 codes as absmax_8bit
        scales = (w.absmax2, w.absmax, w.code2, w.offset.reshape(()))
    else:
        scales = (w.absmax, None, None, None)
    gemm = torch.ops.bitsandbytes.gemm_4bit.default
    shape = list(w.shape)
    y = gemm(
        h.view(1, -1), w.packed.view(-1, 1), shape, scales[0], NF4_BLOCK, "nf4", None, *scales[1:]
    )
    y = y.view(-1)
    if gated:  # one elementwise kernel each, written straight into ``out``
        half = y.shape[0] // 2
        return torch.mul(torch.nn.functional.silu(y[:half]), y[half:], out=out)
    if res is not None:
        return torch.add(res, y, out=out)
    if out is None:
        return y
    return out.copy_(y)


@triton.jit
def _argmax_partial_kernel(X, VAL, IDX, N, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < N, other=float("-inf")).to(tl.float32)
    m, i = tl.max(x, 0, return_indices=True)
    tl.store(VAL + pid, m)
    tl.store(IDX + pid, pid * BLOCK + i)


@triton.jit
def _argmax_final_kernel(VAL, IDX, OUT, P, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    v = tl.load(VAL + offs, mask=offs < P, other=float("-inf"))
    m, i = tl.max(v, 0, return_indices=True)
    tl.store(OUT, tl.load(IDX + i).to(tl.int64))


def argmax(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[0] = argmax(x)`` for a 1-D vector (two small kernels instead of one slow one)."""
    n = x.shape[0]
    block = max(1024, triton.next_power_of_2(triton.cdiv(n, 1024)))
    parts = triton.cdiv(n, block)
    val = torch.empty(parts, device=x.device, dtype=torch.float32)
    idx = torch.empty(parts, device=x.device, dtype=torch.int32)
    _argmax_partial_kernel[(parts,)](x, val, idx, n, BLOCK=block, num_warps=4)
    final = max(16, triton.next_power_of_2(parts))
    _argmax_final_kernel[(1,)](val, idx, out, parts, BLOCK=final, num_warps=4)
    return out


@triton.jit
def _attn_split_kernel(
    QKV,
    KC,
    VC,
    POS,
    INV_FREQ,
    MO,
    LO,
    AO,
    S,
    SPLIT,
    NSPLIT,
    WINDOW,
    scale,
    rope_scaling,
    H: tl.constexpr,
    KV: tl.constexpr,
    REP: tl.constexpr,
    RP: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_ROPE: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    IEEE: tl.constexpr,
):
    g = tl.program_id(0)  # kv head
    sp = tl.program_id(1)  # split of the cache
    pos = tl.load(POS).to(tl.int32)
    d = tl.arange(0, D)
    r = tl.arange(0, RP)
    rmask = r < REP
    qoff = (g * REP + r)[:, None] * D
    q = tl.load(QKV + qoff + d[None, :], mask=rmask[:, None], other=0.0)
    dtype = q.dtype
    kn = tl.load(QKV + H * D + g * D + d)
    vn = tl.load(QKV + (H + KV) * D + g * D + d)
    if USE_ROPE:  # rotate-half RoPE in float32, as the eager network
        dp = (d + D // 2) % D
        sign = tl.where(d < D // 2, -1.0, 1.0)
        ang = pos.to(tl.float32) * tl.load(INV_FREQ + d % (D // 2))
        cos = tl.cos(ang) * rope_scaling
        sin = tl.sin(ang) * rope_scaling
        qp = tl.load(QKV + qoff + dp[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
        q = (q.to(tl.float32) * cos[None, :] + sign[None, :] * qp * sin[None, :]).to(dtype)
        kp = tl.load(QKV + H * D + g * D + dp).to(tl.float32)
        kn = (kn.to(tl.float32) * cos + sign * kp * sin).to(dtype)
    start = sp * SPLIT
    base = g.to(tl.int64) * S * D
    if (pos >= start) & (pos < start + SPLIT):  # this split holds the new token: store it
        tl.store(KC + base + pos * D + d, kn)
        tl.store(VC + base + pos * D + d, vn)
    lo = start
    if HAS_WINDOW:
        lo = tl.maximum(lo, pos - WINDOW + 1)
    hi = tl.minimum(start + SPLIT, pos + 1)
    m_i = tl.full([RP], float("-inf"), tl.float32)
    l_i = tl.zeros([RP], tl.float32)
    acc = tl.zeros([RP, D], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < hi
        k = tl.load(KC + base + n[:, None] * D + d[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(VC + base + n[:, None] * D + d[None, :], mask=valid[:, None], other=0.0)
        new = (n == pos)[:, None]  # our own store may not be visible yet: use the registers
        k = tl.where(new, kn[None, :], k)
        v = tl.where(new, vn[None, :], v)
        if IEEE:  # float32 models: exact products (tl.dot would use TF32)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # (RP, BLOCK_N)
        else:
            s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if IEEE:  # noqa: SIM108 (a constexpr branch, kept as Triton writes it)
            pv = tl.dot(p.to(dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = (g * NSPLIT + sp) * RP + r
    tl.store(MO + out, m_i)
    tl.store(LO + out, l_i)
    tl.store(AO + out[:, None] * D + d[None, :], acc)


@triton.jit
def _attn_combine_kernel(
    MO,
    LO,
    AO,
    OUT,
    NSPLIT,
    REP: tl.constexpr,
    RP: tl.constexpr,
    D: tl.constexpr,
    MAXS: tl.constexpr,
):
    h = tl.program_id(0)
    g = h // REP
    r = h % REP
    c = tl.arange(0, MAXS)
    cmask = c < NSPLIT
    idx = (g * NSPLIT + c) * RP + r
    m = tl.load(MO + idx, mask=cmask, other=float("-inf"))
    l_ = tl.load(LO + idx, mask=cmask, other=0.0)
    w = tl.exp(m - tl.max(m, 0))  # splits with no keys have m = -inf: weight 0
    w = tl.where(cmask & (l_ > 0), w, 0.0)
    d = tl.arange(0, D)
    a = tl.load(AO + idx[:, None] * D + d[None, :], mask=cmask[:, None], other=0.0)
    y = tl.sum(w[:, None] * a, 0) / tl.sum(w * l_, 0)
    tl.store(OUT + h * D + d, y.to(OUT.dtype.element_ty))


class DecodeAttention:
    """Scratch space and launch parameters for one model's decode attention."""

    def __init__(self, n_heads: int, n_kv: int, head_dim: int, device: torch.device) -> None:
        self.h, self.kv, self.d = n_heads, n_kv, head_dim
        self.rep = n_heads // n_kv
        self.rp = max(16, triton.next_power_of_2(self.rep))  # tl.dot needs 16 rows
        self.m = torch.empty(n_kv * MAX_SPLITS * self.rp, device=device, dtype=torch.float32)
        self.l = torch.empty_like(self.m)
        self.acc = torch.empty(n_kv * MAX_SPLITS * self.rp * head_dim, device=device)

    @staticmethod
    def supports(head_dim: int) -> bool:
        return head_dim >= 16 and head_dim & (head_dim - 1) == 0 and head_dim <= 256

    def __call__(
        self,
        qkv: torch.Tensor,  # (H*D + 2*KV*D,) raw projection (RoPE applied here)
        k_cache: torch.Tensor,  # (1, KV, S, D)
        v_cache: torch.Tensor,
        pos: torch.Tensor,  # (1,) int64 device
        inv_freq: torch.Tensor,  # (D/2,) float32
        *,
        use_rope: bool,
        window: int | None,
        rope_scaling: float = 1.0,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = k_cache.shape[2]
        n_splits = max(16, min(MAX_SPLITS, s // ATTN_BLOCK_N))
        split = triton.cdiv(s, n_splits)
        if out is None:
            out = torch.empty(self.h * self.d, device=qkv.device, dtype=qkv.dtype)
        _attn_split_kernel[(self.kv, n_splits)](
            qkv,
            k_cache,
            v_cache,
            pos,
            inv_freq,
            self.m,
            self.l,
            self.acc,
            s,
            split,
            n_splits,
            window or 0,
            1.0 / math.sqrt(self.d),
            rope_scaling,
            H=self.h,
            KV=self.kv,
            REP=self.rep,
            RP=self.rp,
            D=self.d,
            BLOCK_N=ATTN_BLOCK_N,
            USE_ROPE=use_rope,
            HAS_WINDOW=window is not None,
            IEEE=qkv.dtype == torch.float32,
            num_warps=4,
        )
        _attn_combine_kernel[(self.h,)](
            self.m,
            self.l,
            self.acc,
            out,
            n_splits,
            REP=self.rep,
            RP=self.rp,
            D=self.d,
            MAXS=MAX_SPLITS,
            num_warps=4,
        )
        return out
