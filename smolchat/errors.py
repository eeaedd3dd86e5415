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
    """

    def __init__(self, message: str, *, drop: int | None = None) -> None:
        super().__init__(message)
        self.drop = drop


class CommandError(SmolchatError):
    """A slash command was unknown or given a bad value."""


class TranscriptError(SmolchatError):
    """A transcript could not be saved or loaded."""
