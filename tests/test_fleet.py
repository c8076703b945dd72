"""Fleet mode through the wire: shard-console workers as separate processes sharing a kinesalite
stream through a lease table on moto's DynamoDB.

Each worker's processor (tests/fleet_app.py) logs who processed which record when, so every test
checks what matters to an operator: nothing lost, duplicates only where the protocol allows
them, per-key order across resharding, and no shard processed by two workers at once beyond the
loser's next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import Kinesis, numbered, run_cli, unique, wait_for

FAILOVER = 3.0
RENEW = FAILOVER / 3
TESTS = Path(__file__).parent
ENV = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class Row:
    worker: str
    shard: str
    seq: str
    data: str
    start: float
    end: float


class Fleet:
    """Worker processes of one application, and what they did."""

    def __init__(self, tmp: Path, kinesis: str, dynamodb: str, stream: str) -> None:
        self.tmp = tmp
        self.kinesis = kinesis
        self.dynamodb = dynamodb
        self.stream = stream
        self.table = unique("app")
        self.protocol = "3x"
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.ddb = boto3.client(
            "dynamodb",
            endpoint_url=dynamodb,
            region_name="us-east-1",
            **{"aws_access_key_id": "x", "aws_secret_access_key": "x"},
        )

    def args(self) -> list[str]:
        return [
            "--lease-table", self.table,
            "--endpoint-url", self.kinesis,
            "--dynamodb-endpoint-url", self.dynamodb,
        ]  # fmt: skip

    def start(self, name: str, *extra: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            **ENV,
            "FLEET_LOG": str(self.tmp / f"{name}.tsv"),
            "FLEET_WORKER": name,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "console", "run", self.stream, *self.args(),
                "--worker-id", name,
                "--failover-time", str(FAILOVER),
                "--no-ui",
                "--processor", "fleet_app:record",
                "--discovery-interval", "1",
                "--idle-interval", "0.2",
                "--status-interval", "60",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop(self, name: str) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.kill()
            proc.wait(10)
        kinesis = boto3.client(
            "kinesis",
            endpoint_url=self.kinesis,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        # kinesalite counts the open shards of every stream against one limit: give them back.
        with contextlib.suppress(kinesis.exceptions.ResourceNotFoundException):
            kinesis.delete_stream(StreamName=self.stream, EnforceConsumerDeletion=True)

    def leases(self) -> dict[str, dict[str, Any]]:
        """The lease table's items (none before a worker has created the table)."""
        try:
            items = self.ddb.scan(TableName=self.table, ConsistentRead=True)["Items"]
        except self.ddb.exceptions.ResourceNotFoundException:
            return {}
        return {i["leaseKey"]["S"]: i for i in items}

    def owners(self) -> dict[str, str | None]:
        return {k: i.get("leaseOwner", {}).get("S") for k, i in self.leases().items()}

    def held(self) -> Counter[str]:
        """Leases held per worker, finished ones left out."""
        return Counter(
            i["leaseOwner"]["S"]
            for i in self.leases().values()
            if "leaseOwner" in i and i["checkpoint"]["S"] != "SHARD_END"
        )

    def rows(self) -> list[Row]:
        out = []
        for path in self.tmp.glob("*.tsv"):
            for line in path.read_text().splitlines():
                w, shard, seq, data, start, end = line.split("\t")
                out.append(Row(w, shard, seq, data, float(start), float(end)))
        return out

    def processed(self) -> set[str]:
        return {r.data for r in self.rows()}


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, kinesalite: str, moto: str
) -> Iterator[Fleet]:
    """A new application: the KCL 3.x protocol, as a new table runs it; or, parametrized
    with "2x", one an operator kept at 2.x before its first worker started."""
    f = Fleet(tmp_path, kinesalite, moto, unique("fleet"))
    if getattr(request, "param", "3x") == "2x":
        f.protocol = "2x"
        f.ddb.create_table(
            TableName=f.table,
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )  # as the KCL 2.x creates it: no leaseOwner index
        kept = run_cli("leases", "migrate", "--to", "2x", "--yes", *f.args(), env=ENV)
        assert kept.returncode == 0, kept.stderr
        assert "CLIENT_VERSION_2X" in kept.stdout
    try:
        yield f
    finally:
        f.close()


