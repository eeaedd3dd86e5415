"""Every slash command with good, missing, invalid and extreme arguments (real tiny engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

import smolchat
from smolchat.chat.commands import (
    COMMANDS,
    CommandResult,
    HistoryChanged,
    Quit,
    ShowHelp,
    ShowReasoning,
    StreamReply,
    SwitchTheme,
    available_commands,
    command,
    complete,
    is_command,
    run_command,
)
from smolchat.chat.events import TurnFinished
from smolchat.chat.session import ChatSession
from smolchat.chat.settings import ChatSettings
from smolchat.chat.transcript import TranscriptStore
from smolchat.engine.types import SamplingParams
from smolchat.errors import CommandError, SmolchatError, TranscriptError


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    return smolchat.load(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture
def session(engine, tmp_path: Path) -> ChatSession:
    engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=6)
    return ChatSession(engine, settings=settings, store=TranscriptStore(tmp_path / "t"))


def state(session: ChatSession):
    return (session.settings.to_dict(), session.system_prompt, list(session.messages))


def chat(session: ChatSession, text: str = "Hello! What is the capital of France?") -> None:
    events = list(session.send(text))
    assert isinstance(events[-1], TurnFinished)


def refused(session: ChatSession, line: str, match: str) -> str:
    """The command fails with one line matching ``match`` and changes nothing."""
    before = state(session)
    with pytest.raises(CommandError, match=match) as info:
        run_command(session, line)
    assert "\n" not in str(info.value)
    assert state(session) == before
    return str(info.value)


# --- recognising commands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/help", True),
        ("  /set temperature 0.5  ", True),
        ("/no_think", True),
        ("/NO-THINK", True),
        ("what is 2+2? /think", False),  # a per-turn flag, sent as a message
        ("explain /no_think", False),
        ("/usr/bin/python crashes, why?", False),  # a path, not a command
        ("//not a command", False),
        ("/", False),
        ("", False),
        ("hello", False),
    ],
)
def test_is_command(line: str, expected: bool) -> None:
    assert is_command(line) is expected


def test_unknown_commands_suggest_a_close_one(session) -> None:
    assert "did you mean /help?" in refused(session, "/hepl", "unknown command /hepl")
    assert "did you mean /set?" in refused(session, "/sett x 1", "unknown command")
    assert "did you mean /no_think?" in refused(session, "/nothink", "unknown command")
    msg = refused(session, "/xyzzy", "unknown command /xyzzy")
    assert "did you mean" not in msg and "/help" in msg
    refused(session, "hello", "not a command")


# --- help, system, thinking -----------------------------------------------------------------


def test_help(session) -> None:
    text = run_command(session, "/help").message
    for cmd in COMMANDS.values():
        assert cmd.usage.replace("|", "\\|") in text  # "|" escaped in the table
    assert "/think" in text and "end a message" in text.lower()
    detail = run_command(session, "/help /set").message
    assert "/set [NAME [VALUE]]" in detail and "| temperature | 0.0 |" in detail
    assert "(also /quit, /q)" in run_command(session, "/help quit").message
    refused(session, "/help sett", "did you mean /set")


def test_system(session, engine, monkeypatch) -> None:
    assert "No system prompt" in run_command(session, "/system").message
    result = run_command(session, "/system You are a pirate.   Speak like one.")
    assert "System prompt set" in result.message
    assert session.system_prompt == "You are a pirate.   Speak like one."
    assert "You are a pirate." in run_command(session, "/system").message
    note = run_command(session, "/system Be brief /no_think").message
    assert "turns thinking off anyway" in note
    assert "cleared" in run_command(session, "/system --clear").message
    assert session.system_prompt is None
    monkeypatch.setattr(engine, "context_length", 300)
    refused(session, "/system " + "word " * 200, "shorten it")


def test_think_and_no_think(session) -> None:
    assert "Thinking off" in run_command(session, "/no_think").message
    assert session.settings.thinking is False
    assert "Thinking on" in run_command(session, "/think").message
    assert session.settings.thinking is True
    refused(session, "/think about cats", "end the message with /think")
    refused(session, "/no_think now", "end it with /no_think")


# --- /set -----------------------------------------------------------------------------------


def test_set_shows_everything_and_one(session) -> None:
    table = run_command(session, "/set").message
    for name in (
        "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed",
        "max_new_tokens", "thinking",
    ):  # fmt: skip
        assert f"| {name} |" in table
    assert "| seed | none |" in table and "| max_new_tokens | 6 |" in table
    assert (
        run_command(session, "/set top_p").message == "top_p = 0.95 (a number above 0.0 up to 1.0)"
    )


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("/set temperature 0.8", "temperature", 0.8),
        ("/set temp 0", "temperature", 0.0),
        ("/set TOP-P=0.5", "top_p", 0.5),
        ("/set top_p 1", "top_p", 1.0),
        ("/set top_k 1e3", "top_k", 1000),
        ("/set top_k 0", "top_k", 0),
        ("/set min_p 1", "min_p", 1.0),
        ("/set repetition_penalty 10", "repetition_penalty", 10.0),
        ("/set seed 42", "seed", 42),
        ("/set seed 9223372036854775807", "seed", 2**63 - 1),
        ("/set seed none", "seed", None),
        ("/set max_new_tokens 1", "max_new_tokens", 1),
        ("/set max_new_tokens 4096", "max_new_tokens", 4096),
        ("/set max_tokens 100", "max_new_tokens", 100),
        ("/set thinking off", "thinking", False),
    ],
)
def test_set_good_values(session, line, name, value) -> None:
    result = run_command(session, line)
    assert session.settings.to_dict()[name] == value
    assert "→" in result.message and result.effect is None


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("/set temperature abc", r"temperature must be a number from 0\.0 to 10\.0, got 'abc'"),
        ("/set temperature nan", "temperature must be"),
        ("/set temperature inf", "temperature must be"),
        ("/set temperature 1e309", "temperature must be"),
        ("/set temperature -0.1", "temperature must be"),
        ("/set temperature 10.5", "temperature must be"),
        ("/set top_p 0", "above 0.0"),
        ("/set top_p 1.01", "top_p must be"),
        ("/set top_k 4.5", "whole number from 0 to 1000000"),
        ("/set top_k -1", "top_k must be"),
        ("/set min_p 2", "min_p must be"),
        ("/set repetition_penalty 0", "repetition_penalty must be"),
        ("/set seed -1", "or none"),
        ("/set seed 9223372036854775808", "or none"),
        ("/set seed 99999999999999999999999999", "or none"),
        ("/set max_new_tokens 0", "from 1 to 4096"),
        ("/set max_new_tokens 4097", "from 1 to 4096"),
        ("/set thinking maybe", "on or off"),
        ("/set temperature 0.5 0.6", "takes one value"),
        ("/set temprature 0.5", "did you mean temperature"),
        ("/set =", "usage: /set NAME VALUE"),
        ("/set topp 0.5", "did you mean top_p"),
        ("/set colour red", "settings: temperature, top_p"),
    ],
)
def test_set_bad_values_change_nothing(session, line, match) -> None:
    refused(session, line, match)


# --- transcripts ----------------------------------------------------------------------------


def test_save_and_load(session, engine, tmp_path) -> None:
    chat(session)
    result = run_command(session, "/save")
    assert result.message == f"Saved to {session.transcript_path}"
    target = tmp_path / "my chats" / "paris.md"
    assert run_command(session, f'/save "{target}"').message == f"Saved to {target}"
    assert run_command(session, f"/save {tmp_path / 'plain name'}").message.endswith(
        "plain name.md"
    )
    notes = tmp_path / "notes.md"
    notes.write_text("keep me")
    with pytest.raises(TranscriptError, match="not a smolchat transcript"):
        run_command(session, f"/save {notes}")
    refused(session, "/save 'unbalanced", "unbalanced quotes")

    other = ChatSession(engine, store=TranscriptStore(tmp_path / "t2"))
    loaded = run_command(other, f"/load {target}")
    assert loaded.effect == HistoryChanged() and "Loaded 1 turn from" in loaded.message
    assert other.messages == session.messages
    assert other.settings == session.settings
    refused(other, "/load", "needs a path")
    with pytest.raises(TranscriptError, match="no such transcript"):
        run_command(other, f"/load {tmp_path / 'nope.md'}")
    with pytest.raises(TranscriptError, match="not a valid smolchat transcript"):
        run_command(other, f"/load {notes}")
    assert other.messages == session.messages  # a failed load changes nothing


def test_load_mentions_another_model(session, tmp_path) -> None:
    chat(session)
    path = session.save(tmp_path / "x.md")
    path.write_text(path.read_text().replace('"model":"', '"model":"SomeOther/Model', 1))
    assert "recorded with SomeOther/Model" in run_command(session, f"/load {path}").message


# --- history commands -----------------------------------------------------------------------


def test_retry(session) -> None:
    refused(session, "/retry", "nothing to retry")
    chat(session)
    old = session.messages[-1]
    result = run_command(session, "/retry")
    assert isinstance(result.effect, StreamReply)
    events = list(result.effect.stream)
    assert isinstance(events[-1], TurnFinished)
    assert len(session.messages) == 2 and session.messages[-1] is not old
    refused(session, "/retry now", "takes no argument")


def test_undo_clear_and_drop(session) -> None:
    refused(session, "/undo", "nothing to undo")
    refused(session, "/drop", "nothing to drop")
    for text in ("Hello one", "Hello two", "Hello three", "Hello four"):
        chat(session, text)
    refused(session, "/undo please", "takes no argument")
    result = run_command(session, "/undo")
    assert result.effect == HistoryChanged(restorable="Hello four")
    assert len(session.messages) == 6
    for line, match in [
        ("/drop 0", "from 1 to 3, got 0"),
        ("/drop -2", "from 1 to 3"),
        ("/drop two", "from 1 to 3, got 'two'"),
        ("/drop 1.5", "whole number"),
        ("/drop 1 2", "takes one number"),
        ("/drop 4", "only 3 exchanges"),
        ("/drop 99999999999999999999999", "only 3 exchanges"),
    ]:
        refused(session, line, match)
    result = run_command(session, "/drop")
    assert result.effect == HistoryChanged() and "Dropped the 1 oldest exchange;" in result.message
    assert session.messages[0].content == "Hello two"
    assert "2 oldest exchanges" in run_command(session, "/drop 2").message
    assert session.messages == []
    chat(session)
    refused(session, "/clear all", "takes no argument")
    assert run_command(session, "/clear").effect == HistoryChanged() and session.messages == []


def test_stats(session) -> None:
    text = run_command(session, "/stats").message
    assert "last reply: none yet" in text and "context: 0/4,096" in text and "(cpu float32)" in text
    chat(session)
    text = run_command(session, "/stats").message
    used = session.context_used()
    assert f"context: {used:,}/4,096 tokens" in text and "tok/s decode" in text
    assert "from cache" in text and f"transcript: {session.transcript_path}" in text
    refused(session, "/stats now", "takes no argument")


def test_stats_lines_fit_an_80_column_chat(session) -> None:
    """At 80 columns a message has ~74 cells: one long "last prompt" line wrapped between a
    figure and its unit. Every line with figures now fits, even with large ones."""
    from smolchat.engine.types import GenerationStats

    session.last_stats = GenerationStats(
        prompt_tokens=123_456, cached_tokens=120_000, prefilled_tokens=3_456,
        generated_tokens=12_345, ttft_s=12.34, decode_s=99.0, finish_reason="stop",
    )  # fmt: skip
    lines = run_command(session, "/stats").message.splitlines()
    figures = [line for line in lines if not line.startswith(("- model:", "- transcript:"))]
    assert any("123,456 tokens (120,000 from cache, 3,456 prefilled)" in x for x in figures)
    assert any("first token after 12.34 s" in x for x in figures)
    assert all(len(line) <= 70 for line in figures), [x for x in figures if len(x) > 70]


# --- UI actions -----------------------------------------------------------------------------


def test_exit_theme_reasoning(session) -> None:
    for line in ("/exit", "/quit", "/q", "/EXIT"):
        assert run_command(session, line).effect == Quit()
    refused(session, "/exit now", "takes no argument")
    result = run_command(session, "/theme dracula-dark")
    assert result.effect == SwitchTheme("dracula-dark")
    assert run_command(session, "/theme").effect == SwitchTheme(None)  # lists the themes
    refused(session, "/theme a b", "takes one theme name")
    refused(session, "/theme ../../etc/passwd", "bad theme name")
    refused(session, "/theme " + "x" * 100, "bad theme name")
    for word in ("show", "hide", "SHOW"):
        result = run_command(session, f"/reasoning {word}")
        assert result.effect == ShowReasoning(word.lower() == "show")
    refused(session, "/reasoning", "takes show or hide")
    refused(session, "/reasoning shw", "did you mean show")
    refused(session, "/reasoning toggle now", "takes show or hide")


def test_commands_wait_for_a_running_reply(session) -> None:
    stream = session.send("Hello there")
    next(stream)
    with pytest.raises(SmolchatError, match="wait for it or cancel"):
        run_command(session, "/undo")
    list(stream)


# --- completion -----------------------------------------------------------------------------


def test_complete() -> None:
    assert complete("/") == sorted(f"/{name}" for name in COMMANDS)
    assert complete("/re") == ["/read", "/reasoning", "/retry"]
    assert complete("/no") == ["/no_think"]
    assert complete("th") == ["theme", "think"]
    assert complete("/set t") == [
        "/set temperature", "/set thinking", "/set thinking_budget", "/set top_k", "/set top_p",
    ]  # fmt: skip
    assert complete("/reasoning h") == ["/reasoning hide"]
    assert complete("/zz") == [] and complete("/retry x") == [] and complete("/set top_k 5") == []


# --- the registry contract ------------------------------------------------------------------


def test_registry_keeps_registration_order_and_lists_every_command(session, monkeypatch) -> None:
    names = list(COMMANDS)
    assert names[:5] == ["help", "system", "think", "no_think", "set"]
    assert names[-1] == "exit"
    # a command registered later appears in /help, completion and run_command at once
    monkeypatch.setattr("smolchat.chat.commands.COMMANDS", dict(COMMANDS))

    @command("zzz_echo", "/zzz_echo TEXT", "say TEXT back", args=("hello", "help"))
    def _echo(session, args):
        return CommandResult(f"echo: {args}")

    import smolchat.chat.commands as commands

    assert list(commands.COMMANDS)[-1] == "zzz_echo"
    assert "/zzz_echo TEXT" in run_command(session, "/help").message
    assert run_command(session, "/zzz_echo hi").message == "echo: hi"
    assert complete("/zzz") == ["/zzz_echo"]
    assert complete("/zzz_echo he") == ["/zzz_echo hello", "/zzz_echo help"]
    with pytest.raises(ValueError, match="registered twice"):
        command("zzz_echo", "/zzz_echo", "again")(_echo)


def test_help_effects(session) -> None:
    assert run_command(session, "/help").effect == ShowHelp()
    assert run_command(session, "/help retry").effect == ShowHelp("retry")
    assert run_command(session, "/h quit").effect == ShowHelp("exit")


def test_set_grammar_lives_with_the_settings(session) -> None:
    from smolchat.chat.settings import SETTINGS, find_setting

    assert find_setting("TEMP").name == "temperature"
    assert find_setting("max-tokens").name == "max_new_tokens"
    assert SETTINGS["top_k"].parse("1e3", 4096) == 1000
    assert SETTINGS["max_new_tokens"].allowed(300) == "a whole number from 1 to 300"
    # /set offers exactly the settings the settings module describes
    assert COMMANDS["set"].args == tuple(SETTINGS)
    assert complete("/set max") == ["/set max_new_tokens"]


def test_complete_with_values_only_the_ui_knows() -> None:
    themes = {"theme": ["dark", "light", "gruvbox"]}
    assert complete("/theme ", choices=themes) == ["/theme dark", "/theme gruvbox", "/theme light"]
    assert complete("/theme l", choices=themes) == ["/theme light"]
    assert complete("/theme l") == []


def test_complete_paths(tmp_path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "b.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert complete("/load ") == ["/load b.md", "/load sub/"]
    assert complete("/load s") == ["/load sub/"]
    assert complete("/load sub/") == ["/load sub/a.md"]
    assert complete("/load .h") == ["/load .hidden"]
    assert complete(f"/save {tmp_path}/b") == [f"/save {tmp_path}/b.md"]
    assert complete("/load nowhere/x") == []


# --- /read, /preset, /chats ----------------------------------------------------------------


def test_read_attaches_with_its_real_token_cost_and_refuses_bad_files(
    session, engine, tmp_path
) -> None:
    from smolchat.chat.context import compose, context_of

    text_file = tmp_path / "notes.txt"
    text_file.write_text("alpha beta gamma\n")
    result = run_command(session, f"/read {text_file}")
    block = context_of(session).pending[0].block()
    tokens = len(engine.tokenizer.encode(block))  # the real tokenizer's count
    assert f"Attached `notes.txt` (0.0 KB, {tokens:,} tokens" in result.message
    (tmp_path / "b.bin").write_bytes(b"\x00\x01")
    (tmp_path / "big.txt").write_text("z" * (101 * 1024))
    for name, why in [("b.bin", "binary"), ("big.txt", "over the 100 KB limit"),
                      ("none.txt", "no such file"), ("", "a folder"),
                      ("bad\ud800name", "not a valid file name")]:  # fmt: skip
        with pytest.raises(SmolchatError, match=why):
            run_command(session, f"/read {tmp_path / name}")
    assert len(context_of(session).pending) == 1  # refusals add nothing
    message = compose(session, "summarize")
    assert message == block + "\n\nsummarize" and context_of(session).pending == []
    with pytest.raises(CommandError, match="/read needs a file"):
        run_command(session, "/read")


def test_preset_applies_a_system_prompt_and_settings(session) -> None:
    from smolchat.chat.config import Preset
    from smolchat.chat.context import ChatContext, set_context

    assert "No presets" in run_command(session, "/preset").message
    presets = {"terse": Preset("terse", {"system": "Be terse.", "top_k": 5, "model": "x"})}
    set_context(session, ChatContext(presets=presets))
    assert (
        "| terse | system Be terse., top_k 5, model x |" in run_command(session, "/preset").message
    )
    result = run_command(session, "/preset terse")
    assert session.system_prompt == "Be terse." and session.settings.sampling.top_k == 5
    assert "model apply at start: smolchat --preset terse" in result.message
    with pytest.raises(CommandError, match=r"no preset 'ters' .*did you mean"):
        run_command(session, "/preset ters")


def test_chats_lists_the_library_and_asks_the_ui_to_open_it(session, tmp_path) -> None:
    from smolchat.chat.commands import OpenChats

    run_command(session, "/system hi")  # nothing saved yet: an empty library
    empty = run_command(session, "/chats")
    assert "No saved chats" in empty.message and empty.effect == OpenChats("")
    list(session.send("remember lima"))  # autosaved into the store
    listed = run_command(session, "/chats")
    assert "remember lima (1)" in listed.message
    found = run_command(session, "/chats LIMA")
    assert found.effect == OpenChats("LIMA") and "remember lima:" in found.message


# --- a model whose chat template has no thinking mode (SmolLM2's plain ChatML) -----------------


@pytest.fixture(scope="module")
def plain_engine(tmp_path_factory):
    from tests.tiny import CHATML_TEMPLATE, build_smollm3, build_tokenizer

    folder = build_smollm3(tmp_path_factory.mktemp("tiny-chatml"))
    build_tokenizer(folder, chat_template=CHATML_TEMPLATE)  # no enable_thinking in it
    return smolchat.load(str(folder), device="cpu", dtype="float32")


@pytest.fixture
def plain(plain_engine, tmp_path: Path) -> ChatSession:
    plain_engine.reset_cache()
    settings = ChatSettings(sampling=SamplingParams(temperature=0.0), max_new_tokens=4)
    session = ChatSession(plain_engine, settings=settings, store=TranscriptStore(tmp_path / "t"))
    assert not session.backend.has_thinking_mode
    return session


@pytest.mark.parametrize(
    "line",
    [
        "/think",
        "/no_think",
        "/NO-THINK",
        "/set thinking off",
        "/set thinking",
        "/set thinking=on",
        "/set thinking_budget 100",
        "/set budget 5",
    ],
)
def test_thinking_commands_are_refused_without_a_thinking_mode(plain, line) -> None:
    refused(plain, line, r"^this model has no thinking mode \(its chat template has none\)$")


def test_set_lists_no_thinking_rows_without_a_thinking_mode(plain, session) -> None:
    table = run_command(plain, "/set").message
    assert "| temperature |" in table
    assert "| thinking " not in table and "thinking_budget" not in table
    assert "| thinking | on |" in run_command(session, "/set").message  # SmolLM3's template


def test_the_transcript_does_not_claim_thinking_without_a_thinking_mode(plain) -> None:
    from smolchat.chat.transcript import read_transcript

    chat(plain, "hello")
    path = plain.save()
    text = path.read_text(encoding="utf-8")
    assert "**Thinking:**" not in text
    assert "thinking" not in read_transcript(path).settings
    assert "**Settings:**" in text  # the sampling settings are still written


# --- the real SmolLM2 GGUF (no thinking mode): help and completion name no thinking command ----


@pytest.fixture(scope="module")
def smollm2_engine(smollm2_gguf: Path):
    return smolchat.load(str(smollm2_gguf), device="cpu")


@pytest.fixture
def smollm2(smollm2_engine, tmp_path: Path) -> ChatSession:
    session = ChatSession(smollm2_engine, store=TranscriptStore(tmp_path / "t"))
    assert not session.backend.has_thinking_mode  # SmolLM2's own template
    return session


def test_help_and_completion_hide_thinking_without_a_thinking_mode(smollm2, session) -> None:
    for chat_session, thinking in ((smollm2, False), (session, True)):
        listed = run_command(chat_session, "/help").message
        assert ("`/think`" in listed) is thinking and ("`/no_think`" in listed) is thinking
        assert ("End a message with `/think`" in listed) is thinking
        assert "`/set [NAME [VALUE]]`" in listed
        set_help = run_command(chat_session, "/help set").message
        assert "| temperature |" in set_help
        assert ("| thinking |" in set_help) is thinking
        assert ("thinking_budget" in set_help) is thinking
    assert complete("/set t", thinking_mode=False) == [
        "/set temperature", "/set top_k", "/set top_p",
    ]  # fmt: skip
    assert complete("/set thinking", thinking_mode=False) == []
    assert complete("/th", thinking_mode=False) == ["/theme"]
    assert complete("/no", thinking_mode=False) == [] and complete("/no") == ["/no_think"]
    assert complete("/think ", thinking_mode=False) == []
    names = [c.name for c in available_commands(thinking_mode=False)]
    assert "think" not in names and "no_think" not in names and "set" in names
    assert [c.name for c in available_commands()] == list(COMMANDS)
    refused(smollm2, "/think", r"^this model has no thinking mode")  # typed in full: refused
