"""GGUF files: config, tokenizer and dequantized weights under transformers' names.

A GGUF (llama.cpp's format) holds metadata (the model's shape, its tokenizer, its chat template)
and tensors, many of them quantized in blocks. :func:`read_gguf_header` turns the metadata into a
transformers-style ``config.json`` dict plus a ``tokenizer.json`` string; :func:`iter_gguf_tensors`
yields one float tensor at a time under transformers' parameter names, so a loader can assign them
into a model built on the ``meta`` device while the file stays memory-mapped.

The header is parsed here (a few struct reads) rather than with ``gguf.GGUFReader``, which builds a
numpy view per vocabulary string and takes seconds on a 50k-token vocabulary; dequantization uses
the ``gguf`` package's reference code (``gguf.quants``).
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from smolchat.errors import ModelLoadError
from smolchat.model import registry

T = GGMLQuantizationType

# Types we read: plain floats, then the block quantizations gguf.quants can dequantize.
FLOAT_TYPES = {T.F32: torch.float32, T.F16: torch.float16, T.BF16: torch.bfloat16}
BLOCK_TYPES = frozenset(
    {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}
)
SUPPORTED_TYPES = frozenset(FLOAT_TYPES) | BLOCK_TYPES


# Rows dequantized per step, so a large embedding never needs several float copies at once.
DEQUANT_CHUNK_ELEMS = 1 << 22

_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# GGUF metadata value types -> struct format (also the numpy dtype of arrays of them).
_SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_GGUF_VERSIONS = (2, 3)


class _Corrupt(Exception):
    """The header runs past the end of the file or holds impossible values."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: GGUF name, torch-order shape, ggml type, absolute byte range."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int


class GGUFFile:
    """A memory-mapped GGUF file: its metadata dict and tensor table (no tensor data read)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data = np.memmap(self.path, mode="r", dtype=np.uint8)
        except FileNotFoundError:
            raise ModelLoadError(f"GGUF file {self.path} not found; check the path") from None
        except (OSError, ValueError) as exc:  # empty files cannot be mapped
            raise ModelLoadError(
                f"cannot read {self.path.name} as a GGUF file ({exc}); pass a valid .gguf file"
            ) from None
        self.size = int(self.data.shape[0])
        self._buf = memoryview(self.data.data)  # the mapped bytes, no copy
        self._pos = 0
        try:
            self._parse()
        except _Corrupt as exc:
            raise ModelLoadError(
                f"{self.path.name} is truncated or corrupt ({exc}); download the GGUF file again"
            ) from None
        finally:
            del self._buf

    # -- header parsing -------------------------------------------------------------------

    def _parse(self) -> None:
        if self.size < 4 or bytes(self._buf[:4]) != b"GGUF":
            raise ModelLoadError(
                f"{self.path.name} is not a GGUF file (no GGUF magic bytes); "
                "pass a .gguf model file or a model folder"
            )
        self._pos = 4
        version = self._unpack("<I")
        if version not in _GGUF_VERSIONS:
            raise ModelLoadError(
                f"{self.path.name} is GGUF version {version}, smolchat reads versions 2 and 3 "
                "(little-endian); convert the model again with a recent llama.cpp"
            )
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        self._check_count(n_tensors, 24, "tensor count")
        self._check_count(n_kv, 12, "metadata count")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            self.metadata[key] = self._value(self._unpack("<I"))
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise _Corrupt(f"bad general.alignment {alignment!r}")
        entries = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            if n_dims > 8:
                raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
            dims = [self._unpack("<Q") for _ in range(n_dims)]
            entries.append((name, tuple(reversed(dims)), self._unpack("<I"), self._unpack("<Q")))
        data_start = -(-self._pos // alignment) * alignment
        self.tensors: list[TensorInfo] = []
        for name, shape, ggml_type, rel in entries:
            nbytes = _nbytes(name, shape, ggml_type)
            start = data_start + rel
            if start + nbytes > self.size:
                raise _Corrupt(f"tensor {name} ends past the end of the file")
            self.tensors.append(TensorInfo(name, shape, ggml_type, start, nbytes))

    def _unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self._pos + size > self.size:
            raise _Corrupt("header ends early")
        (value,) = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += size
        return value

    def _check_count(self, count: int, min_bytes: int, what: str) -> None:
        if count * min_bytes > self.size - self._pos:
            raise _Corrupt(f"{what} {count} does not fit in the file")

    def _string(self) -> str:
        length = self._unpack("<Q")
        end = self._pos + length
        if end > self.size:
            raise _Corrupt("a string runs past the end of the file")
        try:
            text = str(self._buf[self._pos : end], "utf-8")
        except UnicodeDecodeError:
            raise _Corrupt("a string is not valid UTF-8") from None
        self._pos = end
        return text

    def _value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FMT:
            return self._unpack(_SCALAR_FMT[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype != _ARRAY:
            raise _Corrupt(f"unknown metadata value type {vtype}")
        etype, count = self._unpack("<I"), self._unpack("<Q")
        if etype in _SCALAR_FMT:
            fmt = _SCALAR_FMT[etype]
            size = struct.calcsize(fmt) * count
            if self._pos + size > self.size:
                raise _Corrupt("an array runs past the end of the file")
            values = np.frombuffer(self._buf, dtype=fmt, count=count, offset=self._pos).tolist()
            self._pos += size
            return values
        self._check_count(count, 8 if etype == _STRING else 12, "array length")
        return [self._value(etype) for _ in range(count)]

    # -- tensors ----------------------------------------------------------------------------

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes: a read-only uint8 view of the mapped file."""
        return self.data[info.offset : info.offset + info.nbytes]

    def release(self, info: TensorInfo) -> None:
        """Drop the tensor's pages from this process's resident set (they stay in the page
        cache), so reading a file tensor by tensor never holds the whole file resident."""
        import mmap

        handle = getattr(self.data, "_mmap", None)
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if handle is None or advice is None or info.nbytes == 0:
            return
        start = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):  # advice only: never fatal
            handle.madvise(advice, start, info.offset + info.nbytes - start)

    def tensor(self, info: TensorInfo) -> torch.Tensor:
        """The tensor as floats (float32 for block types; F16/BF16/F32 kept as stored)."""
        return dequantize(self.raw(info), info.ggml_type, info.shape)


