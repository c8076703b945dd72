"""What the attached console says is wrong: each finding from fixed facts, and the look-alikes
that are not findings (a child waiting on a parent being read, a lease just created)."""

from __future__ import annotations

from console.engine.observe.diagnosis import Finding, LeaseFacts, ShardFacts, diagnose

F = 10.0


def lease(
    sid: str,
    owner: str | None = "w1",
    finished: bool = False,
    parents: tuple[str, ...] = (),
    still: float | None = 1.0,
    handoff: str | None = None,
    handoff_for: float | None = None,
) -> LeaseFacts:
    return LeaseFacts(sid, owner, finished, parents, still, handoff, handoff_for)


def shard(
    sid: str,
    parents: tuple[str, ...] = (),
    closed: bool = False,
    caught_up: bool | None = None,
    lost: str | None = None,
    at_risk: str | None = None,
) -> ShardFacts:
    return ShardFacts(sid, parents, closed, caught_up, lost, at_risk)


def found(leases: list[LeaseFacts], shards: list[ShardFacts] | None) -> set[tuple[Finding, str]]:
    by_lease = {x.shard_id: x for x in leases}
    by_shard = None if shards is None else {s.shard_id: s for s in shards}
    return {(d.finding, d.subject) for d in diagnose(by_lease, by_shard, failover=F)}


def test_a_healthy_application_has_no_findings() -> None:
    leases = [
        lease("p", finished=True, owner=None),
        lease("c1", parents=("p",)),
        lease("c2", parents=("p",), owner="w2"),
    ]
    shards = [shard("p", closed=True), shard("c1", ("p",)), shard("c2", ("p",))]
    assert found(leases, shards) == set()


def test_a_child_waiting_on_a_parent_being_read_is_not_stuck() -> None:
    shards = [shard("p", closed=True, caught_up=False), shard("c", ("p",))]
    for still in (None, 2.0, 10 * F):
        # Nobody holds the child, however long: nobody may, while its parent is read.
        leases = [lease("p"), lease("c", owner=None, parents=("p",), still=still)]
        assert found(leases, shards) == set(), still


def test_a_child_stuck_behind_a_parent_read_to_its_end_or_read_by_nobody() -> None:
    leases = [lease("p"), lease("c", owner=None, parents=("p",))]
    at_end = found(leases, [shard("p", closed=True, caught_up=True), shard("c", ("p",))])
    assert at_end == {(Finding.STUCK_CHILD, "c")}
    text = diagnose(
        {x.shard_id: x for x in leases},
        {"p": shard("p", closed=True, caught_up=True), "c": shard("c", ("p",))},
        failover=F,
    )[0].text
    assert text == (
        "child c waits on parent p: it is read to its end but never checkpointed SHARD_END "
        "(its processor must checkpoint in shard_ended)"
    )
    nobody = [lease("p", owner=None, still=30.0), lease("c", owner=None, parents=("p",))]
    got = found(nobody, [shard("p", closed=True), shard("c", ("p",))])
    assert (Finding.STUCK_CHILD, "c") in got and (Finding.UNOWNED, "p") in got


def test_shards_without_leases_and_leases_without_shards() -> None:
    leases = [lease("a"), lease("gone"), lease("gone-done", finished=True)]
    shards = [shard("a"), shard("b"), shard("old", closed=True)]
    assert found(leases, shards) == {
        (Finding.NO_LEASE, "b"),  # open, and nobody leases it
        (Finding.ORPHAN_LEASE, "gone"),  # not finished, and the stream no longer has it
    }
    # Without the stream's listing, nothing is said about either.
    assert found(leases, None) == set()
    # The children of a parent still being read have no lease yet, rightly (the KCL creates
    # them when the parent ends), whether the parent has a lease or not.
    kids = [shard("k1", ("a",)), shard("k2", ("b",))]
    assert found(leases, [*shards, *kids]) == found(leases, shards)


def test_expired_unowned_and_a_fresh_lease_not_yet_taken() -> None:
    leases = [
        lease("x", still=F),  # not renewed for the failover time
        lease("y", still=F - 0.5),
        lease("z", owner=None, still=2 * F + 1),  # no taker came in two taker rounds
        lease("w", owner=None, still=F + 1),  # fenced a moment ago: the next round takes it
        lease("new", owner=None, still=2.0),  # just created: workers take it at their next round
        lease("unseen", owner=None, still=None),  # not watched long enough to say
    ]
    assert found(leases, [shard(s) for s in ("x", "y", "z", "w", "new", "unseen")]) == {
        (Finding.EXPIRED, "x"),
        (Finding.UNOWNED, "z"),
    }


def test_a_handoff_stuck_past_its_timeout() -> None:
    leases = [
        lease("h", handoff="w2", handoff_for=31.0),
        lease("ok", handoff="w2", handoff_for=5.0),
    ]
    assert found(leases, [shard("h"), shard("ok")]) == {(Finding.HANDOFF_STUCK, "h")}


def test_a_worker_holding_only_finished_leases_while_another_is_busy() -> None:
    leases = [
        lease("d1", owner="idle", finished=True),
        lease("d2", owner="idle", finished=True),
        lease("a", owner="busy"),
        lease("b", owner="busy"),
    ]
    shards = [shard(s) for s in ("a", "b")] + [shard(s, closed=True) for s in ("d1", "d2")]
    assert found(leases, shards) == {(Finding.IDLE_WORKER, "idle")}
    # With at most one live lease on the busiest, the balance is fine.
    assert found(leases[:3], shards[:1] + shards[2:]) == set()


def test_data_lost_is_severe_and_first() -> None:
    leases = [lease("a", still=F), lease("b"), lease("c")]
    shards = [
        shard("a"),
        shard("b", lost="its checkpoint is older than the stream's retention"),
        shard("c", at_risk="the oldest record not processed yet leaves retention in 60 s"),
    ]
    result = diagnose({x.shard_id: x for x in leases}, {s.shard_id: s for s in shards}, failover=F)
    assert [(d.finding, d.subject) for d in result] == [
        (Finding.DATA_LOST, "b"),
        (Finding.RETENTION, "c"),
        (Finding.EXPIRED, "a"),
    ]
    assert result[0].severe and result[1].severe and not result[2].severe
