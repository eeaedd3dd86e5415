"""Find a model: a local folder, a ``.gguf`` file, or a Hugging Face hub repo id."""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smolchat.errors import ModelLoadError

Progress = Callable[[str, int, "int | None"], None]

HUB_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "dir" or "gguf"
    path: Path
    name: str  # what to show the user


def is_hub_id(model: str) -> bool:
    """True for an ``owner/name`` hub repo id (not a ``.gguf`` file name or a path)."""
    return bool(_REPO_ID.match(model)) and not model.lower().endswith(".gguf")


def resolve(
    model: str, revision: str | None = None, progress: Progress | None = None
) -> ModelSource:
    """Turn the user's MODEL argument into local files, downloading from the hub if needed."""
    check_model_argument(model)
    path = Path(model).expanduser()
    if path.is_file():
        return ModelSource("gguf", path, path.name)
    if path.is_dir():
        return ModelSource("dir", path, path.name)
    return ModelSource("dir", download(model, revision, progress), model)


def check_model_argument(model: str) -> None:
    """Refuse a MODEL that can never load: a missing path, a file that is not a GGUF, a name
    that is no hub id. Touches neither the hub nor torch, so the CLI can ask before it starts
    the TUI. Raises ModelLoadError (one line, with near matches from the hub cache)."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{model} is a file but not a .gguf file; pass a model folder, a .gguf file "
                "or a hub id"
            )
        return
    if path.is_dir():
        return
    if model.endswith(".gguf") or os.sep in model and not _REPO_ID.match(model):
        raise ModelLoadError(f"model not found: {model} does not exist{_suggest(model)}")
    if not _REPO_ID.match(model):
        raise ModelLoadError(
            f"model not found: {model!r} is neither a local path nor a hub id like "
            f"HuggingFaceTB/SmolLM3-3B{_suggest(model)}"
        )


def download(repo_id: str, revision: str | None, progress: Progress | None) -> Path:
    """Fetch only the files smolchat needs; fall back to the local cache offline.

    Files already downloaded are kept; a file cut short is fetched again from its start (the
    hub library keeps no partial file across runs).
    """
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    tqdm_class = _progress_tqdm(progress) if progress is not None else None
    try:
        path = Path(
            huggingface_hub.snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_FILES, tqdm_class=tqdm_class
            )
        )
    except (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError) as exc:
        raise ModelLoadError(
            f"hub repo {repo_id} not found or not accessible ({type(exc).__name__}); check the "
            f"name, or log in with `hf auth login` for gated models{_suggest(repo_id)}"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelLoadError(f"revision {revision!r} not found in {repo_id}") from None
    except Exception as exc:  # network down, hub unreachable, offline mode without cache
        try:
            path = Path(
                huggingface_hub.snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=HUB_FILES,
                    tqdm_class=tqdm_class,
                    local_files_only=True,
                )
            )
        except Exception:
            pass
        else:
            _check_complete(repo_id, path.parent.parent, path)
            return path
        _check_complete(repo_id, _cache_folder(repo_id), None)  # a download cut short?
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            why = "offline mode is on (HF_HUB_OFFLINE)"
        else:
            why = f"the hub is unreachable ({type(exc).__name__})"
        raise ModelLoadError(
            f"cannot download {repo_id}: {why} and it is not in the local cache"
            f"{_suggest(repo_id)}; run `hf download {repo_id}` where the hub is reachable (or "
            "copy the folder here and pass its path), then use HF_HUB_OFFLINE=1"
        ) from None
    _check_complete(repo_id, path.parent.parent, path)  # offline: maybe a half-done download
    return path


def _cache_folder(repo_id: str) -> Path:
    """Where the hub library caches ``repo_id`` (it may not exist)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def _check_complete(repo_id: str, repo_folder: Path, snapshot: Path | None) -> None:
    """Refuse a cached repo that an interrupted download left without files it needs."""
    partial = list((repo_folder / "blobs").glob("*.incomplete"))
    if not partial or (snapshot is not None and _has_model_files(snapshot)):
        return
    raise ModelLoadError(
        f"the download of {repo_id} was interrupted ({len(partial)} partial file(s) in the "
        "cache) and the hub cannot be reached now; run smolchat again where the hub is "
        f"reachable to fetch the missing files (finished ones are kept), or `hf download {repo_id}`"
    )


def _has_model_files(folder: Path) -> bool:
    """config.json, tokenizer.json and every weights file (per the shard index) are there."""
    if not (folder / "config.json").exists() or not (folder / "tokenizer.json").exists():
        return False
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            import json

            names = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return all((folder / name).exists() for name in names)
    return any(folder.glob("*.safetensors"))


def cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub repo ``repo_id`` as the local hub cache has it (no network), or
    None when it is not there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # a name the hub library refuses, an unreadable cache
        return None
    return Path(found) if isinstance(found, str) else None


def cached_repo_ids() -> list[str]:
    try:
        from huggingface_hub import constants, scan_cache_dir

        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos  # the cache downloads go to
        return [r.repo_id for r in repos if r.repo_type == "model"]
    except Exception:
        return []


def _suggest(name: str) -> str:
    others = [r for r in cached_repo_ids() if r != name]
    close = difflib.get_close_matches(name, others, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _progress_tqdm(progress: Progress):
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ProgressTqdm(hf_tqdm):
        """Forwards the byte counts of the hub's progress bars to ``progress``; draws nothing.

        Always disabled as a bar (smolchat shows its own progress, and a bar on stderr would
        scribble over the TUI), so it counts by itself: a disabled tqdm keeps no count.
        """

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            # the bytes written (the library's "transfer" bar counts network bytes besides)
            name = str(kwargs.get("name") or "")
            self.counts_bytes = kwargs.get("unit") == "B" and not name.endswith(".transfer")
            self.done = int(kwargs.get("initial") or 0)
            self.count_lock = threading.Lock()  # files download on several threads
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            with self.count_lock:
                self.done += int(n or 0)
                if self.counts_bytes:
                    total = int(self.total) if self.total else None
                    progress("download", self.done, total)
            return super().update(n)

    return ProgressTqdm
