"""The exit statuses of the ``smolchat`` command (the README's table; tests check each one).

Quitting on purpose is success; stopping work with Ctrl+C (a model still loading, a ``-p``
answer still streaming) is an interruption, 130 as in every shell. Ctrl+C while a reply
streams in the TUI or ``--plain`` stops that reply only; at an idle prompt it quits (0).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done: the -p answer is complete, or the chat was quit (/exit, Ctrl+D, Ctrl+Q)
    ERROR = 1  # a runtime error: one line on stderr (--debug adds the traceback)
    USAGE = 2  # a bad option or argument
    CUT = 3  # -p: the answer is incomplete (max_new_tokens reached or the context is full)
    INTERRUPTED = 130  # Ctrl+C (SIGINT) while loading, or while a -p answer streamed
    BROKEN_PIPE = 141  # stdout was closed early (`| head`), as 128 + SIGPIPE for other tools
