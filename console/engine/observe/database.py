"""The console over a shard-console consumer running on this machine (``attach --db``).

The consumer publishes its snapshot into its SQLite database at each flush
(console.engine.snapshot); this engine reads it back every ``interval`` and keeps an
:class:`~console.engine.state.EngineState` of its own, so every view of the console shows that
consumer's live state: statuses, lag, rates, errors, its event log. Changes go the way the
control CLI sends them: a command row the running consumer applies between batches (its verdict
awaited), or, when no consumer runs, applied to the database under the stream's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from console.checkpoints.base import CheckpointStore, StoreError, StreamRecord
from console.engine.attached import Attached
from console.engine.control import ControlError, ControlRequest, ControlResult, Plan
from console.engine.diagnosis import Diagnosis, Finding
from console.engine.events import Level
from console.engine.lineage import Lineage
from console.engine.offline import apply_if_free, plan_offline, send_command
from console.engine.snapshot import apply_doc, replay_events
from console.engine.state import EngineState
from console.model import CheckpointStatus, ShardStatus, format_duration

STALE_AFTER = 30.0  # a consumer that has not published for this long is not running


class AttachedDb(Attached):
    confirm_by_name = False  # a consumer of this machine, as its own console would ask

    def __init__(
        self,
        store: CheckpointStore,
        record: StreamRecord,
        *,
        read_only: bool = False,
        interval: float = 1.0,
        stale_after: float = STALE_AFTER,
        wait: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, EngineState(record.name, record.source, store.path), read_only)
        self.record = record
        self.interval = interval
        self.stale_after = stale_after
        self.wait = wait
        self.clock = clock
        self.live = False  # a consumer published within stale_after
        self._published_at: float | None = None
        self._events_seen = 0
        self._run: object = None  # the publishing consumer's run: its events number anew
        self._last_error: str | None = None
        self._lineage_ids: frozenset[str] = frozenset()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.refresh()
        self.state.attached_to = f"the consumer of {self.store.path}"
        self._loop(self._refresh_loop(), "snapshot reads")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # a locked database, a snapshot of a newer version
                message = f"reading {self.store.path} failed: {exc}"
                if message != self._last_error:  # once, not once a second
                    self.events.emit("read_error", message, level=Level.ERROR)
                self._last_error = message
            else:
                self._last_error = None

    async def refresh(self) -> None:
        assert self.record is not None
        stream = self.record.stream
        published = await self.store.snapshot(stream)
        now = self.clock()
        if published is not None:
            at, doc = published
            if at != self._published_at:
                self._published_at = at
                apply_doc(self.state, doc)
                if doc.get("run") != self._run:
                    self._run, self._events_seen = doc.get("run"), 0
                self._events_seen = replay_events(doc, self.events, self._events_seen)
        self.live = (
            published is not None
            and bool(published[1].get("running", True))
            and now - published[0] < self.stale_after
        )
        if not self.live:
            await self._from_checkpoints()  # what the next start will read from
        await self._lineage()
        found: tuple[Diagnosis, ...] = ()
        if not self.live:
            if published is None:
                since = "it never published a snapshot"
            elif not published[1].get("running", True):
                since = f"it stopped {format_duration(now - published[0])} ago"
            else:
                since = f"its last snapshot is {format_duration(now - published[0])} old"
            found = (
                Diagnosis(
                    Finding.NOT_RUNNING,
                    stream,
                    f"no consumer is running on {self.store.path} ({since}): what is shown "
                    "is its checkpoints; changes apply to them directly",
                ),
            )
        self.state.set_diagnoses(found)

    async def _from_checkpoints(self) -> None:
        """No consumer runs: the checkpoints, as ``checkpoints list`` shows them (over its
        last snapshot, whose lag and rates are history)."""
        assert self.record is not None
        checkpoints = await self.store.load(self.record.stream)
        self.state.rate = 0.0
        idle = (ShardStatus.WAITING, ShardStatus.READY)
        for sid, view in self.state.shards.items():
            if sid not in checkpoints and view.status not in idle:
                view.status, view.rate = ShardStatus.READY, 0.0  # nothing reads it now
                self.state.touch(view)
        for sid, cp in checkpoints.items():
            view = self.state.view(sid)
            if cp.status is CheckpointStatus.SKIPPED:
                status = ShardStatus.SKIPPED
            elif cp.status is CheckpointStatus.DONE:
                status = ShardStatus.DONE
            else:
                status = ShardStatus.PAUSED if cp.paused else ShardStatus.READY
            if (view.status, view.checkpoint, view.position) != (status, cp.position, cp.position):
                view.status, view.checkpoint = status, cp.position
                view.position, view.checkpoint_at = cp.position, cp.updated_at
                view.rate = 0.0
                self.state.touch(view)

    async def _lineage(self) -> None:
        assert self.record is not None
        ids = frozenset(self.state.shards)
        if ids == self._lineage_ids:
            return
        self._lineage_ids = ids
        known = {s.shard_id: s for s in await self.store.shards(self.record.stream)}
        self.state.set_lineage(Lineage.build(known.values()))
        for sid, shard in known.items():
            view = self.state.shards.get(sid)
            if view is not None and view.parents != shard.parents:
                view.parents = shard.parents
                self.state.touch(view)

    async def preview(self, request: ControlRequest) -> Plan:
        assert self.record is not None
        if self._read_only:
            raise ControlError("read-only: operator changes are refused")
        try:
            return await plan_offline(self.store, self.record, request)
        except StoreError as exc:  # a locked database, say: the dialog says so
            raise ControlError(f"could not look: {exc}") from exc

    async def control(self, request: ControlRequest) -> ControlResult:
        """Handed to the running consumer, or applied here when none runs."""
        assert self.record is not None
        if self._read_only:
            return ControlResult(0, False, "read-only: operator changes are refused")
        try:
            if not self.live:
                result = await apply_if_free(self.store, self.record, request)
                if result is not None:
                    with contextlib.suppress(Exception):  # applied: shown at the next read
                        await self.refresh()
                    return result
                # A consumer has just started: it applies it.
            command_id, command = await send_command(self.store, self.record, request, self.wait)
        except (ControlError, StoreError) as exc:
            return ControlResult(0, False, str(exc))
        if command is None:
            message = f"command #{command_id} is queued: the consumer applies it between batches"
            self.events.emit("change_queued", message, level=Level.WARNING)
            return ControlResult(command_id, True, message)
        with contextlib.suppress(Exception):
            await self.refresh()
        return ControlResult(command_id, command.state == "applied", command.result or "")
