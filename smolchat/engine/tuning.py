"""The matvec tuner's choices, kept on disk so that only the first launch on a GPU tunes.

One JSON file in the user cache folder (``platformdirs.user_cache_dir("smolchat")``, or
``SMOLCHAT_CACHE_DIR``; ``SMOLCHAT_NO_TUNING_CACHE=1`` turns it off). Each entry is keyed by
everything that can change which kernel config is fastest: the GPU's name and compute
capability, the torch / Triton / bitsandbytes versions, the kernel source's version, and the
matrix (shape, storage type, fused operations). Another GPU or a library upgrade misses the
cache and tunes again; entries of other keys stay, so several GPUs or versions can share it.
A damaged file is ignored (and rewritten at the next store).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_DIR = "SMOLCHAT_CACHE_DIR"
ENV_OFF = "SMOLCHAT_NO_TUNING_CACHE"
FILE_NAME = "matvec-tuning.json"
# Bump when a kernel changes in a way that makes old choices wrong.
KERNELS_VERSION = 2


@dataclass(frozen=True)
class Platform:
    """What the tuner's choices depend on besides the matrix itself."""

    gpu: str  # e.g. "NVIDIA H200"
    capability: str  # e.g. "9.0"
    torch: str
    triton: str
    bitsandbytes: str | None = None
    kernels: int = KERNELS_VERSION

    def key(self) -> str:
        return (
            f"{self.gpu}|sm{self.capability}|torch {self.torch}|triton {self.triton}"
            f"|bnb {self.bitsandbytes}|kernels {self.kernels}"
        )

    @classmethod
    def current(cls, device) -> Platform:
        """The platform of a CUDA ``device`` in this process."""
        import torch
        import triton

        # bitsandbytes only matters (and is only loaded) for NF4 weights; importing it just to
        # read its version would cost a bf16 launch seconds
        module = sys.modules.get("bitsandbytes")
        bnb: str | None = getattr(module, "__version__", None)
        major, minor = torch.cuda.get_device_capability(device)
        return cls(
            gpu=torch.cuda.get_device_name(device),
            capability=f"{major}.{minor}",
            torch=torch.__version__,
            triton=triton.__version__,
            bitsandbytes=bnb,
        )


def default_path() -> Path | None:
    """The cache file, or None when the cache is turned off."""
    if os.environ.get(ENV_OFF, "").strip().lower() not in ("", "0", "false", "no"):
        return None
    folder = os.environ.get(ENV_DIR)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_dir("smolchat")
    return Path(folder) / FILE_NAME


Choice = tuple | str  # a kernel config (tuple of ints/bools) or "torch"


class TuningCache:
    """``(platform, matrix key) -> (config, seconds)``, read once, written after each tune."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, dict[str, list]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._data = {k: v for k, v in data.items() if isinstance(v, dict)}
            except (OSError, ValueError) as exc:
                log.warning("ignoring the tuning cache %s (%s)", path, exc)

    @staticmethod
    def matrix_key(key: tuple) -> str:
        return repr(key)

    def get(self, platform: Platform, key: tuple) -> tuple[Choice, float] | None:
        entry = self._data.get(platform.key(), {}).get(self.matrix_key(key))
        if not isinstance(entry, list) or len(entry) != 2:
            return None
        cfg, secs = entry
        choice: Choice = cfg if isinstance(cfg, str) else tuple(cfg)
        return choice, float(secs)

    def put(self, platform: Platform, key: tuple, choice: Choice, seconds: float) -> None:
        cfg = choice if isinstance(choice, str) else list(choice)
        self._data.setdefault(platform.key(), {})[self.matrix_key(key)] = [cfg, seconds]

    def save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self.path)  # atomic: a concurrent reader sees the old or the new file
        except OSError as exc:
            log.warning("could not write the tuning cache %s (%s)", self.path, exc)
