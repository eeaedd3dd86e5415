"""Downloads from the hub, against a local stand-in for it (tests/reliability/fakehub.py):
the CLI and the TUI download with progress, and a download killed half-way is finished by the
next run (files already downloaded are kept; the one cut short is fetched again).

huggingface_hub 2.x keeps no partial file across runs (each download writes a file unique to
its process), so "resume" means: the next run completes the snapshot, not that it continues
the interrupted file from its last byte. Offline, a half-downloaded snapshot is refused with one
line (test_model_errors.py::test_bad_model_is_one_clear_line[interrupted_download_offline]).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import smolchat
from tests.reliability.fakehub import FakeHub
from tests.reliability.helpers import (
    ANSWERED,
    ROOT,
    one_line_error,
    quiet_env,
    smolchat_command,
    without_cut_note,
)
from tests.tui.conftest import make_app
from tests.tui.helpers import chat_screen, running

REPO = "someone/tiny-smollm3"


@pytest.fixture
def hub(tiny_model: Path) -> Iterator[FakeHub]:
    server = FakeHub(REPO, tiny_model)
    yield server
    server.close()


def online_env(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    return quiet_env(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url)


def ask(tmp_path: Path, hub: FakeHub, **env: str) -> list[str]:
    return [*smolchat_command(), REPO, "-p", "hi", "--device", "cpu", "--max-new-tokens", "3"]


def test_cli_downloads_quietly_and_answers(hub: FakeHub, tmp_path: Path) -> None:
    result = subprocess.run(
        ask(tmp_path, hub), env=online_env(tmp_path, hub), capture_output=True, timeout=180,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode in ANSWERED, result.stderr.decode()
    assert without_cut_note(result.stderr) == ""  # no progress bars of the hub library
    assert hub.gets("model.safetensors") == 1 and hub.gets("config.json") == 1


async def test_tui_shows_download_progress(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    reports: list[tuple[str, int, int | None]] = []

    def load(progress):
        def spy(stage: str, done: int, total: int | None) -> None:
            reports.append((stage, done, total))
            progress(stage, done, total)

        return smolchat.load(REPO, device="cpu", progress=spy)

    async with running(make_app(load=load, model=REPO)) as (pilot, notes):
        screen = await chat_screen(pilot)
        assert screen.session.backend.model_name == REPO
    downloads = [(done, total) for stage, done, total in reports if stage == "download"]
    size = sum(len(data) for data in hub.files.values())
    assert downloads and downloads[-1] == (size, size)  # every byte, counted once
    assert [d for d, _ in downloads] == sorted(d for d, _ in downloads)
    assert not [n for n in notes if n.severity == "error"]


def test_killed_download_is_finished_by_the_next_run(hub: FakeHub, tmp_path: Path) -> None:
    env = online_env(tmp_path, hub)
    hub.stall = "model.safetensors"
    proc = subprocess.Popen(
        ask(tmp_path, hub), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert hub.half_sent.wait(120), "the download never started"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    cache = tmp_path / "hub-cache" / f"models--{REPO.replace('/', '--')}"
    assert list((cache / "blobs").glob("*.incomplete"))  # the download was cut short
    # offline, the half-downloaded model is refused with one clear line
    offline = subprocess.run(
        ask(tmp_path, hub), env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, cwd=ROOT,
        timeout=180,
    )  # fmt: skip
    assert "was interrupted" in one_line_error(offline)
    # online again: the next run finishes the download and answers
    again = subprocess.run(ask(tmp_path, hub), env=env, capture_output=True, cwd=ROOT, timeout=180)
    assert again.returncode in ANSWERED, again.stderr.decode()
    assert hub.gets("model.safetensors") == 2  # the interrupted file, fetched again
    assert hub.gets("config.json") == 1  # finished files are kept
    snapshot = next((cache / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
