"""The tokenizer: ``tokenizer.json`` through the ``tokenizers`` library, plus the chat template.

:meth:`Tokenizer.encode_chat` is how the chat layer turns a conversation into prompt ids without
letting message text inject control tokens. It renders the template with every control-token
string found in the caller's strings wrapped in two rare marker characters, then encodes
the rendering piece by piece: marked strings as plain text, everything else (the template's own
text and control tokens) normally. A rendering without markers is encoded in one go, so for
ordinary text the ids are exactly ``encode(apply_chat_template(...))``. The markers survive the
string methods templates use on content (``replace``, ``strip``, ``split`` ...); a marker the
template separates from its partner is dropped.

Control tokens are the special added tokens plus the added tokens the template's text mentions
(SmolLM3's ``<think>``), whitespace tokens excepted. Assistant content built by
:func:`smolchat.chat.thinking.history_for_template` carries trusted ``<think>`` tags: those stay
control tokens while the reasoning and answer text inside are still sanitized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import tokenizers

from smolchat.chat.template import render_chat_template
from smolchat.chat.text import valid_text
from smolchat.chat.thinking import TrustedText
from smolchat.errors import ModelLoadError

__all__ = ["StreamDecoder", "Tokenizer"]

SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

# Two rare characters that bracket control-token strings from the caller's input. They must be
# printable: templates print tools with Python's repr (``tool | string``), which escapes others.
_MARK_START = "\U0001f700"  # ALCHEMICAL SYMBOL FOR QUINTESSENCE
_MARK_END = "\U0001f701"  # ALCHEMICAL SYMBOL FOR AIR
_REPLACEMENT = "\ufffd"


def _token_content(value: Any) -> str | None:
    """A special-token entry is a string or ``{"content": ...}`` (tokenizer_config.json)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"Cannot read {what} {path}: {type(exc).__name__}; re-download the model files."
        ) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {path} is not a JSON object; re-download the model files.")
    return data


