"""The engine's snapshot as plain JSON: what a console in another process reads.

A running consumer publishes :func:`snapshot_doc` into its store at each flush
(``CheckpointStore.publish``); ``attach --db`` reads it back with :func:`apply_doc` into an
:class:`~console.engine.state.EngineState` of its own, so every view of the console works on it.
The same document is what a status endpoint serves.
"""

from __future__ import annotations

import os
import time
from typing import Any

from console.engine.events import Event, EventLog, Level
from console.engine.state import STATUS_ORDER, EngineState, LeaseInfo, ShardView
from console.model import Position, PositionError, ShardStatus

EVENTS_KEPT = 50  # the newest events travel with the snapshot


def _pos(position: Position | None) -> str | None:
    return position.encode() if position is not None else None


def _unpos(text: str | None) -> Position | None:
    if text is None:
        return None
    try:
        return Position.decode(text)
    except PositionError:
        return None


def shard_doc(view: ShardView) -> dict[str, Any]:
    return {
        "shard_id": view.shard_id,
        "parents": list(view.parents),
        "status": view.status.value,
        "closed": view.closed,
        "position": _pos(view.position),
        "checkpoint": _pos(view.checkpoint),
        "checkpoint_at": view.checkpoint_at,
        "lag_ms": view.lag_ms,
        "rate": round(view.rate, 3),
        "records": view.records,
        "last_error": view.last_error,
        "error_at": view.error_at,
        "read_failing_since": view.read_failing_since,
        "last_arrival": view.last_arrival,
        "owner": view.owner,
    }


def run_id(events: EventLog | None) -> str:
    """This run of the consumer: its events are numbered from 1 in each run."""
    return f"{os.getpid()}:{id(events):x}"


def snapshot_doc(
    state: EngineState, events: EventLog | None = None, *, running: bool = True
) -> dict[str, Any]:
    """The state as JSON-ready data (and the newest events). ``running`` False: the last one,
    published as the consumer stops."""
    return {
        "at": time.time(),
        "running": running,
        "run": run_id(events),
        "stream": state.stream,
        "source": state.source_kind,
        "location": state.location,
        "version": state.version,
        "records_total": state.records_total,
        "rate": round(state.rate, 3),
        "retries": dict(state.retries),
        "worker_id": state.worker_id,
        "shards": [shard_doc(v) for v in state.shards.values()],
        "events": [
            {
                "seq": e.seq,
                "at": e.at,
                "level": e.level.value,
                "kind": e.kind,
                "message": e.message,
                "shard_id": e.shard_id,
            }
            for e in (events.since(max(0, events.last_seq - EVENTS_KEPT)) if events else ())
        ],
    }


def apply_doc(state: EngineState, doc: dict[str, Any]) -> None:
    """Bring ``state`` to the document's: rows that changed get a new version, rows gone are
    removed."""
    state.records_total = int(doc.get("records_total", 0))
    state.rate = float(doc.get("rate", 0.0))
    state.retries.clear()
    state.retries.update(doc.get("retries") or {})
    seen: set[str] = set()
    for row in doc.get("shards", ()):
        sid = row["shard_id"]
        seen.add(sid)
        view = state.view(sid)
        try:
            status = ShardStatus(row.get("status", "waiting"))
        except ValueError:  # a newer consumer's status: shown as the nearest we know
            status = ShardStatus.ACTIVE
        lease = view.lease
        owner = row.get("owner")
        if owner != (lease.owner if lease is not None else None):
            lease = LeaseInfo(owner) if owner is not None else None
        state.put(
            view._replace(
                parents=tuple(row.get("parents") or ()),
                status=status,
                closed=bool(row.get("closed")),
                position=_unpos(row.get("position")),
                checkpoint=_unpos(row.get("checkpoint")),
                checkpoint_at=row.get("checkpoint_at"),
                lag_ms=row.get("lag_ms"),
                rate=float(row.get("rate") or 0.0),
                records=int(row.get("records") or 0),
                last_error=row.get("last_error"),
                error_at=row.get("error_at"),
                read_failing_since=row.get("read_failing_since"),
                last_arrival=row.get("last_arrival"),
                lease=lease,
            )
        )
    for sid in [s for s in state.shards if s not in seen]:
        state.remove(sid)


def replay_events(doc: dict[str, Any], events: EventLog, after: int) -> int:
    """Emit the document's events newer than ``after`` (the consumer's numbering); returns the
    newest number seen."""
    events_in = doc.get("events", ())
    if events_in and max(e["seq"] for e in events_in) < after:
        after = 0  # the consumer restarted: its numbering did too
    newest = after
    for e in events_in:
        if e["seq"] <= after:
            continue
        newest = max(newest, e["seq"])
        events.emit(
            e["kind"],
            e["message"],
            level=Level(e.get("level", "info")),
            shard_id=e.get("shard_id"),
            at=e.get("at"),
        )
    return newest


__all__ = ["Event", "apply_doc", "replay_events", "snapshot_doc", "status_fields"]


def status_fields(state: EngineState) -> dict[str, Any]:
    """What the status line says (headless) and ``/status`` serves: counts, rate, lag, and
    since when every shard this process reads has been failing (an outage), if it has."""
    counts = state.counts()
    oldest = state.oldest_checkpoint_at()
    stalled = failing_since(state)
    return {
        "shards": {s.value: counts[s] for s in STATUS_ORDER if counts[s]},
        "records_per_s": round(state.rate, 1),
        "max_lag_ms": state.max_lag_ms(),
        "records": state.records_total,
        "oldest_checkpoint_s": round(time.time() - oldest, 1) if oldest else None,
        "retries": dict(state.retries),
        "all_failing_s": round(time.time() - stalled[0], 1) if stalled else None,
    } | _fleet_fields(state)


def failing_since(state: EngineState) -> tuple[float, str] | None:
    """Since when no read of any shard this process reads has got through, and the newest
    reason: an outage (the endpoint, the network, credentials), whatever errors came and went
    meanwhile. A processor failing on its records is not one: its shards read. None while any
    shard's reads get through."""
    me = state.worker_id
    reading = [
        v
        for v in state.shards.values()
        if v.status in (ShardStatus.ACTIVE, ShardStatus.FAILING) and (me is None or v.owner == me)
    ]
    if not reading or any(v.read_failing_since is None for v in reading):
        return None
    since = min(v.read_failing_since or time.time() for v in reading)
    newest = max(reading, key=lambda v: v.error_at or 0.0)
    return since, newest.last_error or "failing"


def _fleet_fields(state: EngineState) -> dict[str, Any]:
    """Fleet mode: this worker, the leases it holds, the workers seen."""
    me = state.worker_id
    if me is None:
        return {}
    return {
        "worker": me,
        "leases_held": sum(1 for v in state.shards.values() if v.owner == me),
        "workers": len(state.workers),
    }
