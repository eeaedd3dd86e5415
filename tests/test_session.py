"""ChatSession on the real tiny SmolLM3: KV reuse, retry/undo, cancel, errors, context, autosave.

A scripted engine (the engine's contract, a fixed reply instead of a network) is used only where
the reply's text must be chosen: reasoning split and the token-exact rendering of replies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import smolchat
from smolchat.backend.local import align_to_seen
from smolchat.chat.events import AnswerDelta, ReasoningDelta, TurnFinished
from smolchat.chat.session import MIN_REPLY_ROOM, ChatSession
from smolchat.chat.settings import ChatSettings, sampling_from_defaults
from smolchat.chat.tokenizer import Tokenizer
from smolchat.chat.transcript import TranscriptStore, read_transcript
from smolchat.chat.turns import UserTurn
from smolchat.engine.types import GenerationEvent, GenerationStats, SamplingParams
from smolchat.errors import CommandError, ContextOverflowError, SmolchatError, TranscriptError

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Hello! What is the capital of France?",
    "And which city is in Europe?",
    "Write def add(a, b) in Python.",
    "Émilie a mangé une pomme à Zürich?",
    "Thank you, how can I help you today?",
]


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture
def spy(engine, monkeypatch):
    """Records the ids and budget of every generate call, then runs the real engine."""
    calls: list[tuple[list[int], int]] = []
    real = engine.generate

    def generate(ids, sampling=None, max_new_tokens=256, **kwargs):
        calls.append((list(ids), max_new_tokens))
        return real(ids, sampling=sampling, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(engine, "generate", generate)
    return calls


def make_session(engine, tmp_path: Path | None = None, **kwargs) -> ChatSession:
    engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=8)
    store = TranscriptStore(tmp_path / "transcripts") if tmp_path is not None else None
    return ChatSession(engine, settings=settings, store=store, **kwargs)


def rendered(session, history, add_generation_prompt=True) -> list[int]:
    """The ids the local backend renders for ``history`` (thinking on)."""
    conversation = session.conversation(history, True)
    return session.backend.render_ids(conversation, add_generation_prompt=add_generation_prompt)


def finished(events) -> TurnFinished:
    events = list(events)
    assert isinstance(events[-1], TurnFinished)
    assert sum(isinstance(e, TurnFinished) for e in events) == 1
    return events[-1]


# --- KV-cache reuse -------------------------------------------------------------------------


def test_turn_five_prefills_only_its_new_tokens(engine, spy) -> None:
    session = make_session(engine, system_prompt="You are terse.")
    tok = engine.tokenizer
    for turn, question in enumerate(QUESTIONS, start=1):
        cache_before = list(engine.cached_ids)
        end = finished(session.send(question))
        assert end.finish_reason in ("stop", "length")
        ids = spy[-1][0]
        stats = engine.last_stats
        if turn > 1:
            # everything the cache held is a prefix of the new prompt: nothing is re-read
            assert ids[: len(cache_before)] == cache_before
            assert stats.cached_tokens == len(cache_before)
            assert stats.prefilled_tokens == len(ids) - len(cache_before)
    # turn 5: the prefilled tokens are the new turn (template framing + the new question)
    # (plus, after a "length" finish, the reply's last token, which the engine never fed)
    new = ids[len(cache_before) :]
    frame = f"<|im_end|>\n<|im_start|>user\n{QUESTIONS[4]}<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(new).endswith(frame)
    unfed = 1 if session.messages[-3].finish_reason == "length" else 0
    assert len(new) == len(tok.encode(frame)) + unfed
    assert stats.prompt_tokens > 5 * stats.prefilled_tokens
    # the earlier replies are rendered with the very tokens the model produced
    assert len(session.messages) == 10


def test_retry_regenerates_from_the_cache(engine, spy) -> None:
    session = make_session(engine)
    finished(session.send(QUESTIONS[0]))
    first = finished(session.send(QUESTIONS[1]))
    prompt = spy[-1][0]
    again = finished(session.retry())
    assert spy[-1][0] == prompt  # the same prompt as the original turn
    stats = engine.last_stats
    assert stats.cached_tokens == len(prompt) - 1  # only the last position is recomputed
    assert stats.prefilled_tokens == 1
    assert again.answer == first.answer  # greedy: the same reply
    assert [m.role for m in session.messages] == ["user", "assistant"] * 2
    assert session.messages[-1].content == again.answer


def test_undo_then_send_reuses_the_prefix(engine, spy) -> None:
    session = make_session(engine)
    finished(session.send(QUESTIONS[0]))
    finished(session.send(QUESTIONS[1]))
    kept_prompt = spy[-1][0]
    kept_reply = session.messages[-1]
    finished(session.send(QUESTIONS[2]))
    assert session.undo() == QUESTIONS[2]
    assert session.messages[-1] is kept_reply
    finished(session.send(QUESTIONS[3]))
    stats = engine.last_stats
    # the cache still covers turn 2's prompt and reply; only the new question is prefilled
    reply_tokens = kept_reply.stats.generated_tokens
    assert stats.cached_tokens >= len(kept_prompt) + reply_tokens - 1
    assert stats.prefilled_tokens <= len(engine.tokenizer.encode(QUESTIONS[3])) + 12


def test_rendering_is_stable_turn_after_turn(engine, spy) -> None:
    session = make_session(engine, system_prompt="Be brief.")
    prompts = []
    for q in QUESTIONS[:3]:
        finished(session.send(q))
        prompts.append(spy[-1][0])
    for earlier, later in zip(prompts, prompts[1:], strict=False):
        assert later[: len(earlier)] == earlier


# --- scripted replies: reasoning split and token-exact history ------------------------------


class ScriptedEngine:
    """The engine contract with scripted replies (token ids) instead of a network."""

    def __init__(self, tokenizer: Tokenizer, context_length: int = 4096) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.eos_token_ids = list(tokenizer.eos_token_ids)
        self.generation_defaults: dict = {}
        self.model_name = "scripted"
        self.cached_ids: list[int] = []
        self.last_stats: GenerationStats | None = None
        self.replies: list[list[int]] = []
        self.calls: list[list[int]] = []
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def reset_cache(self) -> None:
        self.cached_ids = []

    def generate(self, ids, sampling=None, max_new_tokens=256, progress=False):
        self.calls.append(list(ids))
        self._cancel.clear()
        keep = 0
        while keep < min(len(ids), len(self.cached_ids)) and ids[keep] == self.cached_ids[keep]:
            keep += 1
        keep = min(keep, len(ids) - 1)
        stats = GenerationStats(len(ids), keep, len(ids) - keep)
        self.cached_ids = list(ids)
        reply, decoder = self.replies.pop(0), self.tokenizer.stream_decoder()
        for n, token in enumerate(reply, start=1):
            stats.generated_tokens = n
            if token in self.eos_token_ids:
                stats.finish_reason = "stop"
                self.last_stats = stats
                yield GenerationEvent(token, decoder.flush(), "stop", stats)
                return
            text = decoder.add(token)
            if n == len(reply) or n >= max_new_tokens or self._cancel.is_set():
                stats.finish_reason = "length" if not self._cancel.is_set() else "cancelled"
                self.last_stats = stats
                yield GenerationEvent(token, text + decoder.flush(), stats.finish_reason, stats)
                return
            yield GenerationEvent(token, text)
            self.cached_ids.append(token)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


def test_reasoning_and_answer_are_streamed_apart(tokenizer) -> None:
    eng = ScriptedEngine(tokenizer)
    eos = tokenizer.eos_token_ids[0]
    eng.replies.append(
        tokenizer.encode("<think>\nThe user asks.\n</think>\nParis is in France.") + [eos]
    )
    session = ChatSession(eng)
    events = list(session.send("Capital of France?"))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert (reasoning, answer) == ("The user asks.", "Paris is in France.")
    end = events[-1]
    assert (end.reasoning, end.answer, end.finish_reason) == (reasoning, answer, "stop")
    reply = session.messages[-1]
    assert reply.content == answer and reply.reasoning == reasoning
    assert reply.finish_reason == "stop" and reply.stats.generated_tokens > 5


@pytest.mark.parametrize("think", [True, False])
def test_next_prompt_holds_the_exact_reply_tokens(tokenizer, think) -> None:
    eng = ScriptedEngine(tokenizer)
    eos = tokenizer.eos_token_ids[0]
    words = "Hello how can I help you today"
    odd = [t for ch in words for t in tokenizer.encode(ch)]  # one token per character
    assert odd != tokenizer.encode(words)  # not how the tokenizer would encode the text
    head = tokenizer.encode("<think>\nhelp\n</think>\n") if think else []
    eng.replies += [head + odd + [eos], tokenizer.encode("ok") + [eos]]
    session = ChatSession(eng, settings=ChatSettings(thinking=think))
    finished(session.send("hi"))
    assert session.messages[-1].content == words
    finished(session.send("again"))
    first, second = eng.calls
    reply = head + odd
    assert second[len(first) : len(first) + len(reply)] == reply
    assert eng.last_stats.cached_tokens == len(first) + len(reply)


def test_a_per_turn_flag_sets_the_mode_of_that_turn_only(tokenizer) -> None:
    eng = ScriptedEngine(tokenizer)
    eos = tokenizer.eos_token_ids[0]
    eng.replies += [tokenizer.encode("Paris") + [eos], tokenizer.encode("Rome") + [eos]]
    session = ChatSession(eng)
    assert session.settings.thinking is True
    finished(session.send("Capital of France? /no_think"))
    assert tokenizer.decode(eng.calls[0]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n")
    assert "Reasoning Mode: /no_think" in tokenizer.decode(eng.calls[0])
    assert session.messages[0].content == "Capital of France?"
    assert session.messages[0].thinking is False
    assert session.messages[1].thinking is False
    assert session.settings.thinking is True
    finished(session.send("And Italy?"))
    assert tokenizer.decode(eng.calls[1]).endswith("<|im_start|>assistant\n")
    assert "Reasoning Mode: /think" in tokenizer.decode(eng.calls[1])


def test_align_to_seen_swaps_in_same_text_only(tokenizer) -> None:
    tok = tokenizer
    eos = tok.eos_token_ids[0]
    canon = tok.encode("user asks") + [eos] + tok.encode("next")
    odd = [t for ch in "user asks" for t in tok.encode(ch)]
    tail = [eos, *tok.encode("next")]
    assert align_to_seen(canon, odd, tok.decode, frozenset([eos])) == odd + tail
    assert align_to_seen(canon, odd + tail[:1], tok.decode, frozenset([eos])) == odd + tail
    other = tok.encode("user said")
    assert align_to_seen(canon, other, tok.decode, frozenset([eos]))[: len(canon)] == canon
    # text is never swapped for a control token with the same spelling
    text_think = tok.encode("a") + [t for ch in "<think>" for t in tok.encode(ch)]
    special = tok.encode("a") + [tok.token_to_id("<think>")]
    ctrl = frozenset([eos, tok.token_to_id("<think>")])
    assert align_to_seen(text_think, special, tok.decode, ctrl) == text_think


# --- cancel and errors ----------------------------------------------------------------------


def test_cancel_from_another_thread_keeps_the_partial_reply(engine, tmp_path) -> None:
    session = make_session(engine, tmp_path)
    finished(session.send(QUESTIONS[0]))
    session.settings.max_new_tokens = 2000
    events = []
    stream = session.send(QUESTIONS[1])
    for event in stream:
        events.append(event)
        if len(events) == 3:
            threading.Thread(target=session.cancel).start()
    end = events[-1]
    assert isinstance(end, TurnFinished) and end.finish_reason == "cancelled"
    assert end.stats.generated_tokens < 100
    reply = session.messages[-1]
    assert reply.finish_reason == "cancelled" and reply.content == end.answer
    assert not session.busy
    saved = read_transcript(session.transcript_path)  # the partial reply was autosaved
    assert saved.messages[-1]["finish_reason"] == "cancelled"
    assert saved.messages[-1]["content"] == end.answer
    session.settings.max_new_tokens = 8
    finished(session.send(QUESTIONS[2]))  # and the chat goes on


def test_cancel_before_the_first_token_and_abandoned_streams(engine) -> None:
    session = make_session(engine)
    stream = session.send(QUESTIONS[0])
    session.cancel()
    end = finished(stream)
    assert end.finish_reason == "cancelled" and end.answer == ""
    assert [m.role for m in session.messages] == ["user", "assistant"]
    session.settings.max_new_tokens = 500
    stream = session.send(QUESTIONS[1])
    next(stream), next(stream)
    stream.close()  # the UI went away mid-reply
    assert session.messages[-1].finish_reason == "cancelled"
    assert not session.busy
    session.settings.max_new_tokens = 8
    finished(session.send(QUESTIONS[2]))


@pytest.mark.parametrize("after", [0, 2])
def test_a_failing_generate_ends_the_turn_and_leaves_the_chat_usable(
    engine, monkeypatch, after
) -> None:
    session = make_session(engine)
    finished(session.send(QUESTIONS[0]))
    real = engine.generate

    def failing(ids, **kwargs):
        for n, event in enumerate(real(ids, **kwargs)):
            if n == after:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
            yield event

    monkeypatch.setattr(engine, "generate", failing)
    end = finished(session.send(QUESTIONS[1]))
    assert end.finish_reason == "error"
    assert "out of memory" in end.error and "\n" not in end.error
    assert session.messages[-1].finish_reason == "error"
    assert session.messages[-1].error == end.error
    assert not session.busy and engine.cached_ids == []  # the cache was reset, to be safe
    monkeypatch.setattr(engine, "generate", real)
    finished(session.retry())  # retry regenerates the failed reply
    assert session.messages[-1].finish_reason in ("stop", "length")
    assert len(session.messages) == 4


def test_one_turn_at_a_time(engine) -> None:
    session = make_session(engine)
    stream = session.send(QUESTIONS[0])
    next(stream)
    assert session.busy
    with pytest.raises(SmolchatError, match="wait for it or cancel"):
        session.send(QUESTIONS[1])
    with pytest.raises(SmolchatError, match="wait for it or cancel"):
        session.undo()
    finished(stream)
    assert not session.busy


# --- context accounting ---------------------------------------------------------------------


def test_context_overflow_is_refused_and_drop_oldest_fixes_it(engine, monkeypatch, spy) -> None:
    session = make_session(engine, system_prompt="You are terse.")
    for q in QUESTIONS[:3]:
        finished(session.send(q))
    used = session.context_used()
    assert used == len(rendered(session, session.messages, add_generation_prompt=False))
    ask = UserTurn(QUESTIONS[3])
    full = len(rendered(session, [*session.messages, ask]))
    after_drop = len(rendered(session, [*session.messages[2:], ask]))
    limit = after_drop + session.settings.max_new_tokens  # fits only without the oldest turn
    assert full + session.settings.max_new_tokens > limit
    monkeypatch.setattr(engine, "context_length", limit)
    before = list(session.messages)
    with pytest.raises(ContextOverflowError) as info:
        session.send(QUESTIONS[3])
    message = str(info.value)
    assert "\n" not in message and "/drop 1" in message and "system prompt stays" in message
    assert session.messages == before and not session.busy  # nothing changed
    assert session.drop_oldest(1) == 1
    assert session.system_prompt == "You are terse."
    end = finished(session.send(QUESTIONS[3]))
    assert end.finish_reason in ("stop", "length")
    assert "You are terse." in engine.tokenizer.decode(spy[-1][0])  # the system prompt stayed
    assert [m.content for m in session.messages if m.role == "user"] == QUESTIONS[1:4]


def test_reply_budget_is_clamped_to_the_room_left(engine, monkeypatch, spy) -> None:
    session = make_session(engine)
    finished(session.send(QUESTIONS[0]))
    session.settings.max_new_tokens = 4096
    used = session.context_used()
    monkeypatch.setattr(engine, "context_length", used + 400)
    stream = session.send("Hi")
    first = next(stream)
    session.cancel()  # the budget is what matters here, not a 300-token reply
    assert isinstance(first, TurnFinished) or finished(stream)
    ids, budget = spy[-1]
    assert budget == used + 400 - len(ids) and MIN_REPLY_ROOM <= budget < 400


def test_a_message_too_long_for_any_context_says_so(engine, monkeypatch) -> None:
    session = make_session(engine)
    monkeypatch.setattr(engine, "context_length", 1200)
    with pytest.raises(ContextOverflowError, match="shorten the message") as info:
        session.send("hello " * 400)
    assert "\n" not in str(info.value) and session.messages == []


def test_settings_default_to_the_generation_config() -> None:
    params = sampling_from_defaults({"temperature": 0.6, "top_p": 0.95, "top_k": -3, "foo": 1})
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.95, 0)
    assert sampling_from_defaults({"do_sample": False, "temperature": 0.7}).temperature == 0.0


# --- transcripts ----------------------------------------------------------------------------


def test_autosave_after_every_turn_and_resume(engine, tmp_path) -> None:
    session = make_session(engine, tmp_path, system_prompt="Be brief.")
    assert session.autosave() is None  # nothing to save yet: no empty files
    finished(session.send(QUESTIONS[0]))
    path = session.transcript_path
    assert path is not None and path.parent == tmp_path / "transcripts"
    assert path.name.endswith("_hello-what-is-the-capital-of-france.md")
    finished(session.send(QUESTIONS[1]))
    assert len(read_transcript(path).messages) == 4
    assert session.store.latest() == path
    resumed = make_session(engine, tmp_path)
    resumed.load(path)
    assert resumed.messages == session.messages
    assert resumed.system_prompt == "Be brief." and resumed.transcript_path == path
    finished(resumed.send(QUESTIONS[2]))
    assert len(read_transcript(path).messages) == 6  # the resumed chat continues its file
    session.clear()
    finished(session.send(QUESTIONS[3]))
    assert session.transcript_path != path  # /clear starts a new file; the old one stays
    assert len(read_transcript(path).messages) == 6


def test_autosave_off_and_failures(engine, tmp_path, monkeypatch) -> None:
    session = make_session(engine, tmp_path)
    session.store.autosave = False
    finished(session.send(QUESTIONS[0]))
    assert session.transcript_path is None and not (tmp_path / "transcripts").exists()
    session.store.autosave = True
    blocker = tmp_path / "transcripts"
    blocker.write_text("a file where the folder should be")
    finished(session.send(QUESTIONS[1]))  # the chat goes on
    assert session.autosave_error and "\n" not in session.autosave_error


def test_save_and_load_settings_and_refusals(engine, tmp_path) -> None:
    session = make_session(engine, system_prompt="Sys")
    session.settings.sampling = session.settings.sampling.with_(temperature=0.3, seed=7)
    session.settings.thinking = False
    finished(session.send(QUESTIONS[0]))
    path = session.save(tmp_path / "exported")
    assert path == tmp_path / "exported.md"
    other = make_session(engine)
    other.load(path)
    assert other.settings == session.settings and other.messages == session.messages
    assert other.system_prompt == "Sys" and other.transcript_path is None
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    with pytest.raises(TranscriptError, match="not a smolchat transcript"):
        session.save(notes)
    assert notes.read_text() == "my notes\n"
    with pytest.raises(TranscriptError, match="give a path"):
        session.save()
    assert session.save(tmp_path).parent == tmp_path  # a folder: a new file inside


CRASHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import smolchat
    from smolchat.chat.session import ChatSession
    from smolchat.chat.settings import ChatSettings
    from smolchat.chat.transcript import TranscriptStore
    from smolchat.engine.types import SamplingParams
    engine = smolchat.load(sys.argv[1], device="cpu", dtype="float32")
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=6)
    session = ChatSession(engine, settings=settings, store=TranscriptStore(Path(sys.argv[2])))
    for event in session.send("Hello! What is the capital of France?"):
        pass
    session.settings.max_new_tokens = 100000
    for n, event in enumerate(session.send("And which city is in Europe?")):
        if n == 3:
            print("streaming", flush=True)
    """
)


