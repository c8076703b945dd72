"""Dead-letter destinations: where parked records also go (``--dead-letter SPEC``), beside the
checkpoint store that keeps them for the console. Each is opened before the first read, so a
destination that cannot be written is an error at start, not at the first poison record."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from console.model import ParkedRecord
from console.processors.base import ProcessorError


class JsonlDeadLetter:
    """``jsonl:PATH``: one JSON object a line (ParkedRecord.to_json), appended and fsynced
    before the checkpoint moves past the records; the file is created 0600."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ProcessorError(
                f"--dead-letter: cannot open {self.path} for appending: {exc.strerror}"
            ) from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def _write(self, lines: str) -> None:
        assert self._file is not None
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        lines = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
        await asyncio.to_thread(self._write, lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_dead_letter(spec: str) -> JsonlDeadLetter:
    """The destination ``spec`` names (checked by console.setting_values.dead_letter), open."""
    destination = JsonlDeadLetter(str(Path(spec.removeprefix("jsonl:")).expanduser()))
    destination.open()
    return destination
