"""Deterministic data for the console's snapshot tests.

The snapshots test rendering, so the engine behind them must hold still: this is the engine's
own state, lineage and event types, filled with fixed values, and its own ``plan_change`` for
previews. Everything that acts (keys, dialogs, control) is tested in test_ui_pilot.py against a
live consumer instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from console.engine.changes.plan import ControlError, ControlRequest, Plan, plan_change
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.read.browse import Page
from console.engine.state import EngineState, LeaseInfo
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    Record,
    Shard,
    ShardStatus,
)
from console.sources.base import StreamInfo

NOW = 1795478400.0  # 2026-11-24T00:00:00Z
SEQ = "4968050238536686552249426721688804631486040206980258"


def seq(n: int) -> str:
    return f"{SEQ}{n:04d}"


@dataclass
class Result:
    command_id: int
    ok: bool
    message: str


class FrozenEngine:
    """Holds still for a snapshot. Implements console.engine.api.Engine."""

    confirm_by_name = False

    def __init__(self, read_only: bool = False) -> None:
        self.read_only = read_only
        self.failure: str | None = None
        self.stopped = asyncio.Event()
        self.events = EventLog()
        self.state = EngineState("orders", "kinesis", "eu-west-1")
        self.state.info = StreamInfo("orders", None, "ACTIVE", 24, NOW - 86400 * 30, 5)
        shards = [
            Shard("shardId-000000000000", starting_sequence_number=seq(0), ending_sequence_number=seq(900),
                  starting_hash_key="0", ending_hash_key="85070591730234615865843651857942052863"),
            Shard("shardId-000000000001", starting_sequence_number=seq(0),
                  starting_hash_key="85070591730234615865843651857942052864", ending_hash_key="170141183460469231731687303715884105727"),
            Shard("shardId-000000000002", starting_sequence_number=seq(0), ending_sequence_number=seq(800)),
            Shard("shardId-000000000003", starting_sequence_number=seq(0), ending_sequence_number=seq(700)),
            Shard("shardId-000000000004", parent_id="shardId-000000000000", starting_sequence_number=seq(1000)),
            Shard("shardId-000000000005", parent_id="shardId-000000000000", starting_sequence_number=seq(1000)),
            Shard("shardId-000000000006", parent_id="shardId-000000000002",
                  adjacent_parent_id="shardId-000000000003", starting_sequence_number=seq(1000)),
            Shard("shardId-000000000007", parent_id="shardId-000000000001", ending_sequence_number=seq(1200)),
            Shard("shardId-000000000008", parent_id="shardId-000000000007"),
        ]  # fmt: skip
        self.lineage = Lineage.build(shards)
        self.state.set_lineage(self.lineage)
        rows = {
            "shardId-000000000000": (ShardStatus.DONE, None, 0.0, 900, None),
            "shardId-000000000001": (ShardStatus.FAILING, 1200, 0.0, 412, "processor raised ValueError: amount is not a number"),
            "shardId-000000000002": (ShardStatus.DONE, None, 0.0, 800, None),
            "shardId-000000000003": (ShardStatus.DONE, None, 0.0, 700, None),
            "shardId-000000000004": (ShardStatus.ACTIVE, 0, 41.5, 1130, None),
            "shardId-000000000005": (ShardStatus.PAUSED, 93000, 0.0, 1044, None),
            "shardId-000000000006": (ShardStatus.ACTIVE, 250, 12.0, 1077, None),
            "shardId-000000000007": (ShardStatus.WAITING, None, 0.0, None, None),
            "shardId-000000000008": (ShardStatus.WAITING, None, 0.0, None, None),
        }  # fmt: skip
        self.checkpoints: dict[str, Checkpoint] = {}
        for sid, (status, lag, rate, n, error) in rows.items():
            shard = self.lineage.shards[sid]
            self.state.update(
                sid,
                parents=shard.parents,
                closed=shard.is_closed,
                status=status,
                lag_ms=lag,
                rate=rate,
                last_error=error,
                error_at=NOW - 95 if error else None,
            )
            if n is not None:
                pos = Position.after_sequence(seq(n))
                self.state.update(
                    sid,
                    position=pos,
                    checkpoint=pos,
                    checkpoint_at=NOW - (3 if status is ShardStatus.ACTIVE else 240),
                    last_arrival=NOW - 60,
                    records=n,
                )
                finished = status is ShardStatus.DONE
                self.checkpoints[sid] = Checkpoint(
                    sid,
                    pos,
                    CheckpointStatus.DONE if finished else CheckpointStatus.OPEN,
                    paused=status is ShardStatus.PAUSED,
                    arrival=NOW - 60,
                )
        self.state.records_total = 7063
        self.state.rate = 53.5
        recent = [
            Record(seq(1128), "customer-07", b'{"order": 5121, "customer": "customer-07", "amount": 12.5}', NOW - 62),
            Record(seq(1129), "customer-11", b"plain text payload", NOW - 61),
            Record(seq(1130), "customer-02", bytes(range(0, 40)), NOW - 60),
        ]  # fmt: skip
        self.state.update("shardId-000000000004", recent=tuple(recent))
        for at, level, message in (
            (NOW - 300, Level.INFO, "consuming 'orders' (kinesis, eu-west-1): 9 shards, 4 reading"),
            (NOW - 240, Level.INFO, "resharding: new shardId-000000000004 (from shardId-000000000000), shardId-000000000005 (from shardId-000000000000)"),
            (NOW - 200, Level.INFO, "shardId-000000000000 done; children: shardId-000000000004, shardId-000000000005"),
            (NOW - 120, Level.INFO, "ops@bastion: pause shardId-000000000005"),
            (NOW - 95, Level.ERROR, "shardId-000000000001: processor raised ValueError: amount is not a number (at …0412); retrying the batch"),
            (NOW - 30, Level.WARNING, "shardId-000000000006: ProvisionedThroughputExceededException while reading records: Rate exceeded; retrying"),
        ):  # fmt: skip
            self.events.emit("fixture", message, level=level, at=at)
        self.history_rows = [
            HistoryEntry("shardId-000000000004", "progress", "engine", Position.after_sequence(seq(1100)),
                         "open", Position.after_sequence(seq(1050)), "open", at=NOW - 120, id=41),
            HistoryEntry("shardId-000000000004", "rewind", "ops@bastion (tui)", Position.at_timestamp(NOW - 3600),
                         "open", Position.after_sequence(seq(1090)), "open", at=NOW - 180, id=37, command_id=5),
            HistoryEntry("shardId-000000000004", "start", "engine", Position.trim_horizon(), "open",
                         note="first start; initial position trim_horizon", at=NOW - 86400, id=4),
        ]  # fmt: skip
        self.requests: list[ControlRequest] = []
        self.previews = 0

    async def control(self, request: ControlRequest) -> Result:
        self.requests.append(request)
        return Result(len(self.requests), True, "recorded")

    async def preview(self, request: ControlRequest) -> Plan:
        self.previews += 1
        return plan_change(
            request,
            checkpoints=self.checkpoints,
            lineage=self.lineage,
            default_position=lambda sid: Position.trim_horizon(),
            now=NOW,
            retention_hours=24,
        )

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        return [h for h in self.history_rows if shard_id in (None, h.shard_id)][:limit]

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        for h in self.history_rows:
            if h.id == entry_id and h.shard_id == shard_id and h.new_position is not None:
                return h.new_position
        raise ControlError(f"history entry #{entry_id} is not a checkpoint of {shard_id}")

    async def browse(self, shard_id: str, start: Position | None = None, limit: int = 50) -> Page:
        """A failing shard opens at its poison record; the records travel as they do on Kinesis
        (JSON, a CloudWatch Logs envelope, text, binary)."""
        import gzip
        import json

        envelope = {
            "messageType": "DATA_MESSAGE",
            "logGroup": "/aws/lambda/orders",
            "logStream": "2026/11/24/[$LATEST]f00d",
            "logEvents": [{"id": "1", "timestamp": 1, "message": "ERROR amount is not a number"}],
        }
        datas = [
            b'{"order": 4711, "amount": "twelve"}',
            b'{"order": 4712, "amount": 12.5}',
            gzip.compress(json.dumps(envelope).encode(), mtime=0),
            b"plain text line",
            b"\x00\x01\xfe\xff",
            b"[bold red]shown as typed[/bold red]",  # a record's text is never markup
        ]
        records = tuple(
            Record(seq(413 + i), f"customer-{i:02d}", d, NOW - 60 + i) for i, d in enumerate(datas)
        )
        failing = self.state.shards[shard_id].status is ShardStatus.FAILING
        note = None
        if start is None:
            start = Position.at_sequence(seq(413)) if failing else Position.trim_horizon()
            if failing:
                note = (
                    f"the record the processor fails on: {self.state.shards[shard_id].last_error}"
                )
        last = records[-1]
        return Page(start, records, Position.after_sequence(last.sequence_number), False, note)

    async def start(self) -> None:
        return None

    def request_stop(self, reason: str | None = None) -> None:
        self.stopped.set()

    async def run(self, duration: float | None = None) -> None:
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stopped.set()


def in_fleet(engine: FrozenEngine) -> None:
    """Fleet mode: this worker and two others share the stream; one lease nobody renews."""
    from console.engine.state import WorkerView

    state = engine.state
    me = "ip-10-0-1-17-4242-a1b2"
    state.set_watch(worker_id=me)
    owners = {
        "shardId-000000000001": ("ip-10-0-2-31-977-c3d4", False),
        "shardId-000000000004": (me, False),
        "shardId-000000000005": ("ip-10-0-2-31-977-c3d4", False),
        "shardId-000000000006": ("kcl-worker-3", True),
    }
    # unowned and ready: nobody has taken it yet
    state.update("shardId-000000000008", status=ShardStatus.READY)
    for sid, (owner, expired) in owners.items():
        state.update(sid, lease=LeaseInfo(owner, 1234, None, expired))
    state.set_watch(
        workers=(
            WorkerView(me, "ip-10-0-1-17", 4242, 1, 1130, 41.5, 2.0, {}),
            WorkerView("ip-10-0-2-31-977-c3d4", "ip-10-0-2-31", 977, 2, 5120, 12.0, 7.0, {}),
        )
    )


def attached(engine: FrozenEngine) -> None:
    """Attached to a KCL application's lease table: its workers, a lease nobody renews, and
    what the real diagnosis makes of the leases."""
    from console.engine.observe.diagnosis import LeaseFacts, ShardFacts, diagnose
    from console.engine.state import WorkerView

    engine.confirm_by_name = True
    state = engine.state
    state.set_watch(attached_to="a KCL application", lease_table="orders-app")
    state.location = "eu-west-1 · lease table orders-app"
    owners = {
        "shardId-000000000001": ("kcl-worker-1", False),
        "shardId-000000000004": ("kcl-worker-2", False),
        "shardId-000000000005": ("kcl-worker-2", False),
        "shardId-000000000006": ("kcl-worker-3", True),
    }
    for sid, view in list(state.shards.items()):
        owner, expired = owners.get(sid, (None, False))
        state.update(
            sid,
            lease=LeaseInfo(owner, 1234 if owner else 7, None, expired),
            status=ShardStatus.LEASED if owner else view.status,
            rate=0.0,
            records=0,
        )
    state.records_total, state.rate = 0, 0.0
    leases = {
        sid: LeaseFacts(
            sid,
            owners.get(sid, (None, False))[0],
            state.shards[sid].status is ShardStatus.DONE,
            state.shards[sid].parents,
            30.0 if owners.get(sid, (None, False))[1] else 1.0,
        )
        for sid in state.shards
        if sid != "shardId-000000000003"
    }
    shards = {
        sid: ShardFacts(sid, v.parents, v.closed, caught_up=sid == "shardId-000000000007")
        for sid, v in state.shards.items()
        if sid != "shardId-000000000002"
    }
    state.set_diagnoses(tuple(diagnose(leases, shards, failover=10.0)))
    state.set_watch(
        workers=(
            WorkerView("kcl-worker-1", "-", 0, 1, 0, 0.0, 2.0, {}),
            WorkerView("kcl-worker-2", "-", 0, 2, 0, 0.0, 1.0, {}, {"CPU": 41.0, "MEMORY": 63.5}),
            WorkerView("kcl-worker-3", "-", 0, 1, 0, 0.0, 31.0, {}),
        )
    )


def frozen_app(
    read_only: bool = False, fleet: bool = False, attach: bool = False, **kwargs: object
) -> object:
    from console.ui.app import ShardConsoleApp

    engine = FrozenEngine(read_only=read_only)
    if fleet:
        in_fleet(engine)
    if attach:
        attached(engine)
    app = ShardConsoleApp(
        engine,
        clock=lambda: NOW,
        run_engine=False,
        sample_every=3600,
        actor="ops@bastion (tui)",
        **kwargs,  # type: ignore[arg-type]
    )
    table = app.dashboard.table
    shapes = {
        "shardId-000000000001": [200, 400, 600, 800, 1000, 1200],
        "shardId-000000000004": [900, 600, 300, 100, 0, 0],
        "shardId-000000000005": [1000, 20000, 40000, 60000, 80000, 93000],
        "shardId-000000000006": [250, 250, 500, 250, 250, 250],
    }
    from collections import deque

    for sid, values in shapes.items():
        table.lag_history[sid] = deque(values, maxlen=12)
    return app
