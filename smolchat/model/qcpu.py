"""Quantized GGUF weights kept small on the CPU: int4 / int8 weight-only linear layers.

A GGUF's block-quantized matrices are repacked, one tensor at a time, into the forms PyTorch's
weight-only CPU kernels read (the ones gpt-fast and torchao use):

- **int4, groups of 32** (``aten._weight_int4pack_mm_for_cpu``): Q4_0, Q4_1 and Q4_K map onto it
  exactly: each group of 32 weights is ``(q - 8) * scale + zero`` with 4-bit codes ``q``
  (Q4_0: ``zero = 0``; Q4_1: ``zero = m + 8 d``; Q4_K: the sub-block's scale and min). The
  scales and zeros are stored in bf16 (8 bits of mantissa), the kernels' activation dtype.
- **int8, one scale per output row** (``aten._weight_int8pack_mm``): Q8_0, Q5_0, Q5_1, Q5_K and
  Q6_K, requantized from their dequantized rows (a few rows at a time). At most 1.45x the
  file's bytes (Q5_K), usually less.
- The token embedding is an int8 table with one scale per group of 32 (:class:`GroupedTable`;
  a Q8_0 table keeps its own codes). A tied head (:class:`RefinedHead`) adds an int4 copy
  for the fast matmul and recomputes each row's best candidates exactly from the table (bf16
  logits alone flip near-ties).
- Q2_K and Q3_K have no kernel here: they are dequantized to the compute dtype, with a note.

Memory: ``codes + scales`` only; no float copy of a matrix outlives its own repacking.
:func:`load_gguf_quantized` fills a ``CausalLM`` built on the ``meta`` device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from smolchat.errors import DeviceError
from smolchat.model.gguf import (
    GGML_QUANT_SIZES,
    GGUFFile,
    T,
    TensorInfo,
    dequantize,
    hf_name,
    open_gguf,
    unpermute_rotary,
)
from smolchat.model.network import CausalLM

log = logging.getLogger(__name__)

GROUP = 32  # int4 group size: one GGUF 4-bit block
INT4_TYPES = frozenset({T.Q4_0, T.Q4_1, T.Q4_K})
INT8_TYPES = frozenset({T.Q8_0, T.Q5_0, T.Q5_1, T.Q5_K, T.Q6_K})
KEPT_TYPES = INT4_TYPES | INT8_TYPES
ROWS_PER_CHUNK = 1024  # rows dequantized at a time when requantizing to int8
_PACK_ROWS = 64  # the int4 CPU packing lays rows out in blocks of 64
# The kernels' activation dtype, whatever the model's: both run 20-30x slower on float32
# inputs (measured on the 2-core Xeon, torch 2.13: a 3072x576 matvec 117 us in bf16, 3.7 ms in
# float32), so float32 models round their matmul inputs to bf16 and get float32 back.
KERNEL_DTYPE = torch.bfloat16

Progress = Callable[[str, int, "int | None"], None]


def kernels_available() -> bool:
    """Whether this torch build has both weight-only CPU kernels."""
    ops = torch.ops.aten
    return all(
        hasattr(ops, name)
        for name in (
            "_weight_int8pack_mm",
            "_weight_int4pack_mm_for_cpu",
            "_convert_weight_to_int4pack_for_cpu",
        )
    )


# --- a quantized matrix before packing ------------------------------------------------------


@dataclass
class QuantizedWeight:
    """A matrix (out, in) as weight-only codes, before packing for a kernel.

    ``int4``: ``codes`` (N, K) uint8 in 0..15, ``scales`` and ``zeros`` (N, K/32) float32;
    weight = ``(codes - 8) * scale + zero`` per group of 32 columns.
    ``int8``: ``codes`` (N, K) int8, ``scales`` (N,) float32; weight = ``codes * scale``.
    """

    kind: Literal["int4", "int8"]
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), int(self.codes.shape[1]))

    @property
    def nbytes(self) -> int:
        """Bytes once packed (int4 codes take half a byte; scales in bf16)."""
        n, k = self.shape
        if self.kind == "int4":
            return n * k // 2 + 2 * 2 * n * (k // GROUP)
        return n * k + 2 * n

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> QuantizedWeight:
        """Apply a row permutation (e.g. un-permuting q/k rotary rows) to every part."""
        zeros = fn(self.zeros) if self.zeros is not None else None
        return QuantizedWeight(self.kind, fn(self.codes), fn(self.scales), zeros)

    def dequantize(self) -> torch.Tensor:
        """The float32 matrix these codes stand for (tests and checks)."""
        if self.kind == "int8":
            return self.codes.float() * self.scales[:, None]
        assert self.zeros is not None
        n, k = self.shape
        q = self.codes.float().reshape(n, k // GROUP, GROUP) - 8
        return (q * self.scales[..., None] + self.zeros[..., None]).reshape(n, k)

    @staticmethod
    def cat(parts: list[QuantizedWeight]) -> QuantizedWeight:
        """Stack row blocks (fused q/k/v, gate/up); all parts must be of one kind."""
        kinds = {p.kind for p in parts}
        if len(kinds) > 1:  # mixed files (e.g. Q4_K q with Q6_K v): int8 holds both
            parts = [to_int8(p) for p in parts]
        first = parts[0]
        zeros = None if first.zeros is None else torch.cat([p.zeros for p in parts])  # type: ignore[misc]
        return QuantizedWeight(
            first.kind,
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scales for p in parts]),
            zeros,
        )


def quantize_int8(w: torch.Tensor) -> QuantizedWeight:
    """Symmetric int8 with one scale per row (absmax / 127) of a float matrix (N, K)."""
    w = w.float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    codes = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return QuantizedWeight("int8", codes, scale)


def to_int8(q: QuantizedWeight) -> QuantizedWeight:
    return q if q.kind == "int8" else quantize_int8(q.dequantize())


def quantize_int4(w: torch.Tensor) -> QuantizedWeight:
    """Asymmetric int4 in groups of 32 (min/max) of a float matrix (N, K); K % 32 == 0."""
    n, k = w.shape
    g = w.float().reshape(n, k // GROUP, GROUP)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    codes = torch.round((g - lo[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
    return QuantizedWeight("int4", codes.reshape(n, k), scale, lo + 8 * scale)


# --- GGUF blocks -> codes ---------------------------------------------------------------------


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(blocks, 16) packed bytes -> (blocks, 32) codes: low nibbles first, then high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def from_gguf(f: GGUFFile, info: TensorInfo) -> QuantizedWeight:
    """The 2-D tensor ``info`` of ``f`` as int4 (Q4_0/Q4_1/Q4_K, exact) or int8 (requantized)."""
    rows, cols = info.shape
    qtype = T(info.ggml_type)
    raw = f.raw(info)
    if qtype in (T.Q4_0, T.Q4_1):
        size = GGML_QUANT_SIZES[qtype][1]
        blocks = np.asarray(raw).reshape(-1, size)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
        if qtype == T.Q4_0:
            zero = np.zeros_like(d)
            qs = blocks[:, 2:]
        else:
            m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
            zero = m + 8 * d
            qs = blocks[:, 4:]
        codes = _nibbles(qs).reshape(rows, cols)
        groups = (rows, cols // GROUP)
        return QuantizedWeight(
            "int4",
            torch.from_numpy(codes),
            torch.from_numpy(d.reshape(groups)),
            torch.from_numpy(zero.reshape(groups)),
        )
    if qtype == T.Q4_K:
        from gguf.quants import Q4_K

        blocks = np.asarray(raw).reshape(-1, GGML_QUANT_SIZES[qtype][1])  # 144 bytes / 256
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, mn = Q4_K.get_scale_min(blocks[:, 4:16])  # (blocks, 8) 6-bit each
        scale = d * sc.astype(np.float32)  # (blocks, 8)
        zero = 8 * scale - dmin * mn.astype(np.float32)
        qs = blocks[:, 16:].reshape(-1, 4, 32)  # 4 chunks of 64: low nibbles, then high
        codes = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(rows, cols)
        groups = (rows, cols // GROUP)
        return QuantizedWeight(
            "int4",
            torch.from_numpy(codes),
            torch.from_numpy(scale.reshape(groups)),
            torch.from_numpy(zero.reshape(groups)),
        )
    return int8_rows(f, info)


@dataclass
class GroupedTable:
    """A token table (V, C) as int8 codes with one float32 scale per row and group of 32.

    From a Q8_0 file these are the file's own codes and scales (exact); other types are
    requantized per group of 32 (absmax / 127), far finer than one scale per row.
    """

    codes: torch.Tensor  # (V, C) int8
    scales: torch.Tensor  # (V, C/32) float32

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 rows ``ids`` (any shape) -> (*ids.shape, C)."""
        q = self.codes[ids].float()
        g = self.scales[ids]
        return (q.unflatten(-1, (g.shape[-1], GROUP)) * g.unsqueeze(-1)).flatten(-2)

    @property
    def nbytes(self) -> int:
        return int(self.codes.numel() + 4 * self.scales.numel())


