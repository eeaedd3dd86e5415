"""4-bit NF4 weights through bitsandbytes, quantized while loading, one tensor at a time.

Every linear layer of the decoder (fused q/k/v, o, fused gate/up, down) becomes a
``bitsandbytes.nn.Linear4bit``: NF4 codes in blocks of 64 weights, with double quantization
(the per-block scales themselves stored as 8-bit, ~0.127 bits per weight instead of 0.5), and
bf16 compute. Embeddings, norms and the (tied) head stay in the model dtype. Each weight goes
to the device in bf16, is quantized there and dropped, so peak memory stays near the quantized
size plus one layer's largest matrix.

Checkpoints saved already quantized by transformers + bitsandbytes (``quantization_config``
with 4-bit NF4 in ``config.json``) are read too: each packed weight is dequantized on load and
re-quantized into smolchat's fused layout (NF4 of NF4 values with the same block scales, so the
codes come back unchanged). Other quantizations are refused with a clear message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from smolchat.errors import DeviceError, ModelLoadError
from smolchat.model.meta import on_meta

BLOCKSIZE = 64
INSTALL_HINT = "pip install 'smolchat[nf4]'"
# bnb's packed QuantState entries that follow a packed ``X.weight`` in a saved checkpoint.
_AUX = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
_QS_PREFIX = "quant_state.bitsandbytes__"


def import_bnb() -> Any:
    """Import bitsandbytes, or raise a one-line ModelLoadError with the fix."""
    # bitsandbytes' CPU backend logs a warning about an optional hub kernel on import
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ModelLoadError(
            f"--quantize nf4 needs bitsandbytes, which is not installed; run: {INSTALL_HINT}"
        ) from None
    except Exception as exc:  # broken native library
        raise ModelLoadError(
            f"bitsandbytes failed to load ({type(exc).__name__}: {str(exc)[:100]}); "
            f"reinstall it with: {INSTALL_HINT}, or run without --quantize"
        ) from None
    return bnb


def check_device(device: torch.device) -> None:
    if device.type not in ("cuda", "cpu"):
        raise DeviceError(
            f"NF4 runs on CUDA and CPU, not {device.type}; use --device cpu or drop --quantize"
        )


def quantize_linear(
    linear: nn.Linear, weight: torch.Tensor, device: torch.device, compute_dtype: torch.dtype
) -> nn.Module:
    """A ``Linear4bit`` holding ``weight`` (out, in) as NF4 on ``device``."""
    bnb = import_bnb()
    w = weight.to(device=device, dtype=compute_dtype)
    try:
        packed, state = bnb.functional.quantize_4bit(
            w, blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4"
        )
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        where = "this GPU" if device.type == "cuda" else "this CPU"
        raise DeviceError(
            f"bitsandbytes cannot quantize on {where} ({type(exc).__name__}: {str(exc)[:100]}); "
            f"reinstall it for your CUDA version ({INSTALL_HINT}) or run without --quantize"
        ) from None
    del w
    with on_meta():
        module = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=True,
            quant_type="nf4",
        )
    module.weight = bnb.nn.Params4bit(
        packed,
        requires_grad=False,
        quant_state=state,
        blocksize=BLOCKSIZE,
        compress_statistics=True,
        quant_type="nf4",
        bnb_quantized=True,
        module=module,
    )
    module.quant_state = state
    return module


def nf4_linear_hook(device: torch.device, compute_dtype: torch.dtype = torch.bfloat16):
    """The loader's ``linear_hook``: quantize each decoder linear as it arrives."""
    import_bnb()
    check_device(device)

    def hook(name: str, linear: nn.Linear, weight: torch.Tensor) -> nn.Module | None:
        if name == "lm_head":  # the head stays in the model dtype (it is tied in SmolLM3)
            return None
        return quantize_linear(linear, weight, device, compute_dtype)

    return hook


def is_nf4(module: nn.Module) -> bool:
    return getattr(getattr(module, "weight", None), "quant_state", None) is not None


# --- checkpoints saved already quantized ---------------------------------------------------


def prequantized_kind(config: dict[str, Any]) -> str | None:
    """None for a plain checkpoint, "nf4" for a bitsandbytes NF4 one; refuse anything else."""
    qc = config.get("quantization_config")
    if not qc:
        return None
    method = str(qc.get("quant_method", "unknown"))
    if method == "bitsandbytes" and qc.get("load_in_4bit"):
        kind = qc.get("bnb_4bit_quant_type", "fp4")
        if kind == "nf4":
            return "nf4"
        what = f"bitsandbytes 4-bit {kind}"
    elif method == "bitsandbytes":
        what = "bitsandbytes 8-bit"
    else:
        what = method
    raise ModelLoadError(
        f"this checkpoint is pre-quantized ({what}), which smolchat cannot load; use the "
        "original bf16 checkpoint (smolchat quantizes it itself with --quantize nf4)"
    )


def dequantize_checkpoint(
    tensors: Iterator[tuple[str, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    """Turn a bitsandbytes-NF4 checkpoint's packed weights back into ``dtype`` matrices.

    A packed weight ``X.weight`` (uint8) is held with its ``X.weight.absmax``, ``quant_map``,
    ``nested_*`` and ``quant_state.bitsandbytes__nf4`` entries until all have arrived.
    """
    bnb = import_bnb()
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors:
        base, aux = _split_aux(name)
        if aux is None and tensor.dtype != torch.uint8:
            yield name, tensor
            continue
        group = groups.setdefault(base, {})
        group[aux or "weight"] = tensor
        if _complete(group):
            del groups[base]
            yield base, _dequantize(bnb, group, device, dtype)
    if groups:
        name = next(iter(groups))
        raise ModelLoadError(
            f"the pre-quantized weight {name} lacks parts of its quantization state; "
            "re-download the model"
        )


def _split_aux(name: str) -> tuple[str, str | None]:
    head, sep, tail = name.partition(".weight.")
    if sep and (tail in _AUX or tail.startswith(_QS_PREFIX)):
        return head + ".weight", tail
    return name, None


def _complete(group: dict[str, torch.Tensor]) -> bool:
    qs = [k for k in group if k.startswith(_QS_PREFIX)]
    if not qs or not {"weight", "absmax", "quant_map"} <= set(group):
        return False
    if qs[0] != _QS_PREFIX + "nf4":
        raise ModelLoadError("only NF4 pre-quantized weights are supported; use a bf16 checkpoint")
    from bitsandbytes.utils import unpack_tensor_to_dict

    nested = "nested_offset" in unpack_tensor_to_dict(group[qs[0]])
    return not nested or {"nested_absmax", "nested_quant_map"} <= set(group)


def _dequantize(bnb, group: dict[str, torch.Tensor], device, dtype) -> torch.Tensor:
    packed = group.pop("weight").to(device)
    state = bnb.functional.QuantState.from_dict(dict(group), device=device)
    return bnb.functional.dequantize_4bit(packed, state).to(dtype)
