"""Thinking control: the engine's forced tokens, LocalBackend's thinking budget and "stop
thinking now", /set thinking_budget (the real tiny engine; its chat template opens the
reasoning in the prompt, as distilled reasoning models' do, so the random weights reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import smolchat
from smolchat.backend.local import LocalBackend
from smolchat.backend.types import (
    AnswerDelta,
    CancelToken,
    ChatMessage,
    Conversation,
    Finished,
    GenerationRequest,
    ReasoningDelta,
)
from smolchat.chat.commands import run_command
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.engine.types import SamplingParams
from smolchat.errors import CommandError

THINKING_TEMPLATE = (
    "{%- if enable_thinking is defined %}{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{%- endif %}"
)
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def thinking_model(tiny_model: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("thinking") / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = THINKING_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def engine(thinking_model: Path):
    return smolchat.load(str(thinking_model), device="cpu", dtype="float32")


def ids_of(events) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None]


def test_forced_tokens_are_emitted_and_the_model_goes_on_after_them(engine) -> None:
    prompt = engine.tokenizer.encode("hello there")
    forced = engine.tokenizer.encode(" forced words")
    out: list[int] = []
    for event in engine.generate(prompt, sampling=GREEDY, max_new_tokens=30, stop_ids=[]):
        if event.token_id is not None:
            out.append(event.token_id)
            if len(out) == 3:
                engine.force(forced)
    assert len(out) == 30 and out[3 : 3 + len(forced)] == forced
    # what follows is the greedy continuation of prompt + the first 3 + the forced ids
    done = 3 + len(forced)
    engine.reset_cache()
    head = [*prompt, *out[:done]]
    rest = ids_of(engine.generate(head, sampling=GREEDY, max_new_tokens=30 - done, stop_ids=[]))
    assert out[done:] == rest


def request(
    budget: int | None, end: CancelToken | None = None, max_new: int = 40
) -> GenerationRequest:
    conversation = Conversation((ChatMessage("user", "Think about cats."),), thinking=True)
    return GenerationRequest(
        conversation,
        sampling=GREEDY,
        max_new_tokens=max_new,
        thinking_budget=budget,
        end_thinking=end or CancelToken(),
    )


def run(backend: LocalBackend, req: GenerationRequest) -> tuple[list, Finished]:
    events = list(backend.open(req))
    assert isinstance(events[-1], Finished)
    return events[:-1], events[-1]


def test_thinking_budget_closes_the_reasoning_and_the_answer_follows(engine) -> None:
    backend = LocalBackend(engine)
    assert backend.has_thinking_mode and backend.supports_end_thinking
    engine.reset_cache()
    _, free = run(backend, request(None))
    assert free.answer == "" and free.reasoning  # random weights never close it themselves
    engine.reset_cache()
    deltas, capped = run(backend, request(5))
    assert capped.reasoning_block and capped.reasoning and capped.answer
    kinds = [type(d) for d in deltas]
    assert ReasoningDelta in kinds and AnswerDelta in kinds
    assert kinds.index(AnswerDelta) > kinds.index(ReasoningDelta)  # reasoning, then answer
    # after 5 reasoning tokens the model's own end-of-thinking token closed the block
    assert closed_after(backend, engine) == 5
    assert capped.stats.generated_tokens == 40  # the answer used the rest of the budget


def closed_after(backend: LocalBackend, engine) -> int:
    """How many reply tokens came before the forced ``\n</think>\n`` of the last reply."""
    prompt = backend.render_ids(request(None).conversation)
    reply = engine.cached_ids[len(prompt) :]
    end_id = engine.tokenizer.token_to_id("</think>")
    at = reply.index(end_id)
    newline = engine.tokenizer.encode("\n")
    if reply[at - len(newline) : at] == newline:
        at -= len(newline)
    assert reply[at:].count(end_id) == 1
    return at


def test_end_thinking_now_and_a_budget_of_zero(engine) -> None:
    backend = LocalBackend(engine)
    end = CancelToken()
    end.cancel()  # "stop thinking" pressed before the first token
    engine.reset_cache()
    _, now = run(backend, request(None, end))
    assert now.answer and closed_after(backend, engine) <= 1  # within one token
    engine.reset_cache()
    _, zero = run(backend, request(0))
    assert zero.answer and closed_after(backend, engine) <= 1


def test_no_thinking_mode_no_control(engine, monkeypatch) -> None:
    backend = LocalBackend(engine)
    monkeypatch.setattr(engine.tokenizer, "chat_template", "{{ messages }}")
    assert not backend.has_thinking_mode and not backend.supports_end_thinking


def test_set_thinking_budget_and_session_stop(engine, tmp_path) -> None:
    settings = ChatSettings(sampling=GREEDY, max_new_tokens=30)
    session = ChatSession(engine, settings=settings)
    assert run_command(session, "/set thinking_budget 3").message == "thinking_budget: none → 3"
    assert session.settings.thinking_budget == 3
    assert "| thinking_budget | 3 |" in run_command(session, "/set").message
    with pytest.raises(CommandError, match="thinking_budget must be a number of tokens"):
        run_command(session, "/set thinking_budget -1")
    run_command(session, "/set budget none")
    assert session.settings.thinking_budget is None
    assert ChatSettings.from_dict({"thinking_budget": 7}).thinking_budget == 7
    assert "thinking_budget" not in ChatSettings().to_dict()  # unset: transcripts unchanged
    # the session passes the budget on, and end_thinking() works mid-stream
    run_command(session, "/set thinking_budget 2")
    engine.reset_cache()
    events = list(session.send("Think about dogs."))
    finished = events[-1]
    assert finished.reasoning and finished.answer
    session.settings.thinking_budget = None
    stream = session.send("And birds?")
    seen = [next(stream) for _ in range(3)]
    assert session.end_thinking()
    rest = list(stream)
    assert rest[-1].answer and any(isinstance(e, type(seen[0])) for e in seen)