def grouped_table(f: GGUFFile, info: TensorInfo) -> GroupedTable:
    """The token table of ``f`` as a :class:`GroupedTable`, ``ROWS_PER_CHUNK`` rows at a time."""
    rows, cols = info.shape
    raw = f.raw(info)
    if T(info.ggml_type) == T.Q8_0:
        blocks = np.asarray(raw).reshape(-1, GGML_QUANT_SIZES[T.Q8_0][1])  # 2 + 32 bytes
        scales = blocks[:, :2].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
        codes = blocks[:, 2:].copy().view(np.int8).reshape(rows, cols)
        return GroupedTable(torch.from_numpy(codes), torch.from_numpy(scales))
    row_bytes = info.nbytes // rows
    codes_t = torch.empty((rows, cols), dtype=torch.int8)
    scales_t = torch.empty((rows, cols // GROUP), dtype=torch.float32)
    for start in range(0, rows, ROWS_PER_CHUNK):
        n = min(ROWS_PER_CHUNK, rows - start)
        chunk = raw[start * row_bytes : (start + n) * row_bytes]
        w = dequantize(chunk, info.ggml_type, (n, cols)).float().reshape(n, -1, GROUP)
        scale = w.abs().amax(-1).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale[..., None]).clamp_(-127, 127).to(torch.int8)
        codes_t[start : start + n] = q.reshape(n, cols)
        scales_t[start : start + n] = scale
    return GroupedTable(codes_t, scales_t)


def int8_rows(f: GGUFFile, info: TensorInfo) -> QuantizedWeight:
    """Any tensor requantized to int8 per row, dequantizing ``ROWS_PER_CHUNK`` rows at a time."""
    rows, cols = info.shape
    raw = f.raw(info)
    row_bytes = info.nbytes // rows
    codes = torch.empty((rows, cols), dtype=torch.int8)
    scales = torch.empty(rows, dtype=torch.float32)
    for start in range(0, rows, ROWS_PER_CHUNK):
        n = min(ROWS_PER_CHUNK, rows - start)
        chunk = raw[start * row_bytes : (start + n) * row_bytes]
        q = quantize_int8(dequantize(chunk, info.ggml_type, (n, cols)))
        codes[start : start + n] = q.codes
        scales[start : start + n] = q.scales
    return QuantizedWeight("int8", codes, scales)


# --- modules ------------------------------------------------------------------------------


class Int4Linear(nn.Module):
    """``y = x @ W.T (+ b)`` with W as int4 codes in groups of 32 (CPU weight-only kernel)."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor

    def __init__(self, q: QuantizedWeight, dtype: torch.dtype, bias: torch.Tensor | None) -> None:
        super().__init__()
        assert q.kind == "int4" and q.zeros is not None
        self.out_features, self.in_features = q.shape
        self.register_buffer("packed", _pack_int4(q.codes), persistent=False)
        sz = torch.stack([q.scales, q.zeros], dim=-1).transpose(0, 1).contiguous()
        sz = sz.to(KERNEL_DTYPE)
        self.register_buffer("scales_zeros", sz, persistent=False)  # (K/32, N, 2)
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)

    def kernel(self, x2: torch.Tensor) -> torch.Tensor:
        """(M, K) in ``KERNEL_DTYPE`` -> (M, N) in ``KERNEL_DTYPE``, without the bias."""
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, GROUP, self.scales_zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        y = self.kernel(x.reshape(-1, self.in_features).to(KERNEL_DTYPE))
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Int8Linear(nn.Module):
    """``y = x @ W.T (+ b)`` with W as int8 codes and one scale per output row."""

    codes: torch.Tensor
    scales: torch.Tensor
    scales_f32: torch.Tensor

    def __init__(self, q: QuantizedWeight, dtype: torch.dtype, bias: torch.Tensor | None) -> None:
        super().__init__()
        assert q.kind == "int8"
        self.out_features, self.in_features = q.shape
        self.register_buffer("codes", q.codes.contiguous(), persistent=False)  # (N, K) int8
        self.register_buffer("scales", q.scales.to(KERNEL_DTYPE), persistent=False)  # (N,)
        self.register_buffer("scales_f32", q.scales.float(), persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)

    def kernel(self, x2: torch.Tensor) -> torch.Tensor:
        """(M, K) in ``KERNEL_DTYPE`` -> (M, N) in ``KERNEL_DTYPE``, without the bias."""
        return torch.ops.aten._weight_int8pack_mm(x2, self.codes, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        y = self.kernel(x.reshape(-1, self.in_features).to(KERNEL_DTYPE))
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Int8Embedding(nn.Module):
    """A token table (V, C) as int8 codes in groups of 32; rows come out in ``dtype``.

    ``weight`` is a 1-element tensor of the compute dtype on the table's device, so code that
    asks ``embed_tokens.weight`` for the device and dtype keeps working.
    """

    weight: torch.Tensor

    def __init__(self, table: GroupedTable, dtype: torch.dtype) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("weight", torch.zeros(1, dtype=dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.table.rows(ids).to(self.weight.dtype)


# Candidates the head recomputes exactly. Measured on the real SmolLM2 (README, 512 tokens):
# top-1 agreement with the exact path is 98.83% for any k >= 16; the mean KL of the int4
# head's distribution is 0.0149 (k=16), 0.0093 (64), 0.0072 (128), 0.0054 (256).
REFINE = 64


class RefinedHead(nn.Module):
    """The head: logits (..., V) in float32 from a fast int4 (or int8) matmul, then each row's
    ``refine`` best candidates recomputed exactly in float32 from the grouped table.

    The bf16 kernel's logits carry ~3 significant digits (a logit of 20 is known to 0.125) and
    4-bit codes lose more; both flip near-ties. Recomputing the top candidates (a (R, k, C)
    gather) costs ~1% of the matmul and makes greedy picks and the sampled distribution's head
    as precise as the grouped table; the fast matmul only has to rank the true winner among
    its ``refine`` best.
    """

    def __init__(self, fast: nn.Module, table: GroupedTable, refine: int = REFINE) -> None:
        super().__init__()
        self.fast, self.table, self.refine = fast, table, refine
        self.in_features, self.out_features = int(table.codes.shape[1]), int(table.codes.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., V) float32
        y = self.fast(x).float()
        y2 = y.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features).float()
        top = top_candidates(y2, min(self.refine, self.out_features))  # (R, k)
        exact = torch.bmm(self.table.rows(top), x2.unsqueeze(-1)).squeeze(-1)  # (R, k)
        y2.scatter_(1, top, exact)
        return y2.reshape(y.shape)


def top_candidates(y: torch.Tensor, k: int, block: int = 64) -> torch.Tensor:
    """Indices (R, k) of the ``k`` largest entries of each row of ``y`` (R, V).

    The same set as ``y.topk(k)`` (up to ties), found through the maxima of blocks of
    ``block`` entries: the k best entries lie in the k blocks with the best maxima. On the CPU
    this is ~8x faster than ``topk`` on a 49152-wide row (one vectorized max pass, then small
    top-k's); rows that do not split into at least ``k`` blocks use ``topk``.
    """
    r, v = y.shape
    if v % block or v // block < k:
        return y.topk(k, dim=-1).indices
    blocks = y.view(r, v // block, block)
    best = blocks.amax(-1).topk(k, dim=-1).indices  # (R, k) block numbers
    cand = blocks.gather(1, best.unsqueeze(-1).expand(r, k, block)).view(r, k * block)
    pick = cand.topk(k, dim=-1).indices  # (R, k) into the gathered blocks
    return best.gather(1, pick // block) * block + pick % block


def int4_table(table: GroupedTable) -> QuantizedWeight:
    """The token table requantized to int4 in groups of 32 (for the head's fast matmul),
    ``ROWS_PER_CHUNK`` rows at a time."""
    rows, cols = table.codes.shape
    codes = torch.empty((rows, cols), dtype=torch.uint8)
    scales = torch.empty((rows, cols // GROUP), dtype=torch.float32)
    zeros = torch.empty_like(scales)
    for start in range(0, rows, ROWS_PER_CHUNK):
        ids = torch.arange(start, min(start + ROWS_PER_CHUNK, rows))
        q = quantize_int4(table.rows(ids))
        assert q.zeros is not None
        codes[ids], scales[ids], zeros[ids] = q.codes, q.scales, q.zeros
    return QuantizedWeight("int4", codes, scales, zeros)


def _pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes -> the CPU kernel's packed (N, K/2) layout, 64 rows at a time."""
    n = codes.shape[0]
    if n % _PACK_ROWS:
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    out = []
    for start in range(0, n, _PACK_ROWS):
        block = codes[start : start + _PACK_ROWS].to(torch.int32)
        out.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(block, 1))
    return torch.cat(out)


def quantized_linear(
    q: QuantizedWeight, dtype: torch.dtype, bias: torch.Tensor | None = None
) -> nn.Module:
    if q.kind == "int4":
        return Int4Linear(q, dtype, bias)
    return Int8Linear(q, dtype, bias)


# --- loading ------------------------------------------------------------------------------


@dataclass
class QuantizedLoad:
    """What :func:`load_gguf_quantized` did: bytes held, a label and the notes it printed."""

    weight_bytes: int
    file_bytes: int
    label: str  # e.g. "int4 (GGUF Q4_1)": the decoder's linear layers
    notes: list[str]


def load_gguf_quantized(
    model: CausalLM, path: Path, dtype: torch.dtype, progress: Progress | None = None
) -> QuantizedLoad:
    """Fill ``model`` (built on meta) from a GGUF, keeping its block-quantized matrices small.

    Linear weights become :class:`Int4Linear` / :class:`Int8Linear`, the token table an
    :class:`Int8Embedding` (shared with a tied head); norms and F16/F32 matrices are assigned in
    ``dtype``. Raises ``DeviceError`` if this torch lacks the kernels.
    """
    from smolchat.model.weights import _fused_target, _rotary_buffer

    if not kernels_available():
        raise DeviceError(
            "this PyTorch build lacks the int4/int8 CPU kernels; use --exact (float32) "
            "or upgrade torch"
        )
    f, config = open_gguf(path)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    modules = dict(model.named_modules())
    pending: dict[str, dict[str, QuantizedWeight | torch.Tensor]] = {}
    biases: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    slow_types: set[str] = set()
    embed_info: TensorInfo | None = None
    held = 0
    for done, info in enumerate(f.tensors, start=1):
        name = hf_name(info.name)
        assert name is not None  # checked by open_gguf
        module_name, _, param = name.rpartition(".")
        kind = info.name.split(".")[2] if info.name.startswith("blk.") else ""
        rows = (lambda t, h=heads[kind]: unpermute_rotary(t, h)) if kind in heads else None
        is_matrix = param == "weight" and len(info.shape) == 2
        if name == "model.embed_tokens.weight":
            embed_info = info
        elif is_matrix:
            w: QuantizedWeight | torch.Tensor
            if info.ggml_type in KEPT_TYPES:
                w = from_gguf(f, info)
                w = w.map_rows(rows) if rows else w
            else:
                if info.ggml_type not in (T.F32, T.F16, T.BF16):
                    slow_types.add(T(info.ggml_type).name)
                w = f.tensor(info).to(dtype)
                w = rows(w) if rows else w
            fused = _fused_target(modules, module_name)
            if fused is None:
                held += _place(modules, module_name, w, dtype)
            else:
                target, parts = fused
                got = pending.setdefault(target, {})
                got[module_name.rpartition(".")[2]] = w
                if len(got) == len(parts):
                    del pending[target]
                    held += _place(modules, target, _cat([got[p] for p in parts]), dtype)
            del w
        else:
            tensor = f.tensor(info)
            tensor = rows(tensor) if rows else tensor
            if param == "bias":
                biases[module_name] = tensor
            else:
                _assign_dense(modules, name, tensor, dtype)
            held += tensor.numel() * dtype.itemsize
            del tensor
        f.release(info)
        if progress is not None:
            progress("weights", done, len(f.tensors))
    if pending:
        target = next(iter(pending))
        from smolchat.errors import ModelLoadError

        raise ModelLoadError(f"{f.path.name} lacks parts of {target}; download the file again")
    for module_name, bias in biases.items():
        _set_bias(modules, module_name, bias, dtype)
    assert embed_info is not None  # build_config requires token_embd.weight
    table = grouped_table(f, embed_info)
    held += table.nbytes
    _replace(modules, "model.embed_tokens", Int8Embedding(table, dtype))
    if isinstance(model.lm_head, nn.Linear) and model.lm_head.weight.is_meta:
        # tied (or no output.weight): an int4 copy for the matmul, refined from the table
        # (int8 rows where the int4 packing cannot take the vocabulary size)
        q = int4_table(table) if table.codes.shape[0] % 16 == 0 else int8_rows(f, embed_info)
        held += q.nbytes
        _replace(modules, "lm_head", RefinedHead(quantized_linear(q, dtype), table))
    f.release(embed_info)
    for tname in sorted(slow_types):
        note = (
            f"note: {f.path.name} stores some matrices as {tname}, which smolchat cannot keep "
            f"quantized on the CPU; they are dequantized to {str(dtype).removeprefix('torch.')}"
        )
        notes.append(note)
        log.warning(note)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    missing += [n for n, b in model.named_buffers() if b.is_meta and not n.endswith("inv_freq")]
    if missing:
        from smolchat.errors import ModelLoadError

        raise ModelLoadError(
            f"{f.path.name} lacks {len(missing)} weights (first: {missing[0]}); "
            "download the file again"
        )
    model.rotary.inv_freq = _rotary_buffer(model, torch.device("cpu"))
    kinds = sorted({_kind(m) for m in model.model.layers.modules() if _kind(m)})
    source = sorted({T(t.ggml_type).name for t in f.tensors if t.name.startswith("blk.")} - {"F32"})
    label = f"{'/'.join(kinds) or 'dense'} (GGUF {'/'.join(source) or 'F32'})"
    return QuantizedLoad(held, f.size, label, notes)


def _kind(module: nn.Module) -> str:
    if isinstance(module, Int4Linear):
        return "int4"
    if isinstance(module, Int8Linear):
        return "int8"
    return ""


def _replace(modules: dict[str, nn.Module], name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(modules[parent], leaf, new)
    modules[name] = new


def _cat(parts: list[QuantizedWeight | torch.Tensor]) -> QuantizedWeight | torch.Tensor:
    """Fused rows: floats stay floats; with any quantized part, everything becomes codes."""
    tensors = [p for p in parts if isinstance(p, torch.Tensor)]
    if len(tensors) == len(parts):
        return torch.cat(tensors)
    return QuantizedWeight.cat(
        [p if isinstance(p, QuantizedWeight) else quantize_int8(p) for p in parts]
    )


def _place(
    modules: dict[str, nn.Module], name: str, w: QuantizedWeight | torch.Tensor, dtype: torch.dtype
) -> int:
    """Put a matrix into the linear ``name``; return the bytes it holds."""
    if isinstance(w, QuantizedWeight):
        from smolchat.errors import ModelLoadError

        linear = modules.get(name)
        if not isinstance(linear, nn.Linear):
            raise ModelLoadError(f"unexpected weight {name}.weight in the GGUF file")
        if w.shape != (linear.out_features, linear.in_features):
            raise ModelLoadError(
                f"weight {name}.weight has shape {w.shape}, the file's metadata implies "
                f"{(linear.out_features, linear.in_features)}; the file is inconsistent"
            )
        _replace(modules, name, quantized_linear(w, dtype))
        return w.nbytes
    _assign_dense(modules, f"{name}.weight", w, dtype)
    return w.numel() * dtype.itemsize


def _assign_dense(
    modules: dict[str, nn.Module], name: str, tensor: torch.Tensor, dtype: torch.dtype
) -> None:
    from smolchat.errors import ModelLoadError

    module_name, _, param = name.rpartition(".")
    module = modules.get(module_name)
    if module is None or param not in module._parameters:
        raise ModelLoadError(f"unexpected weight {name} in the GGUF file")
    if isinstance(module, nn.Linear) and param == "weight":
        expected: tuple[int, ...] = (module.out_features, module.in_features)
    else:
        expected = tuple(module._parameters[param].shape)  # type: ignore[union-attr]
    if tuple(tensor.shape) != expected:
        raise ModelLoadError(
            f"weight {name} has shape {tuple(tensor.shape)}, the file's metadata implies "
            f"{expected}; the file is inconsistent"
        )
    module._parameters[param] = nn.Parameter(tensor.to(dtype), requires_grad=False)


def _set_bias(
    modules: dict[str, nn.Module], module_name: str, bias: torch.Tensor, dtype: torch.dtype
) -> None:
    from smolchat.model.weights import _fused_target

    fused = _fused_target(modules, module_name)
    target = fused[0] if fused is not None else module_name
    module = modules[target]
    if fused is not None:
        parts = fused[1]
        leaf = module_name.rpartition(".")[2]
        pending = getattr(module, "_bias_parts", {})
        pending[leaf] = bias
        module._bias_parts = pending  # type: ignore[assignment]
        if len(pending) < len(parts):
            return
        bias = torch.cat([pending[p] for p in parts])
        del module._bias_parts
    module.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
