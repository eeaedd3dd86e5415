"""User-facing errors.

A :class:`SmolchatError` carries one line for the user: what went wrong and what to do.
The CLI prints it without a traceback (exit 1); the TUI shows it as a notification.
"""

from __future__ import annotations


class SmolchatError(Exception):
    """An error the user can cause and fix; its message is one line."""


class ModelLoadError(SmolchatError):
    """The model, its config, weights or tokenizer could not be loaded."""


class ConfigError(ModelLoadError):
    """config.json is missing, malformed or describes an unsupported model."""


class TaskError(ModelLoadError, ValueError):
    """``load_pretrained``: an unknown task, or a checkpoint whose heads do not fit the task."""


class TaskInputError(SmolchatError, ValueError):
    """A task module was given input it cannot take (shapes, dtypes, padding)."""


class DeviceError(SmolchatError):
    """The requested device or dtype is unavailable."""


class SamplingError(SmolchatError, ValueError):
    """A sampling setting is out of range."""


class TemplateError(SmolchatError):
    """The chat template failed to render."""


class ContextOverflowError(SmolchatError):
    """A turn would not fit in the model's context window.

    ``drop``: how many of the oldest exchanges to drop for the turn to fit (what ``/drop N``
    would do), or None when dropping earlier turns cannot help (or nobody worked it out).
    ``what``: the message without the chat's advice (/drop, /set), for a caller with other
    means (``-p``'s options); the whole message when nobody split it.
    """

    def __init__(self, message: str, *, drop: int | None = None, what: str | None = None) -> None:
        super().__init__(message)
        self.drop = drop
        self.what = what or message


class CommandError(SmolchatError):
    """A slash command was unknown or given a bad value."""


class TranscriptError(SmolchatError):
    """A transcript could not be saved or loaded."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device or host allocation failure (torch's OOM errors, MemoryError)."""
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "not enough memory", "can't allocate memory")
    )


def out_of_memory_line(exc: BaseException, doing: str) -> str:
    """One line about running out of memory while ``doing`` (e.g. "loading the model")."""
    return (
        f"out of memory while {doing} ({type(exc).__name__}); try --quantize nf4 (4-bit "
        "weights need about a quarter of the memory), a smaller model, or free some memory"
    )
