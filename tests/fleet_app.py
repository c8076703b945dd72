"""The processor the fleet tests run in each worker process (``--processor fleet_app:record``).

Each batch appends one line per record to $FLEET_LOG, flushed before the batch returns:
``worker <TAB> shard <TAB> sequence <TAB> data <TAB> start <TAB> end`` (wall-clock times around
the batch), so a test can tell who processed what, when, and check that no two workers
processed a shard at once.
"""

from __future__ import annotations

import os
import time
from typing import Any

_files: dict[str, Any] = {}


def record(records: list[Any], ctx: Any) -> None:
    path = os.environ["FLEET_LOG"]
    out = _files.get(path)
    if out is None:
        out = _files[path] = open(path, "a", buffering=1)  # noqa: SIM115 (process-long)
    worker = os.environ.get("FLEET_WORKER", "?")
    start = time.time()
    delay = float(os.environ.get("FLEET_DELAY", "0"))
    if delay:
        time.sleep(delay)
    end = time.time()
    lines = [
        f"{worker}\t{ctx.shard_id}\t{r.sequence_number}\t{r.data.decode()}\t{start:.3f}\t{end:.3f}\n"
        for r in records
    ]
    out.write("".join(lines))
    out.flush()
