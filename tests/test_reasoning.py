"""ReasoningParser: streaming split of <think> reasoning and answer, under any delta split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smolchat.chat.events import AnswerDelta, ReasoningDelta
from smolchat.chat.reasoning import ReasoningParser, split_reasoning
from smolchat.chat.thinking import THINK_END, THINK_START, ThinkContent


def run(chunks: list[str], start_in_reasoning: bool = False) -> tuple[str, str, ReasoningParser]:
    parser = ReasoningParser(start_in_reasoning=start_in_reasoning)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    assert all(e.text for e in events)  # no empty deltas
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    text = "".join(chunks)
    if not start_in_reasoning and THINK_START not in text and THINK_END in text:
        # a stray closing tag is never shown, streamed or not (later ones are literal text)
        assert answer.count(THINK_END) == text.count(THINK_END) - 1
    if parser.revised:  # a stray </think>: answer streamed before it was reasoning after all
        shown = "".join(e.text for e in events).replace("\n", "")
        assert shown == (parser.reasoning + parser.answer).replace("\n", "")  # nothing lost
    else:
        assert (reasoning, answer) == (parser.reasoning, parser.answer)
    return parser.reasoning, parser.answer, parser


CASES = [
    # (text, start_in_reasoning, reasoning, answer)
    ("<think>\nLet me think.\n</think>\nParis.", False, "Let me think.", "Paris."),
    ("<think>\n\n</think>\nParis.", False, "", "Paris."),
    ("<think>a</think>b", False, "a", "b"),
    ("  \n<think>\nr\n</think>\n\nA", False, "r", "\nA"),
    ("Paris.", False, "", "Paris."),
    ("\nParis.", False, "", "\nParis."),
    ("The tag <think> is literal", False, "", "The tag <think> is literal"),
    # a stray close: the prompt had opened the block (issue 10, item 7)
    ("</think> stray close", False, "", " stray close"),
    ("Okay, the user asks.\n</think>\n\nParis.", False, "Okay, the user asks.", "\nParis."),
    ("r</thi", False, "", "r</thi"),  # cut inside a tag that never completed
    ("<think>\nnever closed, cut off", False, "never closed, cut off", ""),
    ("<think>\nr\n</think>\nA <think>x</think>", False, "r", "A <think>x</think>"),
    ("<thin", False, "", "<thin"),
    ("", False, "", ""),
    ("   ", False, "", "   "),
    ("reasoning already open\n</think>\nAnswer", True, "reasoning already open", "Answer"),
    ("\nopen\n</think>\nAnswer", True, "open", "Answer"),
    ("only reasoning, no close", True, "only reasoning, no close", ""),
    ("r\n</think>", True, "r", ""),
    ("a\n\n</think>\n\n", False, "a\n", "\n"),
    ("<think>\na\n\n</think>\n\n", False, "a\n", "\n"),
    ("<think>x</thinking></think>y", False, "x</thinking>", "y"),
]


@pytest.mark.parametrize("text,start,reasoning,answer", CASES)
def test_whole_text(text, start, reasoning, answer):
    assert split_reasoning(text, start_in_reasoning=start) == (reasoning, answer)
    assert run([text], start)[:2] == (reasoning, answer)


@pytest.mark.parametrize("text,start,reasoning,answer", CASES)
def test_every_two_and_char_by_char_split(text, start, reasoning, answer):
    for cut in range(len(text) + 1):
        assert run([text[:cut], text[cut:]], start)[:2] == (reasoning, answer), cut
    assert run(list(text), start)[:2] == (reasoning, answer)


def test_streams_before_the_close_tag_arrives():
    parser = ReasoningParser()
    assert parser.feed("<thi") == []
    assert parser.feed("nk>\nStep one") == [ReasoningDelta("Step one")]
    assert parser.in_reasoning
    assert parser.feed(". Step two\n</th") == [ReasoningDelta(". Step two")]
    assert parser.feed("ink>\nThe answer") == [AnswerDelta("The answer")]
    assert not parser.in_reasoning
    assert parser.feed(" is 4.") == [AnswerDelta(" is 4.")]
    assert parser.finish() == []
    assert (parser.reasoning, parser.answer) == ("Step one. Step two", "The answer is 4.")


def test_answer_streams_at_once_without_think():
    parser = ReasoningParser()
    assert parser.feed("Hello") == [AnswerDelta("Hello")]
    assert parser.feed(" <think>") == [AnswerDelta(" <think>")]


def test_a_stray_close_never_streams_and_revises_the_split():
    """Distilled reasoning models' templates open <think> in the prompt: the reply starts with
    the reasoning and has a lone </think>. Neither the tag nor part of it is ever emitted."""
    parser = ReasoningParser()
    assert parser.feed("Let me think") == [AnswerDelta("Let me think")]
    assert parser.feed(".\n</th") == [AnswerDelta(".\n")]  # "</th" might begin the tag
    assert parser.feed("ink>\nParis") == [AnswerDelta("Paris")]
    assert (parser.revised, parser.reasoning) == (True, "Let me think.")
    assert parser.feed(" it is.") == [AnswerDelta(" it is.")]
    assert parser.finish() == []
    assert (parser.reasoning, parser.answer) == ("Let me think.", "Paris it is.")
    # all in one delta: nothing was streamed as answer, so the reasoning streams as reasoning
    whole = ReasoningParser()
    events = whole.feed("Let me think.\n</think>\nParis.") + whole.finish()
    assert events == [ReasoningDelta("Let me think."), AnswerDelta("Paris.")]
    assert not whole.revised


def test_no_think_prompt_then_answer():
    """SmolLM3 no-think mode: the prompt already holds <think>\\n\\n</think>\\n, the model
    writes only the answer (parser starts outside reasoning)."""
    assert run(["The", " answer", "."])[:2] == ("", "The answer.")


# ----- properties ----------------------------------------------------------------------------
PIECES = ["<think>", "</think>", "\n", "\n\n", " ", "a", "é", "🍎", "<", "</", "think", ">", "x y"]
texts = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts, start=st.booleans(), data=st.data())
def test_random_splits_equal_whole_text_split(text, start, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    reasoning, answer, _ = run(chunks, start)
    assert (reasoning, answer) == split_reasoning(text, start_in_reasoning=start)


body = st.lists(st.sampled_from([p for p in PIECES if "think" not in p]), max_size=10).map("".join)


@settings(max_examples=200, deadline=None)
@given(reasoning=body, answer=body, data=st.data())
def test_think_content_round_trips(reasoning, answer, data):
    """What history_for_template writes back splits into the stored reasoning and answer."""
    text = str(ThinkContent(reasoning, answer))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert split_reasoning(text) == (reasoning, answer)
    assert run(chunks)[:2] == (reasoning, answer)


def test_a_session_records_a_lone_close_as_reasoning_and_answer(tmp_path):
    """Through the session and a transcript: the turn's reasoning and answer are split, the tag
    is in neither, and the transcript loads back the same (issue 10, item 7)."""
    from smolchat.chat.session import ChatSession
    from smolchat.chat.transcript import TranscriptStore
    from tests.tui.fake_engine import FakeEngine

    engine = FakeEngine(lambda q: "The user greets me.\n</think>\nHello there!")
    session = ChatSession(engine, store=TranscriptStore(tmp_path))
    *_, finished = session.send("hi")
    assert (finished.reasoning, finished.answer) == ("The user greets me.", "Hello there!")
    again = ChatSession(FakeEngine())
    again.load(session.transcript_path)
    reply = again.messages[-1]
    assert (reply.reasoning, reply.content) == ("The user greets me.", "Hello there!")
