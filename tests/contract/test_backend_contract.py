"""The Backend contract (smolchat/backend/types.py), run against every backend and every fake.

Each test takes ``subject``: a :class:`Subject` built by one of the FACTORIES below. To add a
backend (the remote backend against a real ``transformers serve``, ``smolchat serve``...):

1. write ``def my_backend(request) -> Subject`` that builds (or takes from a session-scoped
   fixture, ``request.getfixturevalue("...")``) a started backend, and says how to drive it:
   ``stop_prompt`` (a message it answers and ends by itself, or None), and the optional hooks
   ``never_stop`` / ``limit_context`` / ``failing`` / ``long_prefill`` (context managers;
   None where the backend cannot be made to do that: those tests are skipped for it, with the
   reason);
2. append ``pytest.param(my_backend, id="my-backend", marks=...)`` to ``FACTORIES``.

The contract: one stream runs at a time (a second one's first ``next()`` raises
BackendBusyError); events are deltas then exactly one Finished, last (PrefillProgress only
before the first delta, never going back: a remote backend never sends it); a cancel during
the prefill ends the stream with no token; every finish reason is
truthful (stop, length, context, cancelled, error); a cancel ends the stream within a token;
a stream releases the backend when it produces Finished (even while still referenced: the
/retry bug of issue 10), when closed early, on error, when leaving ``with``, and on GC; a turn
that cannot fit is refused by ``open()`` with ContextOverflowError before anything runs.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

import smolchat
from smolchat.backend.local import LocalBackend
from smolchat.backend.types import (
    FINISH_REASONS,
    AnswerDelta,
    Backend,
    BackendBusyError,
    ChatMessage,
    Conversation,
    Finished,
    GenerationRequest,
    PrefillProgress,
    ReasoningDelta,
    ReplyStream,
)
from smolchat.engine.types import SamplingParams
from smolchat.errors import ContextOverflowError
from tests.remote.servers import Script, ScriptedServer
from tests.tui.fake_engine import FakeEngine

GREEDY = SamplingParams(temperature=0.0)
LONG = 4000  # a budget no test reaches (cancel, close and context tests)


@dataclass
class Subject:
    backend: Backend
    thinking_mode: bool  # what has_thinking_mode must say
    stop_prompt: str | None  # a message the model answers and ends by itself (None: can't say)
    never_stop: Callable[[], ContextManager[None]] | None = None  # the model never ends
    limit_context: Callable[[int], ContextManager[None]] | None = None  # context_limit = n
    failing: Callable[[int], ContextManager[None]] | None = None  # fails after n tokens
    long_prefill: Callable[[], ContextManager[None]] | None = None  # prefill in many chunks


# --- factories ----------------------------------------------------------------------------
def _engine_hooks(engine) -> dict:
    @contextlib.contextmanager
    def never_stop() -> Iterator[None]:
        with mock.patch.object(engine, "eos_token_ids", []):
            yield

    @contextlib.contextmanager
    def limit_context(n: int) -> Iterator[None]:
        with mock.patch.object(engine, "context_length", n):
            yield

    @contextlib.contextmanager
    def failing(after: int) -> Iterator[None]:
        real = engine.generate

        def generate(ids, **kwargs):
            for n, event in enumerate(real(ids, **kwargs)):
                if n == after:
                    raise RuntimeError("the device fell over")
                yield event

        with mock.patch.object(engine, "generate", generate):
            yield

    @contextlib.contextmanager
    def long_prefill() -> Iterator[None]:
        with mock.patch.object(engine, "prefill_chunk", 8):
            yield

    return {
        "never_stop": never_stop,
        "limit_context": limit_context,
        "failing": failing,
        "long_prefill": long_prefill,
    }


@pytest.fixture(scope="module")
def tiny_engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def gguf_engine(smollm2_gguf: Path):
    return smolchat.load(str(smollm2_gguf), device="cpu", dtype="float32")


def local_tiny(request) -> Subject:
    engine = request.getfixturevalue("tiny_engine")
    engine.reset_cache()
    # a random model: it cannot be asked to stop, so "stop" is checked on the others
    return Subject(LocalBackend(engine), True, None, **_engine_hooks(engine))


def local_gguf(request) -> Subject:
    engine = request.getfixturevalue("gguf_engine")
    engine.reset_cache()
    hooks = _engine_hooks(engine)
    # a full context means 256+ decoded tokens: minutes on a busy CPU; tiny and fake cover it
    hooks["limit_context"] = None
    return Subject(LocalBackend(engine), False, "What is the capital of France?", **hooks)


def fake_engine(request) -> Subject:
    """The TUI tests' double: the real LocalBackend over FakeEngine (with the engine's lock)."""
    engine = FakeEngine(lambda q: "word " * 5000 if q.startswith("long") else "Paris.")
    hooks = _engine_hooks(engine)

    @contextlib.contextmanager
    def failing(after: int) -> Iterator[None]:
        with mock.patch.object(engine, "fail_after", after):
            yield

    @contextlib.contextmanager
    def never_stop() -> Iterator[None]:
        with mock.patch.object(engine, "responder", lambda q: "word " * 5000):
            yield

    hooks.update(failing=failing, never_stop=never_stop)
    return Subject(LocalBackend(engine), True, "What is the capital of France?", **hooks)


def _remote_hooks(backend) -> dict:
    @contextlib.contextmanager
    def limit_context(n: int) -> Iterator[None]:
        with (
            mock.patch.object(backend, "_context", n),
            mock.patch.object(backend, "_context_known", True),
        ):
            yield

    return {"limit_context": limit_context}


@pytest.fixture(scope="module")
def scripted_server(smollm2_safetensors: Path) -> Iterator[ScriptedServer]:
    """A real HTTP server of our own (tests/remote/servers.py) whose replies the test sets;
    its usage figures count the prompt with the SmolLM2 tokenizer, as a real server would."""
    from smolchat.chat.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(smollm2_safetensors)

    def prompt_count(body: dict) -> int:
        thinking = body.get("chat_template_kwargs", {}).get("enable_thinking", True)
        return len(tokenizer.encode_chat(body["messages"], enable_thinking=thinking))

    server = ScriptedServer(prompt_count=prompt_count)
    yield server
    server.stop()


def remote_scripted(request) -> Subject:
    """RemoteBackend over real HTTP to the scripted server (with the SmolLM2 tokenizer)."""
    from smolchat.backend.remote import RemoteBackend

    server = request.getfixturevalue("scripted_server")
    folder = request.getfixturevalue("smollm2_safetensors")
    server.script = Script(words=["Paris", "."])
    backend = RemoteBackend(server.url, tokenizer=str(folder))

    @contextlib.contextmanager
    def scripted(script: Script) -> Iterator[None]:
        before, server.script = server.script, script
        try:
            yield
        finally:
            server.script = before

    def never_stop() -> ContextManager[None]:
        return scripted(Script(words=["word "], forever=True))

    def failing(after: int) -> ContextManager[None]:
        return scripted(Script(words=["word "], forever=True, cut_after=after))

    return Subject(
        backend,
        False,
        "What is the capital of France?",
        never_stop=never_stop,
        failing=failing,
        **_remote_hooks(backend),
    )


def remote_transformers_serve(request) -> Subject:
    """RemoteBackend against a real `transformers serve` on the SmolLM2 weights (slow CPU:
    only the cases that generate a few tokens; the scripted server covers the rest)."""
    from smolchat.backend.remote import RemoteBackend

    server = request.getfixturevalue("transformers_serve")
    backend = RemoteBackend(server.url)  # the served id is the folder: its tokenizer is used
    return Subject(backend, False, "What is the capital of France?", **_remote_hooks(backend))


@pytest.fixture(scope="module")
def smolchat_serve(tiny_engine):
    """``smolchat serve``'s app (real uvicorn, 127.0.0.1) over the tiny model, in this process:
    the engine hooks (never stop, fail) reach the server's engine."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from smolchat.serve.app import ServeOptions
    from smolchat.serve.server import start_in_thread

    running = start_in_thread(LocalBackend(tiny_engine), ServeOptions(model_id="tiny-smollm3"))
    yield running
    running.stop()


