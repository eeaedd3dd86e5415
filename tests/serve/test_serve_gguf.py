"""smolchat serve on the real SmolLM2-135M-Instruct GGUF, started as a user starts it
(``smolchat serve FILE``, a subprocess), driven by the openai client and by ``smolchat --server``.
One server for the module; every reply is the short Paris sentence (a busy 2-core CPU)."""

from __future__ import annotations

import threading

import openai
import pytest

from tests.serve.process import ServeProcess, run_smolchat

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def served(smollm2_gguf):
    with ServeProcess(str(smollm2_gguf), "--port", "0", "--device", "cpu", timeout=300) as s:
        yield s


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=300)


def ask(client, **kwargs):
    return client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1.gguf",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=16,
        **kwargs,
    )


def test_greedy_answer_equals_the_in_process_answer(client, smollm2_gguf):
    import smolchat
    from smolchat.backend.local import LocalBackend
    from smolchat.backend.types import ChatMessage, Conversation, Finished, GenerationRequest
    from smolchat.engine.types import SamplingParams

    reply = ask(client)
    backend = LocalBackend(smolchat.load(str(smollm2_gguf), device="cpu"))
    request = GenerationRequest(
        Conversation((ChatMessage("user", QUESTION),)),
        sampling=SamplingParams(temperature=0.0),
        max_new_tokens=16,
    )
    with backend.open(request) as stream:
        events = list(stream)
    here = "".join(e.text for e in events if not isinstance(e, Finished))
    assert reply.choices[0].message.content == here == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.model_extra.get("reasoning_content") is None


def test_streaming_equals_non_streaming(client):
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens >= 7


def test_two_clients_at_once_are_both_answered_correctly(client):
    answers: list[str] = []

    def one() -> None:
        answers.append(ask(client).choices[0].message.content)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert answers == [ANSWER, ANSWER]


def test_the_model_list_names_the_file(client):
    (model,) = client.models.list().data
    assert model.id == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.model_extra["max_model_len"] == 8192


def test_smolchat_server_one_shot_against_smolchat_serve(served):
    result = run_smolchat("--server", served.url, "-p", QUESTION, "--temperature", "0", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ANSWER
