"""The lease protocols checked as a model: Hypothesis drives the real fleet workers
(console.engine.ownership: AssignedOwnership for KCL 3.x, LeaseOwnership for KCL 2.x) step by
step, over an in-memory DynamoDB with its conditional-write semantics (tests/dynamo_memory.py;
tests/test_lease_writes.py runs its writes on it and on moto alike), through random
interleavings of their loops (a loop's round runs whole: races inside one round are not
explored), crashes, graceful stops, pauses, dropped writes, lost answers, clock drift and
wall-clock skew, and operator rewinds.

Each worker's loops are its methods, called one round at a time (coordinate, discover, take,
renew, report), and a reader per worker stands for the consumer: it reads the shards its
worker may read, one record a step, and its checkpoints are flushed by the renewer, as the
checkpointer's are. Time moves only in ticks no longer than the watchdog's period, and every
running worker's watchdog looks at each tick, as its timer does; a paused worker's first look
after it resumes is its watchdog's.

Invariants, after every step:

* **one reader per shard** (3.x): no two running workers hold one shard; a handoff moves a
  lease only after its holder let it go. (KCL 2.x steals a lease from a live holder, which
  reads on until its next renewal fails: that is the duplicate work the 3.x protocol removes,
  so this one holds for 3.x only.)
* **checkpoints never move back** but by an operator's rewind;
* **no child is read before its parents are done** (their leases say SHARD_END);

and at the end, every worker resumed and the network healed, the fleet runs on its own, each
loop at its own period (discovery's as the worker sets it: every minute while holding leases,
sooner when nudged):
**every unfinished lease whose parents are done is owned by a running worker** within a bound
(the failures it may have to wait out: its holder's expiry, a dead leader's lock, an
assignment to a worker that died just before; see :meth:`LeaseProtocol.settle`), and every
shard is read to its end, no record lost.

``HYPOTHESIS_PROFILE=long`` runs many more examples (by hand: a few minutes).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from console.checkpoints.base import CheckpointChange
from console.checkpoints.leases import (
    SHARD_END,
    TRIM_HORIZON,
    Coordinator,
    LeaseStore,
    LeaseTableError,
)
from console.engine.events import EventLog
from console.engine.ownership.assigned import AssignedOwnership
from console.engine.ownership.base import Allowance
from console.engine.ownership.leases import LeaseOwnership
from console.engine.state import EngineState
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    PositionKind,
    Shard,
)
from tests.dynamo_memory import MemoryDynamo

T = TypeVar("T")

TABLE = "model-app"
STREAM = "model-stream"
FAILOVER = 3.0
HANDOFF_TIMEOUT = 4.0
RECORDS = 3  # per shard
EPOCH = 1_800_000_000.0


def _shard(n: int, low: int, high: int, *parents: str) -> Shard:
    return Shard(
        f"shardId-{n:012d}",
        *(*parents, None, None)[:2],
        starting_hash_key=str(low),
        ending_hash_key=str(high),
        ending_sequence_number="1",
    )


# Four roots; the first splits into 4 and 5; 5 and the second merge into 6. Every shard is
# closed: the stream is finite, so "read to its end" is a property of the whole run.
SHARDS = [
    _shard(0, 0, 99),
    _shard(1, 100, 199),
    _shard(2, 200, 299),
    _shard(3, 300, 399),
    _shard(4, 0, 49, "shardId-000000000000"),
    _shard(5, 50, 99, "shardId-000000000000"),
    _shard(6, 50, 199, "shardId-000000000005", "shardId-000000000001"),
]
PARENTS = {s.shard_id: s.parents for s in SHARDS}
IDS = [s.shard_id for s in SHARDS]


def seq(sid: str, i: int) -> str:
    """Record ``i`` of shard ``sid``'s sequence number: ordered within the shard."""
    return f"4{IDS.index(sid):02d}{i:020d}"


def index_after(text: str) -> int:
    """The next record to read after a checkpoint (TRIM_HORIZON: the first)."""
    if text == TRIM_HORIZON:
        return 0
    if text == SHARD_END:
        return RECORDS
    return int(text[3:]) + 1


def order(text: str) -> int:
    return index_after(text)