def _pick_template(value: Any) -> str | None:
    """``chat_template`` is a string or a list of ``{"name", "template"}`` (take "default")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


class Tokenizer:
    """Encode, decode and chat-format text for one model (see the module docstring)."""

    def __init__(self, backend: tokenizers.Tokenizer, config: Mapping[str, Any]) -> None:
        self._tok = backend
        self._config = dict(config)
        self.chat_template: str | None = _pick_template(self._config.get("chat_template"))
        self.special_tokens: dict[str, str] = {}
        for key in SPECIAL_TOKEN_KEYS:
            content = _token_content(self._config.get(key))
            if content is not None:
                self.special_tokens[key] = content
        eos = self.special_tokens.get("eos_token")
        eos_id = self._tok.token_to_id(eos) if eos is not None else None
        self.eos_token_ids: list[int] = [eos_id] if eos_id is not None else []
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        self._control_cache: dict[str | None, tuple[re.Pattern[str], re.Pattern[str]]] = {}

    # ----- loading -------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: Path | str) -> Tokenizer:
        """Load ``tokenizer.json`` with ``tokenizer_config.json``, ``special_tokens_map.json``
        and ``chat_template.jinja`` (each optional) from a model folder."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelLoadError(
                f"No tokenizer.json in {path}; this tokenizer format is not supported "
                "(download the model's tokenizer.json)."
            )
        try:
            tokenizer_json = tok_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"Cannot read {tok_file}: {exc}; re-download it.") from None
        config: dict[str, Any] = {}
        special_map = path / "special_tokens_map.json"
        if special_map.is_file():
            config.update(_read_json(special_map, "special_tokens_map.json"))
        tok_config = path / "tokenizer_config.json"
        if tok_config.is_file():  # wins over special_tokens_map.json, except with null values
            for key, value in _read_json(tok_config, "tokenizer_config.json").items():
                if value is not None or key not in config:
                    config[key] = value
        template_file = path / "chat_template.jinja"
        if template_file.is_file():
            config["chat_template"] = template_file.read_text(encoding="utf-8")
        return cls.from_parts(tokenizer_json, config, source=str(tok_file))

    @classmethod
    def from_parts(
        cls, tokenizer_json: str, config: Mapping[str, Any], *, source: str = "tokenizer.json"
    ) -> Tokenizer:
        """Build from a ``tokenizer.json`` string and a ``tokenizer_config.json``-like dict."""
        try:
            backend = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise ModelLoadError(
                f"Cannot parse {source} ({reason}); the file is corrupt or from an unsupported "
                "tokenizers version, re-download it."
            ) from None
        missing = []
        for entry in (config.get("added_tokens_decoder") or {}).values():
            content = _token_content(entry)
            if content is not None and backend.token_to_id(content) is None:
                special = bool(entry.get("special", True)) if isinstance(entry, Mapping) else True
                missing.append(tokenizers.AddedToken(content, special=special, normalized=False))
        if missing:
            backend.add_tokens(missing)
        return cls(backend, config)

    # ----- plain encoding / decoding -------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; no BOS/EOS is added, special-token strings are parsed."""
        return self._tok.encode(valid_text(text), add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for ``ids`` (special tokens kept as their text unless skipped)."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """The id of one token string, or ``None``."""
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of one id, or ``None``."""
        return self._tok.id_to_token(token_id)

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder (see :class:`StreamDecoder`)."""
        return StreamDecoder(self)

    # ----- chat ----------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """Render ``messages`` like transformers' ``apply_chat_template``; ids if ``tokenize``.

        ``template_kwargs`` reach the template (``enable_thinking``, ``tools``, ``xml_tools``,
        ``documents``, ...); ``chat_template=`` overrides the model's template.
        """
        text = self._render(messages, add_generation_prompt, template_kwargs)
        return self.encode(text) if tokenize else text

    def encode_chat(
        self, messages: list[dict], add_generation_prompt: bool = True, **template_kwargs: Any
    ) -> list[int]:
        """Prompt ids for ``messages``; control-token strings in the inputs stay plain text.

        Equal to ``encode(apply_chat_template(...))`` whenever no input string contains a
        control-token string. Strings are sanitized in messages, tools, documents and the extra
        template variables; :class:`~smolchat.chat.thinking.TrustedText` keeps its own tags.
        """
        template = template_kwargs.get("chat_template") or self.chat_template
        control_re, pieces_re = self._control_patterns(template)
        marked_messages = _mark(messages, control_re)
        marked_kwargs = {
            k: (v if k == "chat_template" else _mark(v, control_re))
            for k, v in template_kwargs.items()
        }
        text = valid_text(self._render(marked_messages, add_generation_prompt, marked_kwargs))
        if _MARK_START not in text and _MARK_END not in text:
            return self.encode(text)
        return self._encode_marked(text, pieces_re)

    def _render(
        self, messages: list[dict], add_generation_prompt: bool, kwargs: dict[str, Any]
    ) -> str:
        kwargs = dict(kwargs)
        template = kwargs.pop("chat_template", None) or self.chat_template
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
            **kwargs,
        )

    # ----- control-token sanitizing --------------------------------------------------------
    def control_tokens(self, template: str | None = None) -> list[str]:
        """Token strings that user text may not produce: special added tokens, and the added
        tokens that ``template`` (default: the model's) mentions, except whitespace ones."""
        template = template if template is not None else (self.chat_template or "")
        found = []
        for token in self._tok.get_added_tokens_decoder().values():
            content = token.content
            if not content or content.isspace():
                continue
            if token.special or content in template:
                found.append(content)
        return found

    def _control_patterns(self, template: str | None) -> tuple[re.Pattern[str], re.Pattern[str]]:
        cached = self._control_cache.get(template)
        if cached is None:
            tokens = sorted(set(self.control_tokens(template)), key=len, reverse=True)
            # the marker characters themselves are marked too: a user who types one gets it
            # back as text, and cannot forge a marked region
            alternatives = "|".join(re.escape(t) for t in [*tokens, _MARK_START, _MARK_END])
            control_re = re.compile(alternatives)
            pieces_re = re.compile(
                f"{_MARK_START}({alternatives}){_MARK_END}|[{_MARK_START}{_MARK_END}]"
            )
            cached = self._control_cache[template] = (control_re, pieces_re)
        return cached

    @cached_property
    def _plain(self) -> tokenizers.Tokenizer:
        """A copy of the tokenizer that knows no added tokens: it encodes them as text."""
        spec = json.loads(self._tok.to_str())
        spec["added_tokens"] = []
        return tokenizers.Tokenizer.from_str(json.dumps(spec))

    @cached_property
    def _anchors(self) -> tuple[list[int] | None, list[int] | None]:
        """Per backend (full, plain): the ids of "\n" if that backend treats the start of a
        text specially (SentencePiece's prefix space), else None (byte-level BPE)."""
        found = []
        for backend in (self._tok, self._plain):
            newline = backend.encode("\n", add_special_tokens=False).ids
            alone = backend.encode("a", add_special_tokens=False).ids
            after = backend.encode("\na", add_special_tokens=False).ids
            found.append(None if after == newline + alone else newline)
        return found[0], found[1]

    def _encode_piece(self, piece: str, plain: bool) -> list[int]:
        """Encode a piece from the middle of a rendering. Where the tokenizer adds a prefix
        space at the start of a text, encode it after a newline and drop that again."""
        backend = self._plain if plain else self._tok
        newline = self._anchors[1 if plain else 0]
        if newline:
            ids = backend.encode("\n" + piece, add_special_tokens=False).ids
            if ids[: len(newline)] == newline:
                return ids[len(newline) :]
        return backend.encode(piece, add_special_tokens=False).ids

    def _encode_marked(self, text: str, pieces_re: re.Pattern[str]) -> list[int]:
        # split() alternates [text, marked token or None (lone marker), text, ...]
        parts = pieces_re.split(text)
        ids = self.encode(parts[0])
        for index, part in enumerate(parts[1:], start=1):
            if not part:
                continue
            if index % 2 == 0:
                ids += self._encode_piece(part, plain=False)
                continue
            piece_ids = self._encode_piece(part, plain=True)
            if self._tok.token_to_id(part) in piece_ids:  # the vocabulary merges it back
                piece_ids = self._encode_piece(part[0], plain=True) + self._encode_piece(
                    part[1:], plain=True
                )
            ids += piece_ids
        return ids


def _mark(value: Any, control_re: re.Pattern[str]) -> Any:
    """Bracket every control-token string (and marker character) inside ``value`` (strings,
    lists, dicts; not dict keys) with the markers."""
    if isinstance(value, TrustedText):
        return value.marked(lambda s: _mark(s, control_re))
    if isinstance(value, str):
        return control_re.sub(lambda m: f"{_MARK_START}{m.group(0)}{_MARK_END}", value)
    if isinstance(value, Mapping):
        return {k: _mark(v, control_re) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v, control_re) for v in value]
    return value


class StreamDecoder:
    """Turn a stream of token ids into printable text deltas.

    Each :meth:`add` decodes only a short window: the ids of the last emitted delta (context:
    SentencePiece-style decoders drop a leading space on the first token, byte-fallback
    decoders decode a run of byte tokens together) plus the ids not yet emitted. Text that ends
    in a replacement character is held back, because the next byte token may complete the
    character. The deltas, plus :meth:`flush`, concatenate exactly to
    ``tokenizer.decode(all ids)``; the one exception is a stream stuck on invalid bytes for
    more than ``MAX_PENDING`` tokens, which is then emitted as it is (so the window stays small).
    """

    MAX_PENDING = 32

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._decode = tokenizer._tok.decode
        self._window: list[int] = []
        self._read = 0  # window[:read] is context whose text was already returned
        self._prefix_len = 0  # len(decode(window[:read]))

    def add(self, token_id: int) -> str:
        """Add one id; return the text that became final ("" while a character is partial)."""
        self._window.append(token_id)
        text = self._decode(self._window, skip_special_tokens=False)
        pending = len(self._window) - self._read
        if text.endswith(_REPLACEMENT) and pending < self.MAX_PENDING:
            return ""
        return self._advance(text)

    def flush(self) -> str:
        """Return whatever is still held back (replacement chars if truly incomplete)."""
        if self._read == len(self._window):
            return ""
        return self._advance(self._decode(self._window, skip_special_tokens=False))

    def _advance(self, text: str) -> str:
        delta = text[self._prefix_len :]
        self._window = self._window[max(self._read, len(self._window) - 4) :]
        self._read = len(self._window)
        self._prefix_len = len(self._decode(self._window, skip_special_tokens=False))
        return delta
