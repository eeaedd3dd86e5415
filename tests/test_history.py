"""smolchat.chat.history: the prompt history file (mode 0600, bounded, damage-tolerant)."""

from __future__ import annotations

import stat
from pathlib import Path

from smolchat.chat.history import PromptHistory


def test_survives_a_restart_with_multiline_prompts(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.jsonl"
    history = PromptHistory(path)
    history.add("first")
    history.add("two\nlines")
    history.add("two\nlines")  # not twice in a row
    history.add("draft only", persist=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PromptHistory(path)
    assert again.entries == ["first", "two\nlines"]
    assert again.problem is None


def test_bounded_and_trimmed_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    history = PromptHistory(path, limit=5)
    for i in range(30):
        history.add(f"prompt {i}")
    assert history.entries == [f"prompt {i}" for i in range(25, 30)]
    assert len(path.read_text().splitlines()) <= 10  # rewritten once it reaches 2 x limit
    assert PromptHistory(path, limit=5).entries == history.entries
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_damaged_lines_are_skipped_and_search(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('"alpha"\nnot json\n{"x": 1}\n"Beta test"\n"alphabet"\n"alpha"\n')
    history = PromptHistory(path)
    assert history.entries == ["alpha", "Beta test", "alphabet", "alpha"]
    assert history.search("ALPH") == ["alpha", "alphabet"]  # newest first, each once
    assert history.search("") == ["alpha", "alphabet", "Beta test"]


def test_unwritable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    history = PromptHistory(blocker / "h.jsonl")
    history.add("hello")
    assert history.entries == ["hello"]
    assert history.problem and "prompt history not saved" in history.problem
