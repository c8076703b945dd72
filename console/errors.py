"""The errors shard-console raises on purpose. ``str(err)`` is one line that says what is wrong
and what to do about it.

Library errors (a store that cannot be used, an operator change that cannot apply, a source
that fails) derive from :class:`Error` and say nothing of flags or exit codes. The command
line's own errors add an exit code; ``console.cli.commands`` maps the library's to one as well.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error shard-console raises on purpose."""


class ConsoleError(Error):
    """An error of the command line, with its exit code."""

    exit_code = 1


class UsageError(ConsoleError):
    """Bad flags, configuration or input: nothing was written. Exit 2."""

    exit_code = 2


class RunError(ConsoleError):
    """The run started and then failed. Exit 1; checkpoints hold what was processed."""

    exit_code = 1
