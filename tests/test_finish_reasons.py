"""Every finish reason is reported truthfully (issue 10 item 4): a reply cut because the context
window is full is ``context`` (advice: /drop N or /clear), one cut at ``max_new_tokens`` is
``length`` (advice: /set max_new_tokens N), in the engine, the session, the TUI's reply line,
``--plain``, ``-p`` (stderr), ``/stats`` and the transcript.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import smolchat
from smolchat import cli
from smolchat.chat.commands import run_command
from smolchat.chat.format import reply_line
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.engine.types import SamplingParams
from smolchat.plain import stats_line
from tests.tui.fake_engine import FakeEngine

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def last(events):
    return list(events)[-1]


def test_engine_tells_a_full_context_from_max_new_tokens(engine, monkeypatch) -> None:
    ids = engine.tokenizer.encode("Hello there, how are you?")
    monkeypatch.setattr(engine, "eos_token_ids", [])  # never stops on its own
    assert last(engine.generate(ids, GREEDY, max_new_tokens=5)).finish_reason == "length"
    monkeypatch.setattr(engine, "context_length", len(ids) + 5)
    end = last(engine.generate(ids, GREEDY, max_new_tokens=50))
    assert end.finish_reason == "context"
    assert end.stats.prompt_tokens + end.stats.generated_tokens == engine.context_length
    # exactly at the budget: the window is full, and max_new_tokens was reached too
    assert last(engine.generate(ids, GREEDY, max_new_tokens=5)).finish_reason == "length"


def test_session_reports_context_and_length_with_advice(engine, monkeypatch, tmp_path) -> None:
    engine.reset_cache()
    monkeypatch.setattr(engine, "eos_token_ids", [])
    settings = ChatSettings(sampling=GREEDY, max_new_tokens=4)
    session = ChatSession(engine, settings=settings, store=TranscriptStore(tmp_path))
    end = last(session.send("Hello"))
    assert end.finish_reason == "length"
    assert "/set max_new_tokens" in run_command(session, "/stats").message
    used = session.context_used()
    monkeypatch.setattr(engine, "context_length", used + 300)
    session.settings.max_new_tokens = 4096
    end = last(session.send("Hi"))
    assert end.finish_reason == "context"
    assert end.stats.prompt_tokens + end.stats.generated_tokens == used + 300
    assert session.messages[-1].finish_reason == "context"
    stats = run_command(session, "/stats").message
    assert "context window is full" in stats and "/drop N" in stats
    saved = read_transcript(session.transcript_path)
    assert [m["finish_reason"] for m in saved.messages if m["role"] == "assistant"] == [
        "length",
        "context",
    ]
    text = session.transcript_path.read_text()
    assert "context (cut: the context window was full)" in text
    assert "length (cut at max_new_tokens)" in text


@pytest.mark.parametrize(
    ("reason", "expected", "absent"),
    [
        ("context", "/drop N or /clear", "max_new_tokens"),
        ("length", "/set max_new_tokens N", "/drop"),
        ("stop", "", "cut"),
    ],
)
def test_reply_lines_give_the_right_advice(reason, expected, absent) -> None:
    for line in (reply_line(reason, None, marks=True), stats_line(None, reason)):
        assert expected in line and absent not in line


runner = CliRunner()


@pytest.mark.parametrize(("context_length", "reason"), [(8192, "length"), (300, "context")])
def test_one_shot_says_why_the_answer_was_cut(monkeypatch, context_length, reason) -> None:
    fake = FakeEngine(lambda q: "word " * 2000, context_length=context_length)
    monkeypatch.setattr(cli, "load_engine", lambda config, progress=None: fake)
    result = runner.invoke(cli.cli, ["m", "-p", "hi", "--max-new-tokens", "300"])
    assert result.exit_code == 3  # cut (smolchat.exit_codes)
    advice = "context window is full" if reason == "context" else "raise --max-new-tokens"
    assert advice in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout.startswith("word word")