class Reader:
    """The consumer's side of one worker, as console.engine.ownership.base.Progress says: where
    it reads each shard it holds, and what it has read and not yet checkpointed."""

    def __init__(self) -> None:
        self.own: Any = None
        self.next: dict[str, int] = {}
        self.pending: dict[str, Checkpoint] = {}

    def adopt(self, shard_id: str, checkpoint: Checkpoint) -> None:
        position = checkpoint.position
        if checkpoint.status.finished:
            start = RECORDS
        elif position.kind is PositionKind.TRIM_HORIZON:
            start = 0
        else:
            assert position.kind is PositionKind.AFTER_SEQUENCE_NUMBER, position
            assert position.sequence_number is not None
            start = index_after(position.sequence_number)
        self.next[shard_id] = start
        self.pending.pop(shard_id, None)

    def forget(self, shard_id: str) -> None:
        self.next.pop(shard_id, None)
        self.pending.pop(shard_id, None)

    def observe(self, shard_id: str, checkpoint: Checkpoint) -> None:
        pass

    async def write(
        self, changes: list[CheckpointChange], finish: tuple[int, str] | None = None
    ) -> int:
        return len(await self.own.write(changes, finish))

    async def flush(self) -> int:
        pending, self.pending = self.pending, {}
        try:
            written = await self.own.write([CheckpointChange(cp) for cp in pending.values()], None)
        except BaseException:
            for sid, cp in pending.items():  # kept for the next flush, as the checkpointer does
                if sid in self.next:
                    self.pending.setdefault(sid, cp)
            raise
        return len(written)


@dataclass
class Worker:
    name: str
    own: LeaseOwnership
    reader: Reader
    rate: float  # its monotonic clock's rate against true time
    skew: float  # its wall clock's error, seconds
    running: bool = True  # not crashed
    paused: bool = False
    faults: list[str] = field(default_factory=list)  # what happens to its next writes

    @property
    def live(self) -> bool:
        return self.running and not self.paused