BOTH = pytest.mark.parametrize("fleet", ["3x", "2x"], indirect=True)


def datas(records: list[tuple[str, bytes]]) -> set[str]:
    return {d.decode() for _, d in records}


async def started(fleet: Fleet, *names: str) -> None:
    for name in names:
        await wait_for(lambda n=name: "consuming" in fleet.log(n), 30, f"{name} started")


def overlaps(rows: list[Row], grace: float, near: float = 0.5) -> list[str]:
    """Spells in which two workers processed the same shard at once for longer than ``grace``
    (the loser of a lease learns of it at its next renewal, and stops then). Two workers are
    "at once" when each processed a batch of the shard within ``near`` seconds of the other."""
    by_shard: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        by_shard[(r.shard, r.worker)].append(r.start)
    bad = []
    for (shard, x), xs in by_shard.items():
        for (other, y), ys in by_shard.items():
            if other != shard or y <= x:
                continue
            both = sorted(t for t in xs if any(abs(t - u) <= near for u in ys))
            if not both:
                continue
            spell = both[:1]
            for t in [*both[1:], float("inf")]:
                if t - spell[-1] > 2 * near:
                    if spell[-1] - spell[0] > grace:
                        bad.append(
                            f"{shard}: {x} and {y} both read it for {spell[-1] - spell[0]:.1f} s"
                        )
                    spell = [t]
                else:
                    spell.append(t)
    return bad


@BOTH
async def test_three_workers_balance_and_a_killed_workers_shards_move(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 8)
    first = numbered(800, keys=40)
    await kinesis.put(fleet.stream, first)
    for name in ("w1", "w2", "w3"):
        fleet.start(name)
    await started(fleet, "w1", "w2", "w3")
    joined = time.monotonic()
    # KCL 2.x balancing: ceil(8/3) = 3, so 3/3/2, within two rounds (a round: FAILOVER).
    await wait_for(lambda: sorted(fleet.held().values()) == [2, 3, 3], 30, "balanced 3/3/2")
    balanced_after = time.monotonic() - joined
    # Two rounds, with slack for a loaded 2-core machine: a third round, and 3 s for three
    # Python processes finding each other (bench/fleet.py measures it unloaded).
    assert balanced_after <= 3 * FAILOVER + 3.0, f"balanced after {balanced_after:.1f} s"
    await wait_for(lambda: fleet.processed() >= datas(first), 30, "the first records")

    victim = next(w for w, n in fleet.held().items() if n == 3)
    orphans = {k for k, o in fleet.owners().items() if o == victim}
    fleet.kill(victim)
    killed, wall_killed = time.monotonic(), time.time()
    checkpoints = {k: fleet.leases()[k]["checkpoint"]["S"] for k in orphans}
    second = numbered(800, keys=40, start=800)
    if fleet.protocol == "3x":  # at once: the orphans' new owners must find them and read on
        await kinesis.put(fleet.stream, second)
    await wait_for(
        lambda: all(fleet.owners()[k] not in (None, victim) for k in orphans),
        30,
        "the orphaned leases taken",
    )
    moved_after = time.monotonic() - killed
    assert moved_after <= 2 * FAILOVER + 2.0, f"orphans taken after {moved_after:.1f} s"
    survivors = sorted(fleet.held().values())
    assert sum(survivors) == 8 and survivors[-1] - survivors[0] <= 1
    if fleet.protocol == "2x":  # after the survivors' steals (each re-reads from a checkpoint)
        await kinesis.put(fleet.stream, second)

    await wait_for(lambda: fleet.processed() >= datas(first + second), 30, "every record")
    rows = fleet.rows()
    if fleet.protocol == "3x":
        # ...and read again by their new owners as soon: the leader nudges a worker that
        # already holds leases, which else looks for new ones only every minute.
        read_again = max(
            min(
                r.start
                for r in rows
                if r.shard == k and r.start > wall_killed and r.worker != victim
            )
            for k in orphans
        )
        assert read_again - wall_killed <= 2 * FAILOVER + 3.0, f"{read_again - wall_killed:.1f} s"
    assert {r.data for r in rows} == datas(first + second)  # 0 lost
    seen = Counter(r.data for r in rows)
    for r in rows:
        if seen[r.data] > 1 and r.start > wall_killed:
            # Read again after the kill: only from the killed worker's window after its last
            # checkpoint. (Before it, under 2.x, a lease stolen while the fleet balanced is
            # read twice until its loser's next renewal: at-least-once, bounded by overlaps().)
            assert r.shard in orphans, r
            cp = checkpoints[r.shard]
            assert cp == "TRIM_HORIZON" or int(r.seq) > int(cp), r
    assert [d for d in datas(second) if seen[d] != 1] == []
    assert overlaps(rows, RENEW + 1.0) == []
    for name in list(fleet.procs):
        assert fleet.stop(name) == 0