def _type_name(ggml_type: int) -> str:
    try:
        return T(ggml_type).name
    except ValueError:
        return f"unknown type {ggml_type}"


def _nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    if ggml_type not in GGML_QUANT_SIZES:
        # Unknown ids cannot be sized; report as unsupported later, keep parsing.
        return 0
    block, type_size = GGML_QUANT_SIZES[T(ggml_type)]
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if shape and shape[-1] % block:
        raise _Corrupt(f"tensor {name} rows of {shape[-1]} are not whole {block}-element blocks")
    return numel // block * type_size


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Decode one tensor's bytes into a torch tensor of ``shape`` (a fresh copy, not the map)."""
    qtype = T(ggml_type)
    if qtype in FLOAT_TYPES:
        return torch.from_numpy(raw.copy()).view(FLOAT_TYPES[qtype]).reshape(shape)
    if qtype not in BLOCK_TYPES:
        raise ModelLoadError(f"GGML type {qtype.name} is not supported")
    if raw.size == 0:
        return torch.empty(shape, dtype=torch.float32)
    cols = shape[-1] if shape else 1
    rows = raw.size // (cols // GGML_QUANT_SIZES[qtype][0] * GGML_QUANT_SIZES[qtype][1])
    blocks = raw.reshape(rows, -1)
    out = torch.empty((rows, cols), dtype=torch.float32)
    step = max(1, DEQUANT_CHUNK_ELEMS // cols)
    for start in range(0, rows, step):
        out[start : start + step] = torch.from_numpy(
            gguf_dequantize(blocks[start : start + step], qtype)
        )
    return out.reshape(shape)


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order (rotary pairs interleaved) back to rotate-half order.

    The converter maps row ``h*hd + s*hd/2 + j`` to ``h*hd + 2*j + s``; this is the inverse.
    """
    head_dim = w.shape[0] // n_head
    return (
        w.reshape(n_head, head_dim // 2, 2, *w.shape[1:])
        .transpose(1, 2)
        .reshape(w.shape)
        .contiguous()
    )


def hf_name(gguf_name: str) -> str | None:
    """transformers' parameter name for a GGUF tensor name, or None if it has none."""
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP_NAMES and suffix in ("weight", "bias"):
        return f"{_TOP_NAMES[base]}.{suffix}"
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    return None


# -- config -------------------------------------------------------------------------------


def _uniform(value: Any, key: str, name: str) -> Any:
    """Some files store per-layer values as arrays; smolchat needs them equal."""
    if isinstance(value, list):
        if not value or any(v != value[0] for v in value):
            raise ModelLoadError(
                f"{name} has per-layer {key} values {value[:4]}...; smolchat supports only "
                "uniform layers"
            )
        return value[0]
    return value


def build_config(f: GGUFFile) -> dict[str, Any]:
    """A transformers-style ``config.json`` dict from the file's metadata and tensor table."""
    meta, name = f.metadata, f.path.name
    arch = meta.get("general.architecture")
    if arch is None:
        raise ModelLoadError(f"{name} lacks general.architecture metadata; convert it again")
    family = registry.by_model_type(str(arch))
    if family is None:
        raise ModelLoadError(
            f"{name} holds a {arch!r} model; smolchat runs GGUF files of the "
            f"{' and '.join(registry.known())} architectures (SmolLM2, SmolLM3, Llama)"
        )

    def key(k: str, default: Any = ...) -> Any:
        full = f"{arch}.{k}"
        if full in meta:
            return _uniform(meta[full], k, name)
        if default is ...:
            raise ModelLoadError(f"{name} lacks the metadata key {full}; convert the model again")
        return default

    names = {t.name: t for t in f.tensors}
    if "token_embd.weight" not in names:
        raise ModelLoadError(f"{name} has no token_embd.weight tensor; convert the model again")
    n_heads = int(key("attention.head_count"))
    hidden = int(key("embedding_length"))
    head_dim = int(key("attention.key_length", hidden // n_heads))
    rot = key("rope.dimension_count", None)
    if rot is not None and int(rot) != head_dim:
        raise ModelLoadError(
            f"{name} rotates {rot} of {head_dim} head dimensions (partial RoPE), which smolchat "
            "does not support"
        )
    n_layers = int(key("block_count"))
    cfg: dict[str, Any] = {
        "architectures": [family.causal_lm_class],
        "model_type": arch,
        "vocab_size": int(names["token_embd.weight"].shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(key("attention.head_count_kv", n_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(key("context_length")),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(key),
        "attention_bias": "blk.0.attn_q.bias" in names,
        "mlp_bias": "blk.0.ffn_up.bias" in names,
        "tie_word_embeddings": "output.weight" not in names,
    }
    cfg.update(_token_ids(meta))
    cfg.update(family.gguf_config(key, n_layers))
    return cfg


def _rope_scaling(key: Any) -> dict[str, Any] | None:
    kind = key("rope.scaling.type", None)
    if kind in (None, "none"):
        return None
    if kind not in ("linear", "yarn"):
        raise ModelLoadError(f"GGUF RoPE scaling {kind!r} is not supported; use linear or yarn")
    scaling: dict[str, Any] = {"type": kind, "rope_type": kind}
    scaling["factor"] = float(key("rope.scaling.factor", 1.0))
    orig = key("rope.scaling.original_context_length", None)
    if orig is not None:
        scaling["original_max_position_embeddings"] = int(orig)
    for gguf_key, hf_key in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
        value = key(f"rope.scaling.{gguf_key}", None)
        if value is not None:
            scaling[hf_key] = float(value)
    return scaling


def _token_ids(meta: dict[str, Any]) -> dict[str, Any]:
    def tid(k: str) -> int | None:
        v = meta.get(f"tokenizer.ggml.{k}")
        return int(v) if v is not None else None

    eos = [
        i for i in (tid("eos_token_id"), tid("eot_token_id"), tid("eom_token_id")) if i is not None
    ]
    eos = list(dict.fromkeys(eos))
    return {
        "bos_token_id": tid("bos_token_id"),
        "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": tid("padding_token_id"),
    }


# -- public API ---------------------------------------------------------------------------


@dataclass
class GGUFHeader:
    """Everything but the weights: config dict, tokenizer.json text and tokenizer config."""

    config: dict[str, Any]
    tokenizer_json: str
    tokenizer_config: dict[str, Any]
    tensor_count: int
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class GGUFContents:
    """A whole GGUF file: config, float tensors under transformers' names, tokenizer parts."""

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    tokenizer_json: str
    tokenizer_config: dict[str, Any]


def _check_tensors(f: GGUFFile) -> None:
    for t in f.tensors:
        if t.ggml_type not in SUPPORTED_TYPES:
            supported = ", ".join(T(x).name for x in sorted(SUPPORTED_TYPES))
            raise ModelLoadError(
                f"{f.path.name}: tensor {t.name} is stored as {_type_name(t.ggml_type)}, which "
                f"smolchat cannot dequantize; use a GGUF in one of {supported}"
            )
        if hf_name(t.name) is None:
            hint = " (Llama 3 RoPE frequency factors)" if t.name == "rope_freqs.weight" else ""
            raise ModelLoadError(
                f"{f.path.name} has a tensor {t.name}{hint} that smolchat does not know; "
                "use the model's safetensors folder instead"
            )


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The torch-order shape of each tensor kind that the header's config implies (the GGUF
    names, a block's without its ``blk.N.`` prefix; a bias is its weight's first dimension)."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    weights = {
        "token_embd": (config["vocab_size"], hidden),
        "output": (config["vocab_size"], hidden),
        "output_norm": (hidden,),
        "attn_norm": (hidden,),
        "ffn_norm": (hidden,),
        "attn_q": (q, hidden),
        "attn_k": (kv, hidden),
        "attn_v": (kv, hidden),
        "attn_output": (hidden, q),
        "ffn_gate": (inter, hidden),
        "ffn_up": (inter, hidden),
        "ffn_down": (hidden, inter),
    }
    shapes = {f"{kind}.weight": shape for kind, shape in weights.items()}
    shapes.update({f"{kind}.bias": shape[:1] for kind, shape in weights.items()})
    return shapes


def _check_shapes(f: GGUFFile, config: dict[str, Any]) -> None:
    """Every tensor's shape against the header's config, and its block against block_count:
    a damaged header is one line here, not a torch size mismatch later."""
    expected = _expected_shapes(config)
    for t in f.tensors:
        m = _BLOCK_RE.fullmatch(t.name)
        if m and int(m.group(1)) >= config["num_hidden_layers"]:
            raise ModelLoadError(
                f"{f.path.name}: tensor {t.name} is in block {m.group(1)}, but the file's header "
                f"says {config['num_hidden_layers']} blocks: the file is damaged; download it again"
            )
        kind = f"{m.group(2)}.{m.group(3)}" if m else t.name
        want = expected.get(kind)
        if want is not None and tuple(t.shape) != want:
            raise ModelLoadError(
                f"{f.path.name}: tensor {t.name} has shape {tuple(t.shape)}, the file's header "
                f"implies {want}: the file is damaged; download it again"
            )


def open_gguf(path: Path) -> tuple[GGUFFile, dict[str, Any]]:
    """The mapped file and its config dict, after checking every tensor is readable."""
    f = GGUFFile(path)
    splits = f.metadata.get("split.count", 1)
    if isinstance(splits, int) and splits > 1:
        raise ModelLoadError(
            f"{f.path.name} is one part of a {splits}-part split GGUF; merge the parts with "
            "`llama-gguf-split --merge` and load the merged file"
        )
    config = build_config(f)
    _check_tensors(f)
    _check_shapes(f, config)
    return f, config


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse config and tokenizer from a GGUF file without reading any tensor data."""
    from smolchat.model.gguf_tokenizer import build_tokenizer

    f, config = open_gguf(path)
    tokenizer_json, tokenizer_config = build_tokenizer(f.metadata, f.path.name)
    return GGUFHeader(config, tokenizer_json, tokenizer_config, len(f.tensors), f.metadata)


def iter_gguf_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(transformers name, tensor)`` one at a time, dequantized, q/k rows un-permuted.

    Block types come out as float32, F16/BF16/F32 as stored. Each tensor is a fresh copy;
    only one is alive here at a time.
    """
    f, config = open_gguf(path)
    return _iter_tensors(f, config)


def _iter_tensors(f: GGUFFile, config: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    heads = {
        "attn_q": config["num_attention_heads"],
        "attn_k": config["num_key_value_heads"],
    }
    for info in f.tensors:
        name = hf_name(info.name)
        assert name is not None  # checked in open_gguf
        tensor = f.tensor(info)
        kind = info.name.split(".")[2] if info.name.startswith("blk.") else ""
        if kind in heads:
            tensor = unpermute_rotary(tensor, heads[kind])
        yield name, tensor


def read_gguf(path: Path) -> GGUFContents:
    """Read a whole GGUF file (all tensors in memory; use :func:`iter_gguf_tensors` to stream)."""
    from smolchat.model.gguf_tokenizer import build_tokenizer

    f, config = open_gguf(path)
    tokenizer_json, tokenizer_config = build_tokenizer(f.metadata, f.path.name)
    tensors = dict(_iter_tensors(f, config))
    return GGUFContents(config, tensors, tokenizer_json, tokenizer_config)