class LeaseProtocol(RuleBasedStateMachine):
    assigned = True  # KCL 3.x; the 2.x machine below says False

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dynamo = MemoryDynamo()
        self.now = 0.0
        self.workers: list[Worker] = []
        self.checkpoints: dict[str, str] = {}  # as last looked at
        self.rewound: set[str] = set()  # by an operator since
        self.read: dict[str, list[int]] = {sid: [] for sid in IDS}

    def run(self, work: Awaitable[T]) -> T | None:
        """One step of a worker's: what its loop would catch (the table unreachable, say) is
        caught, as the loop catches it."""
        try:
            return self.loop.run_until_complete(work)  # type: ignore[arg-type]
        except LeaseTableError:
            return None

    def teardown(self) -> None:
        self.loop.close()

    # -- the fleet ------------------------------------------------------------------------------

    def _add(self, rate: float, skew: float, seed: int = 0) -> None:
        name = f"w{len(self.workers)}"
        holder: list[Worker] = []

        def fault(op: str) -> str | None:
            worker = holder[0] if holder else None
            return worker.faults.pop(0) if worker is not None and worker.faults else None

        client = self.dynamo.client(fault)
        store = LeaseStore(client, TABLE)
        reader = Reader()
        common: dict[str, Any] = {
            "worker_id": name,
            "failover": FAILOVER,
            "clock": lambda: self.now * rate,
            "wall": lambda: EPOCH + self.now + skew,
        }
        state, events = EngineState(STREAM, "kinesis", "model"), EventLog()
        own: LeaseOwnership
        if self.assigned:
            store.keeps_holder = True
            coordinator = Coordinator(client, TABLE)
            own = AssignedOwnership(
                store, state, events, coordinator=coordinator,
                handoff_timeout=HANDOFF_TIMEOUT, **common,
            )  # fmt: skip
        else:
            own = LeaseOwnership(store, state, events, **common)
        own.rng.seed(seed)  # its random choices, Hypothesis's to replay
        reader.own = own
        worker = Worker(name, own, reader, rate, skew)
        self.loop.run_until_complete(store.prepare())
        self.loop.run_until_complete(own.join(STREAM, reader))
        self.loop.run_until_complete(own.listed(SHARDS))  # the first creates the leases
        holder.append(worker)
        self.workers.append(worker)

    @initialize(
        rates=st.lists(st.floats(0.99, 1.01), min_size=2, max_size=2),
        skews=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=2),
        seed=st.integers(0, 2**16),
    )
    def start(self, rates: list[float], skews: list[float], seed: int = 0) -> None:
        for i, (rate, skew) in enumerate(zip(rates, skews, strict=True)):
            self._add(rate, skew, seed + i)

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.live]

    @precondition(lambda self: len(self.workers) < 4)
    @rule(rate=st.floats(0.99, 1.01), skew=st.floats(-1.0, 1.0), seed=st.integers(0, 2**16))
    def add_worker(self, rate: float, skew: float, seed: int) -> None:
        self._add(rate, skew, seed)

    @rule(dt=st.floats(0.05, FAILOVER / 12), n=st.integers(1, 12))
    def tick(self, dt: float, n: int) -> None:
        """Time passes (up to a failover time); every running worker's watchdog looks at
        least every quarter renewal interval, as its timer makes it."""
        for _ in range(n):
            self.now += dt
            for w in self.live():
                self.run(w.own.watch())

    @rule(data=st.data(), loop=st.sampled_from(["lead", "discover", "renew", "report"]))
    def step(self, data: st.DataObject, loop: str) -> None:
        live = self.live()
        if not live:
            return
        w = data.draw(st.sampled_from(live))
        self.run(self._round(w, loop))

    async def _round(self, w: Worker, loop: str) -> None:
        own = w.own
        if loop == "renew":
            await own.renew_round()
        elif isinstance(own, AssignedOwnership):
            await {"lead": own.coordinate, "discover": own.discover, "report": own.report}[loop]()
        elif loop == "lead":
            await own.take_round()

    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        """A reader reads one record of a shard its worker may read."""
        choices = [
            (w, sid)
            for w in self.live()
            for sid, i in w.reader.next.items()
            if i < RECORDS and w.own.allowance(sid) is Allowance.READ
        ]
        if choices:
            w, sid = data.draw(st.sampled_from(choices))
            self._read(w, sid)

    def _read(self, w: Worker, sid: str) -> None:
        for parent in PARENTS[sid]:
            assert self._table().get(parent) == SHARD_END, (
                f"{w.name} reads {sid} before its parent {parent} is done"
            )
        if self.assigned:
            for other in self.live():
                assert other is w or sid not in other.own.held, (
                    f"{w.name} reads {sid} while {other.name} holds it too"
                )
        i = w.reader.next[sid]
        self.read[sid].append(i)
        w.reader.next[sid] = i + 1
        done = CheckpointStatus.DONE if i + 1 == RECORDS else CheckpointStatus.OPEN
        w.reader.pending[sid] = Checkpoint(sid, Position.after_sequence(seq(sid, i)), done)

    @precondition(lambda self: self.assigned)
    @rule(data=st.data())
    def hand_over(self, data: st.DataObject) -> None:
        """A reader told to hand its shard over finishes its batch; the worker hands it."""
        choices = [
            (w, sid)
            for w in self.live()
            for sid in list(w.own.held)
            if w.own.allowance(sid) is Allowance.HAND_OFF
        ]
        if choices:
            w, sid = data.draw(st.sampled_from(choices))
            self.run(w.own.hand_over(sid))

    @precondition(lambda self: sum(w.running for w in self.workers) > 1)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from([w for w in self.workers if w.running]))
        w.running = False  # kill -9: nothing more from it, its rows and leases left as they are

    @precondition(lambda self: sum(w.live for w in self.workers) > 1)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        """A worker stopped gracefully: its leases given back (or handed over), its lock and
        metric row gone."""
        w = data.draw(st.sampled_from(self.live()))
        w.own.quiesce()
        self.run(w.reader.flush())  # the consumer's stop: batches finished, checkpoints flushed
        self.run(w.own.leave())
        w.running = False

    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        live = self.live()
        if len(live) > 1:
            data.draw(st.sampled_from(live)).paused = True

    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        paused = [w for w in self.workers if w.running and w.paused]
        if paused:
            w = data.draw(st.sampled_from(paused))
            w.paused = False
            self.run(w.own.watch())  # the first thing its loop does: the timer is overdue

    @rule(data=st.data(), kind=st.sampled_from(["drop", "lose"]), n=st.integers(1, 3))
    def fault(self, data: st.DataObject, kind: str, n: int) -> None:
        """The next writes of a worker are dropped, or their answers lost."""
        live = self.live()
        if live:
            data.draw(st.sampled_from(live)).faults.extend([kind] * n)

    @rule(data=st.data())
    def rewind(self, data: st.DataObject) -> None:
        """An operator rewinds an unfinished shard, from one worker's console, whoever holds
        it: back to TRIM_HORIZON or after a record at or before its checkpoint (forward would
        be a skip: records the operator chose not to read)."""
        table = self._table()
        open_ = [sid for sid in IDS if sid in table and table[sid] != SHARD_END]
        live = self.live()
        if not open_ or not live:
            return
        sid = data.draw(st.sampled_from(open_))
        w = data.draw(st.sampled_from(live))
        to = data.draw(st.integers(-1, index_after(table[sid]) - 1))
        position = Position.trim_horizon() if to < 0 else Position.after_sequence(seq(sid, to))
        change = CheckpointChange(
            Checkpoint(sid, position),
            HistoryEntry(sid, "rewind", "ops", position, "open"),
        )
        self.rewound.add(sid)
        self.run(w.own.write([change], None))

    # -- the invariants -------------------------------------------------------------------------

    def _table(self) -> dict[str, str]:
        return {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in self.dynamo.items(TABLE)}

    @invariant()
    def checkpoints_never_move_back(self) -> None:
        table = self._table()
        for sid, text in table.items():
            before = self.checkpoints.get(sid)
            if before is not None and sid not in self.rewound:
                assert order(text) >= order(before), f"{sid}'s checkpoint {before} -> {text}"
        self.checkpoints = table
        self.rewound.clear()

    @invariant()
    def one_reader_per_shard(self) -> None:
        if not self.assigned:
            return
        holders: dict[str, list[str]] = {}
        for w in self.live():
            for sid in w.own.held:
                holders.setdefault(sid, []).append(w.name)
        assert all(len(names) == 1 for names in holders.values()), holders

    # -- the end: the fleet on its own ----------------------------------------------------------

    def settle(self) -> None:
        """Every worker resumed and its faults gone; the running ones' loops at their own
        periods, every reader reading, until every shard is read to its end."""
        for w in self.workers:
            if w.running and w.paused:
                w.paused = False
                self.run(w.own.watch())
            w.faults.clear()
        live = self.live()
        tick = FAILOVER / 12
        start = self.now
        # A lease waits for its holder's expiry (failover), then, 3.x: for a dead leader's lock
        # to be taken over (its duration, seen unchanged from one read of it to a later one,
        # 4 passes apart), for the expiry again of an assignment to each worker that died with
        # its metric row still fresh (a failover each: such a worker is told from a live one
        # only once a lease of its expires), and the leader's and its new owner's next rounds;
        # 2.x: for a taker's round (every failover), twice if the first lost a race. A
        # renewal interval of slack.
        if self.assigned:
            own = self.workers[0].own
            assert isinstance(own, AssignedOwnership)
            interval = own.assign_interval
            dead = sum(not w.running for w in self.workers)
            bound = FAILOVER * (1 + max(1, dead)) + own.lock_duration + 7 * interval
        else:
            bound = 3 * FAILOVER
        bound += FAILOVER / 3
        waiting: dict[str, float] = {}
        due: dict[tuple[str, str], float] = {}  # (worker, loop) -> when it runs next
        step = 0
        while self.now - start < 60 * FAILOVER:
            table = self._table()
            if set(IDS) <= set(table) and all(table[s] == SHARD_END for s in IDS):
                break
            self.now += tick
            step += 1
            self.on_their_own(live, due)
            self.checkpoints_never_move_back()
            self.one_reader_per_shard()
            for sid in self._unowned(live):
                since = waiting.setdefault(sid, self.now)
                assert self.now - since <= bound, (
                    f"{sid} ready and owned by no running worker for {self.now - since:.1f} s "
                    f"(bound {bound:.1f} s)"
                )
            waiting = {sid: t for sid, t in waiting.items() if sid in self._unowned(live)}
        self._tell()
        table = self._table()
        assert all(table.get(s) == SHARD_END for s in IDS), f"not read to the end: {table}"
        for sid, indexes in self.read.items():
            assert set(indexes) >= set(range(RECORDS)), f"{sid}: records lost ({indexes})"

    def on_their_own(self, live: list[Worker], due: dict[tuple[str, str], float]) -> None:
        """One tick of the running workers on their own: each loop whose time has come (or
        whose discovery was woken) runs a round, and every reader reads a record or hands
        its shard over. ``due``: when each (worker, loop) runs next, kept between ticks."""
        for w in live:
            self.run(w.own.watch())
            for loop in ("renew", "lead", "discover", "report"):
                if self.now >= due.get((w.name, loop), 0.0) or (
                    loop == "discover" and self._woken(w)
                ):
                    self.run(self._round(w, loop))
                    due[(w.name, loop)] = self.now + self._period(w, loop)
            for sid in list(w.own.held):
                allowance = w.own.allowance(sid)
                if allowance is Allowance.HAND_OFF:
                    self.run(w.own.hand_over(sid))
                elif allowance is Allowance.READ and w.reader.next.get(sid, RECORDS) < RECORDS:
                    self._read(w, sid)

    @staticmethod
    def _period(w: Worker, loop: str) -> float:
        """Each loop's period as the worker's own timers set it."""
        own = w.own
        if loop == "renew":
            return own.renew_interval
        if isinstance(own, AssignedOwnership):
            return {
                "lead": own.assign_interval,
                "discover": own._look_every(),
                "report": own.report_interval,
            }[loop]
        return own.take_interval if loop == "lead" else 3600.0

    @staticmethod
    def _woken(w: Worker) -> bool:
        """Discovery woken early (the leader assigned this worker a lease, a nudge seen)."""
        found = getattr(w.own, "_found", None)
        if found is None or not found.is_set():
            return False
        found.clear()
        return True

    def _tell(self) -> None:
        """What the run went through, in Hypothesis's statistics (--hypothesis-show-statistics):
        a model run that never hands over or expires a lease checks little."""
        if not currently_in_test_context():
            return
        messages = [e.message for w in self.workers for e in w.own.events.since(0)]
        for what, found in (
            ("a lease handed over", "handed to worker"),
            ("a handoff forced", "forced"),
            ("an expired lease assigned", " expired"),
            ("a lease stolen", "stolen from"),
            ("a lease lost", " lost "),
            ("a leader's lock taken over", "leads the assignment"),
        ):
            n = sum(found in m for m in messages)
            if n:
                event(what)
        if any(not w.running for w in self.workers):
            event("a worker crashed")

    def _unowned(self, live: list[Worker]) -> set[str]:
        """Unfinished leases whose parents are done, held by no running worker."""
        items = {i["leaseKey"]["S"]: i for i in self.dynamo.items(TABLE)}
        names = {w.name for w in live}
        out = set()
        for sid, item in items.items():
            if item["checkpoint"]["S"] == SHARD_END:
                continue
            if any(items.get(p, {}).get("checkpoint", {}).get("S") != SHARD_END
                   for p in PARENTS[sid]):  # fmt: skip
                continue  # its parents are not done: nobody may read it yet
            if item.get("leaseOwner", {}).get("S") not in names:
                out.add(sid)
        return out


