"""Typed history (smolchat/chat/turns.py): the transcript boundary keeps the file format."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from smolchat.backend.types import FINISH_REASONS, GenerationStats
from smolchat.chat.session import ChatSession
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.chat.turns import Reply, UserTurn, from_record, to_record
from tests.tui.fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests/fixtures/transcripts/written-by-0.1.0.md"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)
stats_dicts = st.fixed_dictionaries(
    {},
    optional={
        "generated_tokens": st.integers(0, 10**6),
        "decode_s": st.floats(0, 100),
        "ttft_s": st.floats(0, 100),
        "finish_reason": st.sampled_from(FINISH_REASONS),
    },
)


def records(role: str) -> st.SearchStrategy[dict]:
    """Message objects as any smolchat so far wrote them (and a later one might)."""
    known = {
        "content": st.text(max_size=10),
        "thinking": st.booleans() | json_values,
        "time": st.just("2026-12-01T08:00:00+00:00") | json_values,
    }
    if role == "assistant":
        known |= {
            "reasoning": st.text(max_size=10) | st.none(),
            "reasoning_block": st.booleans() | json_values,
            "finish_reason": st.sampled_from(FINISH_REASONS) | st.text(max_size=6),
            "stats": stats_dicts | json_values,
            "error": st.text(max_size=10) | json_values,
        }
    later = st.dictionaries(st.sampled_from(["attachments", "rating", "x"]), json_values)
    return st.builds(
        lambda known, later: {"role": role, **known, **later},
        st.fixed_dictionaries({"content": known.pop("content")}, optional=known),
        later,
    )


@settings(max_examples=300, deadline=None)
@given(record=records("user") | records("assistant"))
def test_every_record_survives_a_load_and_save(record: dict) -> None:
    turn = from_record(record)
    assert isinstance(turn, UserTurn if record["role"] == "user" else Reply)
    back = to_record(turn)
    # the same object, except a null of a known field (the same as no field)
    later = ("attachments", "rating", "x")
    assert back == {k: v for k, v in record.items() if v is not None or k in later}
    assert from_record(back) == turn


TIME = "2026-12-01T08:00:00+00:00"


def test_records_keep_the_key_order_transcripts_always_had() -> None:
    stats = GenerationStats(generated_tokens=3, finish_reason="error")
    reply = Reply("hi", "", True, False, "error", stats, TIME, "boom")
    assert list(to_record(reply).items()) == [
        ("role", "assistant"),
        ("content", "hi"),
        ("reasoning", ""),
        ("thinking", True),
        ("reasoning_block", False),
        ("finish_reason", "error"),
        (
            "stats",
            {
                "prompt_tokens": 0,
                "cached_tokens": 0,
                "prefilled_tokens": 0,
                "generated_tokens": 3,
                "ttft_s": 0.0,
                "decode_s": 0.0,
                "finish_reason": "error",
            },
        ),
        ("time", TIME),
        ("error", "boom"),
    ]
    user = UserTurn("hello", False, TIME)
    assert list(to_record(user).items()) == [
        ("role", "user"),
        ("content", "hello"),
        ("thinking", False),
        ("time", TIME),
    ]
    assert to_record(UserTurn("hello")) == {"role": "user", "content": "hello"}
    # a record written in another order (an edited file) is saved in this order
    shuffled = dict(reversed(list(to_record(reply).items())))
    assert list(to_record(from_record(shuffled))) == list(to_record(reply))


def test_unusable_values_are_kept_not_typed() -> None:
    reply = from_record(
        {
            "role": "assistant",
            "content": "x",
            "finish_reason": "eos",  # not a finish reason this version knows
            "stats": "fast",
            "thinking": "yes",
        }
    )
    assert isinstance(reply, Reply)
    assert reply.finish_reason is None and reply.stats is None and reply.thinking is None
    assert reply.generated_tokens == 0
    assert dict(reply.unknown) == {"finish_reason": "eos", "stats": "fast", "thinking": "yes"}


def test_a_0_1_0_transcript_loads_typed_and_saves_the_same_records(tmp_path: Path) -> None:
    session = ChatSession(FakeEngine(), store=TranscriptStore(tmp_path))
    session.load(OLD)
    old = read_transcript(OLD).messages
    assert [type(m) for m in session.messages] == [UserTurn, Reply, UserTurn, Reply]
    first = session.messages[1]
    assert isinstance(first, Reply)
    assert first.reasoning == "They want code." and first.finish_reason == "cancelled"
    assert first.stats is not None and first.stats.generated_tokens == 7
    assert first.reasoning_block is None  # not recorded then
    assert session.last_stats is None  # the last reply of that file has no stats
    saved = session.save(tmp_path / "again.md")
    assert read_transcript(saved).messages == old
    # and what the model sees of it: the recorded reasoning is sent back
    conversation = session.conversation(session.messages, True)
    assert conversation.messages[1].reasoning == "They want code."


def test_a_conversation_round_trips_through_its_autosave(tmp_path: Path) -> None:
    engine = FakeEngine(lambda q: "Thinking about it.\n</think>\nThe answer is 4.")
    session = ChatSession(engine, store=TranscriptStore(tmp_path))
    list(session.send("what is 2+2? /no_think"))
    list(session.send("and 3+3?"))
    assert session.transcript_path is not None
    copy = tmp_path / "copy" / "chat.md"
    copy.parent.mkdir()
    shutil.copy(session.transcript_path, copy)
    again = ChatSession(FakeEngine())
    again.load(copy)
    assert again.messages == session.messages
    assert again.last_stats == session.last_stats
    user = again.messages[0]
    assert isinstance(user, UserTurn) and user.thinking is False
    assert user.content == "what is 2+2?"
