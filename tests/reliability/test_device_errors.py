"""Device faults: CUDA asked for without CUDA, out of memory while loading and while generating.

Out-of-memory is simulated where torch would raise it: the tensor copy that puts each weight
on the device while loading, and the network's forward pass while generating.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import smolchat
from smolchat import cli
from smolchat.chat.events import TurnFinished
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.engine.types import SamplingParams
from smolchat.errors import DeviceError
from tests.reliability.helpers import one_line_error, quiet_env, run_smolchat
from tests.tui.helpers import chat_screen, running, submit, texts, wait_for

runner = CliRunner()
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def headless_tui(monkeypatch) -> None:
    """``smolchat`` without -p runs the TUI; run it headless inside the test."""
    from smolchat.tui.app import SmolchatApp

    original = SmolchatApp.run
    monkeypatch.setattr(SmolchatApp, "run", lambda self: original(self, headless=True))


def one_line(result) -> str:
    """The CliRunner version of the one-line error contract."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smolchat: error: "), result.stderr
    return lines[0]


# ---- CUDA without CUDA -----------------------------------------------------------------------


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_one_shot_real_process(tiny_model: Path, tmp_path: Path, device) -> None:
    result = run_smolchat(
        [str(tiny_model), "--device", device, "-p", "hi"], env=quiet_env(tmp_path)
    )
    line = one_line_error(result)
    assert "no CUDA GPU" in line and "--device cpu" in line


@no_cuda
def test_cuda_without_cuda_in_the_tui_and_plain_mode(tiny_model, monkeypatch, tmp_path) -> None:
    headless_tui(monkeypatch)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    for extra in ([], ["--plain"]):
        result = runner.invoke(cli.cli, [str(tiny_model), "--device", "cuda", *extra])
        assert "no CUDA GPU" in one_line(result)


# ---- out of memory while loading -------------------------------------------------------------


@pytest.fixture
def oom_on_copy(monkeypatch):
    """Make the n-th tensor copy with a device or dtype (how weights reach the device) fail."""
    state = {"calls": 0, "fail_at": 3, "error": torch.OutOfMemoryError}
    real = torch.Tensor.to

    def to(self, *args, **kwargs):
        if kwargs.get("device") is not None or kwargs.get("dtype") is not None:
            state["calls"] += 1
            if state["calls"] == state["fail_at"]:
                raise state["error"]("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return state


def test_oom_while_loading_suggests_nf4(tiny_model: Path, oom_on_copy) -> None:
    with pytest.raises(DeviceError) as info:
        smolchat.load(str(tiny_model), device="cpu")
    message = str(info.value)
    assert oom_on_copy["calls"] == 3  # it failed where it was made to
    assert "out of memory while loading" in message and "--quantize nf4" in message
    assert "\n" not in message


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError, MemoryError])
def test_oom_while_loading_is_one_line_in_the_cli(
    tiny_model: Path, oom_on_copy, error, monkeypatch, tmp_path
) -> None:
    """torch's CUDA OOM, the CPU allocator's RuntimeError and Python's MemoryError alike."""
    oom_on_copy["error"] = error
    if error is RuntimeError:  # what torch's CPU allocator raises
        oom_on_copy["error"] = lambda _msg: RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 2147483648 bytes."
        )
    result = runner.invoke(cli.cli, [str(tiny_model), "--device", "cpu", "-p", "hi"])
    assert "--quantize nf4" in one_line(result)
    headless_tui(monkeypatch)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    oom_on_copy["calls"] = 0
    result = runner.invoke(cli.cli, [str(tiny_model), "--device", "cpu"])
    assert "--quantize nf4" in one_line(result)


# ---- out of memory while generating ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


def greedy_session(engine, **kwargs) -> ChatSession:
    engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=8)
    return ChatSession(engine, settings=settings, **kwargs)


def fail_forward(monkeypatch, engine, at: int) -> dict:
    """The ``at``-th forward pass of the network (0: the prefill) raises torch's OOM.

    Decode steps on the CPU run the engine's lean one-token step (``engine.cpu``), not the
    general forward: both are counted, in the order they run.
    """
    state = {"calls": 0}

    def failing(real):
        def call(*args, **kwargs):
            state["calls"] += 1
            if state["calls"] == at + 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(engine.model, "forward", failing(engine.model.forward))
    if getattr(engine, "cpu", None) is not None:
        monkeypatch.setattr(engine.cpu, "step", failing(engine.cpu.step))
    return state


def last(events) -> TurnFinished:
    events = list(events)
    assert isinstance(events[-1], TurnFinished)
    return events[-1]


@pytest.mark.parametrize("at", [0, 3], ids=["in-prefill", "mid-reply"])
def test_oom_while_generating_fails_the_turn_only(
    engine, tiny_model: Path, monkeypatch, at: int
) -> None:
    session = greedy_session(engine, system_prompt="Be brief.")
    last(session.send("Hello! What is the capital of France?"))
    state = fail_forward(monkeypatch, engine, at)
    failed = last(session.send("And which city is in Europe?"))
    assert state["calls"] == at + 1
    assert failed.finish_reason == "error"
    assert "ran out of memory" in failed.error and "--quantize nf4" in failed.error
    assert "\n" not in failed.error
    assert session.messages[-1].error == failed.error and not session.busy
    assert engine.cache.length == len(engine.cached_ids)  # the cache is consistent
    monkeypatch.undo()
    # the conversation goes on, and the reused cache gives what a cache-free run gives
    calls: list[tuple[list[int], list[int]]] = []
    real = engine.generate

    def spy(ids, **kwargs):
        calls.append((list(ids), []))
        for event in real(ids, **kwargs):
            if event.token_id is not None:
                calls[-1][1].append(event.token_id)
            yield event

    monkeypatch.setattr(engine, "generate", spy)
    ok = last(session.send("Write def add(a, b) in Python."))
    assert ok.finish_reason in ("stop", "length") and ok.error is None
    assert engine.cached_ids[: len(calls[-1][0])] == calls[-1][0]
    fresh = smolchat.load(str(tiny_model), device="cpu", dtype="float32")
    ids, produced = calls[-1]
    greedy = SamplingParams(temperature=0.0)
    again = [e.token_id for e in fresh.generate(ids, sampling=greedy, max_new_tokens=8)]
    assert [t for t in again if t is not None] == produced
    follow_up = last(session.send("Thank you!"))  # and the cache is reused again
    assert follow_up.stats.cached_tokens >= len(ids)


async def test_oom_while_generating_in_the_tui(engine, monkeypatch) -> None:
    from tests.tui.conftest import make_app

    engine.reset_cache()
    app = make_app(engine)
    async with running(app) as (pilot, notes):
        screen = await chat_screen(pilot)
        screen.session.settings.max_new_tokens = 6
        fail_forward(monkeypatch, engine, 2)
        await submit(pilot, "Hello! What is the capital of France?")
        await wait_for(pilot, lambda: any("ran out of memory" in t for t in texts(notes)))
        assert screen.session.messages[-1].finish_reason == "error"
        monkeypatch.undo()
        await submit(pilot, "And which city is in Europe?")  # the app kept running
        assert screen.session.messages[-1].finish_reason in ("stop", "length")
        assert len(screen.session.messages) == 4
