"""``smolchat serve`` as a user runs it (a subprocess) on the tiny model."""

from __future__ import annotations

import socket

import httpx
import openai

from tests.serve.process import ServeProcess, run_smolchat

KEY = "k-9f8e7d6c5b4a"


def test_serve_command_answers_the_openai_client_and_keeps_the_key_out_of_sight(tiny_model):
    with ServeProcess(str(tiny_model), "--port", "0", "--api-key", KEY, "--device", "cpu") as s:
        assert s.url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0, timeout=60)
        model = client.models.list().data[0].id
        assert model == tiny_model.name
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert reply.usage.completion_tokens == 2
        assert httpx.get(f"{s.url}/models").status_code == 401
        s.wait_for(lambda: sum("/v1/" in line for line in s.stderr_lines) >= 3, "log lines")
    lines = s.stderr_lines
    assert not any(KEY in line for line in lines)
    assert any("POST /v1/chat/completions 200" in line and "+2 tokens" in line for line in lines)
    assert any("GET /v1/models 401" in line for line in lines)
    assert not any("Traceback" in line for line in lines)


def test_quiet_writes_no_request_lines(tiny_model):
    with ServeProcess(str(tiny_model), "--port", "0", "--quiet") as s:
        assert httpx.get(s.url.removesuffix("/v1") + "/health").status_code == 200
        assert httpx.post(f"{s.url}/chat/completions", content=b"{").status_code == 400
    assert not any("/health" in line or "/chat/completions" in line for line in s.stderr_lines)


def test_a_taken_port_is_one_line_before_loading(tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_smolchat("serve", str(tiny_model), "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"smolchat: error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in lines[-1] and "Traceback" not in result.stderr


def test_a_non_loopback_address_without_a_key_warns_at_once(tiny_model):
    # stopped while the model loads: it never answers anyone
    s = ServeProcess(str(tiny_model), "--host", "0.0.0.0", "--port", "0").start(
        wait_for_banner=False
    )
    try:
        s.wait_for(lambda: any("warning" in line for line in s.stderr_lines), "warning")
    finally:
        s.stop()
    warning = next(line for line in s.stderr_lines if "warning" in line)
    assert "0.0.0.0" in warning and "--api-key" in warning


def test_serve_help_lists_its_options():
    result = run_smolchat("serve", "--help", timeout=60)
    assert result.returncode == 0
    for option in ("--host", "--port", "--api-key", "--quiet", "--device", "--quantize"):
        assert option in result.stdout


def test_smolchat_server_one_shot_against_smolchat_serve(tiny_model):
    """``smolchat --server URL -p`` through ``smolchat serve``: the answer on stdout; a cut one
    (the random model never stops) is exit status 3 with the note, as with a local model."""
    with ServeProcess(str(tiny_model), "--port", "0", "--quiet") as s:
        result = run_smolchat(
            "--server", s.url, "-p", "Hi", "--max-new-tokens", "3", "--temperature", "0"
        )
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip()
    assert "max_new_tokens" in result.stderr and "Traceback" not in result.stderr
