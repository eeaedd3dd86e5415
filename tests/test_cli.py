"""The command line: options, errors, one-shot (-p), plain mode, and the TUI's error path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import smolchat
from smolchat import cli
from tests.tui.fake_engine import CODE_REPLY, FakeEngine

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run_cli(*args: str, input: str | None = None, timeout: float = 120):
    """``python -m smolchat ARGS`` in a subprocess (the real entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "smolchat", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def fake(monkeypatch) -> FakeEngine:
    """The CLI's loader returns a fake engine (for wiring tests of the modes)."""
    engine = FakeEngine()
    monkeypatch.setattr(cli, "load_engine", lambda config, progress=None: engine)
    return engine


def test_import_is_light() -> None:
    code = (
        "import sys, smolchat.cli; "
        "print(sorted(m for m in ('torch', 'textual', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_version() -> None:
    result = runner.invoke(cli.cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"smolchat {smolchat.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        ["--temperature", "-1"],
        ["--temperature", "hot"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--top-k", "-3"],
        ["--min-p", "2"],
        ["--repetition-penalty", "0"],
        ["--max-new-tokens", "0"],
        ["--seed", "-1"],
        ["--device", "gpu"],
        ["--dtype", "fp8"],
        ["--quantize", "int8"],
        ["--theme", "solarized"],
        ["--no-such-option"],
    ],
)
def test_bad_option_value_is_a_usage_error(args: list[str], fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["model", *args, "-p", "hi"])
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output
    assert not fake.calls  # nothing was run


def test_missing_model_is_one_line_exit_1() -> None:
    result = run_cli(str(ROOT / "no-such-model"), "-p", "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smolchat: error: ")
    assert "no-such-model" in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_model_is_refused_before_the_tui_starts(monkeypatch, tmp_path) -> None:
    """No full-screen loading screen (nor its escape codes on stdout) for a path that is not
    there: one line, exit 1, as with -p."""
    from smolchat.tui.app import SmolchatApp

    def started(self, *args, **kwargs):
        raise AssertionError("the TUI started")

    monkeypatch.setattr(SmolchatApp, "run", started)
    for model in (str(tmp_path / "nope.gguf"), "not a model name"):
        result = runner.invoke(cli.cli, [model])
        assert result.exit_code == 1, result.output
        assert "model not found" in result.stderr and "\n" not in result.stderr.strip()


def test_debug_shows_the_traceback() -> None:
    result = run_cli(str(ROOT / "no-such-model"), "-p", "hi", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "smolchat: error: " in result.stderr


def test_one_shot_prints_the_answer_alone(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "write add"])
    assert result.exit_code == 0, result.output
    answer = CODE_REPLY.split("</think>\n", 1)[1]
    assert result.stdout == answer + "\n"
    assert "one-liner" not in result.stdout and "one-liner" not in result.stderr


def test_one_shot_show_reasoning_goes_to_stderr(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "write add", "--show-reasoning"])
    assert result.exit_code == 0
    assert "A one-liner will do." in result.stderr
    assert "one-liner" not in result.stdout and "def add" in result.stdout


def test_one_shot_reads_stdin_without_its_newline(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "-"], input="line one\nline two\n")
    assert result.exit_code == 0
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "<|im_start|>user\nline one\nline two<|im_end|>" in prompt


def test_options_reach_the_session(fake: FakeEngine, tmp_path: Path) -> None:
    args = [
        "m", "-p", "hi", "--system", "Be brief.", "--no-think", "--temperature", "0.1",
        "--top-p", "0.5", "--top-k", "7", "--seed", "3", "--max-new-tokens", "5",
        "--transcripts", str(tmp_path),
    ]  # fmt: skip
    result = runner.invoke(cli.cli, args)
    assert result.exit_code == 3, result.output  # the reply is cut at 5 tokens (README)
    call = fake.calls[-1]
    sampling = call["sampling"]
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (
        0.1, 0.5, 7, 3,
    )  # fmt: skip
    assert call["max_new_tokens"] == 5
    prompt = fake.tokenizer.decode(call["ids"])
    assert prompt.startswith("<|im_start|>system\nBe brief.")
    assert prompt.endswith("<think>\n\n</think>\n")  # --no-think
    assert len(list(tmp_path.glob("*.md"))) == 1  # --transcripts: the answer is kept


LOADING = ["--device", "cpu", "--dtype", "FLOAT32", "--quantize", "nf4", "--exact"]
LOADED = {"model": "m", "device": "cpu", "dtype": "float32", "quantize": "nf4", "exact": True}


