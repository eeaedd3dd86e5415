"""Build tiny random SmolLM3 / Llama checkpoints and tokenizers for tests.

The checkpoints are written by transformers (the reference implementation) so that
parity tests compare our network against ``SmolLM3ForCausalLM`` on the same weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<think>",
    "</think>",
    "<|finetune_right_pad_id|>",
    "<|im_start|>",
    "<|im_end|>",
]


def _find_fixtures() -> Path:
    """``../shared/fixtures/smollm3`` beside the checkout (or $SMOLCHAT_FIXTURES, /work/shared)."""
    env = os.environ.get("SMOLCHAT_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates += [
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "smollm3",
        Path("/work/shared/fixtures/smollm3"),
    ]
    return next((c for c in candidates if c.exists()), candidates[0])


FIXTURES = _find_fixtures()

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. Paris is a city in Europe.",
    "Hello! How can I help you today? I am a small language model.",
    "def add(a, b):\n    return a + b\n",
    "Émilie a mangé une pomme 🍎 à Zürich. 日本語のテキスト。",
    "system user assistant tool think reasoning answer question",
] * 20


def build_tokenizer(out: Path, chat_template: str | None = None, vocab_size: int = 400) -> int:
    """Train a small byte-level BPE with the SmolLM3 special tokens; return its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    if chat_template is None:
        template_file = FIXTURES / "chat_template.jinja"
        chat_template = template_file.read_text() if template_file.exists() else CHATML_TEMPLATE
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|finetune_right_pad_id|>",
                "chat_template": chat_template,
                "model_max_length": 4096,
            }
        )
    )
    return tok.get_vocab_size()


def build_smollm3(
    out: Path,
    *,
    layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int | None = None,
    intermediate: int = 128,
    tie: bool = True,
    rope_scaling: dict | None = None,
    max_pos: int = 4096,
    sliding_window: int | None = None,
    no_rope_layers: list[int] | None = None,
    arch: str = "smollm3",
    seed: int = 0,
    with_tokenizer: bool = True,
    v4_spelling: bool = False,
    dtype: str = "float32",
    head: str = "ForCausalLM",
    num_labels: int = 2,
    extra_config: dict | None = None,
    max_shard_size: str | None = None,
) -> Path:
    """Write a tiny random checkpoint (config.json + model.safetensors [+ tokenizer]).

    ``head``: the transformers class after SmolLM3 / Llama (``Model``, ``ForCausalLM``,
    ``ForSequenceClassification``, ``ForTokenClassification``, ``ForQuestionAnswering``);
    ``num_labels`` and ``extra_config`` go into its config; ``max_shard_size`` (e.g. "40KB")
    writes shards and their index.
    """
    import torch
    import transformers

    vocab = build_tokenizer(out) if with_tokenizer else 512
    ids = {t: vocab - len(SPECIAL_TOKENS) + i for i, t in enumerate(SPECIAL_TOKENS)}
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_pos,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|finetune_right_pad_id|>"],
        num_labels=num_labels,
        **(extra_config or {}),
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if rope_scaling:
        rope = {**rope_scaling, "rope_theta": 10000.0}
    if head_dim is not None:
        common["head_dim"] = head_dim
    if arch == "smollm3":
        cfg = transformers.SmolLM3Config(
            **common,
            rope_parameters=rope,
            use_sliding_window=sliding_window is not None,
            sliding_window=sliding_window,
            no_rope_layers=no_rope_layers,
        )
        cls = getattr(transformers, "SmolLM3" + head)
    else:
        cfg = transformers.LlamaConfig(**common, rope_parameters=rope)
        cls = getattr(transformers, "Llama" + head)
    torch.manual_seed(seed)
    model = cls(cfg).to(getattr(torch, dtype))
    with torch.no_grad():  # larger random weights make differences visible
        for p in model.parameters():
            p.normal_(0.0, 0.1 if p.dim() > 1 else 0.5).add_(1.0 if p.dim() == 1 else 0.0)
    if max_shard_size is None:
        model.save_pretrained(out)
    else:
        model.save_pretrained(out, max_shard_size=max_shard_size)
    if v4_spelling:
        to_v4_spelling(out / "config.json")
    return out


def to_v4_spelling(config_path: Path) -> None:
    """Rewrite a transformers-5 config.json into the 4.x spelling (rope_theta, rope_scaling)."""
    cfg = json.loads(config_path.read_text())
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        rope["type"] = rope.pop("rope_type")
        cfg["rope_scaling"] = rope
    else:
        cfg["rope_scaling"] = None
    config_path.write_text(json.dumps(cfg, indent=2))
