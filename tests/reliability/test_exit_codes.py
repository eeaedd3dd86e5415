"""Exit statuses and closed pipes, through the real ``smolchat`` process (issue 10, items 2, 5, 8).

Each CLI process here runs the real entry point; the engine is the test double of
``tests/tui/fake_engine.py`` (a scripted reply at a fixed pace), except in the test marked slow,
which runs the real SmolLM2 GGUF. An ``atexit`` hook reports the generation threads still alive
when the interpreter exits: there must be none, whatever way the program ends.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smolchat import cli
from smolchat.exit_codes import ExitCode
from tests.reliability.helpers import ROOT, quiet_env, smolchat_command
from tests.tui.fake_engine import FakeEngine

runner = CliRunner()
LINES = "\\n".join(f"line {i}" for i in range(400))  # the fake's reply, as Python source
AT_EXIT = "generation threads at exit: "


def fake_cli(args: list[str], *, delay: float = 0.005) -> list[str]:
    """argv of a real process running ``smolchat ARGS`` over the fake engine."""
    script = textwrap.dedent(
        f"""
        import atexit, signal, sys, threading
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
        from smolchat import cli
        from tests.tui.fake_engine import FakeEngine

        def report():
            alive = [t.name for t in threading.enumerate() if t.name == "smolchat-generate"]
            print({AT_EXIT!r} + str(alive), file=sys.stderr, flush=True)

        atexit.register(report)
        engine = FakeEngine(lambda q: "{LINES}", delay={delay})
        cli.load_engine = lambda config, progress=None: engine
        sys.argv = ["smolchat", "fake-model", *{args!r}]
        cli.main()
        """
    )
    return [sys.executable, "-c", script]


def read_lines_then_close(proc: subprocess.Popen, n: int) -> list[bytes]:
    """What ``head -n N`` does: read N lines, then close the read end of the pipe."""
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(n)]
    proc.stdout.close()
    return lines


def finish(proc: subprocess.Popen) -> str:
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    return err


def test_one_shot_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        fake_cli(["-p", "list"]), cwd=ROOT, env=quiet_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert read_lines_then_close(proc, 2) == [b"line 0\n", b"line 1\n"]
    err = finish(proc)
    assert proc.returncode == ExitCode.BROKEN_PIPE, err
    assert err == AT_EXIT + "[]\n"  # no error line, no traceback; the thread was joined


def test_plain_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        fake_cli(["--plain", "--no-autosave"]), cwd=ROOT, env=quiet_env(tmp_path),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"list\n")
    proc.stdin.close()
    assert proc.stdout is not None
    lines = []  # the banner, the prompt, then the reply's first lines; then close, like head
    while not lines or lines[-1] != b"line 2\n":
        lines.append(proc.stdout.readline())
        assert len(lines) < 40 and lines[-1], lines
    proc.stdout.close()
    assert lines[-3:] == [b"> line 0\n", b"line 1\n", b"line 2\n"], lines
    err = finish(proc)
    assert proc.returncode == ExitCode.BROKEN_PIPE, err
    assert err == AT_EXIT + "[]\n"


def test_ctrl_c_in_one_shot_is_130_and_joins_the_thread(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        fake_cli(["-p", "list"], delay=0.02), cwd=ROOT, env=quiet_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"line 0\n"  # streaming
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    err = finish(proc)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert err == AT_EXIT + "[]\n"
    assert b"line 399" not in out  # it stopped early


@pytest.fixture
def fake(monkeypatch) -> FakeEngine:
    engine = FakeEngine(lambda q: "one two three four five six seven eight")
    monkeypatch.setattr(cli, "load_engine", lambda config, progress=None: engine)
    return engine


def test_a_cut_one_shot_answer_says_so_and_exits_3(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "count", "--max-new-tokens", "3"])
    assert result.exit_code == ExitCode.CUT == 3
    assert result.stdout == "one two three\n"  # the partial answer is still printed
    assert result.stderr == (
        "smolchat: note: the answer was cut at max_new_tokens (3 tokens); "
        "raise --max-new-tokens for a longer one (exit status 3)\n"
    )


def test_a_complete_one_shot_answer_exits_0_with_nothing_on_stderr(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "count", "--max-new-tokens", "50"])
    assert result.exit_code == ExitCode.OK
    assert result.stdout == "one two three four five six seven eight\n"
    assert result.stderr == ""


def test_one_shot_has_a_bounded_default_length(fake: FakeEngine) -> None:
    assert runner.invoke(cli.cli, ["m", "-p", "count"]).exit_code == 0
    assert fake.calls[-1]["max_new_tokens"] == cli.ONE_SHOT_MAX_NEW_TOKENS == 2048
    assert runner.invoke(cli.cli, ["m", "-p", "count", "--max-new-tokens", "5000"]).exit_code == 0
    assert fake.calls[-1]["max_new_tokens"] == 5000  # an explicit limit wins


def test_the_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("| exit status |", 1)[1].split("\n\n", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*smolchat_command(), "m", "--temperature", "-1"], cwd=ROOT, env=quiet_env(tmp_path),
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == ExitCode.USAGE


@pytest.mark.slow
def test_real_model_one_shot_piped_into_head(smollm2_gguf: Path, tmp_path: Path) -> None:
    """The issue's repro: ``smolchat MODEL -p "list ten fruits" | head -2``."""
    env = quiet_env(tmp_path)
    command = [*smolchat_command(), str(smollm2_gguf), "-p", "List ten fruits, one per line.",
               "--temperature", "0"]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    started = time.monotonic()
    lines = read_lines_then_close(proc, 2)
    assert all(line.endswith(b"\n") for line in lines), lines
    err = finish(proc)
    assert proc.returncode == ExitCode.BROKEN_PIPE, err
    assert err == "", err  # no "internal error: BrokenPipeError", no "terminate called"
    assert time.monotonic() - started < 120


def test_one_shot_json_carries_the_finish_reason(fake: FakeEngine) -> None:
    import json

    cut = runner.invoke(cli.cli, ["m", "-p", "count", "--max-new-tokens", "3", "--json"])
    assert cut.exit_code == ExitCode.CUT
    data = json.loads(cut.stdout)
    assert (data["answer"], data["finish_reason"], data["generated_tokens"]) == (
        "one two three",
        "length",
        3,
    )
    done = runner.invoke(cli.cli, ["m", "-p", "count", "--json"])
    assert done.exit_code == ExitCode.OK and done.stderr == ""
    data = json.loads(done.stdout)
    assert data["answer"] == "one two three four five six seven eight"
    assert data["finish_reason"] == "stop" and data["reasoning"] == ""
    assert done.stdout.count("\n") == 1  # one object, one line


def test_json_without_a_prompt_is_a_usage_error(fake: FakeEngine) -> None:
    assert runner.invoke(cli.cli, ["m", "--json"]).exit_code == ExitCode.USAGE