@BOTH
async def test_a_worker_stopped_gracefully_hands_over_without_a_duplicate(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 4)
    first = numbered(400, keys=20)
    await kinesis.put(fleet.stream, first)
    fleet.start("w1")
    fleet.start("w2")
    await started(fleet, "w1", "w2")
    await wait_for(lambda: sorted(fleet.held().values()) == [2, 2], 30, "balanced 2/2")
    await wait_for(lambda: fleet.processed() >= datas(first), 30, "the first records")
    # A lease stolen while the fleet balanced is read twice from its last checkpoint until
    # its loser's next renewal (at-least-once): wait until every steal has been noticed, so
    # that the handover below is all that happens while the second batch is read.
    logs = lambda: fleet.log("w1") + fleet.log("w2")  # noqa: E731
    await wait_for(
        lambda: logs().count("stolen from") == logs().count(" lost to worker"), 30, "steals noticed"
    )
    # Records keep arriving while the handover happens.
    second = numbered(400, keys=20, start=400)
    writer = asyncio.create_task(kinesis.put(fleet.stream, second))
    # w1 stops with records in flight: once it has read some of them, before the put ends.
    await wait_for(lambda: bool(fleet.processed() & datas(second)), 30, "the second batch read")
    assert fleet.stop("w1") == 0
    stopped = time.time()
    assert "w1" not in fleet.owners().values()  # released, not left to expire
    await writer
    await wait_for(lambda: fleet.held() == Counter({"w2": 4}), 30, "w2 holds every lease")
    everything = datas(first + second)
    await wait_for(lambda: fleet.processed() >= everything, 30, "every record")
    rows = fleet.rows()
    assert {r.data for r in rows} == everything
    by_w1 = {r.data for r in rows if r.worker == "w1"}
    again = [r.data for r in rows if r.worker == "w2" and r.start > stopped and r.data in by_w1]
    assert again == []  # a graceful handover: w2 reads on from exactly where w1 stopped
    seen = Counter(r.data for r in rows if r.data in datas(second))
    dups = [d for d, n in seen.items() if n > 1]
    assert dups == []
    assert fleet.stop("w2") == 0
    assert all(o is None for o in fleet.owners().values())  # every lease given back


