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


def test_every_finding_in_the_words_the_first_screen_shows() -> None:
    """The whole diagnosis of one troubled application, word for word: what each finding says,
    how severe it is, what it is about, and in what order the first screen lists them."""
    from console.engine.findings import Diagnosis
    from console.engine.observe.diagnosis import malformed_findings

    leases = [
        lease("exp", owner="w1", still=F),  # exactly the failover time: expired
        lease("free", owner=None, still=2 * F),  # exactly two taker rounds: unowned
        lease("hand", owner="w3", handoff="w2", handoff_for=30.0),  # exactly the timeout
        lease("orphan", owner="w2"),  # the stream no longer has it
        lease("p-end", owner="w1"),  # read to its end, never finished
        lease("c-end", owner=None, parents=("p-end",), still=None),
        lease("p-nobody", owner=None, still=2 * F),
        lease("c-nobody", owner=None, parents=("p-nobody",), still=None),
        lease("p-dead", owner="w1", still=F),  # its owner stopped renewing
        lease("c-dead", owner=None, parents=("p-dead",), still=None),
        lease("c-gone", owner=None, parents=("orphan",), still=None),
        lease("fin", owner="idle", finished=True),
        lease("lost", owner="w1"),
        lease("risk", owner="w1"),
    ]
    shards = [
        shard(s)
        for s in ("exp", "free", "hand", "c-end", "p-nobody", "c-nobody", "c-dead", "c-gone")
    ] + [
        shard("p-end", closed=True, caught_up=True),
        shard("p-dead"),
        shard("fin", closed=True),
        shard("nolease"),
        shard("lost", lost="its records after the checkpoint are gone"),
        shard("risk", at_risk="its next record leaves retention in 2h"),
    ]
    by_lease = {x.shard_id: x for x in leases}
    by_shard = {s.shard_id: s for s in shards}
    got = diagnose(by_lease, by_shard, failover=F)
    assert got == [
        Diagnosis(
            Finding.STUCK_CHILD,
            "c-dead",
            "child c-dead waits on parent p-dead: nobody reads it",
            severe=True,
            about="p-dead",
        ),
        Diagnosis(
            Finding.STUCK_CHILD,
            "c-end",
            "child c-end waits on parent p-end: it is read to its end but never checkpointed "
            "SHARD_END (its processor must checkpoint in shard_ended)",
            severe=True,
            about="p-end",
        ),
        Diagnosis(
            Finding.STUCK_CHILD,
            "c-gone",
            "child c-gone waits on parent orphan: the stream no longer has it, but its lease "
            "never reached SHARD_END",
            severe=True,
            about="orphan",
        ),
        Diagnosis(
            Finding.STUCK_CHILD,
            "c-nobody",
            "child c-nobody waits on parent p-nobody: nobody reads it",
            severe=True,
            about="p-nobody",
        ),
        Diagnosis(
            Finding.DATA_LOST,
            "lost",
            "shard lost: its records after the checkpoint are gone",
            severe=True,
        ),
        Diagnosis(
            Finding.NO_LEASE,
            "nolease",
            "shard nolease of the stream has no lease: no worker reads it (the application's "
            "shard sync has not run since it appeared, or ignores it)",
            severe=True,
        ),
        Diagnosis(
            Finding.ORPHAN_LEASE,
            "orphan",
            "lease orphan is for a shard the stream no longer has, and never reached "
            "SHARD_END: what it had not read is gone with retention, and its children wait on "
            "it until the lease is deleted or marked done",
            severe=True,
        ),
        Diagnosis(
            Finding.RETENTION,
            "risk",
            "shard risk: its next record leaves retention in 2h",
            severe=True,
        ),
        Diagnosis(
            Finding.EXPIRED,
            "exp",
            "nobody renews lease exp: worker w1 last renewed it 10s ago (failover 10s); a live "
            "worker takes it at its next lease round; if none does, no worker is running",
        ),
        Diagnosis(
            Finding.UNOWNED,
            "free",
            "nobody holds lease free: no worker reads it (are the workers running, and is there "
            "one with room for it?)",
        ),
        Diagnosis(
            Finding.HANDOFF_STUCK,
            "hand",
            "lease hand has been handed over to w3 for 30s, past the 30s timeout: w2 never "
            "checkpointed its last batch; changes to it are refused until it ends",
        ),
        Diagnosis(
            Finding.IDLE_WORKER,
            "idle",
            "worker idle holds only finished leases (1) while another holds 5 live ones: "
            "finished leases count toward its share, so it takes no work until they are "
            "cleaned up",
        ),
        Diagnosis(
            Finding.EXPIRED,
            "p-dead",
            "nobody renews lease p-dead: worker w1 last renewed it 10s ago (failover 10s); a "
            "live worker takes it at its next lease round; if none does, no worker is running",
        ),
        Diagnosis(
            Finding.UNOWNED,
            "p-nobody",
            "nobody holds lease p-nobody: no worker reads it (are the workers running, and is "
            "there one with room for it?)",
        ),
    ]
    assert malformed_findings(
        [Bad("z", "leaseCounter 'x' is not a number"), Bad("a", "no checkpoint")]
    ) == [
        Diagnosis(
            Finding.MALFORMED,
            "a",
            "lease a is malformed (no checkpoint): no worker reads its shard and its children "
            "wait; shard-console leaves it untouched: fix or delete the item",
            severe=True,
        ),
        Diagnosis(
            Finding.MALFORMED,
            "z",
            "lease z is malformed (leaseCounter 'x' is not a number): no worker reads its shard "
            "and its children wait; shard-console leaves it untouched: fix or delete the item",
            severe=True,
        ),
    ]