def test_sigkill_mid_reply_leaves_the_completed_turns_saved(tiny_model, tmp_path) -> None:
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(tiny_model), str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"streaming"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    latest = TranscriptStore(tmp_path).latest()
    assert latest is not None
    data = read_transcript(latest)
    assert [m["role"] for m in data.messages] == ["user", "assistant"]
    assert data.messages[1]["finish_reason"] in ("stop", "length")


def test_history_edits(engine) -> None:
    session = make_session(engine, system_prompt="S")
    with pytest.raises(CommandError, match="nothing to undo"):
        session.undo()
    with pytest.raises(CommandError, match="nothing to retry"):
        session.retry()
    for q in QUESTIONS[:3]:
        finished(session.send(q))
    with pytest.raises(CommandError, match="only 3 exchanges"):
        session.drop_oldest(4)
    with pytest.raises(CommandError, match="1 or more"):
        session.drop_oldest(0)
    assert session.drop_oldest(2) == 2
    assert [m.content for m in session.messages if m.role == "user"] == [QUESTIONS[2]]
    session.set_system("   ")
    assert session.system_prompt is None
    session.clear()
    assert session.messages == [] and session.last_stats is None
    with pytest.raises(SmolchatError, match="empty"):
        session.send("  /think")


def test_a_stream_prepared_before_a_history_change_refuses_to_run(engine) -> None:
    session = make_session(engine)
    finished(session.send(QUESTIONS[0]))
    stale = session.send(QUESTIONS[1])  # prepared, not started
    session.undo()
    with pytest.raises(SmolchatError, match="send it again"):
        next(stale)
    assert session.messages == [] and not session.busy
    finished(session.send(QUESTIONS[1]))


# --- editing an earlier turn ------------------------------------------------------------------


def test_send_replacing_an_exchange_and_retry_from_one(engine, spy) -> None:
    session = make_session(engine)
    for text in ("one", "two", "three"):
        finished(session.send(text))
    assert len(session.messages) == 6
    # an edit of exchange 1: nothing changes until the new reply is recorded
    stream = session.send("two, edited", replace=1)
    assert [m.content for m in session.messages[::2]] == ["one", "two", "three"]
    finished(stream)
    assert [m.content for m in session.messages if m.role == "user"] == [
        "one",
        "two, edited",
    ]
    # the prompt ends with the edited message: "three" is gone from what the model sees
    prompt = engine.tokenizer.decode(spy[-1][0])
    assert "two, edited" in prompt and "three" not in prompt
    # retry of exchange 0: its reply is generated again, the rest goes
    old_reply = session.messages[1]
    finished(session.retry(0))
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[0].content == "one" and session.messages[1] is not old_reply
    with pytest.raises(CommandError, match="no exchange 5: the conversation has 1"):
        session.send("x", replace=5)
    with pytest.raises(CommandError, match="no exchange -1"):
        session.retry(-1)
    assert len(session.messages) == 2  # refused: nothing changed
