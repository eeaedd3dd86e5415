"""Fuzzing (hypothesis): the slash-command parser and runner, the transcript loader, the
reasoning parser and the streaming detokenizer never fail in any way but the documented one.

Already covered elsewhere: exact transcript round trips of random conversations
(tests/test_transcript.py::test_round_trip_is_exact), the detokenizer on random ids of synthetic
byte-level and SentencePiece-style tokenizers (tests/test_detokenizer.py::test_random_ids_
byte_level, ::test_text_streams_without_replacement_chars), the reasoning parser on random splits
of tag-heavy text (tests/test_reasoning.py::test_random_splits_equal_whole_text_split). Here:
arbitrary Unicode, whole random lines and files, and the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smolchat.chat.commands import (
    COMMANDS,
    StreamReply,
    complete,
    is_command,
    parse_command,
    run_command,
)
from smolchat.chat.events import AnswerDelta, ReasoningDelta
from smolchat.chat.reasoning import ReasoningParser, split_reasoning
from smolchat.chat.session import ChatSession
from smolchat.chat.tokenizer import Tokenizer
from smolchat.chat.transcript import Transcript, TranscriptError, read_transcript, render_transcript
from smolchat.chat.turns import to_record
from smolchat.errors import CommandError, SmolchatError
from tests.tui.fake_engine import FakeEngine

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = sorted(COMMANDS) + ["quit", "q", "h", "?", "no-think", "NO_THINK", "sett", "x"]
WORDS = ["temperature", "top_p", "seed", "none", "on", "off", "show", "hide", "dark", "-1",
         "0", "1", "1e309", "nan", "inf", "999999999999999999999", "0.5", "=", "'", '"', "--clear",
         "\x00", "\x1b[2J", "\ud800", "é", "🍎", "/think", "/no_think", "<|im_end|>"]  # fmt: skip
line_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


def state(session: ChatSession):
    return (session.settings.to_dict(), session.system_prompt, list(session.messages))


# ---- slash commands -----------------------------------------------------------------------------


@FUZZ
@given(line=st.text(max_size=80))
def test_command_parsing_of_any_text(line: str) -> None:
    assert isinstance(is_command(line), bool)
    if is_command(line):
        name, args = parse_command(line)
        assert name and name == name.lower() and "-" not in name and args == args.strip()
    else:
        with pytest.raises(CommandError):
            parse_command(line)
    for completion in complete(line):
        assert completion.startswith("/") == line.startswith("/")
        assert completion.lstrip("/").split(" ")[0] in COMMANDS


command_lines = st.builds(
    lambda name, words, sep, tail: "/" + name + sep + " ".join(words) + tail,
    st.sampled_from(NAMES),
    st.lists(st.one_of(st.sampled_from(WORDS), line_text), max_size=4),
    st.sampled_from([" ", "  ", "\t", " \n "]),
    st.sampled_from(["", " ", "\n", " /think"]),
)


@pytest.fixture(scope="module")
def fuzz_session() -> ChatSession:
    session = ChatSession(FakeEngine(lambda q: "<think>\nhm\n</think>\nfine"))
    for _ in session.send("hello"):
        pass
    return session


@settings(max_examples=300, deadline=None)
@given(line=command_lines)
def test_any_command_line_fails_only_with_one_clear_line(fuzz_session, line: str) -> None:
    session = fuzz_session
    name, _ = parse_command(line) if is_command(line) else ("", "")
    assume(name not in ("save", "load"))  # files: fuzzed on their own below
    before = state(session)
    try:
        result = run_command(session, line)
    except CommandError as error:
        assert "\n" not in str(error) and str(error)
        assert state(session) == before  # a refused command changes nothing
        return
    except SmolchatError as error:  # e.g. /retry on a context that is too small
        assert "\n" not in str(error)
        return
    if isinstance(result.effect, StreamReply):
        for _ in result.effect.stream:
            pass
    assert not session.busy
    if not session.messages:  # keep something to work on
        for _ in session.send("hello again"):
            pass


@settings(max_examples=150, deadline=None)
@given(arg=st.one_of(line_text, st.sampled_from(WORDS)), verb=st.sampled_from(["save", "load"]))
def test_save_and_load_with_any_argument(tmp_path_factory, arg: str, verb: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz-files")
    session = ChatSession(FakeEngine(lambda q: "ok"))
    for _ in session.send("hello"):
        pass
    # keep every path inside the test folder
    safe = re.sub(r"^[~/\\]+", "", arg).replace("..", "_")
    quoted = f'"{folder}/{safe}"' if arg.startswith(('"', "'")) else f"{folder}/{safe}"
    try:
        run_command(session, f"/{verb} {quoted}")
    except SmolchatError as error:
        assert "\n" not in str(error)


# ---- the transcript loader ----------------------------------------------------------------------

SAMPLE = Transcript(
    messages=[
        {"role": "user", "content": "Hello **there**\n\n```py\nx = 1\n```", "time": "t"},
        {
            "role": "assistant",
            "content": "Hi!",
            "reasoning": "think <!-- -->",
            "finish_reason": "stop",
            "stats": {"generated_tokens": 3, "decode_s": 0.1},
        },
    ],
    system_prompt="Be brief.",
    settings={"temperature": 0.6, "thinking": True},
    model="fake/model",
    created="2025-01-01T00:00:00+00:00",
)
GOOD = render_transcript(SAMPLE)


def load_or_refuse(path: Path) -> Transcript | None:
    try:
        return read_transcript(path)
    except TranscriptError as error:
        assert "\n" not in str(error)
        return None


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_refused_cleanly(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.md"
    path.write_bytes(data)
    load_or_refuse(path)
    path.write_bytes(GOOD.encode()[:120] + data)  # a real header, then noise
    load_or_refuse(path)


edits = st.lists(
    st.tuples(
        st.sampled_from(["delete", "duplicate", "swap", "insert", "truncate", "flip"]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.text(max_size=30),
    ),
    min_size=1,
    max_size=4,
)


def mutate(text: str, how: list[tuple[str, int, int, str]]) -> str:
    lines = text.split("\n")
    for kind, a, b, new in how:
        i, j = a % max(len(lines), 1), b % max(len(lines), 1)
        if kind == "delete" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(j, lines[i])
        elif kind == "swap" and lines:
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert":
            lines.insert(i, new)
        elif kind == "truncate":
            joined = "\n".join(lines)
            lines = joined[: a % (len(joined) + 1)].split("\n")
        elif kind == "flip" and lines and lines[i]:
            k = b % len(lines[i])
            lines[i] = lines[i][:k] + new[:1] + lines[i][k + 1 :]
    return "\n".join(lines)


@settings(max_examples=300, deadline=None)
@given(how=edits)
def test_mutated_transcripts_load_or_are_refused_cleanly(tmp_path_factory, how) -> None:
    path = tmp_path_factory.mktemp("mutated") / "t.md"
    path.write_text(mutate(GOOD, how), encoding="utf-8", errors="surrogatepass")
    data = load_or_refuse(path)
    if data is None:
        return
    session = ChatSession(FakeEngine())
    try:
        session.load(path)  # what /load does with what the loader accepted
    except TranscriptError as error:
        assert "\n" not in str(error)
        return
    again = path.with_name("again.md")
    session.save(again)
    assert read_transcript(again).messages == [to_record(m) for m in session.messages]


# ---- the reasoning parser -----------------------------------------------------------------------

TAGGED = st.lists(
    st.one_of(
        st.text(max_size=8),
        st.sampled_from(["<think>", "</think>", "<", "</", "think>", "<think", "\n", " "]),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=TAGGED, start=st.booleans(), data=st.data())
def test_reasoning_parser_on_any_text_and_any_split(text: str, start: bool, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    parser = ReasoningParser(start_in_reasoning=start)
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    if parser.revised:
        # a stray "</think>" turned answer text that had already streamed into reasoning: the
        # stream cannot take it back, but everything after the tag streams as the final answer
        assert not start and answer.endswith(parser.answer)
    else:
        assert (reasoning, answer) == (parser.reasoning, parser.answer)
    assert (parser.reasoning, parser.answer) == split_reasoning(text, start_in_reasoning=start)
    assert len(reasoning) + len(answer) <= len(text)


# ---- the streaming detokenizer with the real SmolLM2 tokenizer ----------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf: Path) -> Tokenizer:
    from smolchat.model.gguf import read_gguf_header

    header = read_gguf_header(smollm2_gguf)
    return Tokenizer.from_parts(header.tokenizer_json, header.tokenizer_config)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_real_tokenizer_streams_any_ids(smollm2_tokenizer: Tokenizer, data) -> None:
    tok = smollm2_tokenizer
    low_bytes = st.integers(0, 300)  # special and single-byte tokens: split characters
    ids = data.draw(st.lists(st.one_of(low_bytes, st.integers(0, tok.vocab_size - 1)), max_size=60))
    decoder = tok.stream_decoder()
    deltas = [decoder.add(i) for i in ids] + [decoder.flush()]
    for delta in deltas:
        delta.encode("utf-8")  # valid text, every time
    assert "".join(deltas) == tok.decode(ids)


@settings(max_examples=150, deadline=None)
@given(text=line_text)
def test_real_tokenizer_round_trips_any_text_through_the_stream(
    smollm2_tokenizer: Tokenizer, text: str
) -> None:
    tok = smollm2_tokenizer
    ids = tok.encode(text)
    decoder = tok.stream_decoder()
    deltas = [decoder.add(i) for i in ids] + [decoder.flush()]
    assert "".join(deltas) == tok.decode(ids)
    # replacement characters only where the tokenizer itself cannot spell the text (SmolLM2's
    # vocabulary lacks some byte tokens, e.g. of U+40000)
    assert not any("\ufffd" in d for d in deltas) or "\ufffd" in tok.decode(ids)
