"""One consumer per stream per database: an exclusive ``flock`` on a small lock file beside the
database. The kernel drops it when the holder dies, even by SIGKILL, so a restart after a crash
never waits for a lease to time out."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re

from console.checkpoints.base import StoreError


def lock_path(db_path: str, stream: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", stream)[:48]
    digest = hashlib.sha1(stream.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{db_path}.{slug}-{digest}.lock"


class LockFiles:
    """The lock files this process holds beside one database, by stream."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._fds: dict[str, int] = {}

    def take(self, stream: str) -> bool:
        """Lock the stream's file; False when another process holds it."""
        path = lock_path(self.db_path, stream)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fds[stream] = fd
        return True

    def give_back(self, stream: str) -> None:
        fd = self._fds.pop(stream, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holds(self, stream: str) -> bool:
        return stream in self._fds

    def held(self) -> list[str]:
        return list(self._fds)
