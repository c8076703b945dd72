"""The workers of a watched application: who holds leases, their heartbeats (a
shard-console fleet's), and KCL 3.x's worker metric rows (``WorkerMetricStats``: in a table of
their own, or in the lease table in KCL 3.5's single-table format)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from console.checkpoints.leases import Heartbeat
from console.engine.ownership.taker import Seen
from console.engine.state import WorkerView

WORKER_METRIC_STATS = "WORKER_METRIC_STATS"


MetricRow = tuple[float | None, dict[str, float]]  # last update (epoch s), latest values


def metric_rows(items: Iterable[Mapping[str, Any]]) -> dict[str, MetricRow]:
    """Each worker's metric row (``wid``, or the lease key in the single-table format)."""
    rows = {}
    for item in items:
        wid = item.get("wid", item.get("leaseKey", {})).get("S")
        if wid:
            rows[wid] = metric_row(item)
    return rows


def metric_row(item: Mapping[str, Any]) -> MetricRow:
    """(last update, each metric's latest value) of a KCL 3.x WorkerMetricStats item: ``lut``
    epoch seconds, ``sts`` a map of metric name to its recent values."""
    lut = item.get("lut", {}).get("N")
    metrics: dict[str, float] = {}
    for name, values in item.get("sts", {}).get("M", {}).items():
        listed = values.get("L", ())
        if listed:
            with contextlib.suppress(KeyError, ValueError):
                metrics[name] = float(listed[-1]["N"])
    return (float(lut) if lut is not None else None), metrics


async def read_metric_table(client: Any, lease_table: str) -> dict[str, MetricRow]:
    """KCL 3.x's ``<app>-WorkerMetricStats`` table, when there is one (KCL 3.5 keeps the
    same rows in the lease table: read with each scan)."""
    kwargs: dict[str, Any] = {"TableName": f"{lease_table}-WorkerMetricStats"}
    items: list[dict[str, Any]] = []
    try:
        while True:
            resp = await client.scan(**kwargs)
            items.extend(resp.get("Items", ()))
            if not resp.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    except Exception:  # absent (KCL 2.x) or not readable: nothing to show
        items = []
    return metric_rows(items)


def workers_of(
    seen: Iterable[Seen],
    beats_in: Iterable[Heartbeat],
    metric: Mapping[str, MetricRow],
    now: float,
    wall: float,
) -> tuple[WorkerView, ...]:
    """Every worker that holds a lease or sent a heartbeat, with its metric row if any."""
    held: dict[str, int] = {}
    renewed: dict[str, float] = {}
    for s in seen:
        owner = s.lease.owner
        if owner is None:
            continue
        held[owner] = held.get(owner, 0) + (0 if s.lease.finished else 1)
        if s.changed_at:
            renewed[owner] = min(renewed.get(owner, 1e18), now - s.changed_at)
    beats = {b.worker: b for b in beats_in}
    views = []
    for worker in sorted(set(held) | set(beats) | set(metric)):
        beat = beats.get(worker)
        updated, metrics = metric.get(worker, (None, {}))
        last = renewed.get(worker)
        if beat is not None:
            last = wall - beat.at
        elif last is None and updated is not None:
            last = wall - updated
        views.append(
            WorkerView(
                worker=worker,
                host=beat.host if beat else "-",
                pid=beat.pid if beat else 0,
                leases=held.get(worker, 0),
                records=beat.records if beat else 0,
                rate=beat.rate if beat else 0.0,
                heartbeat_age=last if last is not None else float("nan"),
                shards=beat.shards if beat else {},
                metrics=metrics,
            )
        )
    return tuple(views)
