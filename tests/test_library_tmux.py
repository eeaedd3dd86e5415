"""The chat library, the config file and /read in a real terminal (tmux), over the real
SmolLM2 GGUF: what a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smolchat.chat.library import ChatLibrary
from smolchat.chat.transcript import Transcript, read_transcript, write_transcript
from tests.reliability.helpers import HAVE_TMUX, ROOT, quiet_vars, smolchat_command, terminal
from tests.test_library import make_chat

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_TMUX, reason="needs tmux")]


def saved_chats(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    make_chat(folder, "2026-11-28_peru", "Tell me about Peru", reply="Lima is the capital.",
              age_s=300)  # fmt: skip
    data = Transcript(
        messages=[{"role": "user", "content": "Remember the word zebra."},
                  {"role": "assistant", "content": "I will remember zebra.",
                   "finish_reason": "stop"}],
        settings={"temperature": 0.6, "thinking": False},
        model="SmolLM2",
    )  # fmt: skip
    write_transcript(folder / "2026-11-29_zebra.md", data)


def test_browser_finds_opens_and_continues_a_chat(smollm2_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "chats"
    saved_chats(folder)
    argv = [*smolchat_command(), str(smollm2_gguf), "--temperature", "0", "--transcripts",
            str(folder), "--max-new-tokens", "24"]  # fmt: skip
    with terminal(argv, tmp_path / "status", env=quiet_vars(tmp_path)) as term:
        term.wait_for("ctx ", 180)
        term.keys("C-l")
        term.wait_for("Chats  (type to search")
        term.wait_for("Tell me about")
        term.text("lima")
        term.wait_for("mention 'lima'")
        screen = term.screen()
        assert "Lima is the capital." in screen and "Remember the word" not in screen
        term.keys("BSpace", "BSpace", "BSpace", "BSpace")
        term.wait_for("2 chats in")
        term.text("zebra")
        term.wait_for("mention 'zebra'")
        term.keys("Enter")
        term.wait_for("Opened 2026-11-29_zebra.md")
        assert "I will remember zebra." in term.screen()
        term.text("What word?")
        term.wait_for("What word?", 10)
        term.keys("Enter")
        term.wait_for("tok/s", 120)
        term.keys("C-q")
    data = read_transcript(folder / "2026-11-29_zebra.md")  # the opened chat went on
    assert [m["content"] for m in data.messages][:3] == [
        "Remember the word zebra.", "I will remember zebra.", "What word?"
    ]  # fmt: skip


def test_config_preset_resume_and_read_as_a_user(smollm2_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "chats"
    saved_chats(folder)
    config = tmp_path / "config" / "smolchat" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('theme = "nord"\n[presets.brief]\nsystem = "Answer in one word."\n'
                      "max_new_tokens = 16\n")  # fmt: skip
    (tmp_path / "notes.txt").write_text("The secret colour is blue.\n")
    env = quiet_vars(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    zebra = next(e for e in ChatLibrary(folder).entries() if "zebra" in e.title)
    # the library from the command line, as a script sees it
    listed = subprocess.run(
        [*smolchat_command(), "chats", "--transcripts", str(folder), "--json"],
        capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}, cwd=ROOT,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(x)["id"] for x in listed.stdout.splitlines()][0] == zebra.id
    argv = [*smolchat_command(), str(smollm2_gguf), "--transcripts", str(folder), "--preset",
            "brief", "--resume", zebra.id[:4], "--temperature", "0"]  # fmt: skip
    with terminal(argv, tmp_path / "status", env=env, size=(140, 30)) as term:
        term.wait_for("ctx ", 180)
        term.wait_for("temperature 0.0 (the chat had 0.6)")
        assert "from the command line:" in term.screen()
        assert "system " in term.screen()  # --preset brief's system prompt won, too
        term.text(f"/read {tmp_path / 'notes.txt'}")
        term.wait_for("notes.txt", 10)
        term.keys("Enter")
        try:
            term.wait_for("Attached notes.txt", 30)
        except AssertionError:
            raise AssertionError(term.screen()) from None
        assert "tokens" in term.screen()
        term.text("What is the secret colour?")
        term.keys("Enter")
        term.wait_for("tok/s", 120)
        term.keys("C-q")
    data = read_transcript(folder / "2026-11-29_zebra.md")
    assert data.messages[2]["content"].startswith("File `notes.txt`:")
    assert "The secret colour is blue." in data.messages[2]["content"]
    assert data.settings["temperature"] == 0.0
    assert data.system_prompt == "Answer in one word."  # from --preset brief
    assert sys.executable  # the same interpreter ran it
