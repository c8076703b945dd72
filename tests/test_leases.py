"""The lease table: items as the KCL writes them, the KCL 2.x taker's choices, and the protocol's
conditional writes through the wire on moto's DynamoDB."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest

from console.checkpoints.leases import (
    Lease,
    LeaseTable,
    LeaseTableError,
    UnwritablePosition,
    checkpoint_of,
    kcl_checkpoint,
    lease_of,
    new_item,
)
from console.engine.ownership.taker import Choice, LeaseObserver, choose
from console.model import Checkpoint, CheckpointStatus, Position, PositionKind
from tests.conftest import unique

SEQ = "49590338271490256608559692538361571095921575989136588898"

# -- items ---------------------------------------------------------------------------------------


def kcl_item(key: str, **extra: Any) -> dict[str, Any]:
    """A lease item as the KCL 2.x serializer writes it."""
    item: dict[str, Any] = {
        "leaseKey": {"S": key},
        "leaseCounter": {"N": "7"},
        "leaseOwner": {"S": "kcl-worker-1"},
        "checkpoint": {"S": SEQ},
        "checkpointSubSequenceNumber": {"N": "3"},
        "ownerSwitchesSinceCheckpoint": {"N": "1"},
        "parentShardId": {"SS": ["shardId-000000000001", "shardId-000000000000"]},
    }
    item.update(extra)
    return item


def test_a_kcl_item_reads_as_the_lease_it_is() -> None:
    lease = lease_of(kcl_item("shardId-000000000002"), "orders")
    assert lease is not None
    assert (lease.shard_id, lease.owner, lease.counter) == (
        "shardId-000000000002",
        "kcl-worker-1",
        7,
    )
    assert lease.parents == ("shardId-000000000000", "shardId-000000000001")  # a string set
    cp = checkpoint_of(lease)
    # KCL's checkpoint is the last processed user record: we read from just after it.
    assert cp.position == Position.after_sequence(SEQ, 3)
    assert kcl_checkpoint(cp) == (SEQ, 3)


def test_other_streams_and_other_entities_are_left_alone() -> None:
    ours = lease_of(kcl_item("123456789012:orders:1700000000:shardId-000000000004"), "orders")
    assert ours is not None and ours.shard_id == "shardId-000000000004"
    assert (
        lease_of(kcl_item("123456789012:payments:1700000000:shardId-000000000004"), "orders")
        is None
    )
    metric = kcl_item("worker-1", entityType={"S": "WORKER_METRIC_STATS"})
    assert lease_of(metric, "orders") is None
    explicit = kcl_item("shardId-000000000009", entityType={"S": "LEASE"})
    assert lease_of(explicit, "orders") is not None
    # A lease we create in a multi-stream table is written as the KCL writes its own.
    child = new_item("123456789012:orders:1700000000:shardId-000000000005", "TRIM_HORIZON")
    assert child["streamName"] == {"S": "123456789012:orders:1700000000"}
    assert child["shardId"] == {"S": "shardId-000000000005"}
    read = lease_of(child, "orders")
    assert read is not None and read.shard_id == "shardId-000000000005"


@pytest.mark.parametrize(
    ("stored", "initial", "expected"),
    [
        ("TRIM_HORIZON", None, Checkpoint("s", Position.trim_horizon())),
        ("LATEST", None, Checkpoint("s", Position.latest())),
        ("SHARD_END", None, Checkpoint("s", Position.latest(), CheckpointStatus.DONE)),
        # AT_TIMESTAMP stores no time: the reader's own initial time, else nothing skipped.
        ("AT_TIMESTAMP", 1_700_000_000.5, Checkpoint("s", Position.at_timestamp(1_700_000_000.5))),
        ("AT_TIMESTAMP", None, Checkpoint("s", Position.trim_horizon())),
    ],
)
def test_sentinels(stored: str, initial: float | None, expected: Checkpoint) -> None:
    lease = Lease(key="s", shard_id="s", owner=None, counter=0, checkpoint=stored)
    assert checkpoint_of(lease, initial) == expected


def test_what_the_table_cannot_hold_is_refused_not_approximated() -> None:
    assert kcl_checkpoint(Checkpoint("s", Position.after_sequence(SEQ))) == (SEQ, 0)
    assert kcl_checkpoint(Checkpoint("s", Position.at_timestamp(5), CheckpointStatus.SKIPPED)) == (
        "SHARD_END",
        0,
    )
    for position in (Position.at_timestamp(5.0), Position.at_sequence(SEQ)):
        with pytest.raises(UnwritablePosition):
            kcl_checkpoint(Checkpoint("s", position))


# -- the taker -----------------------------------------------------------------------------------


def leases(owners: list[str | None], counter: int = 1) -> list[Lease]:
    return [
        Lease(
            key=f"shard-{i}",
            shard_id=f"shard-{i}",
            owner=o,
            counter=counter,
            checkpoint="TRIM_HORIZON",
        )
        for i, o in enumerate(owners)
    ]


def test_a_new_worker_takes_its_share_of_unowned_leases() -> None:
    obs = LeaseObserver()
    obs.update(leases([None] * 8), now=0.0)
    choice = choose(obs, "me", 10.0, 0.0, others=["b", "c"], rng=random.Random(1))
    assert (choice.workers, choice.target, len(choice.take), choice.steal) == (3, 3, 3, ())
    alone = choose(obs, "me", 10.0, 0.0, rng=random.Random(1))
    assert len(alone.take) == 8


def test_a_lease_expires_when_its_counter_stops_moving_for_the_failover_time() -> None:
    obs = LeaseObserver()
    obs.update(leases(["dead", "live"], counter=1), now=0.0)
    seen = lambda key: obs.seen[key]  # noqa: E731
    # First seen owned: as if renewed then.
    assert not obs.expired(seen("shard-0"), 10.0, 9.0)
    for t, live_counter in ((5.0, 2), (10.0, 3), (15.0, 4)):
        obs.update(
            [*leases(["dead"], counter=1), *leases([None, "live"], counter=live_counter)[1:]],
            now=t,
        )
    assert obs.expired(seen("shard-0"), 10.0, 15.0)  # unchanged since 0: dead
    assert not obs.expired(seen("shard-1"), 10.0, 15.0)  # moved every scan: alive
    choice = choose(obs, "me", 10.0, 15.0, others=["dead"])
    # The dead worker is not counted (its leases expired, whatever its heartbeat says).
    assert [lease.shard_id for lease in choice.take] == ["shard-0"]
    assert choice.workers == 2
    # Scans late (a slow table, a busy worker) further apart than the failover time: a lease
    # that moved between them is alive all the same.
    obs.update([*leases(["dead"], counter=1), *leases([None, "live"], counter=9)[1:]], now=27.0)
    assert not obs.expired(seen("shard-1"), 10.0, 27.0)


def test_a_stolen_lease_comes_from_the_busiest_worker_one_at_a_time() -> None:
    obs = LeaseObserver()
    obs.update(leases(["a"] * 6 + ["b"] * 2), now=0.0)
    choice = choose(obs, "me", 10.0, 1.0, rng=random.Random(3))
    assert choice.target == 3 and choice.take == ()
    assert [lease.owner for lease in choice.steal] == ["a"]  # at most one per round
    balanced = LeaseObserver()
    balanced.update(leases(["a"] * 3 + ["b"] * 3 + ["me"] * 2), now=0.0)
    mine = ["shard-6", "shard-7"]
    assert choose(balanced, "me", 10.0, 1.0, held=mine) == Choice((), (), 3, 3)  # balanced
    # Needing two while the busiest is exactly at target: one is still stolen (KCL's rule)...
    even = LeaseObserver()
    even.update(leases(["a"] * 2 + ["b"] * 2), now=0.0)
    assert [lease.owner for lease in choose(even, "me", 10.0, 1.0).steal] in (["a"], ["b"])
    # ...but needing one while nobody is over target steals nothing.
    near = LeaseObserver()
    near.update(leases(["a"] * 2 + ["b"] * 2 + ["me"]), now=0.0)
    assert choose(near, "me", 10.0, 1.0, held=["shard-4"]).steal == ()


def test_a_lease_nobody_holds_never_waits_for_the_counts_to_change() -> None:
    """The split's child measured stranded for 40 s: a dead worker's heartbeat still counted
    it, so target = ceil(7/3) = 3 and both live workers were at target. The least loaded of
    the workers that renew leases takes it all the same; a busier one leaves it to that one."""
    obs = LeaseObserver()
    obs.update(leases(["a"] * 3 + ["me"] * 3 + [None]), now=0.0)
    mine = keys(3, 4, 5)
    choice = choose(obs, "me", 10.0, 1.0, others=["a", "dead"], held=mine, rng=InOrder())
    assert chosen(choice) == (keys(6), (), 3, 3)
    busier = LeaseObserver()
    busier.update(leases(["a"] * 2 + ["me"] * 3 + [None, None]), now=0.0)
    choice = choose(busier, "me", 10.0, 1.0, others=["dead"], held=keys(2, 3, 4), rng=InOrder())
    assert chosen(choice) == ((), (), 3, 3)


def test_a_lease_the_table_says_is_ours_but_we_do_not_hold_is_taken_back() -> None:
    """A renew whose answer was lost, a restart with the same worker id: not stuck forever."""
    obs = LeaseObserver()
    obs.update(leases(["a", "a", "me", "me"]), now=0.0)
    choice = choose(obs, "me", 10.0, 1.0, held=["shard-2"])
    assert [lease.shard_id for lease in choice.take] == ["shard-3"]


def test_a_round_woken_early_sees_live_leases_as_live() -> None:
    """Rounds come early (new leases, a shard's end, an operator's change): a lease renewed
    just before the last regular scan, and not since, is not expired."""
    obs = LeaseObserver()
    obs.update(leases(["a", "b"], counter=1), now=0.0)
    obs.update(leases(["a", "b"], counter=2), now=10.0)  # both renewed since
    obs.update(leases(["a", "b"], counter=2), now=10.5)  # woken early: nothing renewed yet
    assert not any(obs.expired(s, 10.0, 10.5) for s in obs.seen.values())
    choice = choose(obs, "me", 10.0, 10.5)
    assert choice.take == () and choice.workers == 3
    obs.update(leases(["a", "b"], counter=2), now=19.5)  # not yet a whole failover time
    assert not any(obs.expired(s, 10.0, 19.5) for s in obs.seen.values())
    obs.update(leases(["a", "b"], counter=2), now=20.0)  # a whole failover time unchanged
    assert all(obs.expired(s, 10.0, 20.0) for s in obs.seen.values())


def test_finished_leases_are_no_work_and_unready_children_wait() -> None:
    obs = LeaseObserver()
    parent, child = leases(["a", None])
    parent.checkpoint = "SHARD_END"
    child.parents = ("shard-0",)
    obs.update([parent, child], now=0.0)
    choice = choose(obs, "me", 10.0, 0.0, ready=lambda lease: False)
    assert choice.take == ()
    choice = choose(obs, "me", 10.0, 0.0)
    assert [lease.shard_id for lease in choice.take] == ["shard-1"]
    assert choice.workers == 1  # "a" holds only a finished lease: it does not count


class InOrder(random.Random):
    """The table's order kept: a choice's leases compared whole, not as sets."""

    def shuffle(self, x: Any) -> None:
        pass


def keys(*numbers: int) -> tuple[str, ...]:
    return tuple(f"shard-{n}" for n in numbers)


def chosen(choice: Choice) -> tuple[tuple[str, ...], tuple[str, ...], int, int]:
    return (
        tuple(lease.key for lease in choice.take),
        tuple(lease.key for lease in choice.steal),
        choice.target,
        choice.workers,
    )


def ready_unless_child(lease: Lease) -> bool:
    return not lease.parents


@pytest.mark.parametrize(
    ("owners", "others", "held", "max_steal", "expected"),
    [
        # Nothing to read: no target; the workers known are still counted.
        ([], ["b"], [], 1, ((), (), 0, 2)),
        # More workers than leases: one each; the unowned one is taken.
        (["a", None], ["b", "c"], [], 1, (keys(1), (), 1, 4)),
        # Holding more than the target: nothing.
        (["me"] * 3, ["b"], keys(0, 1, 2), 1, ((), (), 2, 2)),
        # An idle worker counts; the busiest (not the first listed) is stolen from, one a round.
        (["b", "b", "a", "a", "a", "a"], [], [], 1, ((), keys(2), 2, 3)),
        (["a"] * 4, ["b"], [], 1, ((), keys(0), 2, 3)),
        (["a"] * 4, ["b"], [], 2, ((), keys(0, 1), 2, 3)),
        # The busiest one over the target: one stolen though two are needed.
        (["a", "a", "a", "b", "b"], [], [], 2, ((), keys(0), 2, 3)),
        # Needing two while the busiest is at the target: one, whatever max_steal allows.
        (["a", "a", "b", "b"], [], [], 2, ((), keys(0), 2, 3)),
        # Needing one while nobody is over the target: nothing.
        (["a", "a", "b", "b", "me"], [], keys(4), 1, ((), (), 2, 3)),
    ],
)
def test_each_choice_in_full(
    owners: list[str | None],
    others: list[str],
    held: tuple[str, ...],
    max_steal: int,
    expected: tuple[tuple[str, ...], tuple[str, ...], int, int],
) -> None:
    obs = LeaseObserver()
    obs.update(leases(owners), now=0.0)
    choice = choose(
        obs, "me", 10.0, 1.0, ready_unless_child, max_steal, InOrder(), others=others, held=held
    )
    assert chosen(choice) == expected


def test_nothing_ready_and_nobody_to_steal_from_is_no_choice() -> None:
    obs = LeaseObserver()
    children = leases([None, None])
    for child in children:
        child.parents = ("parent",)
    obs.update(children, now=0.0)
    choice = choose(obs, "me", 10.0, 1.0, ready_unless_child, rng=InOrder())
    assert chosen(choice) == ((), (), 2, 1)
    # A worker's unready leases are not stolen either.
    theirs = leases(["a", "a", "a", "a"])
    for lease in theirs[:3]:
        lease.parents = ("parent",)
    obs.update(theirs, now=0.0)
    choice = choose(obs, "me", 10.0, 1.0, ready_unless_child, rng=InOrder())
    assert chosen(choice) == ((), keys(3), 2, 2)


def test_a_lease_first_seen_owned_counts_as_renewed_then_unowned_as_never() -> None:
    obs = LeaseObserver()
    obs.update(leases(["a", None]), now=7.0)
    assert [s.changed_at for s in obs.seen.values()] == [7.0, 0.0]
    obs.update(leases(["a", None]), now=9.0)  # unchanged: as first seen
    assert [s.changed_at for s in obs.seen.values()] == [7.0, 0.0]
    obs.update(leases(["a", "b"]), now=12.0)  # taken: a change
    assert [s.changed_at for s in obs.seen.values()] == [7.0, 12.0]


def test_a_lease_as_its_row_shows_it() -> None:
    from console.engine.ownership.taker import Seen, lease_info
    from console.engine.state import LeaseInfo

    owned, unowned = leases(["a", None], counter=4)
    # changed_at is on the scans' clock; the row shows wall time.
    assert lease_info(Seen(owned, 5.0), False, 1000.0) == LeaseInfo("a", 4, 1005.0, False)
    assert lease_info(Seen(owned, 5.0), True, 1000.0) == LeaseInfo("a", 4, 1005.0, True)
    # Never seen to move: no time. Nobody's lease is not "expired": it is free.
    assert lease_info(Seen(unowned, 0.0), True, 1000.0) == LeaseInfo(None, 4, None, False)


# -- the protocol's writes, on moto ----------------------------------------------------------------


@pytest.fixture
async def dynamodb(moto: str) -> AsyncIterator[Any]:
    session = aioboto3.Session(aws_access_key_id="x", aws_secret_access_key="x")
    async with session.client("dynamodb", endpoint_url=moto, region_name="us-east-1") as client:
        yield client


async def test_the_table_is_created_the_kcl_way(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    with pytest.raises(LeaseTableError, match="does not exist"):
        await table.ensure(create=False)
    await table.ensure(create=True)
    desc = (await dynamodb.describe_table(TableName=table.name))["Table"]
    assert desc["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [g["IndexName"] for g in desc["GlobalSecondaryIndexes"]] == ["LeaseOwnerToLeaseKeyIndex"]
    await table.ensure(create=True)  # an existing table is used as it is


async def test_a_table_that_is_not_a_lease_table_is_refused(dynamodb: Any) -> None:
    name = unique("other")
    await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(LeaseTableError, match=r"not a KCL lease table: its key is id \(S, HASH\)"):
        await LeaseTable(dynamodb, name).ensure(create=True)


async def test_every_write_is_conditional_on_the_counter_seen(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    assert await table.create("shardId-1", "TRIM_HORIZON", ("shardId-0",), ("0", "99"))
    assert not await table.create("shardId-1", "LATEST")  # only if absent
    seen = await table.get("shardId-1", None)
    assert seen is not None and (seen.counter, seen.owner, seen.parents) == (
        0,
        None,
        ("shardId-0",),
    )
    raw = (await dynamodb.get_item(TableName=table.name, Key={"leaseKey": {"S": "shardId-1"}}))[
        "Item"
    ]
    assert raw["parentShardId"] == {"SS": ["shardId-0"]}  # a string set, as the KCL writes it

    mine = await table.get("shardId-1", None)
    theirs = await table.get("shardId-1", None)
    assert mine is not None and theirs is not None
    assert await table.take(mine, "w1")
    assert not await table.take(theirs, "w2")  # the counter moved under it
    assert await table.renew(mine)
    assert await table.checkpoint(mine, SEQ, 2)
    stored = await table.get("shardId-1", None)
    assert stored is not None
    assert (stored.owner, stored.counter, stored.checkpoint, stored.sub) == ("w1", 3, SEQ, 2)

    # An operator's fence: conditional on the counter seen, owner removed, counter bumped...
    fenced = await table.get("shardId-1", None)
    assert fenced is not None and await table.fence(fenced, "TRIM_HORIZON", 0)
    after = await table.get("shardId-1", None)
    assert after is not None and (after.owner, after.counter, after.checkpoint) == (
        None,
        4,
        "TRIM_HORIZON",
    )
    # ...so the holder's next renew and checkpoint fail: it has lost the lease.
    assert not await table.renew(mine)
    assert not await table.checkpoint(mine, SEQ, 9)
    final = await table.get("shardId-1", None)
    assert final is not None and final.checkpoint == "TRIM_HORIZON"


async def test_only_the_owner_renews_checkpoints_and_gives_back(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    mine = await table.get("shardId-1", None)
    assert mine is not None and await table.take(mine, "w1")
    # Another worker's copy, right counter, wrong owner: every write of the owner's is refused.
    impostor = await table.get("shardId-1", None)
    assert impostor is not None
    impostor.owner = "w2"
    assert not await table.renew(impostor)
    assert not await table.checkpoint(impostor, SEQ, 0)
    assert not await table.release(impostor)
    assert await table.release(mine)
    after = await table.get("shardId-1", None)
    assert after is not None and (after.owner, after.counter) == (None, mine.counter)


async def test_a_kcl_3x_handoff_blocks_renewals_and_fences_and_ends_with_a_take(
    dynamodb: Any,
) -> None:
    """checkpointOwner: the KCL 3.x's graceful handoff under way."""
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    lease = await table.get("shardId-1", None)
    assert lease is not None and await table.take(lease, "w1")
    await dynamodb.update_item(
        TableName=table.name,
        Key={"leaseKey": {"S": "shardId-1"}},
        UpdateExpression="SET checkpointOwner = :o",
        ExpressionAttributeValues={":o": {"S": "w1"}},
    )
    assert not await table.renew(lease)
    assert not await table.fence(lease, SEQ, 0)
    assert await table.take(lease, "w2")
    taken = await table.get("shardId-1", None)
    assert taken is not None and (taken.owner, taken.checkpoint_owner) == ("w2", None)
    assert await table.renew(lease)