class KCL2Protocol(LeaseProtocol):
    assigned = False


settings.register_profile(
    "model",
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("long", parent=settings.get_profile("model"), max_examples=1000,
                          stateful_step_count=80)  # fmt: skip
# tests/break_conditions.py: every failure wanted, none shrunk, none remembered.
settings.register_profile(
    "break",
    parent=settings.get_profile("model"),
    max_examples=150,
    database=None,
    phases=[Phase.generate],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "model"))


def _with_settle(machine: type[LeaseProtocol]) -> type[LeaseProtocol]:
    class Settled(machine):  # type: ignore[valid-type,misc]
        def teardown(self) -> None:
            try:
                self.settle()
            finally:
                super().teardown()

    Settled.__name__ = machine.__name__
    return Settled


TestKCL3Protocol = _with_settle(LeaseProtocol).TestCase
TestKCL3Protocol.settings = PROFILE
TestKCL2Protocol = _with_settle(KCL2Protocol).TestCase
TestKCL2Protocol.settings = PROFILE


@pytest.mark.parametrize("assigned", [True, False], ids=["3x", "2x"])
def test_a_quiet_fleet_reads_every_shard_to_its_end(assigned: bool) -> None:
    """The settle phase alone, two workers and no faults: the model's baseline."""
    machine = _with_settle(LeaseProtocol if assigned else KCL2Protocol)()
    machine.start([1.0, 1.0], [0.0, 0.0])
    machine.teardown()
    times = sorted(len(v) for v in machine.read.values())
    if assigned:  # no steal, no expiry: nothing read twice
        assert times == [RECORDS] * len(IDS), machine.read


