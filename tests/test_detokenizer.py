"""StreamDecoder: deltas are valid text and concatenate exactly to decode(all ids)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smolchat.chat.tokenizer import StreamDecoder, Tokenizer
from tests.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

CONFIG = {"eos_token": "<|im_end|>"}


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory) -> Tokenizer:
    """The tiny byte-level BPE (like SmolLM3's): all 256 byte tokens plus merges."""
    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return Tokenizer.from_dir(out)


@pytest.fixture(scope="module")
def sentencepiece_like() -> Tokenizer:
    return build_sentencepiece_like()


def build_sentencepiece_like() -> Tokenizer:
    """A Llama-2 style tokenizer: Metaspace, byte fallback, a decoder that strips the first
    space (so decoding a token alone differs from decoding it in context)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"<unk>": 0}
    for i in range(256):
        vocab[f"<0x{i:02X}>"] = len(vocab)
    for ch in "▁abcdefghijklmnopqrstuvwxyzHW,.é":
        vocab[ch] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "w"), ("o", "r"), ("▁", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    backend = Backend(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    backend.add_special_tokens(["<|im_end|>", "<|im_start|>"])
    return Tokenizer(backend, {**CONFIG, "chat_template": CHATML_TEMPLATE})


def stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    decoder = tok.stream_decoder()
    deltas = [decoder.add(i) for i in ids]
    deltas.append(decoder.flush())
    return deltas


def check_valid(deltas: list[str]) -> None:
    for delta in deltas:
        assert isinstance(delta, str)
        delta.encode("utf-8")  # no lone surrogates


TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("the world Hello, é\n ") + ["日本語", "🍎", "Zürich", "ÿ"]),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_ids_byte_level(byte_level, data):
    """Any id sequence, including byte tokens that split multi-byte characters, invalid byte
    runs and special tokens: the deltas concatenate to decode(ids)."""
    ids = data.draw(st.lists(st.integers(0, byte_level.vocab_size - 1), max_size=40))
    deltas = stream(byte_level, ids)
    check_valid(deltas)
    full = byte_level.decode(ids)
    assert "".join(deltas) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in d for d in deltas)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.one_of(TEXT, st.sampled_from(SPECIAL_TOKENS)), max_size=6),
    which=st.sampled_from(["byte_level", "sentencepiece_like"]),
)
def test_text_streams_without_replacement_chars(byte_level, sentencepiece_like, parts, which):
    tok = byte_level if which == "byte_level" else sentencepiece_like
    ids = tok.encode("".join(parts))
    deltas = stream(tok, ids)
    check_valid(deltas)
    assert "".join(deltas) == tok.decode(ids)
    if "\ufffd" not in "".join(parts):
        assert not any("\ufffd" in d for d in deltas)


def test_multibyte_char_split_over_byte_tokens(byte_level, sentencepiece_like):
    for tok in (byte_level, sentencepiece_like):
        ids = tok.encode("a 日本語 🍎")
        decoder = tok.stream_decoder()
        deltas = [decoder.add(i) for i in ids]
        assert "" in deltas  # some ids only carry part of a character
        assert "".join(deltas) + decoder.flush() == tok.decode(ids)
        assert all(d == "" or "\ufffd" not in d for d in deltas)


def test_context_keeps_spaces_of_sentencepiece_tokens(sentencepiece_like):
    tok = sentencepiece_like
    ids = tok.encode("the world")
    assert tok.decode(ids[-1:]) != tok.decode(ids)[-len(tok.decode(ids[-1:])) - 1 :]
    assert "".join(stream(tok, ids)) == "the world"


def test_special_tokens_are_kept(byte_level):
    ids = byte_level.encode("Hi<|im_end|>\n<think>")
    deltas = stream(byte_level, ids)
    assert "<|im_end|>" in deltas and "<think>" in deltas
    assert "".join(deltas) == "Hi<|im_end|>\n<think>"


def test_flush_returns_an_incomplete_character(byte_level):
    ids = byte_level.encode("日")
    assert len(ids) > 1
    decoder = byte_level.stream_decoder()
    assert [decoder.add(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.flush() == byte_level.decode(ids[:-1]) == "\ufffd"
    assert decoder.flush() == ""
    # the decoder keeps working after a flush
    more = byte_level.encode("ok")
    assert "".join(decoder.add(i) for i in more) + decoder.flush() == "ok"


def test_work_per_token_is_bounded(byte_level):
    """O(1) per token: each step decodes a short window, not the whole history."""
    text = "Émilie a mangé une pomme 🍎 à Zürich. 日本語のテキスト。 " * 100
    ids = byte_level.encode(text)
    assert len(ids) > 2000
    decoder = StreamDecoder(byte_level)
    real = decoder._decode
    decoded = []

    def counting(window, skip_special_tokens=False):
        decoded.append(len(window))
        return real(window, skip_special_tokens=skip_special_tokens)

    decoder._decode = counting
    out = "".join(decoder.add(i) for i in ids) + decoder.flush()
    assert out == text
    assert max(decoded) <= 10  # context (<= 4 byte tokens) + a partial character
    assert sum(decoded) <= 12 * len(ids)


def test_invalid_byte_runs_keep_the_window_bounded(byte_level):
    lead = byte_level.encode("日")[0]  # a lone lead byte: never completed below
    decoder = byte_level.stream_decoder()
    out = [decoder.add(lead) for _ in range(100)]
    assert len(decoder._window) <= StreamDecoder.MAX_PENDING + 4
    out.append(decoder.flush())
    assert set("".join(out)) == {"\ufffd"}