class Bad:
    def __init__(self, shard_id: str, reason: str) -> None:
        self.shard_id = shard_id
        self.reason = reason


def test_just_short_of_each_threshold_is_no_finding() -> None:
    leases = [
        lease("exp", owner="w1", still=F - 0.1),
        lease("free", owner=None, still=2 * F - 0.1),
        lease("hand", owner="w3", handoff="w2", handoff_for=29.9),
        lease("hand-unseen", owner="w3", handoff="w2", handoff_for=None),
        lease("p", owner=None, still=2 * F - 0.1),  # unowned: the taker's wait applies
        lease("c", owner=None, parents=("p",), still=None),
        lease("q", owner="w1", still=F - 0.1),  # owned: the failover time applies
        lease("d", owner=None, parents=("q",), still=None),
    ]
    shards = [shard(x.shard_id) for x in leases]
    assert found(leases, shards) == set()
    # A given take_within replaces two failover times, for leases and parents alike.
    by_lease = {x.shard_id: x for x in leases}
    by_shard = {s.shard_id: s for s in shards}
    sooner = diagnose(by_lease, by_shard, failover=F, take_within=F)
    assert {(d.finding, d.subject) for d in sooner} == {
        (Finding.UNOWNED, "free"),
        (Finding.UNOWNED, "p"),
        (Finding.STUCK_CHILD, "c"),
    }


def test_one_busy_worker_with_a_single_live_lease_is_no_imbalance() -> None:
    leases = [lease("d", owner="idle", finished=True), lease("a", owner="busy")]
    assert found(leases, [shard("a"), shard("d", closed=True)]) == set()
    # The idle worker's count and the busiest's, in words.
    two = [*leases, lease("b", owner="busy"), lease("e", owner="idle", finished=True)]
    text = [d.text for d in diagnose({x.shard_id: x for x in two}, None, failover=F)]
    assert text == [
        "worker idle holds only finished leases (2) while another holds 2 live ones: finished "
        "leases count toward its share, so it takes no work until they are cleaned up"
    ]


def test_a_handoff_is_told_from_the_holder_to_the_new_owner() -> None:
    """The KCL 3.x's handoff: leaseOwner is the new owner, checkpointOwner the holder."""
    leases = [lease("h", owner="new", handoff="old", handoff_for=31.0)]
    [stuck] = diagnose({"h": leases[0]}, {"h": shard("h")}, failover=F)
    assert stuck.text == (
        "lease h has been handed over to new for 31s, past the 30s timeout: old never "
        "checkpointed its last batch; changes to it are refused until it ends"
    )


def test_a_leaders_lock_unrenewed_past_its_duration_is_a_finding() -> None:
    from console.engine.observe.diagnosis import LeaderFacts, leader_findings

    held = LeaderFacts("w1", duration=10.0, unchanged_for=9.9)
    assert leader_findings(held, assigned=True) == []
    stale = LeaderFacts("w1", duration=10.0, unchanged_for=10.0)
    [found] = leader_findings(stale, assigned=True)
    assert (found.finding, found.subject) == (Finding.LEADER_STALE, "w1")
    assert leader_findings(stale, assigned=False) == []  # KCL 2.x: no leader assigns
    released = LeaderFacts("w1", duration=10.0, unchanged_for=60.0, released=True)
    assert leader_findings(released, assigned=True) == []
    assert leader_findings(None, assigned=True) == []


def test_a_worker_with_a_fresh_row_and_an_expired_lease_is_a_finding() -> None:
    from console.engine.observe.diagnosis import renewal_findings

    expired = {"s1": "w2", "s2": "w2", "s3": "gone"}
    [found] = renewal_findings({"w1", "w2"}, expired)
    assert (found.finding, found.subject) == (Finding.NOT_RENEWING, "w2")
    assert "does not renew s1, s2:" in found.text
    assert renewal_findings({"w1"}, expired) == []  # a stale row: simply dead