def _fleet_at_work(workers: int) -> tuple[LeaseProtocol, dict[tuple[str, str], float]]:
    """``workers`` running on their own until each holds a lease and has read from it."""
    machine = LeaseProtocol()
    machine.start([1.0] * workers, [0.0] * workers)
    due: dict[tuple[str, str], float] = {}
    while not all(w.own.held and w.reader.pending for w in machine.workers):
        assert machine.now < 10 * FAILOVER, "the fleet never got to work"
        machine.now += FAILOVER / 12
        machine.on_their_own(machine.live(), due)
    return machine, due


def _owners(machine: LeaseProtocol) -> dict[str, tuple[str | None, str | None]]:
    return {
        i["leaseKey"]["S"]: (
            i.get("leaseOwner", {}).get("S"),
            i.get("checkpointOwner", {}).get("S"),
        )
        for i in machine.dynamo.items(TABLE)
    }


@pytest.mark.parametrize("then", ["renews", "hands over", "forces it"])
def test_a_worker_leaving_declines_a_lease_being_handed_to_it(then: str) -> None:
    """A lease being handed to a worker that stops gracefully: the worker handing it over
    keeps it and reads on from where it is, at once (not after the lease expires with the
    worker gone), and nothing is read twice."""
    machine, due = _fleet_at_work(2)
    try:
        a, b = machine.workers
        sid = sorted(a.own.held)[0]
        lease = replace(a.own.held[sid])
        assert machine.run(a.own.table.hand_off(lease, b.name))  # the leader's move, say
        machine.run(a.own.renew_round())  # a sees it: finishes the batch in hand
        assert a.own.allowance(sid) is Allowance.HAND_OFF
        b.own.quiesce()
        machine.run(b.reader.flush())
        machine.run(b.own.leave())
        b.running = False
        assert _owners(machine)[sid] == (a.name, None)  # declined: a's again
        if then == "renews":  # its next renewal sees it: reads on
            machine.now += a.own.renew_interval
            machine.run(a.own.renew_round())
            assert a.own.allowance(sid) is Allowance.READ
        elif then == "forces it":  # its batch outlived the handoff's timeout: it forces it
            machine._woken(a)  # (woken before, by a nudge say: not what is looked at)
            a.own.handoff_timeout = 0.5  # (shorter than a renewal's grace, for this test)
            machine.now += 0.6
            machine.run(a.own.watch())
            assert sid not in a.own.held  # the forced write failed: it is a's still
            assert machine._woken(a)  # to find it again at once
            machine.run(a.own.discover())
            assert a.own.allowance(sid) is Allowance.READ
        else:  # it had finished the batch: checkpoints, finds the handoff declined
            machine._woken(a)  # (woken before, by a nudge say: not what is looked at)
            machine.run(a.own.hand_over(sid))
            assert sid not in a.own.held
            assert machine._woken(a)  # to find it again at once
            machine.run(a.own.discover())
            assert a.own.allowance(sid) is Allowance.READ
        start = machine.now
        while not all(machine._table().get(s) == SHARD_END for s in IDS):
            assert machine.now - start < 3 * FAILOVER, "not read to the end"
            machine.now += FAILOVER / 12
            machine.on_their_own([a], due)
            assert b.name not in {owner for owner, _ in _owners(machine).values()}
        assert not [e.message for e in a.own.events.since(0) if " expired" in e.message]
        assert all(sorted(v) == list(range(RECORDS)) for v in machine.read.values()), machine.read
    finally:
        machine.teardown()