def remote_smolchat_serve(request) -> Subject:
    """RemoteBackend against smolchat's own server (the tiny model's tokenizer for counts)."""
    from smolchat.backend.remote import RemoteBackend

    engine = request.getfixturevalue("tiny_engine")
    engine.reset_cache()
    server = request.getfixturevalue("smolchat_serve")
    backend = RemoteBackend(server.url, tokenizer=str(request.getfixturevalue("tiny_model")))
    hooks = _engine_hooks(engine)
    hooks.update(_remote_hooks(backend), long_prefill=None)  # the server keeps it to itself
    return Subject(backend, True, None, **hooks)


@pytest.fixture(scope="module")
def smolchat_serve_gguf(gguf_engine, smollm2_gguf: Path):
    """``smolchat serve`` (real uvicorn, 127.0.0.1) over the real SmolLM2 GGUF."""
    pytest.importorskip("fastapi")
    from smolchat.serve.app import ServeOptions
    from smolchat.serve.server import start_in_thread

    running = start_in_thread(LocalBackend(gguf_engine), ServeOptions(model_id=smollm2_gguf.name))
    yield running
    running.stop()


def remote_smolchat_serve_gguf(request) -> Subject:
    """RemoteBackend -> smolchat serve on the real SmolLM2 GGUF: it answers and stops by itself
    (few decoded tokens; the full-context case is skipped, as for local-smollm2-gguf)."""
    from smolchat.backend.remote import RemoteBackend

    engine = request.getfixturevalue("gguf_engine")
    engine.reset_cache()
    backend = RemoteBackend(request.getfixturevalue("smolchat_serve_gguf").url)
    hooks = _engine_hooks(engine)
    hooks.update(limit_context=None, long_prefill=None)
    return Subject(backend, False, "What is the capital of France?", **hooks)