def test_the_loading_options_reach_the_loader_in_chat_and_serve(monkeypatch) -> None:
    """MODEL, --device, --dtype, --quantize and --exact mean the same to both commands."""
    seen: list[cli.RunConfig] = []

    def load(config, progress=None):
        seen.append(config)
        return FakeEngine()

    monkeypatch.setattr(cli, "load_engine", load)
    monkeypatch.setattr(cli, "serve_mode", lambda config, *args: seen.append(config) or 0)
    assert runner.invoke(cli.cli, ["m", "-p", "hi", *LOADING]).exit_code == 0
    assert runner.invoke(cli.cli, ["serve", "m", *LOADING]).exit_code == 0
    assert [{k: getattr(c, k) for k in LOADED} for c in seen] == [LOADED, LOADED]
    seen.clear()
    assert runner.invoke(cli.cli, ["-p", "hi"]).exit_code == 0
    assert runner.invoke(cli.cli, ["serve"]).exit_code == 0
    unset = {"model": cli.DEFAULT_MODEL, "device": "auto", "dtype": "auto", "quantize": None}
    assert [{k: getattr(c, k) for k in LOADED} for c in seen] == [{**unset, "exact": None}] * 2


def test_one_shot_is_not_autosaved_by_default(fake, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runner.invoke(cli.cli, ["m", "-p", "hi"]).exit_code == 0
    assert not list(tmp_path.rglob("*.md"))


def test_empty_prompt_is_an_error(fake: FakeEngine) -> None:
    result = runner.invoke(cli.cli, ["m", "-p", "-"], input="\n")
    assert result.exit_code == 1 and "prompt is empty" in result.stderr


def test_generation_error_in_one_shot_exits_1(fake: FakeEngine) -> None:
    fake.fail_after = 2
    result = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "fake engine failure" in result.stderr


def test_plain_mode_runs_commands_and_messages(fake, tmp_path) -> None:
    lines = "hello\n/set temperature 0.3\n/reasoning hide\nagain\n/save {}\n/exit\n"
    target = tmp_path / "plain.md"
    result = runner.invoke(cli.cli, ["m", "--plain", "--no-autosave"], input=lines.format(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("def add(a, b):") == 2
    assert "A one-liner will do." in result.stdout  # shown by default, then hidden
    assert result.stdout.count("A one-liner will do.") == 1
    assert fake.calls[-1]["sampling"].temperature == 0.3
    assert target.exists() and "again" in target.read_text()


def test_plain_mode_reports_bad_commands(fake) -> None:
    result = runner.invoke(cli.cli, ["m", "--plain", "--no-autosave"], input="/nope\n")
    assert result.exit_code == 0  # EOF ends the REPL
    assert "error: unknown command /nope" in result.stdout


def test_plain_mode_ctrl_c_stops_the_reply_then_quits() -> None:
    script = textwrap.dedent(
        """
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a CI job may ignore it
        from rich.console import Console
        from smolchat.chat.session import ChatSession
        from smolchat.plain import PlainChat
        from tests.tui.fake_engine import FakeEngine
        words = " ".join(f"w{i}" for i in range(400))
        engine = FakeEngine(lambda q: words, delay=0.02)
        session = ChatSession(engine)
        lines = iter(["count", "/stats"])
        def read(prompt):
            print("PROMPT", flush=True)
            try:
                return next(lines)
            except StopIteration:
                import time
                time.sleep(30)  # Ctrl+C (SIGINT) lands here: the REPL quits
        code = PlainChat(session, Console(force_terminal=False, width=200)).run(read)
        last = session.messages[-1]
        print("RESULT", code, last.finish_reason, len(last.content.split()), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    output = []
    deadline = time.monotonic() + 60
    while "w20" not in "".join(output):  # the reply is streaming
        output.append(proc.stdout.read(1))
        assert time.monotonic() < deadline and proc.poll() is None, "".join(output)
    proc.send_signal(signal.SIGINT)
    while "".join(output).count("PROMPT") < 3:  # stopped; /stats ran; idle at the prompt
        output.append(proc.stdout.read(1))
        assert time.monotonic() < deadline and proc.poll() is None, "".join(output)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    text = "".join(output) + rest
    assert proc.returncode == 0, err
    assert "stopped" in text and "context:" in text
    result = text.split("RESULT ")[1].split()
    assert result[:2] == ["0", "cancelled"] and 20 <= int(result[2]) < 400


def test_tui_load_failure_is_one_line_exit_1(monkeypatch) -> None:
    from smolchat.tui.app import SmolchatApp

    original = SmolchatApp.run
    monkeypatch.setattr(SmolchatApp, "run", lambda self: original(self, headless=True))
    result = runner.invoke(cli.cli, [str(ROOT / "no-such-model")])
    assert result.exit_code == 1
    assert result.stderr.startswith("smolchat: error: model not found")
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_one_shot_real_gguf_answers_paris(smollm2_gguf: Path) -> None:
    question = "What is the capital of France?"
    result = run_cli(str(smollm2_gguf), "-p", question, "--temperature", "0", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and result.stdout.endswith("\n")
    piped = run_cli(
        str(smollm2_gguf), "-p", "-", "--temperature", "0", input=question + "\n", timeout=300
    )
    assert piped.returncode == 0 and piped.stdout == result.stdout


def test_one_shot_tiny_model_equals_the_session(tiny_model: Path) -> None:
    from smolchat.chat.session import ChatSession

    engine = smolchat.load(str(tiny_model), device="cpu")
    session = ChatSession(engine)
    session.settings.sampling = session.settings.sampling.with_(temperature=0.0)
    session.settings.max_new_tokens = 12
    *_, finished = session.send("hello")
    expected = finished.answer.lstrip()
    assert expected  # the seeded tiny model does answer something
    result = run_cli(str(tiny_model), "-p", "hello", "--temperature", "0", "--max-new-tokens", "12")
    assert result.returncode == (0 if finished.finish_reason == "stop" else 3), result.stderr
    assert result.stdout == expected + ("" if expected.endswith("\n") or not expected else "\n")


def test_plain_resume_continues_the_latest_transcript(fake, tmp_path) -> None:
    first = runner.invoke(
        cli.cli, ["m", "--plain", "--transcripts", str(tmp_path)], input="remember 42\n/exit\n"
    )
    assert first.exit_code == 0 and len(list(tmp_path.glob("*.md"))) == 1
    second = runner.invoke(
        cli.cli,
        ["m", "--plain", "--resume", "--transcripts", str(tmp_path)],
        input="what number?\n/exit\n",
    )
    assert second.exit_code == 0 and "Resumed" in second.stdout
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "remember 42" in prompt and "what number?" in prompt


def test_resume_without_transcripts_says_so(fake, tmp_path) -> None:
    result = runner.invoke(
        cli.cli, ["m", "--plain", "--resume", "--transcripts", str(tmp_path)], input="/exit\n"
    )
    assert result.exit_code == 0 and "No transcript to resume" in result.stdout


def test_one_shot_unwritable_transcripts_folder_is_an_error(fake, tmp_path) -> None:
    """trial3 #3: -p with a --transcripts folder that cannot be written saved nothing, rc 0."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(cli.cli, ["m", "-p", "hi", "--transcripts", str(blocker / "sub")])
    assert result.exit_code == 1
    assert result.stdout == CODE_REPLY.split("</think>\n", 1)[1] + "\n"  # the answer is out
    assert result.stderr.startswith("smolchat: error: could not save the transcript")
    assert result.stderr.count("\n") == 1 and "--transcripts" in result.stderr


def test_gguf_with_a_damaged_tensor_shape_is_one_line(smollm2_gguf: Path, tmp_path) -> None:
    """trial3 #7: a patched dimension gave 'internal error: RuntimeError: Sizes of tensors...'."""
    import gguf

    copy = tmp_path / smollm2_gguf.name
    copy.write_bytes(smollm2_gguf.read_bytes())
    reader = gguf.GGUFReader(str(copy))
    field = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight").field
    dims_at = field.offset + sum(part.nbytes for part in field.parts[:3])  # name len, name, n_dims
    assert int(field.parts[3][0]) == 576  # ggml order: the row length (hidden size) first
    del reader
    with open(copy, "r+b") as f:
        f.seek(dims_at)
        f.write((544).to_bytes(8, "little"))
    result = runner.invoke(cli.cli, [str(copy), "-p", "hi"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"smolchat: error: {copy.name}: tensor blk.0.attn_q.weight has shape (576, 544), the "
        "file's header implies (576, 576): the file is damaged; download it again\n"
    )


def test_one_shot_context_full_gives_the_options_not_slash_commands(tiny_model: Path) -> None:
    """trial3 #11: -p advised '/set max_new_tokens N', 'even with all earlier turns dropped'."""
    result = runner.invoke(cli.cli, [str(tiny_model), "-p", "-"], input="apple " * 5000)
    assert result.exit_code == 1
    line = result.stderr
    assert line.startswith("smolchat: error: this turn needs ") and line.count("\n") == 1
    assert "but the context holds 4096: shorten the prompt" in line
    assert line.endswith("or lower --max-new-tokens\n")
    assert "/set" not in line and "earlier turns" not in line
