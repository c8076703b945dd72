"""Errors that end a command, with the exit code they map to.

Every message is one line that says what is wrong and what to do about it.
"""

from __future__ import annotations


class ConsoleError(Exception):
    exit_code = 1


class UsageError(ConsoleError):
    """Bad flags, configuration or input: nothing was written. Exit 2."""

    exit_code = 2


class RunError(ConsoleError):
    """The run started and then failed. Exit 1; checkpoints hold what was processed."""

    exit_code = 1