def test_a_leader_moves_no_lease_to_a_worker_that_left_since_it_last_looked() -> None:
    """The leader reads the workers' metric rows every few passes; a worker that left since
    (its row removed) receives no lease from the next pass's rebalancing."""
    machine, _ = _fleet_at_work(1)
    try:
        a = machine.workers[0]
        own = a.own
        assert isinstance(own, AssignedOwnership) and own.leader_version is not None
        machine._add(1.0, 0.0)
        b = machine.workers[1]
        rows = machine.run(own.coordinator.metric_rows())
        assert rows is not None and {r.worker for r in rows} == {a.name, b.name}
        machine.run(b.own.leave())  # before it found anything: holds nothing, its row gone
        b.running = False
        own._rows, own._passes = rows, 1  # as read a pass ago
        machine.now += own.assign_interval
        machine.run(own.coordinate())
        assert b.name not in {o for pair in _owners(machine).values() for o in pair}
    finally:
        machine.teardown()


def test_a_worker_holding_only_finished_leases_looks_for_assignments_every_pass() -> None:
    """The leader nudges a worker through a lease it renews, never a finished one: a worker
    that holds only finished leases (its shard-end write not through yet) looks every pass,
    as one that holds none does."""
    machine, _ = _fleet_at_work(1)
    try:
        own = machine.workers[0].own
        assert isinstance(own, AssignedOwnership) and own.leader_version is not None
        sid, lease = next(iter(own.held.items()))
        assert own._look_every() > own.assign_interval  # holding work: the leader nudges
        own.held = {sid: replace(lease, checkpoint=SHARD_END)}
        assert own._look_every() == own.assign_interval
    finally:
        machine.teardown()
