"""Who is acting: the names history records and owners are shown by."""

from __future__ import annotations

import getpass
import os
import socket


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (a container's arbitrary uid)
        return str(os.getuid())


def actor_name() -> str:
    """``user@host``: who an operator change is recorded as."""
    return f"{user_name()}@{socket.gethostname()}"
