"""The command line's chat library, config file, presets and files: ``smolchat chats``,
``--resume ID``, precedence of the settings' layers, broken configs, ``-f``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from smolchat import cli
from smolchat.chat.library import ChatLibrary
from tests.test_library import make_chat
from tests.tui.fake_engine import FakeEngine

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch) -> FakeEngine:
    engine = FakeEngine()
    loaded: list[str] = []

    def load(config, progress=None):
        loaded.append(config.model)
        return engine

    monkeypatch.setattr(cli, "load_engine", load)
    engine.loaded = loaded  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    folder = tmp_path / "chats"
    folder.mkdir()
    peru = "Tell me about Peru"
    make_chat(folder, "2026-11-28_old", peru, reply="Lima is its capital.", age_s=300)
    make_chat(folder, "2026-11-29_mid", "Second chat", turns=2, age_s=200)
    make_chat(folder, "2026-11-30_new", "Newest chat", reasoning="zebra thoughts", age_s=100)
    return folder


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "xdg"
    (home / "smolchat").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "smolchat" / "config.toml"


def sampling(fake: FakeEngine):
    return fake.calls[-1]["sampling"]


# --- smolchat chats ----------------------------------------------------------------------------


def test_chats_lists_newest_first_one_line_each(chats: Path) -> None:
    result = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("  ")[-1] for line in lines] == [
        "Newest chat",
        "Second chat",
        "Tell me about Peru",
    ]
    ids = [e.id for e in ChatLibrary(chats).entries()]
    assert [line.split()[2] for line in lines] == ids
    assert "2 exchanges" in lines[1] and "1 exchange " in lines[0] and "SmolLM3-3B" in lines[0]
    limited = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--limit", "1"])
    assert len(limited.stdout.splitlines()) == 1


def test_chats_ends_a_cut_model_name_with_an_ellipsis(tmp_path: Path) -> None:
    long_name = "SmolLM2-135M-Instruct.Q4_1-with-a-long-suffix.gguf"
    make_chat(tmp_path, "2026-11-30_long", "Long model", model=f"/models/{long_name}")
    make_chat(tmp_path, "2026-11-30_wide", "Wide model", model="模型" * 20, age_s=50)
    result = runner.invoke(cli.cli, ["chats", "--transcripts", str(tmp_path)])
    assert result.exit_code == 0, result.output
    long_line, wide_line = result.stdout.splitlines()
    assert f"  {long_name[:23]}…  Long model" in long_line  # 24 cells, the last one …
    assert long_name not in long_line
    # cut in cells (each of these letters takes two): 11 of them fill 22 of the 24 cells, a
    # space and the ellipsis the last two; the titles still line up on a terminal
    assert f"  {'模型' * 5}模 …  Wide model" in wide_line
    assert cell_len(long_line.split("Long model")[0]) == cell_len(wide_line.split("Wide model")[0])


def test_chats_json_and_search_in_replies_and_reasoning(chats: Path) -> None:
    result = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["title"] for r in rows] == ["Newest chat", "Second chat", "Tell me about Peru"]
    assert set(rows[0]) >= {"id", "title", "updated", "exchanges", "model", "path"}
    found = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--search", "LIMA"])
    assert found.exit_code == 0
    assert found.stdout.splitlines()[0].endswith("Tell me about Peru")
    assert found.stdout.splitlines()[1].strip() == "reply: Lima is its capital."
    zebra = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "-s", "zebra", "--json"])
    assert [json.loads(x)["where"] for x in zebra.stdout.splitlines()] == ["reasoning"]
    none = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "-s", "okapi"])
    assert none.exit_code == 0 and none.stdout == "" and "no chat mentions 'okapi'" in none.stderr


def test_chats_delete_goes_to_the_trash_and_restore_brings_it_back(chats: Path) -> None:
    newest = ChatLibrary(chats).entries()[0]
    gone = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--delete", newest.id])
    assert gone.exit_code == 0 and "moved to the trash" in gone.stdout
    assert not newest.path.exists()
    trash = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--trash"])
    assert trash.stdout.strip().endswith("Newest chat")
    back = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--restore", newest.id])
    assert back.exit_code == 0 and newest.path.exists()
    again = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--restore", newest.id])
    assert again.exit_code == 1 and again.stderr.count("\n") == 1
    assert "no chat with id" in again.stderr
    assert "`smolchat chats --trash` lists them" in again.stderr  # trial3 #11: said `chats`


def test_chats_search_for_nothing_asks_for_a_word(chats: Path) -> None:
    for empty in ("", "  "):
        result = runner.invoke(cli.cli, ["chats", "--transcripts", str(chats), "--search", empty])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == (
            "smolchat: error: --search needs a word to look for: smolchat chats --search WORD\n"
        )


def test_a_subcommand_name_is_the_subcommand_and_dot_slash_is_a_model(fake, chats) -> None:
    as_model = runner.invoke(cli.cli, ["./chats", "-p", "hi"])
    assert as_model.exit_code == 0, as_model.output
    assert fake.loaded == ["./chats"]  # type: ignore[attr-defined]
    hub = runner.invoke(cli.cli, ["HuggingFaceTB/SmolLM3-3B", "-p", "hi"])
    assert hub.exit_code == 0 and fake.loaded[-1] == "HuggingFaceTB/SmolLM3-3B"  # type: ignore[attr-defined]
    sub = runner.invoke(cli.cli, ["chats", "--help"])
    assert sub.exit_code == 0 and "--search" in sub.stdout
    assert set(cli.SUBCOMMANDS) >= {"chats", "config"}


# --- --resume ID -------------------------------------------------------------------------------


def test_resume_by_id_prefix_continues_that_chat(fake, chats: Path) -> None:
    peru = next(e for e in ChatLibrary(chats).entries() if "Peru" in e.title)
    result = runner.invoke(
        cli.cli,
        ["m", "--plain", "--transcripts", str(chats), "--resume", peru.id[:5]],
        input="and Chile?\n/exit\n",
    )
    assert result.exit_code == 0, result.output
    assert f"Resumed {peru.path.name}" in result.stdout
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "Tell me about Peru" in prompt and "and Chile?" in prompt
    assert "Newest chat" not in prompt


def test_resume_by_path_and_bare_resume_is_the_newest(fake, chats: Path) -> None:
    bare = runner.invoke(cli.cli, ["m", "--transcripts", str(chats), "--resume", "-p", "go on"])
    assert bare.exit_code == 0, bare.output
    assert "Newest chat" in fake.tokenizer.decode(fake.calls[-1]["ids"])
    mid = chats / "2026-11-29_mid.md"
    by_path = runner.invoke(
        cli.cli, ["m", "-p", "go on", "--transcripts", str(chats), "--resume", str(mid)]
    )
    assert by_path.exit_code == 0, by_path.output
    assert "Second chat" in fake.tokenizer.decode(fake.calls[-1]["ids"])
    # with a transcripts folder the answer is saved into the resumed file: now the newest
    assert ChatLibrary(chats).entries()[0].path == mid


def test_an_unknown_id_is_one_line_before_the_model_loads(fake, chats: Path) -> None:
    result = runner.invoke(
        cli.cli, ["m", "--plain", "--transcripts", str(chats), "--resume", "fffffff"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("smolchat: error: no chat with id 'fffffff'")
    assert result.stderr.count("\n") == 1
    assert fake.loaded == []  # type: ignore[attr-defined]


def _damage(path: Path) -> None:
    """Break the JSON of the first metadata comment (as the trial did)."""
    text = path.read_text(encoding="utf-8")
    start = text.index("<!-- smolchat:")
    path.write_text(text[:start] + text[start:].replace("{", "{{", 1), encoding="utf-8")


@pytest.mark.parametrize("mode", [["-p", "go on"], ["--plain"]])
def test_resume_of_a_damaged_or_foreign_file_stops_before_the_model_loads(
    fake, chats: Path, tmp_path: Path, mode: list[str]
) -> None:
    """trial3 #4: it said 'Could not resume' and went on with a fresh chat (exit 0)."""
    damaged = chats / "2026-11-29_mid.md"
    _damage(damaged)
    foreign = tmp_path / "notes.md"
    foreign.write_text("# my notes\n\nnot a chat\n", encoding="utf-8")
    for path in (damaged, foreign):
        args = ["m", *mode, "--transcripts", str(chats), "--resume", str(path)]
        result = runner.invoke(cli.cli, args, input="/exit\n")
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"smolchat: error: {path}"), result.stderr
        assert "not a valid smolchat transcript" in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert fake.loaded == []  # type: ignore[attr-defined]


