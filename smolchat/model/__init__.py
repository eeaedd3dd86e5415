"""The network and its weights (pure torch; knows nothing of chat).

``smolchat.model.load_pretrained(path_or_repo, task=...)`` builds the bare decoder or one of its
task heads (see :mod:`smolchat.model.heads`); it is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smolchat.model.heads import TASKS, TaskModel, load_pretrained

__all__ = ["TASKS", "TaskModel", "load_pretrained"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from smolchat.model import heads

        return getattr(heads, name)
    raise AttributeError(f"module 'smolchat.model' has no attribute {name!r}")
