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

from console.checkpoints.base import LockedStore, StoreError, StreamRecord
from console.engine.changes.database import WAIT, DatabaseTransport, StreamOpener
from console.engine.changes.plan import ControlError, ControlRequest, ControlResult
from console.engine.changes.service import ChangeService, Preview
from console.engine.events import Level
from console.engine.findings import Diagnosis, Finding
from console.engine.lineage import Lineage
from console.engine.observe.attached import Attached
from console.engine.snapshot import apply_doc, replay_events
from console.engine.state import EngineState
from console.model import CheckpointStatus, ShardStatus, format_duration


class AttachedDb(Attached):
    confirm_by_name = False  # a consumer of this machine, as its own console would ask

    def __init__(
        self,
        store: LockedStore,
        record: StreamRecord,
        *,
        read_only: bool = False,
        interval: float = 1.0,
        wait: float = WAIT,
        clock: Callable[[], float] = time.time,
        stream: StreamOpener | None = None,
    ) -> None:
        """``stream``: opens the database's stream, to check a rewind's sequence number against
        its shard before it is written (as the command line does)."""
        super().__init__(store, EngineState(record.name, record.source, store.path), read_only)
        self.database = store
        self.record = record
        self.interval = interval
        self.changes = ChangeService(
            DatabaseTransport(store, record, wait=wait, stream=stream),
            events=self.events,
            read_only=read_only,
        )
        self.clock = clock
        self.live = False  # a consumer holds the stream (its process runs)
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
        self.state.set_watch(attached_to=f"the consumer of {self.store.path}")
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
        # Running is holding the stream (a consumer that has not flushed yet has published
        # nothing; one killed left its last snapshot): the owner row, and its process. Asked
        # before the snapshot is read: a consumer publishes its last one, then lets go.
        self.live = await self._is_running()
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

    async def _is_running(self) -> bool:
        assert self.record is not None
        holder = await self.database.owner(self.record.stream)
        return holder is not None and holder.alive()

    async def _from_checkpoints(self) -> None:
        """No consumer runs: the checkpoints, as ``checkpoints list`` shows them (over its
        last snapshot, whose lag and rates are history)."""
        assert self.record is not None
        checkpoints = await self.store.load(self.record.stream)
        self.state.rate = 0.0
        idle = (ShardStatus.WAITING, ShardStatus.READY)
        for sid, view in list(self.state.shards.items()):
            if sid not in checkpoints and view.status not in idle:
                self.state.update(sid, status=ShardStatus.READY, rate=0.0)  # nothing reads it
        for sid, cp in checkpoints.items():
            if cp.status is CheckpointStatus.SKIPPED:
                status = ShardStatus.SKIPPED
            elif cp.status is CheckpointStatus.DONE:
                status = ShardStatus.DONE
            else:
                status = ShardStatus.PAUSED if cp.paused else ShardStatus.READY
            view = self.state.view(sid)
            if (view.status, view.checkpoint, view.position) != (status, cp.position, cp.position):
                self.state.put(
                    view._replace(
                        status=status,
                        checkpoint=cp.position,
                        position=cp.position,
                        checkpoint_at=cp.updated_at,
                        rate=0.0,
                    )
                )

    async def _lineage(self) -> None:
        assert self.record is not None
        ids = frozenset(self.state.shards)
        if ids == self._lineage_ids:
            return
        self._lineage_ids = ids
        known = {s.shard_id: s for s in await self.store.shards(self.record.stream)}
        self.state.set_lineage(Lineage.build(known.values()))
        for sid, shard in known.items():
            if sid in self.state.shards:
                self.state.update(sid, parents=shard.parents)

    async def preview(self, request: ControlRequest) -> Preview:
        try:
            return await self.changes.preview(request)
        except StoreError as exc:  # a locked database, say: the dialog says so
            raise ControlError(f"could not look: {exc}") from exc

    async def control(self, request: ControlRequest) -> ControlResult:
        """Applied here when no consumer runs, else handed to the running one."""
        try:
            result = await self.changes.control(request)
        except (ControlError, StoreError) as exc:
            return ControlResult(0, False, str(exc))
        if result.queued:
            self.events.emit("change_queued", result.message, level=Level.WARNING)
        elif result.ok:
            with contextlib.suppress(Exception):  # shown at the next read anyway
                await self.refresh()
        return result