@BOTH
async def test_split_and_merge_while_three_workers_run(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 2)
    batches = [numbered(200, keys=20, start=200 * i) for i in range(3)]
    await kinesis.put(fleet.stream, batches[0])
    for name in ("w1", "w2", "w3"):
        fleet.start(name)
    await started(fleet, "w1", "w2", "w3")
    await wait_for(lambda: fleet.processed() >= datas(batches[0]), 30, "before the split")
    await kinesis.split(fleet.stream, "shardId-000000000000")
    await kinesis.put(fleet.stream, batches[1])
    await kinesis.merge(fleet.stream, "shardId-000000000002", "shardId-000000000003")
    await kinesis.put(fleet.stream, batches[2])
    everything = datas(batches[0] + batches[1] + batches[2])
    await wait_for(lambda: fleet.processed() >= everything, 60, "every record")
    rows = sorted(fleet.rows(), key=lambda r: (r.start, r.end))
    assert {r.data for r in rows} == everything  # 0 lost
    # Per-key order holds across the split and the merge: parents before children.
    last: dict[str, int] = {}
    for r in rows:
        key, n = r.data.split(":")
        if int(n) > last.get(key, -1):
            last[key] = int(n)
        else:
            # Only a re-delivery of something already seen may go backwards.
            assert sum(1 for x in rows if x.data == r.data) > 1, f"{r.data} out of order"
    leases = fleet.leases()
    parent = leases["shardId-000000000000"]
    assert parent["checkpoint"]["S"] == "SHARD_END"
    assert set(parent["childShardIds"]["SS"]) == {"shardId-000000000002", "shardId-000000000003"}
    merged = leases["shardId-000000000004"]
    assert set(merged["parentShardId"]["SS"]) == {"shardId-000000000002", "shardId-000000000003"}
    assert overlaps(rows, RENEW + 1.0) == []


async def test_a_rewind_from_the_cli_is_replayed_by_the_fleet(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 2)
    records = numbered(200, keys=10)
    puts = await kinesis.put(fleet.stream, records)
    fleet.start("w1")
    await started(fleet, "w1")
    await wait_for(lambda: fleet.processed() >= datas(records), 30, "every record")
    shard = "shardId-000000000000"
    mine = [r for r in fleet.rows() if r.shard == shard]
    before = max((p["SequenceNumber"] for p in puts if p["ShardId"] == shard), key=int)
    await wait_for(
        lambda: fleet.leases()[shard]["checkpoint"]["S"] == before, 30, "the checkpoint flushed"
    )

    result = run_cli("rewind", shard, "--to", "trim_horizon", "--yes", *fleet.args(), env=ENV)
    assert result.returncode == 0, result.stderr
    issued = time.monotonic()
    await wait_for(
        lambda: len([r for r in fleet.rows() if r.shard == shard]) >= 2 * len(mine),
        30,
        "the rewound shard read again",
    )
    replayed_after = time.monotonic() - issued
    assert replayed_after <= FAILOVER + RENEW + 2.0, f"replayed after {replayed_after:.1f} s"
    again = [r.data for r in fleet.rows() if r.shard == shard][len(mine) :]
    assert again == [r.data for r in mine]  # the whole shard, in order, once more
    assert "lease on shardId-000000000000 lost" in fleet.log("w1")
    # The lost lease stopped that shard's worker: what arrives now is read once, by the
    # worker of the new lease alone.
    later = numbered(40, keys=10, start=200)
    await kinesis.put(fleet.stream, later)
    await wait_for(lambda: fleet.processed() >= datas(later), 30, "the later records")
    counts = Counter(r.data for r in fleet.rows())
    assert [d for d in datas(later) if counts[d] != 1] == []

    history = run_cli("checkpoints", "history", shard, "--json", *fleet.args(), env=ENV)
    assert history.returncode == 0, history.stderr
    assert '"cause": "rewind"' in history.stdout and '"to": "trim_horizon"' in history.stdout

    undo = run_cli("undo", "--yes", *fleet.args(), env=ENV)
    assert undo.returncode == 0, undo.stderr
    await wait_for(
        lambda: fleet.leases()[shard]["checkpoint"]["S"] == before, 30, "the undo written"
    )
    assert fleet.stop("w1") == 0


