"""Task modules on the chat's decoder: SmolLM3Model and its four heads, as transformers has them.

``load_pretrained(path_or_repo, task=...)`` reads a safetensors checkpoint (one file or shards,
a local folder or a hub repo) saved by transformers and returns a ``torch.nn.Module`` whose
decoder is the same code the chat runs (``network.DecoderLayer``: RMSNorm, GQA attention with
RoPE or NoPE and sliding windows, SwiGLU). Every module is called as
``module(input_ids, attention_mask=None)``:

==========================  ====================================  ==============================
task                        transformers class                    returns (the module's dtype)
==========================  ====================================  ==============================
``base``                    ``SmolLM3Model``                      hidden states (B, T, hidden)
``causal-lm``               ``SmolLM3ForCausalLM``                logits (B, T, vocab)
``sequence-classification`` ``SmolLM3ForSequenceClassification``  logits (B, num_labels)
``token-classification``    ``SmolLM3ForTokenClassification``     logits (B, T, num_labels)
``question-answering``      ``SmolLM3ForQuestionAnswering``       (start_logits, end_logits),
                                                                  each (B, T)
==========================  ====================================  ==============================

(``Llama*`` checkpoints of the same five classes load too.) ``input_ids`` is an integer tensor
(B, T); ``attention_mask`` (B, T) marks real tokens with 1 and padding with 0, on the left or
the right, as a transformers tokenizer returns it. Positions run 0..T-1 in every row, as in
transformers' own forward; RoPE only sees position differences, so a padded row gives what it
gives alone. Outputs at padding positions are what transformers computes there (padding queries
attend to nothing); read only the real positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from smolchat.errors import TaskError, TaskInputError
from smolchat.model import registry
from smolchat.model.config import ModelConfig, read_json
from smolchat.model.device import pick_device, pick_dtype
from smolchat.model.meta import on_meta
from smolchat.model.network import Backbone
from smolchat.model.rope import RotaryEmbedding

Progress = Callable[[str, int, "int | None"], None]

# task -> the transformers class suffix (after SmolLM3 / Llama)
TASKS: dict[str, str] = {
    "base": "Model",
    "causal-lm": "ForCausalLM",
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
}
_HEADS = ("lm_head", "score", "qa_outputs")  # top-level checkpoint names that are not decoder
_DECODER_PREFIXES = ("model.", "transformer.", "")  # QA saves "transformer.*", SmolLM3Model ""


@dataclass(frozen=True)
class HeadConfig:
    """What config.json says about the heads (transformers' defaults where it says nothing).

    ``id2label``: label id -> name (from ``id2label``, else ``num_labels`` names ``LABEL_i``,
    else two); ``token_bias``: ``token_classification_bias`` (True unless set false).
    """

    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    token_bias: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HeadConfig:
        return cls(
            id2label=_labels(raw), token_bias=bool(raw.get("token_classification_bias", True))
        )


class TaskModel(nn.Module):
    """The decoder (``model.*`` in checkpoint names) and RoPE; subclasses add the head.

    ``num_labels``, ``id2label`` and ``label2id`` come from config.json (transformers' defaults
    when it has none: two labels ``LABEL_0``, ``LABEL_1``); ``pad_token_id`` too.
    """

    task: ClassVar[str]
    lm_head: nn.Linear | None  # only the causal-lm module has one

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.rotary = RotaryEmbedding(cfg)
        self.has_window = any(w is not None for w in cfg.sliding_window)
        self.id2label = dict(head.id2label)
        self.label2id = {name: i for i, name in head.id2label.items()}
        self.num_labels = len(head.id2label)
        self.pad_token_id = cfg.pad_token_id

    def tie_weights(self) -> None:
        """Share the embeddings with ``lm_head`` (causal-lm with tied embeddings only)."""

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The last layer's output after the final norm: (B, T, hidden) in the module's dtype."""
        ids, padding = self._inputs(input_ids, attention_mask)
        t = ids.shape[1]
        cos, sin = self.rotary(torch.arange(t, device=ids.device))  # (T, hd) float32
        mask = self._mask(padding, t, ids.device)
        x = self.model.embed_tokens(ids)  # (B, T, C)
        for layer in self.model.layers:
            x = layer(x, cos, sin, None, 0, mask)
        return self.model.norm(x)

    def _inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise TaskInputError(
                "input_ids must be an integer tensor of shape (batch, tokens); "
                f"got {_describe(input_ids)}"
            )
        kind = input_ids.dtype
        if kind.is_floating_point or kind.is_complex or kind == torch.bool:
            raise TaskInputError(f"input_ids must hold integer token ids, not {input_ids.dtype}")
        if input_ids.shape[1] == 0:
            raise TaskInputError("input_ids has no tokens (shape (B, 0)); pass at least one")
        ids = input_ids.to(device=self.device, dtype=torch.long)
        vocab = self.config.vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise TaskInputError(
                f"input_ids holds ids outside 0..{vocab - 1} (min {int(ids.min())}, max "
                f"{int(ids.max())}); use the tokenizer that came with the checkpoint"
            )
        if attention_mask is None:
            return ids, None
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != ids.shape:
            raise TaskInputError(
                f"attention_mask must have input_ids' shape {tuple(ids.shape)}; "
                f"got {_describe(attention_mask)}"
            )
        padding = attention_mask.to(self.device) != 0  # True = a real token
        return ids, None if bool(padding.all()) else padding

    def _mask(self, real: torch.Tensor | None, t: int, device: torch.device) -> torch.Tensor | None:
        """None (SDPA's causal flag), (T, T) causal, or (B, 1, T, T) causal and not padding."""
        if real is None and not self.has_window:
            return None
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()  # (T, S)
        if real is None:
            return causal
        return causal[None, None] & real[:, None, None, :]  # (B, 1, T, S)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


class BaseModel(TaskModel):
    """``SmolLM3Model``: ``module(input_ids, attention_mask=None)`` -> (B, T, hidden)."""

    task = "base"

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states after the final norm (``last_hidden_state``): (B, T, hidden)."""
        return self.hidden_states(input_ids, attention_mask)


class CausalLMModel(TaskModel):
    """``SmolLM3ForCausalLM``: ``module(input_ids, attention_mask=None)`` -> (B, T, vocab)."""

    task = "causal-lm"

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__(cfg, head)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings and self.lm_head is not None:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits at every position: (B, T, vocab) in the module's dtype."""
        assert self.lm_head is not None
        return self.lm_head(self.hidden_states(input_ids, attention_mask))


class SequenceClassificationModel(TaskModel):
    """``SmolLM3ForSequenceClassification``: -> logits (B, num_labels), ``score`` (no bias).

    Each row is pooled at its rightmost token that is not ``pad_token_id``, transformers' rule:
    it reads ``input_ids``, not the attention mask, so it holds for left and right padding;
    a row of padding alone pools at position 0. Without a ``pad_token_id`` in config.json
    only one row at a time can be classified (its last token), as in transformers.
    """

    task = "sequence-classification"

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__(cfg, head)
        self.score = nn.Linear(cfg.hidden_size, self.num_labels, bias=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, num_labels) in the module's dtype; raises TaskInputError (see class)."""
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, C)
        last = self.last_token(input_ids.to(hidden.device))  # (B,)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, C)
        return self.score(pooled)

    def last_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index (B,) int64 of each row's rightmost token that is not ``pad_token_id``."""
        b, t = input_ids.shape
        if self.pad_token_id is None:
            if b != 1:
                raise TaskInputError(
                    "config.json has no pad_token_id, so padded rows cannot be told apart: "
                    f"classify one row at a time (got {b}), or set pad_token_id in config.json"
                )
            return torch.full((1,), t - 1, dtype=torch.long, device=input_ids.device)
        real = (input_ids != self.pad_token_id).to(torch.int32)
        positions = torch.arange(t, device=input_ids.device, dtype=torch.int32)
        return (positions * real).argmax(-1)


