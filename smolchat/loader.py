"""``smolchat.load``: find the model, pick device and dtype, build the engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from smolchat.engine.engine import Engine
from smolchat.errors import DeviceError, ModelLoadError
from smolchat.model.config import GenerationConfig, ModelConfig
from smolchat.model.device import DTYPES, note_once, pick_device, pick_dtype
from smolchat.model.hub import Progress, resolve
from smolchat.model.weights import (
    build_on_meta,
    count_tensors,
    iter_safetensors,
    load_weights,
    safetensors_files,
)


def keeps_gguf_quantized(
    device: torch.device, dtype: str | torch.dtype, quantize: str | None, exact: bool | None
) -> bool:
    """Whether a GGUF's quantized matrices stay quantized (CPU int4/int8 kernels).

    On the CPU, unless the exact path is asked for: ``exact=True``, or ``dtype`` float32 given
    explicitly (then every weight is dequantized to float32, equal to transformers).
    """
    if device.type != "cpu" or quantize is not None:
        return False
    if exact is not None:
        return not exact
    asked = dtype if isinstance(dtype, torch.dtype) else DTYPES.get(dtype)
    return asked is not torch.float32


def load(
    model: str | Path = "HuggingFaceTB/SmolLM3-3B",
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    quantize: str | None = None,
    revision: str | None = None,
    progress: Progress | None = None,
    exact: bool | None = None,
) -> Engine:
    """Load a model (hub id, local folder or .gguf file) and return a ready :class:`Engine`.

    ``exact``: for a GGUF on the CPU, dequantize every weight to float32 (equal to
    transformers, slower, ~7x the file in RAM) instead of keeping the file's int4/int8 blocks.
    None means: exact when ``dtype="float32"`` is given explicitly.
    """
    from smolchat.chat.tokenizer import Tokenizer

    if quantize not in (None, "nf4"):
        raise ModelLoadError(f"unknown quantization {quantize!r}: use nf4 or none")
    dev = pick_device(device)
    source = resolve(str(model), revision, progress)
    prequantized = None
    if source.kind != "gguf":
        from smolchat.model.config import read_json
        from smolchat.model.quant import prequantized_kind

        prequantized = prequantized_kind(read_json(source.path / "config.json", "config.json"))
        quantize = quantize or prequantized  # a 4-bit checkpoint stays 4-bit
    if quantize == "nf4" and dtype == "auto":
        dtype = torch.bfloat16  # NF4 computes in bf16 (the norms and embeddings stay bf16)
    if exact and dtype == "auto":
        dtype = torch.float32
    keep_quantized = source.kind == "gguf" and keeps_gguf_quantized(dev, dtype, quantize, exact)
    if keep_quantized and dtype == "auto":
        # the int4/int8 kernels take bf16 inputs whatever the model dtype; float32 everywhere
        # else measured as fast and agrees better with the exact path (98.8% vs 98.4% top-1)
        dtype = torch.float32
    dt = pick_dtype(dtype, dev)
    hook = None
    if quantize == "nf4":
        from smolchat.model.quant import nf4_linear_hook

        hook = nf4_linear_hook(dev, dt)
    if source.kind == "gguf":
        from smolchat.model.gguf import iter_gguf_tensors, read_gguf_header

        header = read_gguf_header(source.path)
        cfg = ModelConfig.from_dict(header.config)
        gen = GenerationConfig()
        tokenizer = Tokenizer.from_parts(header.tokenizer_json, header.tokenizer_config)
        tensors, total = iter_gguf_tensors(source.path), header.tensor_count
        if quantize == "nf4":
            note_once(
                f"note: --quantize nf4 re-quantizes {source.name}'s dequantized weights to NF4 "
                "(bitsandbytes); without it the file's own quantization is kept on the CPU"
            )
    else:
        folder = source.path
        cfg = ModelConfig.from_file(folder / "config.json")
        gen = GenerationConfig.from_file(folder / "generation_config.json")
        files = safetensors_files(folder)
        tokenizer = Tokenizer.from_dir(folder)
        tensors, total = iter_safetensors(files), count_tensors(files)
        if prequantized:
            from smolchat.model.quant import dequantize_checkpoint

            tensors = dequantize_checkpoint(tensors, dev, dt)
    net = build_on_meta(cfg)
    with _out_of_memory_is_one_line(source.name, dev, dt):
        if keep_quantized:
            from smolchat.model.qcpu import load_gguf_quantized

            quantize = load_gguf_quantized(net, source.path, dt, progress).label
            net.eval()
        else:
            load_weights(net, tensors, dev, dt, total=total, progress=progress, linear_hook=hook)
    eos = set(cfg.eos_token_ids) | set(gen.eos_token_ids) | set(tokenizer.eos_token_ids)
    engine = Engine(
        net,
        tokenizer,
        model_name=source.name,
        eos_token_ids=sorted(eos),
        generation_defaults=gen.sampling,
        quantize=quantize,
    )
    if engine.fast is not None:  # compile + capture the CUDA decode step now, not mid-reply
        if progress is not None:
            progress("compile", 0, None)
        with _out_of_memory_is_one_line(source.name, dev, dt):
            engine.warmup()
    return engine


@contextmanager
def _out_of_memory_is_one_line(name: str, dev: torch.device, dt: torch.dtype) -> Iterator[None]:
    """Turn the allocators' out-of-memory errors (GPU or host) into one DeviceError line."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        text = str(exc)
        host = isinstance(exc, MemoryError) or "can't allocate memory" in text
        if not (host or isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text):
            raise
        where = "memory" if host or dev.type == "cpu" else f"{dev.type.upper()} memory"
        fix = "try --quantize nf4" + (", or --device cpu" if dev.type != "cpu" else "")
        raise DeviceError(
            f"out of {where} while loading {name} in {str(dt).removeprefix('torch.')}; {fix}"
        ) from None
