"""Model faults through the real ``smolchat`` command: one clear line, status 1, no traceback.

Every broken model of the matrix runs as a real process (``smolchat MODEL -p hi``); the runs go
two at a time to keep the file quick. The unit-level refusals behind them are tested in
tests/test_weights.py, tests/test_gguf.py, tests/test_config.py, tests/test_hub.py and
tests/test_template.py; here the user-facing end is checked: what the user reads.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smolchat.errors import ModelLoadError
from smolchat.model import hub
from tests.reliability.helpers import one_line_error, quiet_env, run_smolchat
from tests.test_hub import fill_hub_cache

HUB_SHA = "0123456789abcdef0123456789abcdef01234567"


def _copy(tiny: Path, dst: Path) -> Path:
    shutil.copytree(tiny, dst)
    return dst


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes: connections are refused


def build_cases(tiny: Path, gguf: Path, tmp: Path) -> dict[str, tuple[list[str], dict, list[str]]]:
    """name -> (smolchat arguments, extra environment, words the error line must hold)."""
    cases: dict[str, tuple[list[str], dict, list[str]]] = {}

    def case(name: str, model: Path | str, needles: list[str], **env: str) -> None:
        cases[name] = ([str(model), "-p", "hi", "--device", "cpu"], env, needles)

    case("missing_path", tmp / "no" / "such-model", ["model not found", "does not exist"])
    case("not_a_model_name", "not a model", ["neither a local path nor a hub id"])
    # a typo of a hub id that is in the local cache: the cached one is suggested
    cache = tmp / "hub-cache"
    fill_hub_cache(cache, "someone/tiny-smollm3", tiny)
    case("hub_typo_near_match", "someone/tiny-smolm3", ["did you mean someone/tiny-smollm3"])

    no_config = _copy(tiny, tmp / "no-config")
    (no_config / "config.json").unlink()
    case("folder_without_config", no_config, ["config.json not found"])

    no_weights = _copy(tiny, tmp / "no-weights")
    (no_weights / "model.safetensors").unlink()
    case("folder_without_weights", no_weights, ["no *.safetensors weights", "download"])

    pickled = _copy(tiny, tmp / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    case("pickle_only_weights", pickled, ["never loads", "safetensors or GGUF"])

    truncated = _copy(tiny, tmp / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 2 // 3])
    case("truncated_safetensors", truncated, ["damaged or truncated", "download"])

    corrupt = _copy(tiny, tmp / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 4096)
    case("corrupt_safetensors", corrupt, ["damaged or truncated"])

    junk = tmp / "junk.gguf"
    junk.write_bytes(bytes(range(256)) * 64)
    case("junk_gguf", junk, ["not a GGUF file"])

    cut = tmp / "cut.gguf"
    with open(gguf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(gguf.stat().st_size // 2))  # header intact, tensors cut short
    case("truncated_gguf", cut, ["cut.gguf"])

    arch = _copy(tiny, tmp / "mamba")
    _edit_json(arch / "config.json", architectures=["MambaForCausalLM"], model_type="mamba")
    case("unsupported_architecture", arch, ["unsupported architecture", "MambaForCausalLM"])

    no_tok = _copy(tiny, tmp / "no-tokenizer")
    (no_tok / "tokenizer.json").unlink()
    case("missing_tokenizer", no_tok, ["tokenizer"])

    raising = _copy(tiny, tmp / "raising-template")
    _edit_json(
        raising / "tokenizer_config.json",
        chat_template="{{ raise_exception('this template takes no user turns') }}",
    )
    case("template_that_raises", raising, ["chat template", "takes no user turns"])

    broken = _copy(tiny, tmp / "broken-template")
    _edit_json(broken / "tokenizer_config.json", chat_template="{% for m in messages %}")
    case("template_syntax_error", broken, ["chat template", "syntax error"])

    # the hub cannot be reached (a closed port) and nothing is cached
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    case(
        "hub_unreachable_nothing_cached",
        "someone/never-downloaded",
        ["hub is unreachable", "hf download someone/never-downloaded", "HF_HUB_OFFLINE=1"],
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=endpoint,
    )
    # a download cut short: the cache holds a partial blob and a snapshot without the weights
    partial = tmp / "partial-src"
    shutil.copytree(tiny, partial)
    weights = (partial / "model.safetensors").read_bytes()
    (partial / "model.safetensors").unlink()
    fill_hub_cache(cache, "someone/half-downloaded", partial)
    blobs = cache / "models--someone--half-downloaded" / "blobs"
    blobs.mkdir()
    (blobs / "5d41402abc4b2a76b9719d911017c592.incomplete").write_bytes(weights[:1000])
    case(
        "interrupted_download_offline",
        "someone/half-downloaded",
        ["download of someone/half-downloaded was interrupted", "missing files"],
    )
    return cases


@pytest.fixture(scope="module")
def outcomes(tiny_model: Path, smollm2_gguf: Path, tmp_path_factory) -> dict:
    """Every case run once as a real process, two at a time."""
    tmp = tmp_path_factory.mktemp("model-errors")
    cases = build_cases(tiny_model, smollm2_gguf, tmp)

    def go(item):
        name, (args, env, needles) = item
        return name, (run_smolchat(args, env=quiet_env(tmp, **env)), needles)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(go, cases.items()))


CASES = [
    "missing_path",
    "not_a_model_name",
    "hub_typo_near_match",
    "folder_without_config",
    "folder_without_weights",
    "pickle_only_weights",
    "truncated_safetensors",
    "corrupt_safetensors",
    "junk_gguf",
    "truncated_gguf",
    "unsupported_architecture",
    "missing_tokenizer",
    "template_that_raises",
    "template_syntax_error",
    "hub_unreachable_nothing_cached",
    "interrupted_download_offline",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_model_is_one_clear_line(outcomes: dict, name: str) -> None:
    result, needles = outcomes[name]
    line = one_line_error(result)
    for needle in needles:
        assert needle in line, line


def test_every_case_is_checked(tiny_model: Path, smollm2_gguf: Path, tmp_path: Path) -> None:
    assert sorted(build_cases(tiny_model, smollm2_gguf, tmp_path)) == sorted(CASES)


# ---- the interrupted download, unit level -------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Callable[[bool], Path]:
    """An offline hub cache; ``make(partial)`` adds a repo, with a partial blob if asked."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_partial_blob_names_the_fix_and_a_complete_cache_loads(
    hub_cache: Path, tiny_model: Path, tmp_path: Path
) -> None:
    def partial_blob(repo: str) -> None:
        blobs = hub_cache / f"models--{repo.replace('/', '--')}" / "blobs"
        blobs.mkdir()
        (blobs / "abc.incomplete").write_bytes(b"x" * 10)

    fill_hub_cache(hub_cache, "someone/complete", tiny_model)
    partial_blob("someone/complete")  # a stale partial file, but nothing is missing
    assert hub.resolve("someone/complete").path.is_dir()
    half = shutil.copytree(tiny_model, tmp_path / "half")
    (half / "model.safetensors").unlink()
    fill_hub_cache(hub_cache, "someone/partial", half)
    assert hub.resolve("someone/partial").path.is_dir()  # no partial file: not a download cut
    partial_blob("someone/partial")
    with pytest.raises(ModelLoadError) as info:
        hub.resolve("someone/partial")
    message = str(info.value)
    assert "interrupted" in message and "hf download someone/partial" in message
    assert "\n" not in message
