"""Rebuild a Hugging Face ``tokenizer.json`` from a GGUF file's tokenizer metadata.

GGUF stores the vocabulary (``tokenizer.ggml.tokens``), merges, per-token types and special token
ids under llama.cpp's key names. For ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE: SmolLM2,
SmolLM3, Llama 3) this builds the equivalent ``tokenizers`` BPE, with the pre-tokenizer that
``tokenizer.ggml.pre`` names, control tokens as special added tokens and user-defined tokens as
plain added tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from smolchat.errors import ModelLoadError

log = logging.getLogger(__name__)

# llama.cpp token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split patterns of llama.cpp's pre-tokenizer types (the regex the vocabulary was trained with).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# pre type -> (style, split regex). "gpt2": GPT-2's regex only; "digits": each digit alone, then
# GPT-2's regex (StarCoder / SmolLM); "split": the given regex, byte-level without its own regex.
PRE_TOKENIZERS: dict[str, tuple[str, str | None]] = {
    "default": ("gpt2", None),
    "gpt-2": ("gpt2", None),
    "gpt2": ("gpt2", None),
    "smollm": ("digits", None),
    "starcoder": ("digits", None),
    "refact": ("digits", None),
    "llama3": ("split", LLAMA3_SPLIT),
    "llama-v3": ("split", LLAMA3_SPLIT),
    "llama-bpe": ("split", LLAMA3_SPLIT),
    "smaug-bpe": ("split", LLAMA3_SPLIT),
    "falcon3": ("split", LLAMA3_SPLIT),
    "qwen2": ("split", QWEN2_SPLIT),
    "deepseek-r1-qwen": ("split", QWEN2_SPLIT),
}
# llama.cpp matches a whole pre-token found in the vocabulary before merging for these.
IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3"}


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    keep |= set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(pre: str | None, file_name: str) -> tuple[Any, bool]:
    from tokenizers import Regex, pre_tokenizers

    if pre is None:
        pre = "default"
    if pre not in PRE_TOKENIZERS:
        log.warning(
            "%s: unknown tokenizer.ggml.pre %r, using GPT-2 pre-tokenization", file_name, pre
        )
    style, pattern = PRE_TOKENIZERS.get(pre, ("gpt2", None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style != "split")
    if style == "gpt2":
        return byte_level, False
    if style == "digits":
        digits = pre_tokenizers.Digits(individual_digits=True)
        return pre_tokenizers.Sequence([digits, byte_level]), False
    assert pattern is not None  # every "split" style names its pattern
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    return pre_tokenizers.Sequence([split, byte_level]), pre in IGNORE_MERGES


def build_tokenizer(meta: dict[str, Any], file_name: str = "GGUF file") -> tuple[str, dict]:
    """``(tokenizer.json text, tokenizer_config dict)`` from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        kind = "SentencePiece " if model == "llama" else ""
        raise ModelLoadError(
            f"{file_name} uses a {kind}tokenizer of type {model!r}; smolchat reads only "
            "byte-level BPE (gpt2) GGUF tokenizers, as in SmolLM2/SmolLM3: use the model's "
            "safetensors folder instead"
        )
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    merges_raw: list[str] = meta.get("tokenizer.ggml.merges") or []
    if not tokens or not merges_raw:
        raise ModelLoadError(
            f"{file_name} lacks tokenizer.ggml.tokens or tokenizer.ggml.merges; convert it again"
        )
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ModelLoadError(
            f"{file_name} has {len(tokens)} tokens but {len(types)} token types; convert it again"
        )

    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab: dict[str, int] = {}
    for i, (tok, ttype) in enumerate(zip(tokens, types, strict=True)):
        if ttype not in (CONTROL, USER_DEFINED) and not set(tok) <= spelled:
            # a plain token written as raw text: spell its bytes in the byte-level alphabet
            tok = "".join(alphabet[b] for b in tok.encode("utf-8"))
        vocab.setdefault(tok, i)
    merges = []
    for m in merges_raw:
        left, sep, right = m.partition(" ")
        if not sep:
            raise ModelLoadError(f"{file_name} has a malformed merge {m!r}; convert it again")
        merges.append((left, right))

    pre_tok, ignore_merges = _pre_tokenizer(meta.get("tokenizer.ggml.pre"), file_name)
    try:
        bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False)
    except Exception as exc:  # tokenizers raises a bare Exception for merges outside the vocab
        raise ModelLoadError(
            f"{file_name} has an inconsistent tokenizer ({str(exc)[:80]}); convert it again"
        ) from None
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tok
    tk.decoder = decoders.ByteLevel()
    specials = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty == CONTROL
    ]
    plain = [
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty == USER_DEFINED
    ]
    tk.add_special_tokens(specials)
    tk.add_tokens(plain)

    def token(key: str) -> str | None:
        tid = meta.get(f"tokenizer.ggml.{key}")
        return tokens[tid] if isinstance(tid, int) and 0 <= tid < len(tokens) else None

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    bos = token("bos_token_id")
    if add_bos and bos is not None:
        bos_id = int(meta["tokenizer.ggml.bos_token_id"])
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)

    config: dict[str, Any] = {
        "bos_token": bos,
        "eos_token": token("eos_token_id"),
        "pad_token": token("padding_token_id"),
        "unk_token": token("unknown_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "chat_template": meta.get("tokenizer.chat_template"),
        "added_tokens_decoder": {
            str(i): {"content": t, "special": ty == CONTROL, "normalized": False}
            for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
            if ty in (CONTROL, USER_DEFINED)
        },
    }
    eot = token("eot_token_id")
    if eot is not None and eot != config["eos_token"]:
        config["eot_token"] = eot
    return tk.to_str(), config