async def test_a_kcl_3x_application_is_recognised(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    assert await table.client_version() is None
    await dynamodb.create_table(
        TableName=f"{table.name}-CoordinatorState",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    await dynamodb.put_item(
        TableName=f"{table.name}-CoordinatorState",
        Item={"key": {"S": "Migration3.0"}, "cv": {"S": "CLIENT_VERSION_3X"}},
    )
    assert await table.client_version() == "CLIENT_VERSION_3X"
    # KCL 3.5's single-table format keeps it in the lease table itself.
    other = LeaseTable(dynamodb, unique("app"))
    await other.ensure(create=True)
    await dynamodb.put_item(
        TableName=other.name,
        Item={
            "leaseKey": {"S": "Migration3.0"},
            "entityType": {"S": "CLIENT_VERSION_MIGRATION"},
            "cv": {"S": "CLIENT_VERSION_3X_WITH_ROLLBACK"},
        },
    )
    assert await other.client_version() == "CLIENT_VERSION_3X_WITH_ROLLBACK"
    assert await other.leases("orders") == ([], [])  # not a lease (nor a malformed one)


def test_position_kinds_the_resolver_must_handle_are_the_unwritable_ones() -> None:
    unwritable = set()
    for kind in PositionKind:
        position = Position(kind, SEQ if "SEQUENCE" in kind.value else None, None, 1.0)
        try:
            kcl_checkpoint(Checkpoint("s", position))
        except UnwritablePosition:
            unwritable.add(kind)
    assert unwritable == {PositionKind.AT_TIMESTAMP, PositionKind.AT_SEQUENCE_NUMBER}


class Progress:
    """What a lease ownership tells the consumer's checkpoints (console.engine.ownership.base
    .Progress), recorded; a loss fails the test unless it expects one."""

    def __init__(self) -> None:
        self.took: list[str] = []
        self.lost: list[tuple[str, float]] = []
        self.expect_loss = False

    def adopt(self, shard_id: str, checkpoint: Checkpoint) -> None:
        self.took.append(shard_id)

    def forget(self, shard_id: str) -> None:
        if not self.expect_loss:
            raise AssertionError(f"{shard_id} lost")
        self.lost.append((shard_id, time.monotonic()))

    def observe(self, shard_id: str, checkpoint: Checkpoint) -> None:
        pass

    async def write(self, changes: Any, finish: Any = None) -> int:
        return 0

    async def flush(self) -> int:
        return 0


async def ownership(dynamodb: Any, failover: float = 3.0) -> Any:
    """Worker "me" of a new lease table, not joined yet: its rounds are run by hand, not by
    start()'s loops."""
    from console.checkpoints.leases import LeaseStore
    from console.engine.events import EventLog
    from console.engine.ownership.leases import LeaseOwnership
    from console.engine.state import EngineState

    store = LeaseStore(dynamodb, unique("app"))
    await store.prepare()
    state = EngineState("orders", "kinesis", "here")
    return LeaseOwnership(store, state, EventLog(), worker_id="me", failover=failover)


async def test_a_child_is_taken_only_once_every_parent_is_finished(dynamodb: Any) -> None:
    from console.engine.ownership.base import Allowance

    worker = await ownership(dynamodb)
    table = worker.table
    await table.create("shardId-0", SEQ)
    await table.create("shardId-1", "TRIM_HORIZON", ("shardId-0",))
    parent = await table.get("shardId-0", None)
    assert parent is not None and await table.take(parent, "other")
    heard = Progress()
    worker.take_over = True  # "other" is watched as a stranger otherwise
    await worker.join("orders", heard)
    await worker.take_round()
    assert heard.took == []  # the parent is still being read by "other": the child waits
    assert await table.checkpoint(parent, "SHARD_END", 0)
    take = worker.table.take

    async def take_after_a_reconcile(lease: Any, owner: str) -> bool:
        # The consumer follows the round's scan while the take is on its way (it clears the
        # signal as it reconciles): the take itself must signal again.
        worker.changed.clear()
        return await take(lease, owner)

    worker.table.take = take_after_a_reconcile  # type: ignore[method-assign]
    await worker.take_round()
    assert heard.took == ["shardId-1"]
    assert worker.allowance("shardId-1") is Allowance.READ
    assert worker.changed.is_set()  # the consumer reconciles


def test_the_default_worker_id_tells_an_operator_where_it_runs() -> None:
    import os
    import socket

    from console.engine.ownership.leases import default_worker_id

    ids = {default_worker_id() for _ in range(5)}
    host, pid, rand = next(iter(ids)).rsplit("-", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert len(rand) == 4 and len(ids) > 1  # two workers of one process differ


async def joined(dynamodb: Any, failover: float = 3.0) -> Any:
    """Worker "me" joined to stream "orders", holding lease shardId-0; its rounds are run by
    hand, not by start()'s loops."""
    from console.engine.ownership.base import Allowance

    worker = await ownership(dynamodb, failover)
    await worker.table.create("shardId-0", SEQ)
    await worker.join("orders", Progress())
    await worker.take_round()
    assert worker.allowance("shardId-0") is Allowance.READ
    return worker


async def test_a_write_whose_answer_was_lost_does_not_lose_the_lease(dynamodb: Any) -> None:
    """The table moved the counter for us (the answer never came back): the failed condition
    reads the lease again, finds it ours, and goes on."""
    from console.engine.ownership.base import Allowance

    worker = await joined(dynamodb)
    await dynamodb.update_item(
        TableName=worker.table.name,
        Key={"leaseKey": {"S": "shardId-0"}},
        UpdateExpression="ADD leaseCounter :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    before = await worker.table.get("shardId-0", None)
    worker._written.clear()  # due for renewal
    await worker.renew_round()  # Progress.forget raises if it is told of a loss
    assert worker.allowance("shardId-0") is Allowance.READ
    after = await worker.table.get("shardId-0", None)
    assert after is not None and before is not None
    assert (after.owner, after.counter) == ("me", before.counter + 1)


async def test_a_renewal_that_hangs_gives_the_lease_up_before_others_may_take_it(
    moto: str,
) -> None:
    """DynamoDB stops answering: no renewal for 2/3 of the failover time and the shard stops,
    before any other worker can see the lease expired."""
    from console.engine.ownership.base import Allowance
    from tests.proxy import HOLD, proxy

    holding = False

    def rule(operation: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        return HOLD if holding and operation == "UpdateItem" else None

    with proxy(moto, rule) as p:
        session = aioboto3.Session(aws_access_key_id="x", aws_secret_access_key="x")
        async with session.client("dynamodb", endpoint_url=p.url, region_name="us-east-1") as c:
            worker = await joined(c)
            progress = worker._progress
            progress.expect_loss = True
            holding = True
            last_write = worker._written["shardId-0"]
            watchdog = asyncio.create_task(worker._watchdog())
            try:
                while not progress.lost:
                    # A round that hangs on its write, as the renewer's do.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await worker.renew_round()
                    assert time.monotonic() - last_write < 3.0 + 2.0, "never given up"
            finally:
                watchdog.cancel()
    (sid, at) = progress.lost[0]
    assert sid == "shardId-0" and worker.allowance("shardId-0") is not Allowance.READ
    # Others may take it once a whole failover time (3 s) passes without a renewal.
    assert at - last_write < 3.0


async def test_an_operators_marks_survive_a_listing(dynamodb: Any) -> None:
    from console.checkpoints.leases import Companion, Marks
    from console.model import Shard

    companion = Companion(dynamodb, unique("app"))
    await companion.ensure(create=True)
    await companion.save_shards("orders", [Shard("shardId-0")])
    await companion.set_marks("orders", "shardId-0", Marks(paused=True))
    await companion.save_shards("orders", [Shard("shardId-0", ending_sequence_number="9")])
    marks, _ = await companion.marks_and_workers("orders")
    assert marks == {"shardId-0": Marks(paused=True)}
    assert (await companion.shards("orders"))[0].ending_sequence_number == "9"