FACTORIES = [
    pytest.param(local_tiny, id="local-tiny"),
    pytest.param(local_gguf, id="local-smollm2-gguf", marks=pytest.mark.slow),
    pytest.param(fake_engine, id="fake-engine"),
    pytest.param(remote_scripted, id="remote-scripted-server"),
    pytest.param(remote_smolchat_serve, id="remote-smolchat-serve"),
    pytest.param(
        remote_smolchat_serve_gguf, id="remote-smolchat-serve-gguf", marks=pytest.mark.slow
    ),
    pytest.param(remote_transformers_serve, id="remote-transformers-serve", marks=pytest.mark.slow),
]


@pytest.fixture(params=FACTORIES)
def subject(request) -> Subject:
    return request.param(request)


# --- helpers ------------------------------------------------------------------------------
def request_for(
    text: str = "long: tell me a story",
    max_new_tokens: int = 8,
    history: tuple[ChatMessage, ...] = (),
) -> GenerationRequest:
    conversation = Conversation((*history, ChatMessage("user", text)), thinking=False)
    return GenerationRequest(conversation, sampling=GREEDY, max_new_tokens=max_new_tokens)


def drain(stream: ReplyStream) -> list:
    return list(stream)


def check_order(events: list) -> Finished:
    """Deltas, then exactly one Finished, last; its stats agree with it. PrefillProgress only
    before the first delta, ``done`` never decreasing and within ``total``."""
    assert events and isinstance(events[-1], Finished)
    progress = [e for e in events if isinstance(e, PrefillProgress)]
    assert events[: len(progress)] == progress  # all before the first delta
    deltas = events[len(progress) : -1]
    assert all(isinstance(e, (ReasoningDelta, AnswerDelta)) for e in deltas)
    assert all(0 <= p.done <= p.total for p in progress)
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    end = events[-1]
    assert end.finish_reason in FINISH_REASONS
    assert end.stats.finish_reason == end.finish_reason
    assert (end.error is not None) == (end.finish_reason == "error")
    return end


def assert_free(backend: Backend) -> None:
    """A new stream runs (the backend was released)."""
    end = check_order(drain(backend.open(request_for(max_new_tokens=2))))
    assert end.finish_reason != "error", end.error


def need(hook, what: str):
    if hook is None:
        pytest.skip(f"this backend cannot be made to {what}")
    return hook


# --- what the UI asks ---------------------------------------------------------------------
def test_describes_itself(subject: Subject) -> None:
    b = subject.backend
    assert isinstance(b, Backend)
    assert isinstance(b.model_name, str) and b.model_name
    assert isinstance(b.context_limit, int) and b.context_limit > 0
    assert b.has_thinking_mode is subject.thinking_mode
    assert isinstance(b.description, str) and b.description and "\n" not in b.description
    assert isinstance(dict(b.generation_defaults), dict)


def test_counts_tokens(subject: Subject) -> None:
    b = subject.backend
    one = request_for("Hello").conversation
    earlier = (ChatMessage("user", "Hi"), ChatMessage("assistant", "Hey"))
    two = request_for("Hello", history=earlier).conversation
    n1 = b.count_tokens(one, add_generation_prompt=False)
    assert 0 < n1 < b.count_tokens(two, add_generation_prompt=False)
    assert b.count_tokens(one, add_generation_prompt=True) > n1
    assert b.count_text("Hello world") > 0


# --- events and finish reasons ------------------------------------------------------------
def test_stop(subject: Subject) -> None:
    if subject.stop_prompt is None:
        pytest.skip("this model cannot be asked to end its reply")
    events = drain(subject.backend.open(request_for(subject.stop_prompt, max_new_tokens=64)))
    end = check_order(events)
    assert end.finish_reason == "stop"
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert "Paris" in answer and "<|im_end|>" not in answer
    assert end.stats.generated_tokens >= 1


def test_length(subject: Subject) -> None:
    with need(subject.never_stop, "never stop")():
        end = check_order(drain(subject.backend.open(request_for(max_new_tokens=3))))
    assert end.finish_reason == "length" and end.stats.generated_tokens == 3


def test_context(subject: Subject) -> None:
    b = subject.backend
    req = request_for(max_new_tokens=LONG)
    prompt = b.count_tokens(req.conversation, add_generation_prompt=True)
    never_stop = need(subject.never_stop, "never stop")
    with never_stop(), need(subject.limit_context, "limit")(prompt + 300):
        end = check_order(drain(b.open(req)))
    assert end.finish_reason == "context"
    assert end.stats.prompt_tokens + end.stats.generated_tokens == prompt + 300


