"""The KCL 3.x protocol's conditional writes, each seen to refuse what it must refuse: the
leader's lock (the DynamoDB lock client's ``Leader`` item), the migration item, the workers'
metric rows, and the lease writes of a graceful handoff and of an assignment.

Every test runs twice: through the wire on moto's server, and on the in-memory table the
model test uses (tests/dynamo_memory.py): the same answers from both are what lets the model
test stand for DynamoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aioboto3
import pytest

from console.checkpoints.leases import (
    V2,
    V3,
    Coordinator,
    Lease,
    LeaseTable,
)
from console.checkpoints.leases.coordinator import LEADER_KEY, Migration
from tests.conftest import unique
from tests.dynamo_memory import MemoryDynamo

SEQ = "49590338271490256608559692538361571095921575989136588898"


async def handing(dynamodb: Any) -> tuple[LeaseTable, Lease]:
    """A lease "old" holds, being handed to "new" (the leader's write made): the table, and
    the holder's copy as the holder has it then."""
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", SEQ)
    holder = await table.get("shardId-1", None)
    assert holder is not None and await table.assign(holder, "old")
    leader = await table.get("shardId-1", None)
    assert leader is not None and await table.hand_off(leader, "new")
    holder.checkpoint_owner, holder.owner = "old", "new"
    return table, holder


@pytest.fixture(params=["moto", "memory"])
async def dynamodb(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryDynamo().client()
        return
    moto = request.getfixturevalue("moto")
    session = aioboto3.Session(aws_access_key_id="x", aws_secret_access_key="x")
    async with session.client("dynamodb", endpoint_url=moto, region_name="us-east-1") as client:
        yield client


async def coordinator(dynamodb: Any) -> Coordinator:
    c = Coordinator(dynamodb, unique("app"))
    await c.ensure()
    return c


async def test_one_worker_takes_the_leaders_lock_and_only_it_keeps_it(dynamodb: Any) -> None:
    c = await coordinator(dynamodb)
    assert await c.leader() is None
    mine = await c.acquire_leader("a", 10_000, None)
    assert mine is not None
    assert await c.acquire_leader("b", 10_000, None) is None  # held: attribute_not_exists
    lock = await c.leader()
    assert lock is not None and (lock.owner, lock.duration_ms, lock.released) == (
        "a",
        10_000,
        False,
    )
    # Only its owner, with the version it holds, renews it; each renewal is a new version.
    assert await c.heartbeat_leader("b", mine, 10_000) is None
    assert await c.heartbeat_leader("a", "not-the-version", 10_000) is None
    again = await c.heartbeat_leader("a", mine, 10_000)
    assert again is not None and again != mine
    # A worker that saw the old version unchanged for its duration may not take a renewed one.
    assert await c.acquire_leader("b", 10_000, lock) is None
    renewed = await c.leader()
    assert renewed is not None and renewed.version == again
    # Seen unchanged: taken, conditional on that very version; the old owner's renewal fails.
    taken = await c.acquire_leader("b", 10_000, renewed)
    assert taken is not None
    assert await c.heartbeat_leader("a", again, 10_000) is None
    # Released only by its owner and version.
    assert not await c.release_leader("a", again)
    assert not await c.release_leader("b", "not-the-version")
    assert await c.release_leader("b", taken)
    assert await c.leader() is None


async def test_the_lock_is_the_lock_clients_item(dynamodb: Any) -> None:
    c = await coordinator(dynamodb)
    await c.acquire_leader("a", 120_000, None)
    item = (await dynamodb.get_item(TableName=c.state_table, Key={"key": {"S": LEADER_KEY}}))[
        "Item"
    ]
    assert set(item) == {"key", "ownerName", "leaseDuration", "recordVersionNumber", "scLeader"}
    assert item["leaseDuration"] == {"S": "120000"}  # a string, as the lock client writes it
    lock = await c.leader()
    assert lock is not None and lock.ours  # shard-console's leader: it nudges
    # A KCL worker's lock (the lock client's item, nothing of ours): not ours.
    await dynamodb.put_item(
        TableName=c.state_table,
        Item={
            "key": {"S": LEADER_KEY},
            "ownerName": {"S": "kcl-worker"},
            "leaseDuration": {"S": "120000"},
            "recordVersionNumber": {"S": "v1"},
        },
    )
    kcl = await c.leader()
    assert kcl is not None and (kcl.owner, kcl.ours) == ("kcl-worker", False)


async def test_the_migration_item_moves_only_from_what_was_seen(dynamodb: Any) -> None:
    c = await coordinator(dynamodb)
    none = await c.migration()
    assert none == Migration(None)
    assert await c.set_migration(V3, "a", none)
    assert not await c.set_migration(V2, "b", none)  # another wrote it first
    seen = await c.migration()
    assert (seen.version, seen.by) == (V3, "a")
    assert not await c.set_migration(V2, "b", Migration(V2))  # not what the table holds
    assert await c.set_migration(V2, "b", seen)
    moved = await c.migration()
    assert (moved.version, moved.by) == (V2, "b")
    assert moved.history[0]["cv"] == V3  # the KCL's history, newest first


async def test_a_metric_row_says_when_and_how_often(dynamodb: Any) -> None:
    c = await coordinator(dynamodb)
    await c.report("a", 5.0, 1_800_000_000.5)
    await c.report("b", 5.0, 1_800_000_003.0)
    await c.retire("b")
    rows = await c.metric_rows()
    assert [(r.worker, r.updated, r.ours) for r in rows] == [("a", 1_800_000_000.0, True)]


async def test_a_handoff_keeps_the_holder_renewing_until_it_assigns(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    holder = await table.get("shardId-1", None)
    assert holder is not None and await table.assign(holder, "old")
    assert await table.owned_keys("old") == ["shardId-1"]
    leader = await table.get("shardId-1", None)
    assert leader is not None
    wrong = await table.get("shardId-1", None)
    assert wrong is not None
    wrong.owner = "someone"
    assert not await table.hand_off(wrong, "new")  # leaseOwner as seen
    assert await table.hand_off(leader, "new")
    assert not await table.hand_off(leader, "third")  # a handoff under way is not begun again
    # The holder's renewal as owner fails; as checkpointOwner it goes on, and checkpoints.
    assert not await table.renew(holder)
    holder.checkpoint_owner, holder.owner = "old", "new"
    # A release (a stop) names no owner away during a handoff: it completes it instead.
    releasing = await table.get("shardId-1", None)
    assert releasing is not None and releasing.owner == "new"
    assert not await table.release(releasing)
    assert await table.renew(holder, 1.5)
    assert await table.checkpoint(holder, SEQ, 0)
    # The new owner is not the holder yet: no renewal, no checkpoint of its own.
    newcomer = await table.get("shardId-1", None)
    assert newcomer is not None and newcomer.throughput == 1.5
    newcomer.checkpoint_owner = None
    assert not await table.renew(newcomer)
    assert not await table.checkpoint(newcomer, SEQ, 1)
    # An operator's fence that did not see the handoff is refused (one that did is the
    # store's to refuse, unless forced: test_a_forced_change_ends_the_handoff_it_saw).
    fresh = await table.get("shardId-1", None)
    assert fresh is not None and fresh.checkpoint_owner == "old"
    fresh.checkpoint_owner = None
    assert not await table.fence(fresh, "TRIM_HORIZON", 0)
    # Completed by the holder: the new owner holds it at the checkpoint written.
    stale = await table.get("shardId-1", None)
    assert stale is not None
    assert await table.assign(holder, "new")
    assert not await table.assign(stale, "third")  # the counter moved
    done = await table.get("shardId-1", None)
    assert done is not None
    assert (done.owner, done.checkpoint_owner, done.checkpoint) == ("new", None, SEQ)
    assert await table.owned_keys("old") == []
    assert await table.owned_keys("new") == ["shardId-1"]
    assert await table.renew(done)


async def test_an_assignment_is_conditional_on_the_owners_and_the_counter_seen(
    dynamodb: Any,
) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    seen = await table.get("shardId-1", None)
    other = await table.get("shardId-1", None)
    assert seen is not None and other is not None
    other.owner = "someone"  # a leader's stale view: the lease had an owner
    assert not await table.assign(other, "b")
    assert await table.assign(seen, "a")
    again = await table.get("shardId-1", None)
    assert again is not None and again.owner_switches == 0  # unowned -> a: no switch
    renewed = await table.get("shardId-1", None)
    assert renewed is not None and await table.renew(renewed)  # the holder renews meanwhile...
    assert not await table.assign(again, "b")  # ...so the leader's view is stale: refused
    current = await table.get("shardId-1", None)
    assert current is not None and await table.assign(current, "b")
    moved = await table.get("shardId-1", None)
    assert moved is not None and (moved.owner, moved.owner_switches) == ("b", 1)


async def test_an_operators_change_under_a_leader_keeps_the_holder(dynamodb: Any) -> None:
    """KCL 3.x: the holder reads on from the new checkpoint; nobody else reads meanwhile."""
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", SEQ)
    holder = await table.get("shardId-1", None)
    assert holder is not None and await table.assign(holder, "a")
    fenced = await table.get("shardId-1", None)
    assert fenced is not None and await table.fence(fenced, "TRIM_HORIZON", 0, keep_holder=True)
    after = await table.get("shardId-1", None)
    assert after is not None
    assert (after.owner, after.checkpoint, after.counter) == ("a", "TRIM_HORIZON", 2)
    assert not await table.renew(holder)  # the holder's next write fails: it reads again


async def test_a_leaders_nudge_reaches_the_holder_in_its_next_writes_answer(
    dynamodb: Any,
) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    holder = await table.get("shardId-1", None)
    assert holder is not None and await table.assign(holder, "a")
    assert holder.nudge is None
    seen = await table.get("shardId-1", None)
    assert seen is not None
    stale = await table.get("shardId-1", None)
    assert stale is not None
    stale.owner = "b"
    assert not await table.nudge(stale, 1.0)  # only through the owner seen
    assert await table.nudge(seen, 1_800_000_000.5)
    assert await table.renew(holder)  # no counter moved: the holder's renewal goes on...
    assert holder.nudge == 1_800_000_000.5  # ...and its answer carries the nudge
    assert await table.nudge(seen, 1_800_000_001.5)
    assert await table.checkpoint(holder, SEQ, 0)
    assert holder.nudge == 1_800_000_001.5
    # Not during a handoff: the holder would see it, not the worker it goes to.
    leader = await table.get("shardId-1", None)
    assert leader is not None and await table.hand_off(leader, "b")
    assert not await table.nudge(seen, 1_800_000_002.5)


async def test_a_forced_change_ends_the_handoff_it_saw(dynamodb: Any) -> None:
    table, holder = await handing(dynamodb)
    other = await table.get("shardId-1", None)
    assert other is not None and other.checkpoint_owner == "old"
    other.checkpoint_owner = "someone"
    assert not await table.fence(other, "TRIM_HORIZON", 0, keep_holder=True)  # not the one seen
    seen = await table.get("shardId-1", None)
    assert seen is not None and await table.fence(seen, "TRIM_HORIZON", 0, keep_holder=True)
    after = await table.get("shardId-1", None)
    assert after is not None
    assert (after.owner, after.checkpoint_owner, after.checkpoint) == ("new", None, "TRIM_HORIZON")
    assert not await table.renew(holder)  # the old holder lets go


async def test_a_stale_copy_neither_checkpoints_nor_fences(dynamodb: Any) -> None:
    """The counter guards a holder's checkpoint and an operator's change alike: a copy read
    before another write of the lease is refused, even with the right owner."""
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    first = await table.get("shardId-1", None)
    assert first is not None and await table.assign(first, "a")
    stale = await table.get("shardId-1", None)
    current = await table.get("shardId-1", None)
    assert stale is not None and current is not None
    assert await table.renew(current)
    assert not await table.checkpoint(stale, SEQ, 0)
    assert not await table.fence(stale, SEQ, 0, keep_holder=True)
    after = await table.get("shardId-1", None)
    assert after is not None and after.checkpoint == "TRIM_HORIZON"


async def test_children_are_recorded_only_on_a_lease_that_exists(dynamodb: Any) -> None:
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    assert not await table.set_children("shardId-9", ("shardId-10",))
    assert await table.get("shardId-9", None) is None  # no item made of the children alone


async def test_an_assignment_refuses_owners_it_did_not_see(dynamodb: Any) -> None:
    """A leader's scan that saw no owner (or no handoff) does not overwrite one made since
    without a counter bump: a handoff begun by another leader, say."""
    table = LeaseTable(dynamodb, unique("app"))
    await table.ensure(create=True)
    await table.create("shardId-1", "TRIM_HORIZON")
    holder = await table.get("shardId-1", None)
    assert holder is not None and await table.assign(holder, "old")
    scanned = await table.get("shardId-1", None)
    other = await table.get("shardId-1", None)
    assert scanned is not None and other is not None
    assert await table.hand_off(other, "new")  # no counter bump
    assert not await table.assign(scanned, "third")  # it saw no checkpointOwner
    unowned_view = await table.get("shardId-1", None)
    assert unowned_view is not None
    unowned_view.owner = unowned_view.checkpoint_owner = None
    assert not await table.assign(unowned_view, "third")  # it saw no owner
    final = await table.get("shardId-1", None)
    assert final is not None and (final.owner, final.checkpoint_owner) == ("new", "old")


async def test_a_handoff_is_declined_only_by_the_worker_it_goes_to(dynamodb: Any) -> None:
    table, holder = await handing(dynamodb)
    seen = await table.get("shardId-1", None)
    assert seen is not None
    assert not await table.decline(replace(seen), "old")  # not the worker it goes to
    assert not await table.decline(replace(seen, owner="old"), "old")  # ... as the table says
    wrong = replace(seen, checkpoint_owner="someone")
    assert not await table.decline(wrong, "new")  # the holder as seen
    assert await table.decline(seen, "new")
    assert (seen.owner, seen.checkpoint_owner) == ("old", None)
    after = await table.get("shardId-1", None)
    assert after is not None
    assert (after.owner, after.checkpoint_owner, after.counter) == ("old", None, holder.counter)
    assert not await table.decline(replace(seen, owner="new", checkpoint_owner="old"), "new")
    # The holder's renewal as the checkpointOwner fails now; as the owner, it goes on.
    assert not await table.renew(holder)
    holder.owner, holder.checkpoint_owner = "old", None
    assert await table.renew(holder)