class TokenClassificationModel(TaskModel):
    """``SmolLM3ForTokenClassification``: -> logits (B, T, num_labels).

    ``score`` has a bias unless config.json says ``token_classification_bias: false``; the
    dropout before it is a no-op at inference and left out.
    """

    task = "token-classification"

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__(cfg, head)
        self.score = nn.Linear(cfg.hidden_size, self.num_labels, bias=head.token_bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-token logits (B, T, num_labels) in the module's dtype."""
        return self.score(self.hidden_states(input_ids, attention_mask))


class QuestionAnsweringModel(TaskModel):
    """``SmolLM3ForQuestionAnswering``: -> (start_logits, end_logits), each (B, T).

    transformers saves this class's decoder as ``transformer.*``; ``qa_outputs`` maps each
    hidden state to a (start, end) pair of span logits.
    """

    task = "question-answering"

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__(cfg, head)
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Span start and end logits, each (B, T) in the module's dtype."""
        logits = self.qa_outputs(self.hidden_states(input_ids, attention_mask))  # (B, T, 2)
        start, end = logits.unbind(-1)
        return start.contiguous(), end.contiguous()


_MODULES: dict[str, type[TaskModel]] = {
    m.task: m
    for m in (
        BaseModel,
        CausalLMModel,
        SequenceClassificationModel,
        TokenClassificationModel,
        QuestionAnsweringModel,
    )
}


def load_pretrained(
    path_or_repo: str | Path,
    task: str = "causal-lm",
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    progress: Progress | None = None,
) -> TaskModel:
    """Build the module for ``task`` and load its weights; eval mode, no gradients.

    ``path_or_repo``: a folder with config.json and safetensors weights (one file or shards
    with ``model.safetensors.index.json``), or a hub repo id. ``task``: one of :data:`TASKS`
    (see the module docstring for what each returns). ``device``: auto (CUDA, MPS, else CPU),
    cpu, cuda, cuda:N, mps. ``dtype``: auto (bf16 on CUDA, fp16 on MPS, float32 on CPU),
    float32, bfloat16, float16 or a torch dtype.

    Raises TaskError for an unknown task or a checkpoint whose heads do not fit the task
    (missing, of another task, or of the wrong shape); ModelLoadError / ConfigError for a
    missing or damaged checkpoint; DeviceError for an unavailable device or unknown dtype.
    """
    from smolchat.model.hub import resolve
    from smolchat.model.weights import (
        count_tensors,
        iter_safetensors,
        load_weights,
        safetensors_files,
    )

    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    source = resolve(str(path_or_repo), revision, progress)
    if source.kind != "dir":
        raise TaskError(
            f"{source.name} is a GGUF file; load_pretrained reads safetensors checkpoints (a "
            "folder or hub repo); smolchat.load runs GGUF files for chat"
        )
    raw = read_json(source.path / "config.json", "config.json")
    if raw.get("quantization_config"):
        raise TaskError(
            f"{source.name} is a quantized checkpoint; load_pretrained takes plain "
            "(float32/bf16/fp16) safetensors weights"
        )
    cfg, saved_as = _config(raw)
    _check_architecture(task, saved_as, source.name)
    files = safetensors_files(source.path)
    shapes = _shapes(files)
    prefix = _decoder_prefix(shapes, source.name)
    with on_meta():
        module = _MODULES[task](cfg, HeadConfig.from_dict(raw))
    _check_heads(module, shapes, prefix, saved_as, source.name)
    tensors = _renamed(iter_safetensors(files), prefix, keep_heads=task != "base")
    load_weights(module, tensors, dev, dt, total=count_tensors(files), progress=progress)
    module.requires_grad_(False)
    return module


def _config(raw: dict[str, Any]) -> tuple[ModelConfig, str | None]:
    """The decoder's config (read as the family's CausalLM) and the class it was saved as."""
    archs = raw.get("architectures") or []
    saved_as = str(archs[0]) if archs else None
    arch = registry.by_model_type(str(raw.get("model_type", "")))
    if arch is None and saved_as is not None:
        arch = registry.by_class_name(saved_as)
    if arch is None:
        raise TaskError(
            f"config.json describes a {raw.get('model_type') or saved_as or 'unknown'} model; "
            f"load_pretrained runs {' and '.join(registry.known())} checkpoints"
        )
    known = {arch.class_prefix + suffix for suffix in TASKS.values()}
    if saved_as is not None and saved_as not in known:
        raise TaskError(
            f"config.json says the checkpoint is a {saved_as}, which smolchat cannot run; it "
            f"runs {', '.join(sorted(known))}"
        )
    return ModelConfig.from_dict({**raw, "architectures": [arch.causal_lm_class]}), saved_as


def _task_of(saved_as: str | None) -> str | None:
    if saved_as is None:
        return None
    return next((t for t, suffix in TASKS.items() if saved_as.endswith(suffix)), None)


def _check_architecture(task: str, saved_as: str | None, name: str) -> None:
    """A head checkpoint serves its own task, or ``base`` (which ignores every head)."""
    saved_task = _task_of(saved_as)
    if task == "base" or saved_task is None or saved_task == task:
        return
    raise TaskError(
        f"{name} is a {saved_as} checkpoint (config.json), not a {_class_name(saved_as, task)}; "
        f"load it with task={saved_task!r}, or task='base' for its hidden states"
    )


def _class_name(saved_as: str | None, task: str) -> str:
    arch = registry.by_class_name(saved_as or "") or registry.known()["smollm3"]
    return arch.class_prefix + TASKS[task]


def _labels(raw: dict[str, Any]) -> dict[int, str]:
    """id2label from config.json (keys are strings there); else num_labels; else 2 labels."""
    id2label = raw.get("id2label")
    try:
        if id2label:
            return {int(k): str(v) for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}
        n = int(raw.get("num_labels") or 2)
    except (TypeError, ValueError, AttributeError) as exc:
        raise TaskError(f"config.json's id2label / num_labels is malformed ({exc})") from None
    return {i: f"LABEL_{i}" for i in range(n)}


def _shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, read from the safetensors headers (no data)."""
    from safetensors import safe_open

    from smolchat.errors import ModelLoadError

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except Exception as exc:
            raise ModelLoadError(
                f"weights file {path.name} is damaged or truncated ({type(exc).__name__}); "
                "delete it and download the model again"
            ) from None
    return shapes


def _decoder_prefix(shapes: dict[str, tuple[int, ...]], name: str) -> str:
    for prefix in _DECODER_PREFIXES:
        if f"{prefix}embed_tokens.weight" in shapes:
            return prefix
    raise TaskError(
        f"{name} has no decoder weights (no model.embed_tokens.weight, nor transformer.* or "
        "unprefixed ones); it is not a SmolLM3 / Llama checkpoint"
    )


def _head_of(key: str) -> str | None:
    top = key.partition(".")[0]
    return top if top in _HEADS else None


def _check_heads(
    module: TaskModel,
    shapes: dict[str, tuple[int, ...]],
    prefix: str,
    saved_as: str | None,
    name: str,
) -> None:
    """The checkpoint holds exactly the head weights the task's module has, in their shapes."""
    task = module.task
    what = f"task {task!r} ({_class_name(saved_as, task)})"
    hint = f"; config.json says it is a {saved_as}" if saved_as else ""
    wanted: dict[str, tuple[int, ...]] = {}
    for n, p in module.named_parameters():
        if not n.startswith("model."):
            wanted[n] = tuple(p.shape)
    if task == "base":
        return
    for key in sorted(shapes):
        if _head_of(key) is not None and key not in wanted:
            raise TaskError(
                f"{name} has a {key} weight, which {what} does not have{hint}: pick the task "
                "the checkpoint was saved for (or task='base' for its hidden states)"
            )
    for key, shape in wanted.items():
        if key == "lm_head.weight" and key not in shapes:
            continue  # tied to the embeddings (as load_weights does for the chat)
        if key not in shapes:
            raise TaskError(
                f"{name} has no {key}, which {what} needs{hint}: pick the task the checkpoint "
                "was saved for (or task='base' for its hidden states)"
            )
        if shapes[key] != shape:
            labels = (
                f", for config.json's {module.num_labels} labels" if key.startswith("score") else ""
            )
            raise TaskError(
                f"{name}: {key} has shape {shapes[key]} but {what} needs {shape}{labels}; "
                "the config and the weights do not match"
            )
    stray = [k for k in shapes if _head_of(k) is None and not k.startswith(prefix)]
    if stray:
        raise TaskError(
            f"{name} has weights outside the decoder and the {task} head (first: {stray[0]}); "
            "it is not a checkpoint smolchat can run"
        )


def _renamed(
    tensors: Iterator[tuple[str, torch.Tensor]], prefix: str, keep_heads: bool
) -> Iterator[tuple[str, torch.Tensor]]:
    """Checkpoint names -> the module's: the decoder's prefix becomes ``model.``."""
    for key, tensor in tensors:
        if _head_of(key) is not None:
            if keep_heads:
                yield key, tensor
        elif key.startswith(prefix):
            yield "model." + key[len(prefix) :], tensor
