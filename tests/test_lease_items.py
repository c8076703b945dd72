"""Lease items (console.checkpoints.leases.items) read and written whole: every attribute the
KCL writes, every DynamoDB type an attribute may wrongly have, the shard a lease tells of, and an
item as people read it. Pure; milliseconds. The conditional writes are tested on moto in
test_leases.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.checkpoints.leases import (
    Lease,
    MalformedLease,
    UnwritablePosition,
    checkpoint_of,
    kcl_checkpoint,
    lease_of,
    new_item,
)
from console.checkpoints.leases.items import plain, shard_of
from console.model import Checkpoint, CheckpointStatus, Position, Shard

SEQ = "49590338271490256608559692538361571095921575989136588898"
FULL: dict[str, Any] = {
    "leaseKey": {"S": "shardId-000000000002"},
    "leaseCounter": {"N": "41"},
    "leaseOwner": {"S": "worker-a"},
    "checkpoint": {"S": SEQ},
    "checkpointSubSequenceNumber": {"N": "3"},
    "ownerSwitchesSinceCheckpoint": {"N": "2"},
    "parentShardId": {"SS": ["shardId-000000000001", "shardId-000000000000"]},
    "childShardIds": {"SS": ["shardId-000000000004", "shardId-000000000003"]},
    "checkpointOwner": {"S": "worker-b"},
    "startingHashKey": {"S": "0"},
    "endingHashKey": {"S": "170141183460469231731687303715884105727"},
    "pendingCheckpoint": {"S": "TRIM_HORIZON"},
}


def test_every_attribute_the_kcl_writes_is_read() -> None:
    assert lease_of(FULL, None) == Lease(
        key="shardId-000000000002",
        shard_id="shardId-000000000002",
        owner="worker-a",
        counter=41,
        checkpoint=SEQ,
        sub=3,
        parents=("shardId-000000000000", "shardId-000000000001"),
        children=("shardId-000000000003", "shardId-000000000004"),
        owner_switches=2,
        checkpoint_owner="worker-b",
        hash_range=("0", "170141183460469231731687303715884105727"),
        pending="TRIM_HORIZON",
    )


def test_what_an_item_may_leave_out() -> None:
    bare = {"leaseKey": {"S": "s"}, "leaseCounter": {"N": "0"}, "checkpoint": {"S": "LATEST"}}
    assert lease_of(bare, None) == Lease(
        key="s", shard_id="s", owner=None, counter=0, checkpoint="LATEST"
    )
    # Half a hash range is none; a parent written as a plain string is read all the same.
    half = {**bare, "startingHashKey": {"S": "0"}, "parentShardId": {"S": "p"}}
    lease = lease_of(half, None)
    assert lease is not None and (lease.hash_range, lease.parents) == (None, ("p",))
    end_only = {**bare, "endingHashKey": {"S": "9"}}
    assert lease_of(end_only, None) == lease_of(bare, None)


def test_items_that_are_not_leases_of_this_stream_are_skipped() -> None:
    assert lease_of({**FULL, "entityType": {"S": "WORKER_METRICS"}}, None) is None
    assert lease_of({**FULL, "entityType": {"S": "LEASE"}}, None) is not None
    assert lease_of({k: v for k, v in FULL.items() if k != "leaseKey"}, None) is None
    multi = {**FULL, "leaseKey": {"S": "123456789012:orders:1700000000:shardId-000000000002"}}
    assert lease_of(multi, "payments") is None
    assert lease_of(multi, None) is None  # a multi-stream key names its stream
    lease = lease_of(multi, "orders")
    assert lease is not None and lease.shard_id == "shardId-000000000002"
    assert lease.key == "123456789012:orders:1700000000:shardId-000000000002"


TYPES = [
    ({"S": "x"}, "a string"),
    ({"N": "1"}, "a number"),
    ({"B": b"x"}, "binary"),
    ({"SS": ["x"]}, "a string set"),
    ({"NS": ["1"]}, "a number set"),
    ({"BS": [b"x"]}, "a binary set"),
    ({"M": {}}, "a map"),
    ({"L": []}, "a list"),
    ({"BOOL": True}, "a boolean"),
    ({"NULL": True}, "null"),
    ({"X": 1}, "of an unknown type"),
    ({}, "of an unknown type"),
]


@pytest.mark.parametrize(("value", "kind"), [t for t in TYPES if "S" not in t[0]])
def test_a_text_attribute_of_another_type_says_which(value: dict[str, Any], kind: str) -> None:
    with pytest.raises(MalformedLease) as caught:
        lease_of({**FULL, "leaseOwner": value}, None)
    assert caught.value.reason == f"leaseOwner is {kind}, not a string"
    assert (caught.value.key, caught.value.shard_id) == ("shardId-000000000002",) * 2


@pytest.mark.parametrize(("value", "kind"), [t for t in TYPES if "N" not in t[0]])
def test_a_number_attribute_of_another_type_says_which(value: dict[str, Any], kind: str) -> None:
    with pytest.raises(MalformedLease) as caught:
        lease_of({**FULL, "ownerSwitchesSinceCheckpoint": value}, None)
    assert caught.value.reason == f"ownerSwitchesSinceCheckpoint is {kind}, not a number"


@pytest.mark.parametrize(
    ("value", "kind"), [t for t in TYPES if "SS" not in t[0] and "S" not in t[0]]
)
def test_a_set_attribute_of_another_type_says_which(value: dict[str, Any], kind: str) -> None:
    with pytest.raises(MalformedLease) as caught:
        lease_of({**FULL, "childShardIds": value}, None)
    assert caught.value.reason == f"childShardIds is {kind}, not a string set"


@pytest.mark.parametrize(
    ("raw", "ok"), [("-3", -3), ("0", 0), ("12", 12), ("1.5", None), ("1e3", None), ("", None)]
)
def test_counters_are_whole_numbers(raw: str, ok: int | None) -> None:
    item = {**FULL, "leaseCounter": {"N": raw}}
    if ok is not None:
        lease = lease_of(item, None)
        assert lease is not None and lease.counter == ok
    else:
        with pytest.raises(MalformedLease) as caught:
            lease_of(item, None)
        assert caught.value.reason == f"leaseCounter {raw!r} is not a whole number"


def test_a_new_item_is_what_the_kcl_s_shard_sync_writes() -> None:
    assert new_item("shardId-000000000000", "TRIM_HORIZON") == {
        "leaseKey": {"S": "shardId-000000000000"},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": "TRIM_HORIZON"},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
    }
    key = "123456789012:orders:1700000000:shardId-000000000003"
    assert new_item(key, SEQ, 4, ("shardId-000000000002", "shardId-000000000001"), ("5", "9")) == {
        "leaseKey": {"S": key},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": SEQ},
        "checkpointSubSequenceNumber": {"N": "4"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "parentShardId": {"SS": ["shardId-000000000001", "shardId-000000000002"]},
        "startingHashKey": {"S": "5"},
        "endingHashKey": {"S": "9"},
        "streamName": {"S": "123456789012:orders:1700000000"},
        "shardId": {"S": "shardId-000000000003"},
    }


SHARD_IDS = st.integers(0, 999).map(lambda n: f"shardId-{n:012d}")


@given(
    shard=SHARD_IDS,
    checkpoint=st.sampled_from(["TRIM_HORIZON", "LATEST", "SHARD_END", "AT_TIMESTAMP", SEQ]),
    sub=st.integers(0, 10**6),
    parents=st.lists(SHARD_IDS, max_size=2, unique=True).map(tuple),
    hash_range=st.none() | st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1)),
    stream=st.none() | st.sampled_from(["orders", "payments"]),
)
def test_a_new_item_reads_back_as_the_lease_it_was_made_for(
    shard: str,
    checkpoint: str,
    sub: int,
    parents: tuple[str, ...],
    hash_range: tuple[int, int] | None,
    stream: str | None,
) -> None:
    key = shard if stream is None else f"123456789012:{stream}:1700000000:{shard}"
    text_range = None if hash_range is None else (str(hash_range[0]), str(hash_range[1]))
    lease = lease_of(new_item(key, checkpoint, sub, parents, text_range), stream)
    assert lease == Lease(
        key=key,
        shard_id=shard,
        owner=None,
        counter=0,
        checkpoint=checkpoint,
        sub=sub,
        parents=tuple(sorted(parents)),
        hash_range=text_range,
    )
    assert shard_of(lease) == Shard(
        shard,
        lease.parents[0] if parents else None,
        lease.parents[1] if len(parents) > 1 else None,
        text_range[0] if text_range else None,
        text_range[1] if text_range else None,
    )


def test_the_shard_a_lease_tells_of() -> None:
    lease = lease_of(FULL, None)
    assert lease is not None
    assert shard_of(lease) == Shard(
        "shardId-000000000002",
        "shardId-000000000000",
        "shardId-000000000001",
        "0",
        "170141183460469231731687303715884105727",
    )
    one = Lease(key="c", shard_id="c", owner=None, counter=0, checkpoint="LATEST", parents=("p",))
    assert shard_of(one) == Shard("c", "p", None, None, None)


def test_checkpoints_both_ways() -> None:
    lease = Lease(key="s", shard_id="s", owner=None, counter=0, checkpoint=SEQ, sub=2)
    assert checkpoint_of(lease) == Checkpoint("s", Position.after_sequence(SEQ, 2))

    def at(text: str, when: float | None = None) -> Checkpoint:
        sentinel = Lease(key="s", shard_id="s", owner=None, counter=0, checkpoint=text)
        return checkpoint_of(sentinel, when)

    assert at("SHARD_END") == Checkpoint("s", Position.latest(), CheckpointStatus.DONE)
    assert at("TRIM_HORIZON") == Checkpoint("s", Position.trim_horizon())
    assert at("LATEST") == Checkpoint("s", Position.latest())
    assert at("AT_TIMESTAMP") == Checkpoint("s", Position.trim_horizon())
    assert at("AT_TIMESTAMP", 1700000000.5) == Checkpoint("s", Position.at_timestamp(1700000000.5))
    assert kcl_checkpoint(Checkpoint("s", Position.after_sequence(SEQ))) == (SEQ, 0)
    assert kcl_checkpoint(Checkpoint("s", Position.after_sequence(SEQ, 5))) == (SEQ, 5)
    assert kcl_checkpoint(Checkpoint("s", Position.trim_horizon())) == ("TRIM_HORIZON", 0)
    assert kcl_checkpoint(Checkpoint("s", Position.latest())) == ("LATEST", 0)
    done = Checkpoint("s", Position.after_sequence(SEQ, 5), CheckpointStatus.DONE)
    assert kcl_checkpoint(done) == ("SHARD_END", 0)
    with pytest.raises(UnwritablePosition) as caught:
        kcl_checkpoint(Checkpoint("s", Position.at_sequence(SEQ)))
    assert str(caught.value) == (
        f"{Position.at_sequence(SEQ).describe()} cannot be written to a lease table: resolve it "
        "to the record before it first"
    )


def test_an_item_as_people_read_it() -> None:
    item = {
        "leaseKey": {"S": "s"},
        "leaseCounter": {"N": "41"},
        "negative": {"N": "-2"},
        "ratio": {"N": "0.5"},
        "parentShardId": {"SS": ["b", "a"]},
        "sizes": {"NS": ["3", "1"]},
        "blob": {"B": b"\x00\x01\x02"},
        "flag": {"BOOL": True},
        "nested": {"L": [{"S": "x"}]},
    }
    assert plain(item) == {
        "leaseKey": "s",
        "leaseCounter": 41,
        "negative": -2,
        "ratio": 0.5,
        "parentShardId": ["a", "b"],
        "sizes": ["1", "3"],
        "blob": "<3 bytes>",
        "flag": True,
        "nested": [{"S": "x"}],
    }