async def test_a_rewind_to_a_time_is_written_as_the_record_before_it(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 1)
    early = await kinesis.put(fleet.stream, numbered(20, keys=2))
    await asyncio.sleep(1.2)  # two groups of records a second apart in arrival time
    cut = time.time()
    await asyncio.sleep(0.2)
    late = await kinesis.put(fleet.stream, numbered(20, keys=2, start=20))
    fleet.start("w1")
    await started(fleet, "w1")
    await wait_for(lambda: len(fleet.processed()) == 40, 30, "every record")
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut % 1 * 1000):03d}Z"
    result = run_cli(
        "rewind", "shardId-000000000000", "--to", f"timestamp:{iso}", "--yes", *fleet.args(),
        env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Never an AT_TIMESTAMP sentinel: the last record before the time, so the next taker reads
    # exactly the records from the time on.
    assert fleet.leases()["shardId-000000000000"]["checkpoint"]["S"] == early[-1]["SequenceNumber"]
    await wait_for(lambda: len(fleet.rows()) == 60, 30, "the late records read again")
    again = [r.seq for r in fleet.rows()][40:]
    assert again == [p["SequenceNumber"] for p in late]
    assert fleet.stop("w1") == 0


# -- bad input: one line, exit 2, nothing written ----------------------------------------------


def refused(fleet: Fleet, *extra: str, env: dict[str, str] | None = None) -> str:
    result = run_cli(
        "run", fleet.stream, *fleet.args(), "--no-ui", "--failover-time", str(FAILOVER), *extra,
        env={**ENV, **(env or {})},
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def tables(fleet: Fleet) -> set[str]:
    return set(fleet.ddb.list_tables()["TableNames"])


async def test_the_lease_table_must_exist_with_no_create_table(fleet: Fleet) -> None:
    await Kinesis(fleet.kinesis).create(fleet.stream, 1)
    line = refused(fleet, "--no-create-table")
    assert f"lease table '{fleet.table}' does not exist: drop --no-create-table" in line
    assert fleet.table not in tables(fleet)


async def test_a_table_that_is_not_a_lease_table(fleet: Fleet) -> None:
    await Kinesis(fleet.kinesis).create(fleet.stream, 1)
    fleet.ddb.create_table(
        TableName=fleet.table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    line = refused(fleet)
    assert "is not a KCL lease table: its key is pk (S, HASH)" in line
    assert fleet.ddb.scan(TableName=fleet.table)["Items"] == []
    assert f"{fleet.table}-shard-console" not in tables(fleet)


async def test_unreachable_dynamodb_and_a_failover_time_too_short(fleet: Fleet) -> None:
    await Kinesis(fleet.kinesis).create(fleet.stream, 1)
    line = refused(fleet, "--dynamodb-endpoint-url", "http://127.0.0.1:9")
    assert "cannot reach DynamoDB" in line
    line = refused(fleet, "--failover-time", "1")
    assert "--failover-time 1 is below the safe minimum of 3 s" in line
    assert fleet.table not in tables(fleet)


async def test_access_denied_on_the_table(fleet: Fleet) -> None:
    from tests.proxy import Reply, proxy

    await Kinesis(fleet.kinesis).create(fleet.stream, 1)

    def deny(operation: str, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        if body.get("TableName") == fleet.table:
            return Reply(400, "AccessDeniedException", "not authorized to perform DescribeTable")
        return None

    with proxy(fleet.dynamodb, deny) as p:
        line = refused(fleet, "--dynamodb-endpoint-url", p.url)
    assert f"access denied on lease table '{fleet.table}'" in line
    assert "grant dynamodb:" in line


async def test_a_kcl_3x_application_is_refused_without_take_over(fleet: Fleet) -> None:
    await Kinesis(fleet.kinesis).create(fleet.stream, 1)
    refused(fleet, "--no-create-table")  # nothing yet
    # A KCL 3.5 application's table, in its single-table format.
    fleet.ddb.create_table(
        TableName=fleet.table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    fleet.ddb.put_item(
        TableName=fleet.table,
        Item={
            "leaseKey": {"S": "Migration3.0"},
            "entityType": {"S": "CLIENT_VERSION_MIGRATION"},
            "cv": {"S": "CLIENT_VERSION_3X"},
        },
    )
    before = fleet.leases()
    line = refused(fleet)
    assert "belongs to a KCL 3.x application (client version CLIENT_VERSION_3X)" in line
    assert "--take-over" in line
    assert fleet.leases() == before
    assert f"{fleet.table}-shard-console" not in tables(fleet)  # nothing of ours either


@pytest.mark.parametrize("fleet", ["2x"], indirect=True)
async def test_live_foreign_workers_and_a_live_worker_id_are_refused(fleet: Fleet) -> None:
    import threading

    await Kinesis(fleet.kinesis).create(fleet.stream, 2)
    fleet.start("w1")
    await started(fleet, "w1")
    await wait_for(lambda: fleet.held() == Counter({"w1": 2}), 30, "w1 holds both leases")
    line = refused(fleet, "--worker-id", "w1")
    assert "worker id 'w1' is live in lease table" in line and "pick another --worker-id" in line
    assert fleet.stop("w1") == 0

    # A KCL worker (not shard-console's: no heartbeat) renewing its lease, as the KCL does.
    key = "shardId-000000000000"
    fleet.ddb.update_item(
        TableName=fleet.table,
        Key={"leaseKey": {"S": key}},
        UpdateExpression="SET leaseOwner = :o",
        ExpressionAttributeValues={":o": {"S": "kcl-worker-7"}},
    )
    done = threading.Event()

    def renew() -> None:
        while not done.wait(0.3):
            fleet.ddb.update_item(
                TableName=fleet.table,
                Key={"leaseKey": {"S": key}},
                UpdateExpression="ADD leaseCounter :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        line = refused(fleet, "--worker-id", "w2")
    finally:
        done.set()
        renewer.join(5)
    assert "live workers that are not shard-console's hold leases" in line
    assert "kcl-worker-7" in line and "--take-over" in line
    assert fleet.owners()[key] == "kcl-worker-7"
    assert fleet.leases()[key]["leaseCounter"]["N"] != "0"  # (its renewals, not ours)
    # Once it stopped renewing, it is dead: a start waits out the failover time and goes on.
    fleet.start("w2")
    await wait_for(lambda: fleet.held() == Counter({"w2": 2}), 30, "w2 takes over")
    assert "kcl-worker-7" not in fleet.owners().values()


@BOTH
async def test_a_pause_from_the_cli_holds_across_the_fleet_until_resumed(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 1)
    shard = "shardId-000000000000"
    fleet.start("w1")
    fleet.start("w2")
    await started(fleet, "w1", "w2")
    await wait_for(lambda: sum(fleet.held().values()) == 1, 30, "the lease taken")
    before = numbered(20, keys=2, start=100)
    puts = await kinesis.put(fleet.stream, before)
    await wait_for(
        lambda: fleet.leases()[shard]["checkpoint"]["S"] == puts[-1]["SequenceNumber"],
        30,
        "read and checkpointed before the pause",
    )
    paused = run_cli("pause", shard, "--yes", *fleet.args(), env=ENV)
    assert paused.returncode == 0, paused.stderr
    # The holder learns of it at its next write (2.x: the lease is nobody's now; 3.x: still
    # its, read again), and whoever holds the lease next honours the pause: it reads nothing.
    logs = lambda: fleet.log("w1") + fleet.log("w2")  # noqa: E731
    await wait_for(lambda: f"lease on {shard} lost" in logs(), 30, "the holder told")
    await wait_for(lambda: sum(fleet.held().values()) == 1, 30, "the lease taken again")
    while_paused = numbered(30, keys=3)
    await kinesis.put(fleet.stream, while_paused)
    await asyncio.sleep(2 * FAILOVER)  # two rounds in which an unpaused fleet would read them
    resumed_at = time.time()
    resumed = run_cli("resume", shard, "--yes", *fleet.args(), env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    await wait_for(
        lambda: fleet.processed() == datas(before + while_paused), 30, "read after the resume"
    )
    # ...and not one of them before it; and the pause kept the checkpoint where it was: what
    # was read before it is not read again.
    assert min(r.start for r in fleet.rows() if r.data in datas(while_paused)) > resumed_at
    counts = Counter(r.data for r in fleet.rows())
    assert [d for d, n in counts.items() if n != 1] == []
    history = run_cli("checkpoints", "history", shard, "--json", *fleet.args(), env=ENV)
    assert '"cause": "pause"' in history.stdout and '"cause": "resume"' in history.stdout


async def test_a_worker_restarted_after_a_crash_under_its_own_id_takes_its_leases_back(
    fleet: Fleet,
) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 2)
    first = numbered(40, keys=4)
    await kinesis.put(fleet.stream, first)
    fleet.start("w1")
    await wait_for(lambda: fleet.processed() >= datas(first), 30, "the first records")
    fleet.kill("w1")  # its heartbeat and its leases stay behind, owned by "w1"
    assert fleet.held() == Counter({"w1": 2})
    second = numbered(40, keys=4, start=40)
    await kinesis.put(fleet.stream, second)
    fleet.start("w1")  # a container restarted with the same --worker-id
    await wait_for(lambda: fleet.processed() >= datas(first + second), 30, "read on")
    assert "is live" not in fleet.log("w1")


async def test_a_pause_keeps_the_leases_checkpoint_as_the_table_has_it(fleet: Fleet) -> None:
    """A lease still at the application's AT_TIMESTAMP sentinel (whose time only the workers'
    configuration knows) keeps it through a pause and a resume from the CLI."""
    await Kinesis(fleet.kinesis).create(fleet.stream, 1)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    fleet.start("w1", "--initial-position", f"at_timestamp:{since}")
    await wait_for(lambda: fleet.held() == Counter({"w1": 1}), 30, "the lease taken")
    shard = "shardId-000000000000"
    assert fleet.leases()[shard]["checkpoint"]["S"] == "AT_TIMESTAMP"
    for action in ("pause", "resume"):
        result = run_cli(action, shard, "--yes", *fleet.args(), env=ENV)
        assert result.returncode == 0, result.stderr
        assert fleet.leases()[shard]["checkpoint"]["S"] == "AT_TIMESTAMP"


@BOTH
async def test_no_shard_is_read_by_two_workers_at_once(fleet: Fleet, request: Any) -> None:
    """Records arrive all along while workers join and get their share. KCL 2.x: they steal
    it, a worker that lost a lease stops reading the shard by its next renewal (what it read
    since its checkpoint is read again), and nothing is lost. KCL 3.x: the leader moves each
    lease by handoff, and not one record is read twice."""
    v3 = request.node.callspec.params["fleet"] == "3x"
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 4)
    sent: list[tuple[str, bytes]] = []
    done = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not done.is_set():
            batch = numbered(20, keys=20, start=n)
            await kinesis.put(fleet.stream, batch)
            sent.extend(batch)
            n += 20
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(produce())
    fleet.start("w1")
    await wait_for(lambda: fleet.held() == Counter({"w1": 4}), 30, "w1 holds every lease")
    fleet.start("w2")
    fleet.start("w3")
    await wait_for(lambda: sorted(fleet.held().values()) == [1, 1, 2], 30, "balanced 2/1/1")
    logs = lambda: "".join(fleet.log(w) for w in ("w1", "w2", "w3"))  # noqa: E731
    # Leases changed hands with records flowing.
    if v3:  # the owner column moves as a handoff begins; its end is the old owner's to say
        await wait_for(lambda: logs().count("handed to worker") >= 2, 30, "two handoffs")
        assert logs().count("stolen from") == 0
    else:
        assert logs().count("stolen from") >= 2
    await asyncio.sleep(2 * RENEW)  # records keep flowing after the last handover
    done.set()
    await writer
    await wait_for(lambda: fleet.processed() >= datas(sent), 30, "every record")
    rows = fleet.rows()
    assert {r.data for r in rows} == datas(sent)
    assert overlaps(rows, RENEW + 1.0) == []
    if v3:  # balancing among live workers re-reads nothing
        twice = [d for d, n in Counter(r.data for r in rows).items() if n > 1]
        assert twice == []


@BOTH
async def test_an_operator_moves_a_lease_to_a_worker_by_a_graceful_handoff(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 2)
    fleet.start("w1")
    fleet.start("w2")
    await started(fleet, "w1", "w2")
    await wait_for(lambda: sorted(fleet.held().values()) == [1, 1], 30, "one lease each")
    shard = next(k for k, o in fleet.owners().items() if o == "w1")
    if fleet.protocol == "3x":  # w1 reads it (a lease not found yet has nobody to hand it on)
        await wait_for(lambda: f"lease on {shard} assigned" in fleet.log("w1"), 30, "w1 reads")
    records = numbered(200, keys=8)
    writer = asyncio.create_task(kinesis.put(fleet.stream, records))
    moved = run_cli("leases", "move", shard, "--to", "w2", "--yes", *fleet.args(), env=ENV)
    if fleet.protocol == "2x":
        assert moved.returncode == 2, moved.stderr
        assert "runs the KCL 2.x protocol" in moved.stderr and "migrate --to 3x" in moved.stderr
        await writer
        return
    assert moved.returncode == 0, moved.stderr
    assert f"to undo: shard-console leases move {shard} --to w1" in moved.stdout
    await writer
    await wait_for(lambda: f"lease on {shard} handed to worker w2" in fleet.log("w1"), 30, "moved")
    await wait_for(lambda: fleet.processed() >= datas(records), 30, "every record")
    assert [d for d, n in Counter(r.data for r in fleet.rows()).items() if n > 1] == []
    history = run_cli("checkpoints", "history", shard, "--json", *fleet.args(), env=ENV)
    assert '"cause": "move"' in history.stdout


async def test_a_change_to_a_lease_in_a_stuck_handoff_needs_force(fleet: Fleet) -> None:
    kinesis = Kinesis(fleet.kinesis)
    await kinesis.create(fleet.stream, 1)
    shard = "shardId-000000000000"
    fleet.start("w1")
    await started(fleet, "w1")
    await wait_for(lambda: fleet.owners().get(shard) == "w1", 30, "the lease taken")
    assert fleet.stop("w1") == 0
    # A handoff its holder never finished (it died checkpointing), as the KCL leaves it.
    fleet.ddb.update_item(
        TableName=fleet.table,
        Key={"leaseKey": {"S": shard}},
        UpdateExpression="SET leaseOwner = :new, checkpointOwner = :old",
        ExpressionAttributeValues={":new": {"S": "new"}, ":old": {"S": "old"}},
    )
    refused = run_cli("rewind", shard, "--to", "trim_horizon", "--yes", *fleet.args(), env=ENV)
    assert refused.returncode != 0
    assert "being handed from old to new" in refused.stderr and "--force" in refused.stderr
    assert fleet.leases()[shard]["checkpointOwner"] == {"S": "old"}  # nothing written
    forced = run_cli(
        "rewind", shard, "--to", "trim_horizon", "--yes", "--force", *fleet.args(), env=ENV
    )
    assert forced.returncode == 0, forced.stderr
    item = fleet.leases()[shard]
    assert "checkpointOwner" not in item and item["checkpoint"] == {"S": "TRIM_HORIZON"}
    assert item["leaseOwner"] == {"S": "new"}  # 3.x: the new owner reads from there
    history = run_cli("checkpoints", "history", shard, "--json", *fleet.args(), env=ENV)
    assert "forced: handoff from old cleared" in history.stdout