def test_bare_resume_of_a_damaged_newest_chat_names_it_and_how_to_pick(fake, chats) -> None:
    newest = chats / "2026-11-30_new.md"
    _damage(newest)
    result = runner.invoke(cli.cli, ["m", "--transcripts", str(chats), "--resume", "-p", "go"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("smolchat: error: the newest chat cannot be resumed: ")
    assert str(newest) in result.stderr and "smolchat chats" in result.stderr
    assert "--resume ID" in result.stderr and result.stderr.count("\n") == 1
    assert fake.loaded == []  # type: ignore[attr-defined]


def _saved_chat(folder: Path, temperature: float) -> Path:
    from smolchat.chat.transcript import Transcript, write_transcript

    data = Transcript(
        messages=[{"role": "user", "content": "saved question"},
                  {"role": "assistant", "content": "saved answer", "finish_reason": "stop"}],
        settings={"temperature": temperature, "top_p": 0.9, "thinking": True},
        model="m",
    )  # fmt: skip
    return write_transcript(folder / "saved.md", data)


def test_resume_keeps_saved_settings_unless_given_on_the_command_line(
    fake, tmp_path: Path, config_file: Path, monkeypatch
) -> None:
    """Issue 10 item 6: --resume --temperature 0.1 used to run at the saved 0.6."""
    _saved_chat(tmp_path, 0.6)
    args = ["m", "--transcripts", str(tmp_path), "--resume", "saved", "-p", "next"]
    given = runner.invoke(cli.cli, [*args, "--temperature", "0.1"])
    assert given.exit_code == 0, given.output
    assert sampling(fake).temperature == 0.1 and sampling(fake).top_p == 0.9
    assert "from the command line: temperature 0.1 (the chat had 0.6)" in given.stderr
    # the config file and the environment do not override a saved chat; the app says so
    _saved_chat(tmp_path, 0.6)  # (the run above saved its 0.1 into the chat)
    config_file.write_text("temperature = 0.3\n")
    monkeypatch.setenv("SMOLCHAT_TOP_P", "0.5")
    kept = runner.invoke(cli.cli, args)
    assert kept.exit_code == 0, kept.output
    assert sampling(fake).temperature == 0.6 and sampling(fake).top_p == 0.9
    assert "kept the chat's temperature 0.6 over config file 0.3" in kept.stderr
    assert "top_p 0.9 over environment 0.5" in kept.stderr


# --- the config file and its layers -----------------------------------------------------------


def test_model_defaults_when_nothing_is_set(fake, config_file: Path) -> None:
    assert runner.invoke(cli.cli, ["m", "-p", "hi"]).exit_code == 0
    assert (sampling(fake).temperature, sampling(fake).top_p) == (0.6, 0.95)  # generation_config


def test_config_file_beats_the_model_defaults(fake, config_file: Path) -> None:
    config_file.write_text('temperature = 0.3\nsystem = "From the file."\nthink = false\n')
    assert runner.invoke(cli.cli, ["m", "-p", "hi"]).exit_code == 0
    assert sampling(fake).temperature == 0.3 and sampling(fake).top_p == 0.95
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "From the file." in prompt and prompt.endswith("<think>\n\n</think>\n")


def test_preset_beats_the_file_top_level(fake, config_file: Path) -> None:
    config_file.write_text(
        'temperature = 0.3\n[presets.coder]\nsystem = "Review code."\ntemperature = 0.2\n'
    )
    assert runner.invoke(cli.cli, ["m", "-p", "hi", "--preset", "coder"]).exit_code == 0
    assert sampling(fake).temperature == 0.2
    assert "Review code." in fake.tokenizer.decode(fake.calls[-1]["ids"])
    text = config_file.read_text()
    config_file.write_text(text.replace("[presets", 'preset = "coder"\n[presets'))
    assert runner.invoke(cli.cli, ["m", "-p", "hi"]).exit_code == 0  # the file's default preset
    assert sampling(fake).temperature == 0.2


def test_environment_beats_preset_and_file(fake, config_file: Path, monkeypatch) -> None:
    config_file.write_text("temperature = 0.3\n[presets.p]\ntemperature = 0.2\n")
    monkeypatch.setenv("SMOLCHAT_TEMPERATURE", "0.7")
    monkeypatch.setenv("SMOLCHAT_THINK", "no")
    assert runner.invoke(cli.cli, ["m", "-p", "hi", "--preset", "p"]).exit_code == 0
    assert sampling(fake).temperature == 0.7
    assert fake.tokenizer.decode(fake.calls[-1]["ids"]).endswith("<think>\n\n</think>\n")


def test_command_line_beats_everything(fake, config_file: Path, monkeypatch) -> None:
    config_file.write_text("temperature = 0.3\n")
    monkeypatch.setenv("SMOLCHAT_TEMPERATURE", "0.7")
    assert runner.invoke(cli.cli, ["m", "-p", "hi", "--temperature", "0.05"]).exit_code == 0
    assert sampling(fake).temperature == 0.05


def test_print_config_names_each_source(config_file: Path, monkeypatch) -> None:
    config_file.write_text('temperature = 0.3\ntheme = "nord"\n[presets.p]\ntop_p = 0.5\n')
    monkeypatch.setenv("SMOLCHAT_TOP_K", "5")
    result = runner.invoke(cli.cli, ["--print-config", "--preset", "p", "--seed", "3"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert rows["temperature"].endswith(f"config file ({config_file}:1)")
    assert rows["top_p"].endswith(f"preset (p, {config_file}:4)")
    assert rows["top_k"].endswith("environment (SMOLCHAT_TOP_K)")
    assert rows["seed"].endswith("command line")
    assert rows["min_p"].split()[1:3] == ["0.0", "default"]  # the value in force, not "-"
    same = runner.invoke(cli.cli, ["config"])
    assert same.exit_code == 0 and f"config file ({config_file}:2)" in same.stdout


def test_print_config_shows_the_values_in_force_and_whole_paths(
    config_file: Path, tmp_path: Path, monkeypatch
) -> None:
    """Settings nobody set showed "-" and "model / built-in default"; long paths were cut."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    model = tmp_path / "models" / "a-model-folder-with-a-name-well-over-forty-columns"
    model.mkdir(parents=True)
    (model / "generation_config.json").write_text('{"temperature": 0.3, "top_k": 20}')
    result = runner.invoke(cli.cli, [str(model), "--print-config"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in result.stdout.splitlines()}
    assert rows["model"] == [str(model), "command line"]  # whole, on its one line
    assert rows["temperature"] == ["0.3", f"model ({model}/generation_config.json)"]
    assert rows["top_k"] == ["20", f"model ({model}/generation_config.json)"]
    assert rows["top_p"] == ["0.95", "default"]  # the file does not set it: the built-in value
    transcripts = tmp_path / "data" / "smolchat" / "transcripts"
    assert rows["transcripts"] == [str(transcripts), "default"]
    expected = {
        "server": "none",
        "device": "auto",
        "dtype": "auto",
        "quantize": "none",
        "seed": "none",
        "max_new_tokens": "4096",
        "think": "true",
        "theme": "dark",
        "message_width": "110",
        "autosave": "true",
        "max_file_kb": "100",
        "preset": "none",
    }
    assert {k: rows[k][0] for k in expected} == expected
    assert all(rows[k][1].startswith("default") for k in expected)
    assert rows["max_new_tokens"][1] == "default (2048 with -p)"
    # a hub model that is not in the local cache: the built-in values, and what may change them
    hub = runner.invoke(cli.cli, ["nobody/not-cached-anywhere", "--print-config"])
    hub_rows = {line.split()[0]: line for line in hub.stdout.splitlines()}
    assert hub_rows["temperature"].split()[1] == "0.6"
    assert hub_rows["temperature"].endswith("default (unless generation_config.json sets it)")
    # a GGUF file has no generation config: the built-in values are the ones in force
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    as_file = runner.invoke(cli.cli, [str(gguf), "--print-config"])
    file_rows = {line.split()[0]: line.split()[1:] for line in as_file.stdout.splitlines()}
    assert file_rows["temperature"] == ["0.6", "default"]


def test_print_config_puts_a_source_that_does_not_fit_the_terminal_on_its_own_line() -> None:
    path = "/home/someone/models/a-model-folder-with-a-long-name"
    rows = [("model", path, "command line"), ("top_p", "0.95", "default")]
    assert cli.config_lines(rows, width=64) == [
        f"model  {path}",
        "       command line",
        "top_p  0.95  default",
    ]
    assert cli.config_lines(rows) == [f"model  {path}  command line", "top_p  0.95  default"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temperature = \n", ":1: invalid value; fix the TOML there"),
        ('[presets.a]\nsystem = "x"\ntemprature = 0.2\n', ":3: unknown key 'temprature'; did you"),
        ("temperature = 11\n", ":1: temperature must be between 0.0 and 10.0, got 11.0"),
        ('think = "yes"\n', ":1: think must be true or false, got 'yes'"),
        ("max_new_tokens = 0\n", ":1: max_new_tokens must be 1 or more"),
        ('theme = "solarized"\n', ":1): unknown theme 'solarized'; themes: "),
        ('preset = "nope"\n', ":1: no preset 'nope'; define one as a [presets.NAME] table"),
        ('device = "gpu"\n', ":1: device 'gpu' is not a device; use auto, cpu"),
    ],
)
def test_a_broken_config_is_one_line_naming_file_and_line(
    fake, config_file: Path, text: str, expected: str
) -> None:
    config_file.write_text(text)
    result = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"smolchat: error: {config_file}") or "config file" in (
        result.stderr
    )
    assert expected in result.stderr
    assert fake.loaded == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("temprature = 0.2", ":2: unknown key 'temprature'; did you mean 'temperature'?"),
        ("temperature = 11", ":2: temperature must be between 0.0 and 10.0, got 11.0"),
        ('theme = "solarized"', ":2): unknown theme 'solarized'; themes: "),
        ('preset = "nope"', ":2: no preset 'nope'; define one as a [presets.NAME] table"),
    ],
)
def test_a_typo_in_the_config_leaves_chats_and_print_config_working(
    fake, chats: Path, config_file: Path, bad: str, expected: str
) -> None:
    """The newcomer's typo stopped `smolchat chats` and `--print-config` too; now only the
    chat itself refuses the file (test_a_broken_config_is_one_line_naming_file_and_line)."""
    config_file.write_text(f'top_p = 0.5\n{bad}\ntranscripts = "{chats}"\n')
    listed = runner.invoke(cli.cli, ["chats"])
    assert listed.exit_code == 0, listed.output
    assert [line.split("  ")[-1] for line in listed.stdout.splitlines()] == [
        "Newest chat",
        "Second chat",
        "Tell me about Peru",
    ]  # the file's good lines still count: the folder came from it
    assert listed.stderr.startswith("smolchat: warning: ") and str(config_file) in listed.stderr
    assert listed.stderr.count("\n") == 1 and expected in listed.stderr
    for args in (["--print-config"], ["config"]):
        shown = runner.invoke(cli.cli, args)
        assert shown.exit_code == 1, shown.output
        rows = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
        assert rows["top_p"].endswith(f"config file ({config_file}:1)")
        assert rows["transcripts"].endswith(f"config file ({config_file}:3)")
        assert "1 problem: left out below" in shown.stdout.splitlines()[0]
        assert shown.stderr.count("\n") == 1 and "Traceback" not in shown.stderr
        assert shown.stderr.startswith("smolchat: error: ") and str(config_file) in shown.stderr
        assert expected in shown.stderr and "fix it" in shown.stderr
    # the chat itself still refuses it: one line, exit status 1, before loading the model
    refused = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert expected in refused.stderr
    assert fake.loaded == []  # type: ignore[attr-defined]


def test_a_config_that_is_no_toml_leaves_chats_and_print_config_working(
    config_file: Path, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config_file.write_text("temperature = \n")
    listed = runner.invoke(cli.cli, ["chats"])
    assert listed.exit_code == 0, listed.output
    warning, nothing = listed.stderr.splitlines()
    assert warning.startswith(f"smolchat: warning: {config_file}:1: invalid value; fix the TOML")
    assert nothing.startswith("no saved chats in ")
    shown = runner.invoke(cli.cli, ["--print-config", "--temperature", "0.1"])
    assert shown.exit_code == 1
    assert "temperature" in shown.stdout and "command line" in shown.stdout
    assert shown.stderr.count("\n") == 1 and ":1: invalid value; fix the TOML" in shown.stderr


def test_a_bad_variable_leaves_chats_and_print_config_working(chats: Path, monkeypatch) -> None:
    monkeypatch.setenv("SMOLCHAT_TOP_K", "many")
    monkeypatch.setenv("SMOLCHAT_TRANSCRIPTS", str(chats))
    listed = runner.invoke(cli.cli, ["chats"])
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 3
    assert listed.stderr == (
        "smolchat: warning: environment variable SMOLCHAT_TOP_K='many': "
        "must be a whole number, got 'many' (ignored here)\n"
    )
    shown = runner.invoke(cli.cli, ["config"])
    assert shown.exit_code == 1 and "environment (SMOLCHAT_TRANSCRIPTS)" in shown.stdout
    assert shown.stderr.count("\n") == 1 and "SMOLCHAT_TOP_K='many'" in shown.stderr


def test_a_bad_environment_variable_is_one_line(fake, monkeypatch) -> None:
    monkeypatch.setenv("SMOLCHAT_TEMPRATURE", "0.2")
    result = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert result.exit_code == 1 and "did you mean SMOLCHAT_TEMPERATURE?" in result.stderr
    monkeypatch.delenv("SMOLCHAT_TEMPRATURE")
    monkeypatch.setenv("SMOLCHAT_TOP_K", "many")
    result = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert result.exit_code == 1
    assert "SMOLCHAT_TOP_K='many': must be a whole number" in result.stderr


# --- -f files with -p --------------------------------------------------------------------------


def test_f_puts_text_files_into_the_message(fake, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "notes.txt").write_text("buy milk\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "code.py").write_text("print(1)\n")
    result = runner.invoke(
        cli.cli, ["m", "-p", "summarize", "-f", "~/notes.txt", "-f", "sub/code.py"]
    )
    assert result.exit_code == 0, result.output
    prompt = fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "File `notes.txt`:\n\n```txt\nbuy milk\n```" in prompt
    assert "File `code.py`:\n\n```py\nprint(1)\n```\n\nsummarize" in prompt
    assert "smolchat: attached notes.txt (" in result.stderr and " tokens)" in result.stderr


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", [], "is a binary file; only text files can be read"),
        (b"caf\xe9", [], "is not UTF-8 text (byte 3)"),
        (b"x" * 3000, ["--max-file-kb", "2"], "is 3 KB, over the 2 KB limit"),
        (None, [], "no such file: "),
    ],
)
def test_f_refuses_binary_huge_and_missing_files(fake, tmp_path, content, extra, expected) -> None:
    path = tmp_path / "f.bin"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(cli.cli, ["m", "-p", "hi", "-f", str(path), *extra])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert fake.loaded == []  # type: ignore[attr-defined]


def test_f_without_p_is_a_usage_error(fake, tmp_path) -> None:
    result = runner.invoke(cli.cli, ["m", "-f", str(tmp_path)])
    assert result.exit_code == 2 and "-f/--file goes with -p" in result.output


def test_max_file_kb_can_come_from_the_config(fake, tmp_path, config_file: Path) -> None:
    config_file.write_text("max_file_kb = 1\n")
    (tmp_path / "big.txt").write_text("y" * 2048)
    result = runner.invoke(cli.cli, ["m", "-p", "hi", "-f", str(tmp_path / "big.txt")])
    assert result.exit_code == 1 and "over the 1 KB limit" in result.stderr
    assert os.path.exists(tmp_path / "big.txt")


def test_a_preset_named_on_the_command_line_wins_over_a_resumed_chat(
    fake, tmp_path: Path, config_file: Path
) -> None:
    _saved_chat(tmp_path, 0.6)
    config_file.write_text('[presets.cold]\ntemperature = 0.05\nsystem = "Be cold."\n')
    args = ["m", "--transcripts", str(tmp_path), "--resume", "saved", "-p", "next"]
    result = runner.invoke(cli.cli, [*args, "--preset", "cold"])
    assert result.exit_code == 0, result.output
    assert sampling(fake).temperature == 0.05
    assert "Be cold." in fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert "temperature 0.05 (the chat had 0.6)" in result.stderr


def test_other_smolchat_variables_are_not_settings(fake, monkeypatch) -> None:
    """Switches of other parts (and a CI's SMOLCHAT_CI) are no config errors."""
    switches = ("SMOLCHAT_CI", "SMOLCHAT_NO_CUDA_GRAPHS", "SMOLCHAT_CPU_STEP", "SMOLCHAT_CACHE_DIR")
    for var in switches:
        monkeypatch.setenv(var, "1")
    result = runner.invoke(cli.cli, ["m", "-p", "hi"])
    assert "no such setting" not in result.stderr
    assert result.exit_code == 0, result.stderr


# --- --resume without MODEL: the chat's own model ---------------------------------------------


def test_resume_without_a_model_loads_the_chats_hub_model(fake, tmp_path: Path) -> None:
    folder = tmp_path / "chats"
    folder.mkdir()
    make_chat(folder, "2026-11-30_hub", "On the hub", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    result = runner.invoke(cli.cli, ["--transcripts", str(folder), "--resume", "-p", "go on"])
    assert result.exit_code == 0, result.output
    assert fake.loaded == ["HuggingFaceTB/SmolLM2-135M-Instruct"]  # type: ignore[attr-defined]
    given = runner.invoke(cli.cli, ["m", "--transcripts", str(folder), "--resume", "-p", "go"])
    assert given.exit_code == 0 and fake.loaded[-1] == "m"  # type: ignore[attr-defined]


def test_a_chat_through_a_server_records_it_and_resume_names_it(fake, tmp_path: Path) -> None:
    """trial3 #8: --resume of a --server chat advised 'smolchat SERVED-ID --resume ID'."""
    from smolchat.chat.transcript import read_transcript

    folder = tmp_path / "chats"
    url = "http://user:secret@127.0.0.1:8123/v1/?key=secret"
    args = ["--server", url, "--transcripts", str(folder), "-p", "remember lima"]
    first = runner.invoke(cli.cli, args)
    assert first.exit_code == 0, first.output
    entry = ChatLibrary(folder).entries()[0]
    extra = read_transcript(entry.path).extra
    assert extra["server"] == "http://127.0.0.1:8123/v1"  # no credentials in the file
    assert "model_path" not in extra
    again = runner.invoke(cli.cli, ["--transcripts", str(folder), "--resume", "-p", "go on"])
    assert again.exit_code == 1
    served = read_transcript(entry.path).model
    assert again.stderr == (
        "smolchat: error: the chat was made through the server http://127.0.0.1:8123/v1; "
        f"give it: smolchat --server http://127.0.0.1:8123/v1 {served} --resume {entry.id}\n"
    )
    # the advice works: with --server the chat goes on (and stays recorded)
    args = ["--server", "http://127.0.0.1:8123/v1", "--transcripts", str(folder)]
    ok = runner.invoke(cli.cli, [*args, "--resume", entry.id, "-p", "go on"])
    assert ok.exit_code == 0, ok.output
    assert "remember lima" in fake.tokenizer.decode(fake.calls[-1]["ids"])
    assert read_transcript(entry.path).extra["server"] == "http://127.0.0.1:8123/v1"


def test_resume_without_a_model_uses_the_recorded_full_path(fake, tmp_path: Path) -> None:
    from smolchat.chat.transcript import read_transcript

    gguf = tmp_path / "models" / "tiny.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")  # the fake loader never opens it
    folder = tmp_path / "chats"
    first = runner.invoke(cli.cli, [str(gguf), "--transcripts", str(folder), "-p", "remember lima"])
    assert first.exit_code == 0, first.output
    entry = ChatLibrary(folder).entries()[0]
    assert read_transcript(entry.path).extra["model_path"] == str(gguf.resolve())
    again = runner.invoke(
        cli.cli, ["--transcripts", str(folder), "--resume", entry.id, "-p", "go on"]
    )
    assert again.exit_code == 0, again.output
    assert fake.loaded[-1] == str(gguf.resolve())  # type: ignore[attr-defined]


def test_resume_without_a_model_a_lost_file_name_is_one_line(fake, tmp_path: Path) -> None:
    folder = tmp_path / "chats"
    folder.mkdir()
    make_chat(folder, "2026-11-30_old", "Older chat", model="SmolLM2-135M-Instruct.Q4_1.gguf")
    entry = ChatLibrary(folder).entries()[0]
    result = runner.invoke(cli.cli, ["--transcripts", str(folder), "--resume", "-p", "go on"])
    assert result.exit_code == 1
    assert result.stderr == (
        "smolchat: error: the chat was made with SmolLM2-135M-Instruct.Q4_1.gguf; give it: "
        f"smolchat SmolLM2-135M-Instruct.Q4_1.gguf --resume {entry.id}\n"
    )
    assert fake.loaded == []  # type: ignore[attr-defined]


def test_help_names_the_default_model() -> None:
    """Rich read "[default: ...]" in MODEL's help as markup and dropped it."""
    result = runner.invoke(cli.cli, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "default: HuggingFaceTB/SmolLM3-3B" in result.stdout
    # the same for --server's MODEL and --api-key, and serve's --api-key, --served-model-name
    serve = runner.invoke(cli.cli, ["serve", "--help"], env={"COLUMNS": "200"})
    chat, served = (" ".join(r.stdout.replace("│", " ").split()) for r in (result, serve))
    assert "the served id (default: the first it lists)." in chat
    assert "the API key (default: $SMOLCHAT_API_KEY, then $OPENAI_API_KEY)." in chat
    assert "Bearer KEY' (default: $SMOLCHAT_API_KEY)." in served
    assert "send (default: the model's name)." in served
    for text in (chat, served):
        assert " . " not in f"{text} "  # what Rich left where it ate '[default: ...]'
