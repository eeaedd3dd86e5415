"""smolchat serve over the tiny random SmolLM3 (real template, real engine, real uvicorn),
driven by the official ``openai`` client and by raw HTTP for what a client library would not
send. One server for the module; replies are kept to a few tokens (a shared 2-core machine)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from unittest import mock

import httpx
import openai
import pytest

from smolchat.backend.local import LocalBackend
from smolchat.backend.types import ChatMessage, Conversation, Finished, GenerationRequest
from smolchat.engine.types import GenerationEvent, GenerationStats, SamplingParams
from smolchat.serve.app import ServeOptions
from smolchat.serve.server import RunningServer, is_loopback, start_in_thread

MODEL = "tiny-smollm3"
KEY = "s3cret-key-0123456789"


@pytest.fixture(scope="module")
def log() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(tiny_engine, log) -> Iterator[RunningServer]:
    running = start_in_thread(
        LocalBackend(tiny_engine), ServeOptions(model_id=MODEL, aliases=("tiny",), log=log.append)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def ask(client, text: str, *, fresh=None, **kwargs):
    """One request; ``fresh``: an engine whose KV cache is emptied first. A random model's
    logits are nearly tied, so float32 differences between a cached and a full prefill can flip
    a greedy token: comparisons of two answers start both from an empty cache."""
    if fresh is not None:
        fresh.reset_cache()
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        temperature=kwargs.pop("temperature", 0),
        max_tokens=kwargs.pop("max_tokens", 6),
        **kwargs,
    )


def in_process(engine, text: str, max_new_tokens: int = 6, thinking: bool = True) -> str:
    """The greedy answer of LocalBackend itself (the server's worker is idle meanwhile)."""
    engine.reset_cache()
    backend = LocalBackend(engine)
    request = GenerationRequest(
        Conversation((ChatMessage("user", text),), thinking=thinking),
        sampling=SamplingParams(temperature=0.0),
        max_new_tokens=max_new_tokens,
    )
    answer = []
    with backend.open(request) as stream:
        for event in stream:
            if not isinstance(event, Finished):
                answer.append(event.text)
    return "".join(answer)


def wait_idle(server: RunningServer, seconds: float = 20.0) -> float:
    """Seconds until the engine has no request (fails the test after ``seconds``)."""
    worker = server.server.config.app.app.state.worker
    start = time.monotonic()
    while worker.waiting:
        assert time.monotonic() - start < seconds, "the engine is still busy"
        time.sleep(0.05)
    return time.monotonic() - start


# --- the happy paths ------------------------------------------------------------------------
def test_models_list(client, tiny_engine):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["max_model_len"] == tiny_engine.context_length
    assert client.models.retrieve("tiny").id == MODEL


def test_greedy_answer_equals_the_in_process_answer(client, tiny_engine):
    reply = ask(client, "Hello", fresh=tiny_engine)
    expected = in_process(tiny_engine, "Hello")
    assert expected  # the random model says something
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_streaming_equals_non_streaming(client):
    whole = ask(client, "The capital of France")
    stream = ask(
        client, "The capital of France", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_a_follow_up_reuses_the_kv_cache(client):
    first = ask(client, "Hello there")
    history = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=history, temperature=0, max_tokens=3
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    # the whole first turn (bar the template's reshaping of its end) comes from the cache
    assert cached >= first.usage.prompt_tokens - 8, (cached, first.usage.prompt_tokens)
    assert cached < second.usage.prompt_tokens


def test_two_clients_at_once_are_both_answered(client, log):
    """Both are answered in full, one after the other (the GGUF test checks the words)."""
    got: dict[str, object] = {}
    errors: list[BaseException] = []

    def one(p: str) -> None:
        try:
            got[p] = ask(client, p, max_tokens=4)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    log.clear()
    threads = [threading.Thread(target=one, args=(p,)) for p in ("Paris", "Hello")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(got) == ["Hello", "Paris"]
    for reply in got.values():
        assert reply.usage.completion_tokens == 4 and reply.choices[0].message.content
    assert sum("POST /v1/chat/completions 200" in line for line in log) == 2


def test_stop_sequences_cut_the_answer(client, tiny_engine):
    full = in_process(tiny_engine, "Hello", 6)
    stop = full[3:5]
    assert stop.strip(), full
    cut = ask(client, "Hello", fresh=tiny_engine, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = ask(client, "Hello", fresh=tiny_engine, stop=stop, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == full[: full.index(stop)]


def test_seed_makes_sampling_repeatable(client, tiny_engine):
    a = ask(client, "Hello", fresh=tiny_engine, temperature=1.0, seed=7, max_tokens=5)
    b = ask(client, "Hello", fresh=tiny_engine, temperature=1.0, seed=7, max_tokens=5)
    assert a.choices[0].message.content == b.choices[0].message.content


SCRIPT = "<think>\nParis is in France.\n</think>\nThe capital is Paris."


def scripted(engine, text: str):
    """``engine.generate`` replaced by one that emits ``text`` through the real tokenizer
    (the random model cannot be made to write a <think> block; the rest is all real)."""
    tok = engine.tokenizer
    ids = [*tok.encode(text), tok.eos_token_ids[0]]

    def generate(prompt, sampling=None, max_new_tokens=256, stop_ids=None, progress=False):
        decoder = tok.stream_decoder()
        for n, token in enumerate(ids):
            last = n == len(ids) - 1
            piece = decoder.add(token)
            stats = GenerationStats(prompt_tokens=len(prompt), generated_tokens=n + 1)
            yield GenerationEvent(token, piece, "stop" if last else None, stats if last else None)

    return mock.patch.object(engine, "generate", generate)


def test_reasoning_comes_apart_in_reasoning_content(client, tiny_engine):
    assert "enable_thinking" in tiny_engine.tokenizer.chat_template  # the real SmolLM3 template
    with scripted(tiny_engine, SCRIPT):
        whole = ask(client, "Where is Paris?", max_tokens=50)
        chunks = list(ask(client, "Where is Paris?", max_tokens=50, stream=True))
    message = whole.choices[0].message
    assert message.content.strip() == "The capital is Paris."
    assert message.model_extra["reasoning_content"].strip() == "Paris is in France."
    assert whole.choices[0].finish_reason == "stop"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    answer = "".join(d.content or "" for d in deltas)
    assert reasoning == message.model_extra["reasoning_content"]
    assert answer == message.content
    assert "<think>" not in answer + reasoning


def test_enable_thinking_false_renders_the_no_think_prompt(client, tiny_engine):
    seen: list[str] = []
    real = tiny_engine.generate

    def spy(ids, **kwargs):
        seen.append(tiny_engine.tokenizer.decode(list(ids)))
        return real(ids, **kwargs)

    with mock.patch.object(tiny_engine, "generate", spy):
        ask(
            client,
            "Hi",
            max_tokens=1,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        ask(client, "Hi", max_tokens=1)
    assert "/no_think" in seen[0] and "/think" in seen[1].replace("/no_think", "")


# --- cancellation and the engine's freedom ----------------------------------------------------
def test_a_client_that_hangs_up_mid_stream_frees_the_engine(server, client, tiny_engine, log):
    calls: list[int] = []
    real_cancel = tiny_engine.cancel

    def counted_cancel() -> None:
        calls.append(1)
        real_cancel()

    with mock.patch.object(tiny_engine, "cancel", counted_cancel):
        with httpx.Client(timeout=30) as http:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 3000,  # minutes of decoding if nobody cancels it
                "temperature": 0,
                "stream": True,
            }
            with http.stream("POST", f"{server.url}/chat/completions", json=body) as response:
                lines = response.iter_lines()
                content: list[str] = []
                for line in lines:
                    if line.startswith("data:") and '"content"' in line:
                        content.append(line)
                    if len(content) >= 3:
                        break
        # the connection is closed here
        waited = wait_idle(server)
    assert calls, "the engine was never told to stop"
    assert any("200 (client disconnected)" in line for line in log), log
    assert waited < 20
    assert len(content) == 3
    assert ask(client, "Hello", max_tokens=2).choices[0].finish_reason == "length"


def test_a_client_that_never_reads_does_not_hold_the_engine(server, client):
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 20,
            "stream": True,
        }
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((server.host, server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.sendall(request)  # and never read
        reply = ask(client, "Hello", max_tokens=2)
        assert reply.choices[0].message.content is not None
    wait_idle(server)


# --- bad input: a JSON 4xx each, and the server keeps serving ---------------------------------
def _post(server, body: bytes | dict, headers: dict | None = None) -> httpx.Response:
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
    return httpx.post(
        f"{server.url}/chat/completions",
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
        **kwargs,
    )


USER = [{"role": "user", "content": "Hello"}]
BAD = {
    "malformed JSON": (b'{"model": "tiny", "messages": [', 400, None),
    "not an object": (b"[1, 2]", 400, None),
    "wrong type": ({"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature"),
    "content of the wrong type": (
        {"model": MODEL, "messages": [{"role": "user", "content": 3}]},
        400,
        "messages[0].content",
    ),
    "unknown role": (
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    "unknown model": ({"model": "gpt-9", "messages": USER}, 404, "model"),
    "no model": ({"messages": USER}, 400, "model"),
    "empty messages": ({"model": MODEL, "messages": []}, 400, "messages"),
    "only a system message": (
        {"model": MODEL, "messages": [{"role": "system", "content": "x"}]},
        400,
        "messages",
    ),
    "ends with the assistant": (
        {"model": MODEL, "messages": [*USER, {"role": "assistant", "content": "Hi"}]},
        400,
        "messages",
    ),
    "prompt longer than the context": (
        {"model": MODEL, "messages": [{"role": "user", "content": "Paris " * 5000}]},
        400,
        "messages",
    ),
    "max_tokens zero": ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    "max_tokens over the context": (
        {"model": MODEL, "messages": USER, "max_tokens": 10**6},
        400,
        "max_tokens",
    ),
    "max_completion_tokens negative": (
        {"model": MODEL, "messages": USER, "max_completion_tokens": -1},
        400,
        "max_completion_tokens",
    ),
    "temperature out of range": (
        {"model": MODEL, "messages": USER, "temperature": 3},
        400,
        "temperature",
    ),
    "presence_penalty": (
        {"model": MODEL, "messages": USER, "presence_penalty": 0.5},
        400,
        "presence_penalty",
    ),
    "n of 2": ({"model": MODEL, "messages": USER, "n": 2}, 400, "n"),
    "too many stop sequences": (
        {"model": MODEL, "messages": USER, "stop": list("abcde")},
        400,
        "stop",
    ),
}


@pytest.mark.parametrize("body,status,param", list(BAD.values()), ids=list(BAD))
def test_bad_input_gets_an_openai_error_and_the_server_stays_up(server, body, status, param):
    response = _post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in response.text
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert httpx.get(f"http://{server.host}:{server.port}/health").json()["status"] == "ok"


def test_after_all_the_bad_input_a_good_request_is_answered(client):
    assert ask(client, "Hello", max_tokens=2).usage.completion_tokens == 2


def test_a_body_over_the_limit_gets_413(tiny_engine):
    options = ServeOptions(model_id=MODEL, max_body_bytes=1000)
    running = start_in_thread(LocalBackend(tiny_engine), options)
    try:
        response = _post(
            running, {"model": MODEL, "messages": [{"role": "user", "content": "x" * 2000}]}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
    finally:
        running.stop()


def test_the_openai_client_sees_bad_input_as_its_own_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=USER)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Paris " * 5000}]
        )


def test_unknown_paths_and_methods_are_json_errors(server):
    base = f"http://{server.host}:{server.port}"
    assert httpx.get(f"{base}/v1/nothing").json()["error"]["code"] == "not_found"
    response = httpx.get(f"{server.url}/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["message"]


# --- security and logs ------------------------------------------------------------------------
def test_api_key_is_enforced_and_never_logged(tiny_engine):
    lines: list[str] = []
    options = ServeOptions(model_id=MODEL, api_key=KEY, log=lines.append)
    running = start_in_thread(LocalBackend(tiny_engine), options)
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": KEY},
            {"Authorization": f"Basic {KEY}"},
        ):
            response = httpx.get(f"{running.url}/models", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert KEY not in response.text
        assert httpx.get(f"http://127.0.0.1:{running.port}/health").status_code == 401
        wrong = openai.OpenAI(base_url=running.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        right = openai.OpenAI(base_url=running.url, api_key=KEY, max_retries=0)
        reply = right.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        assert reply.usage.completion_tokens == 1
    finally:
        running.stop()
    assert any(" 401 " in line for line in lines)
    assert not any(KEY in line for line in lines)


def _posts_logged(log, count: int, timeout: float = 10.0) -> list[str]:
    """The chat-completion log lines once there are ``count`` (a streamed reply's line is
    written when its body ends, a moment after the client has read the last chunk)."""
    deadline = time.monotonic() + timeout
    while True:
        posts = [line for line in log if "POST /v1/chat/completions" in line]
        if len(posts) >= count or time.monotonic() > deadline:
            return posts
        time.sleep(0.02)


def test_one_log_line_per_request(server, client, log):
    log.clear()
    ask(client, "Hello", max_tokens=2)
    _posts_logged(log, 1)
    list(ask(client, "Hello", max_tokens=2, stream=True))
    _posts_logged(log, 2)
    _post(server, b"{")
    posts = _posts_logged(log, 3)
    assert len(posts) == 3, log
    assert posts[0].startswith("127.0.0.1 POST /v1/chat/completions 200 ")
    assert " tokens " in posts[0] and "+2 tokens" in posts[1]
    assert posts[2].split()[3] == "400" and posts[2].endswith("s")


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
