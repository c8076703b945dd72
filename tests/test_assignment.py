"""The KCL 3.x leader's pass (console.engine.ownership.assignment), from tables: pure, in
milliseconds."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from console.checkpoints.leases import Lease
from console.engine.ownership.assignment import DEAD_EXPIRY, Assigner, Move, Why
from console.engine.ownership.taker import LeaseObserver

FAILOVER = 10.0


def lease(i: int, owner: str | None = None, **kw: object) -> Lease:
    return Lease(f"shard-{i}", f"shard-{i}", owner, 1, "TRIM_HORIZON", **kw)  # type: ignore[arg-type]


def scan(obs: LeaseObserver, leases: list[Lease], now: float) -> None:
    """A scan: new values each time, as the table's answer is."""
    obs.update([replace(x) for x in leases], now)


def observed(leases: list[Lease], now: float = 0.0) -> LeaseObserver:
    obs = LeaseObserver()
    scan(obs, leases, now)
    return obs


def assigner(**kw: object) -> Assigner:
    return Assigner(FAILOVER, 30.0, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def apply(leases: list[Lease], moves: list[Move]) -> None:
    """What the table holds once every move is written (a handoff: completed)."""
    by_key = {x.key: x for x in leases}
    for m in moves:
        by_key[m.lease.key].owner = m.to
        by_key[m.lease.key].counter += 1


def test_every_unowned_lease_is_assigned_in_one_pass_evenly() -> None:
    leases = [lease(i) for i in range(200)]
    moves = assigner().plan(observed(leases), ["a", "b", "c", "d"], 0.0)
    assert all(m.why is Why.UNOWNED and not m.graceful for m in moves)
    assert Counter(m.to for m in moves) == {"a": 50, "b": 50, "c": 50, "d": 50}


def test_only_workers_with_a_fresh_row_receive_and_live_leases_stay() -> None:
    leases = [lease(0, "a"), lease(1, "a"), lease(2, "gone"), lease(3)]
    obs = observed(leases)
    plan = assigner(max_moves=lambda _: 0).plan(obs, ["a", "b"], 1.0)
    assert sorted((m.lease.key, m.to, m.why) for m in plan) == [("shard-3", "b", Why.UNOWNED)]
    # "gone" stopped renewing: its lease expires after the failover time, not before.
    leases[0].counter = leases[1].counter = 2
    scan(obs, leases, FAILOVER - 0.1)
    assert [
        m.lease.key for m in assigner(max_moves=lambda _: 0).plan(obs, ["b"], FAILOVER - 0.1)
    ] == ["shard-3"]
    scan(obs, leases, FAILOVER)
    plan = assigner(max_moves=lambda _: 0).plan(obs, ["b"], FAILOVER)
    assert sorted((m.lease.key, m.why) for m in plan) == [
        ("shard-2", Why.EXPIRED),
        ("shard-3", Why.UNOWNED),
    ]
    assert assigner().plan(obs, [], FAILOVER) == []  # nobody to give them to


def test_a_dead_workers_leases_expire_sooner_when_its_row_says_so() -> None:
    leases = [lease(0, "dead"), lease(1, "live")]
    obs = observed(leases)
    early = DEAD_EXPIRY * FAILOVER
    scan(obs, leases, early)
    plan = assigner().plan(obs, ["live"], early, dead=["dead"])
    assert [(m.lease.key, m.why) for m in plan] == [("shard-0", Why.EXPIRED)]
    assert assigner().plan(obs, ["live"], early - 0.1, dead=["dead"]) == []
    assert assigner().plan(obs, ["live"], early) == []  # its row fresh: the full failover


def test_a_child_waits_until_its_parents_are_finished() -> None:
    parent = lease(0, "a")
    child = lease(1, parents=("shard-0",))
    obs = observed([parent, child])

    def ready(x: Lease) -> bool:
        return all(obs.seen[p].lease.finished for p in x.parents)

    assert assigner().plan(obs, ["a", "b"], 1.0, ready) == []
    parent.checkpoint = "SHARD_END"
    scan(obs, [parent, child], 2.0)
    assert [(m.lease.key, m.why) for m in assigner().plan(obs, ["a", "b"], 2.0, ready)] == [
        ("shard-1", Why.UNOWNED)
    ]


def test_a_balanced_fleet_is_left_alone() -> None:
    for owners in (["a"] * 3 + ["b"] * 3 + ["c"] * 2, ["a", "b"], ["a"] * 2 + ["b"]):
        leases = [lease(i, o) for i, o in enumerate(owners)]
        assert assigner().plan(observed(leases), sorted(set(owners)), 1.0) == [], owners


def test_a_worker_added_gets_its_share_by_handoffs_within_a_few_passes() -> None:
    leases = [lease(i, "abc"[i % 3]) for i in range(200)]
    a = assigner()
    obs = observed(leases)
    workers = ["a", "b", "c", "d"]
    for n in range(1, 6):
        moves = a.plan(obs, workers, float(n))
        assert all(m.why is Why.REBALANCE and m.graceful and m.to == "d" for m in moves)
        assert len(moves) <= 50  # a quarter of the leases a pass at most
        apply(leases, moves)
        scan(obs, leases, float(n))
        held = Counter(x.owner for x in leases)
        if max(held.values()) - min(held.values()) <= 1:
            break
    assert sorted(held.values()) == [50, 50, 50, 50], held
    assert n <= 4


def test_a_busy_lease_weighs_more_than_an_idle_one() -> None:
    # "a" holds one lease carrying all the traffic, "b" four idle ones: balanced as it is.
    leases = [lease(0, "a", throughput=400.0)] + [
        lease(i, "b", throughput=0.0) for i in range(1, 5)
    ]
    assert assigner().plan(observed(leases), ["a", "b"], 1.0) == []
    # By count alone, "b" would give one away; and an idle newcomer takes idle leases from it.
    plan = assigner().plan(observed(leases), ["a", "b", "c"], 1.0)
    assert plan and {m.lease.key for m in plan} <= {f"shard-{i}" for i in range(1, 5)}


def test_a_handoff_not_completed_in_time_is_assigned_outright() -> None:
    leases = [lease(0, "new", checkpoint_owner="old"), lease(1, "old")]
    a = assigner()
    obs = observed(leases)
    assert a.plan(obs, ["old", "new"], 0.0) == []  # under way: not moved again
    assert a.handoffs() == {"shard-0": ("old", "new", 0.0)}
    late = 30.0 + FAILOVER
    leases[0].counter = leases[1].counter = 5  # the old owner kept renewing all along
    scan(obs, leases, late - 1)
    assert a.plan(obs, ["old", "new"], late - 1) == []
    plan = a.plan(obs, ["old", "new"], late)
    assert [(m.lease.key, m.to, m.why) for m in plan] == [("shard-0", "new", Why.HANDOFF_TIMED_OUT)]
    # The worker it was handed to gone meanwhile: the least loaded one.
    plan = a.plan(obs, ["old", "other"], late)
    assert [(m.to, m.why) for m in plan] == [("other", Why.HANDOFF_TIMED_OUT)]


def test_a_handoff_whose_holder_died_expires_like_any_lease() -> None:
    """The KCL's ``actualOwner``: the old holder renews during a handoff; once it stops, the
    lease expires after the failover time, not the handoff timeout, and goes where it was
    going."""
    leases = [lease(0, "new", checkpoint_owner="old"), lease(1, "new")]
    a = assigner(max_moves=lambda _: 0)
    obs = observed(leases)
    assert a.plan(obs, ["old", "new"], FAILOVER - 0.1) == []
    leases[1].counter = 2  # "new" renews its own; "old" renews nothing
    scan(obs, leases, FAILOVER)
    plan = a.plan(obs, ["old", "new", "other"], FAILOVER)
    assert [(m.lease.key, m.to, m.why) for m in plan] == [("shard-0", "new", Why.EXPIRED)]


def test_a_worker_whose_lease_expired_receives_none_though_its_row_is_fresh() -> None:
    leases = [lease(0, "stuck"), lease(1, "b"), lease(2)]
    obs = observed(leases)
    leases[1].counter = 2
    scan(obs, leases, FAILOVER)
    plan = assigner(max_moves=lambda _: 0).plan(obs, ["stuck", "b"], FAILOVER)
    assert sorted((m.lease.key, m.to) for m in plan) == [("shard-0", "b"), ("shard-2", "b")]


def test_the_only_live_worker_receives_though_a_lease_of_its_expired() -> None:
    """One handed on before it found it, say: it still gets what nobody else can read."""
    leases = [lease(0, "new", checkpoint_owner="only"), lease(1)]
    obs = observed(leases)
    scan(obs, leases, FAILOVER)
    plan = assigner(max_moves=lambda _: 0).plan(obs, ["only"], FAILOVER)
    assert sorted((m.lease.key, m.to) for m in plan) == [("shard-0", "only"), ("shard-1", "only")]


def test_a_lease_its_owner_has_not_renewed_since_it_was_assigned_stays() -> None:
    leases = [lease(i, "busy") for i in range(8)]  # 2 moves a pass; 4 would balance
    plan = assigner().plan(
        observed(leases), ["busy", "idle"], 1.0, settled=lambda x: x.key == "shard-3"
    )
    assert [(m.lease.key, m.to, m.why) for m in plan] == [("shard-3", "idle", Why.REBALANCE)]