def test_overflow_is_refused_before_anything_runs(subject: Subject) -> None:
    b = subject.backend
    history = (ChatMessage("user", "long: one " * 40), ChatMessage("assistant", "two " * 40))
    req = request_for("Hi", max_new_tokens=300, history=history)
    alone = b.count_tokens(request_for("Hi").conversation, add_generation_prompt=True)
    limit = need(subject.limit_context, "limit")
    with limit(alone + 300), pytest.raises(ContextOverflowError) as info:
        b.open(req)
    assert info.value.drop == 1 and "/drop 1" in str(info.value)
    assert_free(b)


def test_error_is_one_line_and_frees_the_backend(subject: Subject) -> None:
    with need(subject.failing, "fail")(2):
        events = drain(subject.backend.open(request_for(max_new_tokens=LONG)))
    end = check_order(events)
    assert end.finish_reason == "error" and "\n" not in (end.error or "")
    assert "fell over" in (end.error or "") or "failure" in (end.error or "")
    assert_free(subject.backend)


def test_cancel_ends_within_a_token(subject: Subject) -> None:
    req = request_for(max_new_tokens=LONG)
    with need(subject.never_stop, "never stop")():
        stream = subject.backend.open(req)
        first = next(stream)
        assert isinstance(first, (ReasoningDelta, AnswerDelta))
        req.cancel.cancel()
        rest = drain(stream)
    end = check_order([first, *rest])
    assert end.finish_reason == "cancelled"
    assert len(rest) <= 3  # at most one more token's text (split by the parser), then the end
    assert end.stats.generated_tokens < 10


def test_cancel_before_the_first_token(subject: Subject) -> None:
    req = request_for(max_new_tokens=LONG)
    stream = subject.backend.open(req)
    req.cancel.cancel()
    end = check_order(drain(stream))
    assert end.finish_reason == "cancelled" and end.stats.generated_tokens == 0


def test_prefill_progress_of_a_long_prompt(subject: Subject) -> None:
    with need(subject.long_prefill, "prefill in several chunks")():
        events = drain(subject.backend.open(request_for(max_new_tokens=2)))
    end = check_order(events)
    progress = [e for e in events if isinstance(e, PrefillProgress)]
    assert len(progress) >= 3, progress  # before the first chunk, and after each
    assert progress[0].done == 0 and progress[-1].done == progress[-1].total
    assert {p.total for p in progress} == {end.stats.prefilled_tokens}
    assert end.finish_reason != "error", end.error


def test_cancel_during_the_prefill(subject: Subject) -> None:
    req = request_for(max_new_tokens=LONG)
    with need(subject.long_prefill, "prefill in several chunks")():
        stream = subject.backend.open(req)
        first = next(stream)
        assert isinstance(first, PrefillProgress) and first.done == 0
        req.cancel.cancel()
        rest = drain(stream)
    end = check_order([first, *rest])
    assert end.finish_reason == "cancelled" and end.stats.generated_tokens == 0
    assert_free(subject.backend)


# --- one stream at a time, and lifetimes --------------------------------------------------
def test_one_stream_at_a_time(subject: Subject) -> None:
    b = subject.backend
    with need(subject.never_stop, "never stop")():
        a = b.open(request_for(max_new_tokens=LONG))
        next(a)
        second = b.open(request_for(max_new_tokens=2))  # planning is fine while one runs...
        with pytest.raises(BackendBusyError):
            next(second)  # ...running is not
        assert list(second) == []  # a refused stream is over
        a.close()
    assert_free(b)


def test_a_finished_stream_still_referenced_holds_nothing(subject: Subject) -> None:
    b = subject.backend
    stream = b.open(request_for(max_new_tokens=2))
    for event in stream:  # the consumer stops at Finished and keeps the stream (as /retry did)
        if isinstance(event, Finished):
            break
    assert_free(b)
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()
    stream.close()  # idempotent


@pytest.mark.parametrize("how", ["close", "with", "gc"])
def test_an_abandoned_stream_frees_the_backend(subject: Subject, how: str) -> None:
    b = subject.backend
    with need(subject.never_stop, "never stop")():
        stream = b.open(request_for(max_new_tokens=LONG))
        if how == "with":
            with stream:
                next(stream)
        else:
            next(stream)
            if how == "close":
                stream.close()
                stream.close()
            else:
                del stream
                gc.collect()
    assert_free(b)


def test_a_stream_never_started_holds_nothing(subject: Subject) -> None:
    b = subject.backend
    unused = b.open(request_for(max_new_tokens=2))
    assert_free(b)
    unused.close()
