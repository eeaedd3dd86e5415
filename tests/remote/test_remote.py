"""RemoteBackend: real HTTP servers only (``transformers serve`` on SmolLM2, and a scripted
server of our own for the errors a real one cannot be made to produce)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from smolchat.backend.remote import RemoteBackend, RemoteError, safe_url
from smolchat.backend.types import (
    AnswerDelta,
    ChatMessage,
    Conversation,
    Finished,
    GenerationRequest,
    ReasoningDelta,
)
from smolchat.engine.types import SamplingParams
from tests.remote.servers import Script, ScriptedServer, free_port

FRANCE = "What is the capital of France?"
GREEDY = SamplingParams(temperature=0.0)
KEY = "sk-test-5f3c9a1e-never-written-anywhere"


def ask(text: str = FRANCE, *, thinking: bool = False, system: str | None = None, n: int = 16):
    conversation = Conversation((ChatMessage("user", text),), system, thinking)
    return GenerationRequest(conversation, sampling=GREEDY, max_new_tokens=n)


def run_cli(*args: str, env_extra: dict[str, str] | None = None, stdin: str | None = None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("SMOLCHAT_API_KEY", None) if env_extra is None else None
    return subprocess.run(
        [sys.executable, "-m", "smolchat", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=300,
    )


# --- the wire format ------------------------------------------------------------------------
def test_request_without_system_prompt_sends_only_the_users_messages(scripted) -> None:
    backend = RemoteBackend(scripted.url)
    list(backend.open(ask(thinking=False)))
    body = scripted.requests[-1]
    assert body["messages"] == [{"role": "user", "content": FRANCE}]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["temperature"] == 0 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    list(backend.open(ask(thinking=True, system="Be brief.")))
    body = scripted.requests[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["chat_template_kwargs"] == {"enable_thinking": True}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field(scripted, field: str) -> None:
    scripted.script = Script(reasoning=["Hmm, ", "France."], words=["Paris"], reasoning_field=field)
    events = list(RemoteBackend(scripted.url).open(ask(thinking=True)))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Hmm, France."
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "Paris"
    end = events[-1]
    assert isinstance(end, Finished) and end.reasoning_block and end.reasoning == "Hmm, France."


def test_inline_think_is_parsed_even_when_the_server_ignores_enable_thinking(scripted) -> None:
    # a server whose template ignores enable_thinking=false reasons anyway, inline
    scripted.script = Script(words=["<thi", "nk>\nLet me see.\n</th", "ink>\n", "Paris."])
    events = list(RemoteBackend(scripted.url).open(ask(thinking=False)))
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "Paris."
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Let me see."
    assert scripted.requests[-1]["chat_template_kwargs"] == {"enable_thinking": False}


def test_usage_figures_are_the_servers(scripted) -> None:
    scripted.script = Script(words=["a", "b", "c"], prompt_tokens=33)
    end = list(RemoteBackend(scripted.url).open(ask()))[-1]
    assert end.stats.prompt_tokens == 33 and end.stats.generated_tokens == 3
    assert end.finish_reason == "stop"


def test_without_a_tokenizer_the_meter_counts_with_the_servers_usage(scripted) -> None:
    """The context meter was the ~4-characters-a-token estimate even after the server had said
    how many tokens the chat took; now it is the server's figures plus an estimate of what
    came since (found by the newcomer trial)."""
    from smolchat.chat.session import ChatSession

    scripted.script = Script(words=["Paris", "."], prompt_tokens=500)
    backend = RemoteBackend(scripted.url)
    assert backend.tokenizer is None
    session = ChatSession(backend)
    # before any reply, the estimate: "What is the capital of France?" is 30 characters
    assert backend.count_tokens(ask().conversation, add_generation_prompt=True) == 8 + 4 + 3
    list(session.send(FRANCE))
    assert session.context_used() == 500 + 2  # the reply's prompt_tokens + completion_tokens
    # a new message on top: the server's figures, plus the estimate of the new text only
    history = session.conversation(session.messages, session.settings.thinking)
    new = Conversation(
        (*history.messages, ChatMessage("user", "x" * 40)), history.system_prompt, history.thinking
    )
    assert backend.count_tokens(new, add_generation_prompt=False) == 502 + 10 + 4
    assert backend.count_tokens(new, add_generation_prompt=True) == 502 + 10 + 4 + 3
    # what was sent, as sent (a /retry): the prompt_tokens exactly
    sent = Conversation(history.messages[:1], history.system_prompt, history.thinking)
    assert backend.count_tokens(sent, add_generation_prompt=True) == 500
    # a conversation that does not go on from it (another system prompt): the estimate again
    other = Conversation(history.messages, "Be brief.", history.thinking)
    assert backend.count_tokens(other, add_generation_prompt=False) < 30
    # the next reply's figures replace these
    scripted.script = Script(words=["Lima"], prompt_tokens=700)
    list(session.send("And Peru?"))
    assert session.context_used() == 700 + 1


def test_length_from_the_server(scripted) -> None:
    scripted.script = Script(words=["w "], forever=True)
    end = list(RemoteBackend(scripted.url).open(ask(n=5)))[-1]
    assert end.finish_reason == "length" and end.stats.generated_tokens == 5


# --- errors: one line each, with the fix ----------------------------------------------------
def test_unknown_model_lists_what_the_server_has(scripted) -> None:
    with pytest.raises(RemoteError) as info:
        RemoteBackend(scripted.url, "no/such-model")
    assert "does not serve 'no/such-model'" in str(info.value)
    assert "scripted/model" in str(info.value)


def test_default_model_is_the_first_listed() -> None:
    server = ScriptedServer(models=[{"id": "first/one"}, {"id": "second/two"}])
    try:
        assert RemoteBackend(server.url).model_name == "first/one"
    finally:
        server.stop()


def test_wrong_url_is_not_an_openai_api(scripted) -> None:
    with pytest.raises(RemoteError, match="not an OpenAI-compatible API.*/v1"):
        RemoteBackend(f"http://127.0.0.1:{scripted.port}/api")
    scripted.models_body = b"<html>hello</html>"
    with pytest.raises(RemoteError, match="OpenAI-compatible API"):
        RemoteBackend(scripted.url)


def test_connection_refused() -> None:
    port = free_port()
    with pytest.raises(RemoteError, match="connection refused.*running"):
        RemoteBackend(f"http://127.0.0.1:{port}/v1")


def test_bad_key_is_401_and_the_key_is_not_in_the_line() -> None:
    server = ScriptedServer(key=KEY)
    try:
        with pytest.raises(RemoteError) as info:
            RemoteBackend(server.url, api_key="sk-wrong-key-123")
        assert "refused the API key (401)" in str(info.value)
        assert "--api-key" in str(info.value) and "sk-wrong-key-123" not in str(info.value)
        assert RemoteBackend(server.url, api_key=KEY).model_name == "scripted/model"
        assert {k.lower(): v for k, v in server.headers[-1].items()}[
            "authorization"
        ] == f"Bearer {KEY}"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "refused the API key (401)"),
        (403, "refused the API key (403)"),
        (404, "answered 404"),
        (429, "rate-limiting (429)"),
        (500, "failed (500: boom ***)"),
        (503, "failed (503: boom ***)"),
    ],
)
def test_status_errors_during_a_turn(scripted, status: int, expected: str) -> None:
    backend = RemoteBackend(scripted.url, api_key=KEY)
    scripted.script = Script(status=status, body=json.dumps({"error": {"message": f"boom {KEY}"}}))
    end = list(backend.open(ask()))[-1]
    assert end.finish_reason == "error" and expected in (end.error or "")
    assert "\n" not in (end.error or "") and KEY not in (end.error or "")
    scripted.script = Script()
    assert list(backend.open(ask()))[-1].finish_reason == "stop"  # usable again


def test_garbage_instead_of_a_stream(scripted) -> None:
    backend = RemoteBackend(scripted.url)
    scripted.script = Script(garbage=b"this is not server-sent events\n\n")
    end = list(backend.open(ask()))[-1]
    assert end.finish_reason == "error" and "no OpenAI stream" in (end.error or "")


def test_a_stream_cut_mid_reply_keeps_the_partial(scripted) -> None:
    backend = RemoteBackend(scripted.url)
    scripted.script = Script(words=["The ", "capital ", "is "], forever=True, cut_after=3)
    events = list(backend.open(ask(n=50)))
    end = events[-1]
    assert end.finish_reason == "error" and "partial reply is kept" in (end.error or "")
    assert end.answer == "The capital is "


def test_an_error_event_mid_stream_is_the_servers_message(scripted) -> None:
    backend = RemoteBackend(scripted.url)
    scripted.script = Script(words=["Par"], error_event="the GPU fell over")
    end = list(backend.open(ask()))[-1]
    assert end.finish_reason == "error" and end.answer == "Par"
    assert "failed mid-reply: the GPU fell over (the partial reply is kept" in (end.error or "")


def test_timeout(scripted) -> None:
    backend = RemoteBackend(scripted.url, timeout_s=0.3)
    scripted.script = Script(words=["a", "b"], delay_s=1.0)
    end = list(backend.open(ask()))[-1]
    assert end.finish_reason == "error" and "did not answer in time" in (end.error or "")
    assert end.answer == "a"


def test_cancel_closes_the_http_stream_at_once(scripted) -> None:
    backend = RemoteBackend(scripted.url)
    scripted.script = Script(words=["w "], forever=True, delay_s=0.01)
    req = ask(n=100_000)
    stream = backend.open(req)
    assert isinstance(next(stream), AnswerDelta)
    req.cancel.cancel()
    end = list(stream)[-1]
    assert end.finish_reason == "cancelled" and end.answer
    assert scripted.disconnected.wait(5), "the server kept streaming to a cancelled client"


def test_url_credentials_never_shown() -> None:
    assert safe_url("https://bob:hunter2@example.com:8443/v1/?token=abc#x") == (
        "https://example.com:8443/v1"
    )


# --- the real server ------------------------------------------------------------------------
@pytest.mark.slow
def test_greedy_answer_equals_the_same_request_sent_directly(transformers_serve) -> None:
    backend = RemoteBackend(transformers_serve.url)
    assert backend.model_name == transformers_serve.model
    assert backend.tokenizer is not None  # the served id is the folder: exact counts
    request = ask(n=12)
    events = list(backend.open(request))
    streamed = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert len([e for e in events if isinstance(e, AnswerDelta)]) > 1  # streamed in pieces
    client = openai.OpenAI(base_url=transformers_serve.url, api_key="none")
    body = backend.request_body(request, 12)
    body.pop("stream"), body.pop("stream_options")
    direct = client.chat.completions.create(**body)
    assert streamed == direct.choices[0].message.content
    assert "Paris" in streamed
    end = events[-1]
    assert end.stats.prompt_tokens == direct.usage.prompt_tokens
    assert end.stats.prompt_tokens == backend.count_tokens(
        request.conversation, add_generation_prompt=True
    )


@pytest.mark.slow
def test_cli_prints_what_the_server_returns(transformers_serve, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=transformers_serve.url, api_key="none")
    direct = client.chat.completions.create(
        model=transformers_serve.model,
        messages=[{"role": "user", "content": FRANCE}],
        temperature=0,
        max_tokens=16,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    out = run_cli(
        "--server", transformers_serve.url, "-p", FRANCE, "--temperature", "0",
        "--max-new-tokens", "16", "--transcripts", str(tmp_path),
    )  # fmt: skip
    expected = direct.choices[0].message.content
    assert out.stdout == expected.strip() + "\n", out.stderr
    assert out.returncode == (0 if direct.choices[0].finish_reason == "stop" else 3)


# --- the command line (scripted server) ------------------------------------------------------
def test_cli_errors_are_one_line_exit_1(scripted, tmp_path: Path) -> None:
    scripted.script = Script(status=500, body='{"error": {"message": "model crashed"}}')
    out = run_cli("--server", scripted.url, "-p", "Hi", "--transcripts", str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"smolchat: error: the server at {scripted.url} failed (500: model crashed): "
        "/retry, or check its log"
    ]
    out = run_cli("--server", scripted.url, "nope/model", "-p", "Hi")
    assert out.returncode == 1 and "it serves: scripted/model" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_key_reaches_no_file_no_output(tmp_path: Path) -> None:
    server = ScriptedServer(key=KEY)
    try:
        server.script = Script(words=["Paris", "."])
        home = tmp_path / "home"
        env = {"SMOLCHAT_API_KEY": KEY, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "c"),
               "XDG_DATA_HOME": str(home / "d"), "XDG_STATE_HOME": str(home / "s"),
               "XDG_CACHE_HOME": str(home / "k")}  # fmt: skip
        chats = tmp_path / "chats"
        url = server.url.replace("http://", "http://bob:pw123@") + "?token=qq7"
        out = run_cli("--server", url, "-p", "Hi", "--transcripts", str(chats), env_extra=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Paris.\n"
        plain = run_cli(
            "--server", url, "--plain", "--transcripts", str(chats), env_extra=env,
            stdin="Hello\n/stats\n/save\n/quit\n",
        )  # fmt: skip
        assert "remote: " in plain.stdout and "Paris." in plain.stdout, plain.stderr
        assert "token counts: estimated" in plain.stdout  # /stats says how it counts
        config = run_cli("--server", url, "--print-config", env_extra=env)
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.suffix in (".md", ".json") for p in written)
        for text in [out.stdout, out.stderr, plain.stdout, plain.stderr, config.stdout]:
            assert KEY not in text and "pw123" not in text and "qq7" not in text
        for path in written:
            data = path.read_bytes()
            assert KEY.encode() not in data, path
            assert b"pw123" not in data and b"qq7" not in data, path
    finally:
        server.stop()


def test_the_remote_path_never_imports_torch(scripted) -> None:
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['smolchat', '--server', {scripted.url!r}, '-p', 'Hi']\n"
        "from smolchat.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "Paris.\n", out.stderr
    assert out.stderr.strip().splitlines()[-1] == "False"  # torch was never imported


def test_local_only_options_are_refused_with_server(scripted) -> None:
    out = run_cli("--server", scripted.url, "--quantize", "nf4", "-p", "Hi")
    assert out.returncode == 2 and "--quantize has no effect with --server" in out.stderr
    out = run_cli("--api-key", "x", "-p", "Hi")
    assert out.returncode == 2 and "--api-key goes with --server" in out.stderr
    assert scripted.requests == []
