"""Weights: memory-mapped safetensors (single or sharded) assigned into a meta-device model.

The network is built on the ``meta`` device (no memory), then each tensor is read from the
memory-mapped file, cast, moved to the target device and assigned in place, so peak memory
stays near one copy of the weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from smolchat.errors import ModelLoadError
from smolchat.model import registry
from smolchat.model.config import ModelConfig
from smolchat.model.meta import on_meta
from smolchat.model.network import CausalLM

if TYPE_CHECKING:
    from smolchat.model.heads import TaskModel

# The chat's network, or a task module (heads.py): the same ``model.*`` decoder and ``rotary``.
Net = TypeVar("Net", bound="CausalLM | TaskModel")
Progress = Callable[[str, int, "int | None"], None]
# Called for each linear weight (module name, the meta nn.Linear, full weight tensor on CPU);
# returns a module that replaces the linear (e.g. a quantized one holding the weight on the
# device), or None to let the loader assign the tensor as usual.
LinearHook = Callable[[str, nn.Linear, torch.Tensor], "nn.Module | None"]

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{index} is damaged ({exc}); re-download the model") from None
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelLoadError(
                f"{folder} lacks weight shards {', '.join(missing[:3])}; re-download the model"
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            raise ModelLoadError(
                f"{folder} has only pickle weights (.bin/.pt), which smolchat never loads for "
                "safety; use a safetensors or GGUF copy of the model"
            )
        raise ModelLoadError(f"no *.safetensors weights in {folder}; download the full model")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    yield name, f.get_tensor(name)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"weights file {path.name} is damaged or truncated ({type(exc).__name__}: "
                f"{str(exc)[:120]}); delete it and download the model again"
            ) from None


def count_tensors(files: list[Path]) -> int:
    from safetensors import safe_open

    total = 0
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                total += len(list(f.keys()))
        except Exception as exc:
            raise ModelLoadError(
                f"weights file {path.name} is damaged or truncated ({type(exc).__name__}); "
                "delete it and download the model again"
            ) from None
    return total


def build_on_meta(cfg: ModelConfig) -> CausalLM:
    """The registered network of ``cfg.architecture``, its parameters on the meta device."""
    network = registry.known()[cfg.architecture].network
    with on_meta():
        model = network(cfg)
    return model


def load_weights(
    model: Net,
    tensors: Iterator[tuple[str, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype,
    *,
    total: int | None = None,
    progress: Progress | None = None,
    linear_hook: LinearHook | None = None,
) -> Net:
    """Assign every checkpoint tensor into ``model`` (built on meta); check nothing is missing.

    Weights stored apart but fused in the network (q/k/v, gate/up) are gathered (on the GPU
    when loading to one, else on the CPU) until all parts of one module have arrived, then
    concatenated and assigned as one.
    """
    modules = dict(model.named_modules())
    pending: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for done, (name, tensor) in enumerate(tensors, start=1):
        if name.endswith(IGNORED_SUFFIXES):
            continue
        module_name, _, param_name = name.rpartition(".")
        fused = _fused_target(modules, module_name)
        if fused is not None:
            target, parts = fused
            key = (target, param_name)
            got = pending.setdefault(key, {})
            if device.type == "cuda":  # join the parts where they go: a 3B model's q/k/v and
                tensor = tensor.to(device=device, dtype=dtype)  # gate/up cat took 2.5 s on CPU
            got[module_name.rpartition(".")[2]] = tensor
            if len(got) == len(parts):
                whole = torch.cat([got[leaf] for leaf in parts], dim=0)
                del pending[key]
                _assign(model, modules, f"{target}.{param_name}", whole, device, dtype, linear_hook)
        else:
            _assign(model, modules, name, tensor, device, dtype, linear_hook)
        del tensor
        if progress is not None:
            progress("weights", done, total)
    if pending:
        (target, param_name), got = next(iter(pending.items()))
        raise ModelLoadError(
            f"the checkpoint has only {', '.join(sorted(got))} of {target}.{param_name}'s parts; "
            "re-download the model"
        )
    lm_head = getattr(model, "lm_head", None)  # task modules other than causal-lm have none
    if lm_head is None:
        pass
    elif model.config.tie_word_embeddings:
        model.tie_weights()
    elif lm_head.weight.is_meta and not model.model.embed_tokens.weight.is_meta:
        # Some checkpoints omit lm_head while config says untied; tying is the only sane reading.
        lm_head.weight = model.model.embed_tokens.weight
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(
            f"the checkpoint lacks {len(missing)} weights (first: {missing[0]}); "
            "re-download the model"
        )
    # Buffers (RoPE frequencies) are computed, not loaded.
    model.rotary.inv_freq = _rotary_buffer(model, device)
    model.eval()
    return model


def _fused_target(modules: dict[str, nn.Module], module_name: str) -> tuple[str, list[str]] | None:
    """For ``...self_attn.q_proj``: (``...self_attn.qkv_proj``, its part names in row order)."""
    if module_name in modules:
        return None
    parent_name, _, leaf = module_name.rpartition(".")
    parts = getattr(modules.get(parent_name), "fused_parts", None)
    if not parts or leaf not in parts:
        return None
    target = parts[leaf][0]
    order = sorted((p for p in parts if parts[p][0] == target), key=lambda p: parts[p][1])
    return f"{parent_name}.{target}", order


def _assign(
    model: CausalLM | TaskModel,
    modules: dict[str, nn.Module],
    name: str,
    tensor: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    linear_hook: LinearHook | None,
) -> None:
    module_name, _, param_name = name.rpartition(".")
    module = modules.get(module_name)
    if module is None or param_name not in module._parameters:
        raise ModelLoadError(
            f"unexpected weight {name} in the checkpoint: it does not match the "
            f"{model.config.architecture} architecture of config.json"
        )
    expected: tuple[int, ...]
    if isinstance(module, nn.Linear) and param_name == "weight":
        expected = (module.out_features, module.in_features)
    else:
        param = module._parameters[param_name]
        assert param is not None  # checked above: the name is one of its parameters
        expected = tuple(param.shape)
    if tuple(tensor.shape) != tuple(expected):
        raise ModelLoadError(
            f"weight {name} has shape {tuple(tensor.shape)}, config.json implies "
            f"{tuple(expected)}; the config and the weights do not match"
        )
    if linear_hook is not None and type(module) is nn.Linear and param_name == "weight":
        replacement = linear_hook(module_name, module, tensor)
        if replacement is not None:
            bias = module._parameters.get("bias")
            if bias is not None and not bias.is_meta:
                replacement._parameters["bias"] = bias
            parent_name, _, leaf = module_name.rpartition(".")
            setattr(modules[parent_name], leaf, replacement)
            modules[module_name] = replacement
            return
    value = tensor.to(device=device, dtype=dtype)
    module._parameters[param_name] = nn.Parameter(value, requires_grad=False)


def _rotary_buffer(model: CausalLM | TaskModel, device: torch.device) -> torch.Tensor:
    from smolchat.model.rope import inv_frequencies

    inv_freq, scaling = inv_frequencies(model.config)
    model.rotary.scaling = scaling
    return inv_freq.to(device)
