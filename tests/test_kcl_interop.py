"""The real Kinesis Client Library and shard-console on one lease table, one after the other.

The KCL 3.1.3 from PyPI's kclpy-ext (its jars, run by Java's MultiLangDaemon with a Python record
processor, tests/kcl_app.py) consumes part of a kinesalite stream and stops; shard-console takes
its table over and reads on from the KCL's checkpoints; then the KCL takes the table back and
reads on from shard-console's. Each step must read exactly the records after the previous one's
last checkpoint: none lost, none twice. While the KCL runs, shard-console refuses to start beside
it. DynamoDB is moto's server; the KCL's Kinesis client speaks only HTTP/2, so it reaches
kinesalite through a loopback h2c front (tests/kinesalite/h2c_front.js). See ../shared/LEASES.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KINESALITE, Kinesis, numbered, run_cli, unique, wait_for
from tests.servers import node_server
from tests.test_fleet import ENV, Fleet

HERE = Path(__file__).parent


def kcl_jars() -> Path:
    import amazon_kclpy

    return Path(amazon_kclpy.__file__).parent / "jars"


@pytest.fixture(scope="module")
def h2c(kinesalite: str) -> Iterator[str]:
    with node_server(KINESALITE / "h2c_front.js", kinesalite.rsplit(":", 1)[1]) as url:
        yield url


class KCL:
    """The KCL application: a MultiLangDaemon with tests/kcl_app.py as its record processor."""

    def __init__(
        self,
        tmp: Path,
        stream: str,
        table: str,
        kinesis: str,
        dynamodb: str,
        version: str = "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
    ) -> None:
        self.tmp = tmp
        self.log = tmp / "kcl.records"  # not .tsv: the fleet reads those as its own
        self.properties = tmp / "kcl.properties"
        self.properties.write_text(
            "\n".join(
                [
                    f"executableName = {sys.executable} {HERE / 'kcl_app.py'}",
                    f"streamName = {stream}",
                    f"applicationName = {table}",
                    "AWSCredentialsProvider = DefaultCredentialsProvider",
                    "processingLanguage = python/3.11",
                    "initialPositionInStream = TRIM_HORIZON",
                    "regionName = us-east-1",
                    f"kinesisEndpoint = {kinesis}",
                    f"dynamoDBEndpoint = {dynamodb}",
                    "retrievalMode = POLLING",
                    "metricsLevel = NONE",
                    "workerId = kcl-worker-1",
                    "shutdownGraceMillis = 5000",
                    "failoverTimeMillis = 10000",
                    "shardSyncIntervalMillis = 5000",
                    "idleTimeBetweenReadsInMillis = 500",
                    f"clientVersionConfig = {version}",
                ]
            )
            + "\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        java = shutil.which("java")
        assert java, "java is needed: .ci/run installs it"
        env = {**os.environ, **ENV, "KCL_LOG": str(self.log)}
        self.proc = subprocess.Popen(
            [
                java,
                "-Daws.cborEnabled=false",  # kinesalite's CBOR cuts responses at 16 KiB
                "-cp",
                f"{kcl_jars()}/*",
                "software.amazon.kinesis.multilang.MultiLangDaemon",
                "--properties-file",
                str(self.properties),
            ],
            stdout=open(self.tmp / "kcl.log", "ab"),  # noqa: SIM115 (the process's)
            stderr=subprocess.STDOUT,
            env=env,
        )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def sequences(self) -> list[str]:
        return [seq for _, seq in self.rows()]

    def rows(self) -> list[tuple[str, str]]:
        """(shard, sequence number) of every record the KCL's processor got, in order."""
        if not self.log.exists():
            return []
        return [
            (parts[1], parts[2])
            for parts in (line.split("\t") for line in self.log.read_text().splitlines())
        ]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self.proc = None


@pytest.mark.parametrize(
    "version",
    ["CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X", "CLIENT_VERSION_CONFIG_3X"],
    ids=["kcl-2x", "kcl-3x"],
)
async def test_an_application_moves_from_the_kcl_to_shard_console_and_back(
    tmp_path: Path, kinesalite: str, moto: str, h2c: str, version: str
) -> None:
    """KCL 2.x-compatible: shard-console takes the table over by the 2.x protocol. KCL 3.x (the
    default of every new KCL application): shard-console starts without --take-over, follows
    the KCL's leader lock, metric rows and lease assignment, and hands the table back."""
    stream = unique("kcl")
    fleet = Fleet(tmp_path, kinesalite, moto, stream)
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 2)
    kcl = KCL(tmp_path, stream, fleet.table, h2c, moto, version)
    three = version.endswith("3X")
    try:
        first = {p["SequenceNumber"] for p in await kinesis.put(stream, numbered(60, keys=6))}
        kcl.start()
        # The KCL's start-up takes 20 to 45 s here (its shard sync and lease rounds).
        await wait_for(lambda: set(kcl.sequences()) >= first, 180, "the KCL read the first part")
        last = {sid: seq for sid, seq in _last_per_shard(fleet, first).items()}
        await wait_for(
            lambda: {k: i["checkpoint"]["S"] for k, i in fleet.leases().items()} == last,
            60,
            "the KCL's checkpoints",
        )
        if three:
            migration = fleet.ddb.get_item(
                TableName=f"{fleet.table}-CoordinatorState", Key={"key": {"S": "Migration3.0"}}
            )["Item"]
            assert migration["cv"]["S"] == "CLIENT_VERSION_3X"  # the KCL made a 3.x application
        else:
            # Beside the live KCL 2.x worker, shard-console refuses to start.
            refused = run_cli(
                "run", stream, *fleet.args(), "--no-ui", "--failover-time", "10", env=ENV
            )  # fmt: skip
            assert refused.returncode == 2, refused.stderr
            assert "kcl-worker-1" in refused.stderr and "--take-over" in refused.stderr
        kcl.stop()
        assert len(kcl.sequences()) == len(first)  # the KCL read each record once

        # shard-console takes the table over and reads on from the KCL's checkpoints.
        second = {p["SequenceNumber"] for p in await kinesis.put(stream, numbered(60, keys=6))}
        fleet.start("sc-1", "--failover-time", "10")
        # 3.x: the KCL's lock is released on its stop, or taken over once its duration (120 s)
        # has passed unrenewed; its leases once they expire.
        await wait_for(lambda: {r.seq for r in fleet.rows()} >= second, 240, "shard-console read")
        if three:
            assert "worker sc-1 leads the assignment of leases" in fleet.log("sc-1")
        assert fleet.stop("sc-1") == 0
        assert sorted(r.seq for r in fleet.rows()) == sorted(second)  # nothing of the KCL's
        items = fleet.leases()
        assert all("leaseOwner" not in i for i in items.values())  # given back on stop
        assert {k: i["checkpoint"]["S"] for k, i in items.items()} == _last_per_shard(fleet, second)
        # Nothing of ours in the KCL's table: its leases only (3.x: with our nudge, if any).
        assert set(items) == set(last)
        assert {a for i in items.values() for a in i} <= KCL_ATTRIBUTES | {"scNudge"}

        # The KCL takes the table back and reads on from shard-console's checkpoints.
        third = {p["SequenceNumber"] for p in await kinesis.put(stream, numbered(60, keys=6))}
        kcl.start()
        await wait_for(
            lambda: set(kcl.sequences()) >= first | third, 180, "the KCL read the last part"
        )
        assert sorted(kcl.sequences()) == sorted(first | third)  # none of shard-console's
    finally:
        if kcl.proc is not None:
            kcl.stop()
        fleet.close()


async def test_shard_console_joins_a_running_kcl_3x_application(
    tmp_path: Path, kinesalite: str, moto: str, h2c: str
) -> None:
    """The zero-downtime path: a shard-console worker joins a running KCL 3.x application
    without --take-over; the KCL's leader gives it its share (its metric row makes it
    eligible) by graceful handoffs; the KCL worker stops and shard-console reads on. Nothing
    lost, nothing read twice."""
    stream = unique("kclj")
    fleet = Fleet(tmp_path, kinesalite, moto, stream)
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 4)
    kcl = KCL(tmp_path, stream, fleet.table, h2c, moto, "CLIENT_VERSION_CONFIG_3X")

    async def put() -> set[str]:
        return {p["SequenceNumber"] for p in await kinesis.put(stream, numbered(80, keys=8))}

    def read() -> list[str]:
        return kcl.sequences() + [r.seq for r in fleet.rows()]

    try:
        first = await put()
        kcl.start()
        await wait_for(lambda: set(kcl.sequences()) >= first, 180, "the KCL read the first part")
        fleet.start("sc-1", "--failover-time", "10")
        # The KCL's leader hands sc-1 a share; its worker completes the handoff (it checkpoints
        # first), and sc-1 reads on from there while the KCL still runs.
        await wait_for(lambda: "assigned; reading" in fleet.log("sc-1"), 180, "sc-1 given a share")
        second = await put()
        await wait_for(lambda: bool(fleet.rows()), 120, "sc-1 reading its share")
        await wait_for(lambda: set(read()) >= first | second, 120, "the second part read")
        assert kcl.proc is not None and kcl.proc.poll() is None  # all of it beside the KCL
        kcl.stop()
        third = await put()
        await wait_for(lambda: fleet.held() == {"sc-1": 4}, 240, "sc-1 holds every lease")
        await wait_for(lambda: set(read()) >= first | second | third, 120, "the third part read")
        assert fleet.stop("sc-1") == 0
        assert sorted(read()) == sorted(first | second | third)  # none lost, none twice
    finally:
        if kcl.proc is not None:
            kcl.stop()
        fleet.close()


KCL_ATTRIBUTES = {
    "leaseKey", "leaseCounter", "leaseOwner", "checkpoint", "checkpointSubSequenceNumber",
    "ownerSwitchesSinceCheckpoint", "parentShardId", "childShardIds", "startingHashKey",
    "endingHashKey", "pendingCheckpoint", "pendingCheckpointSubSequenceNumber",
    "pendingCheckpointState", "checkpointOwner", "throughputKBps",
}  # fmt: skip


def _last_per_shard(fleet: Fleet, sequences: set[str]) -> dict[str, str]:
    """The last sequence number of ``sequences`` in each shard, from the puts' answers."""
    from tests.conftest import Kinesis as K

    tips = K.tips.get(fleet.stream, {})
    return {sid: seq for sid, seq in tips.items() if seq in sequences}


async def test_attach_to_a_running_kcl_application(
    tmp_path: Path, kinesalite: str, moto: str, h2c: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console attached to a live KCL application: what it shows matches the table, and
    its changes are honoured by the KCL worker that holds the lease."""
    from console.checkpoints.leases import TRIM_HORIZON
    from console.cli.wiring import Fleet as FleetSettings
    from console.cli.wiring import make_source, open_lease_store
    from console.engine.changes.plan import Action, ControlRequest, SkipTo
    from console.engine.observe.leases import AttachedLeases
    from console.model import Position, ShardStatus
    from tests.conftest import aws

    stream = unique("kclatt")
    fleet = Fleet(tmp_path, kinesalite, moto, stream)
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 2)
    kcl = KCL(tmp_path, stream, fleet.table, h2c, moto)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    try:
        puts = await kinesis.put(stream, numbered(60, keys=6))
        by_shard: dict[str, list[str]] = {}
        for p in puts:
            by_shard.setdefault(p["ShardId"], []).append(p["SequenceNumber"])
        a, b = sorted(by_shard)
        kcl.start()
        await wait_for(lambda: len(kcl.rows()) >= 60, 180, "the KCL read the first part")
        await wait_for(
            lambda: (
                {k: i["checkpoint"]["S"] for k, i in fleet.leases().items()}
                == {a: by_shard[a][-1], b: by_shard[b][-1]}
            ),
            60,
            "the KCL's checkpoints",
        )
        settings = FleetSettings(fleet.table, endpoint_url=moto, create=False)
        async with (
            open_lease_store(settings, aws(moto), create_companion=False) as store,
            make_source(stream, aws(kinesalite)) as source,
        ):
            engine = AttachedLeases(
                store, source, scan_interval=0.5, probe_interval=1.0, failover=10.0
            )
            await engine.start()
            try:
                state = engine.state
                # What attach shows is what the table holds.
                items = fleet.leases()
                assert state.attached_to == "a KCL application"
                for sid, item in items.items():
                    view = state.shards[sid]
                    assert view.owner == item["leaseOwner"]["S"] == "kcl-worker-1"
                    assert view.status is ShardStatus.LEASED
                    assert view.checkpoint == Position.after_sequence(item["checkpoint"]["S"], 0)
                    assert view.lease.counter == int(item["leaseCounter"]["N"])

                # A rewind to a sequence number on a shard the live KCL worker holds: it drops
                # the lease, and the next taker (itself) reads again exactly from the target.
                k = len(by_shard[a]) // 2
                assert k >= 2
                target = by_shard[a][k]
                request = ControlRequest(Action.REWIND, a, Position.at_sequence(target), actor="t")
                assert "held by kcl-worker-1" in (await engine.preview(request)).summary
                seen = len(kcl.rows())
                result = await engine.control(request)
                assert result.ok, result.message
                assert fleet.leases()[a]["checkpoint"]["S"] == by_shard[a][k - 1]

                def again(shard: str) -> list[str]:
                    return [seq for sid, seq in kcl.rows()[seen:] if sid == shard]

                # Within the failover time plus one read (the KCL gives up a lease it cannot
                # renew at once; taking it back waits for its next lease round).
                rest = by_shard[a][k:]
                await wait_for(lambda: len(again(a)) >= len(rest), 40, "the KCL read a again")
                assert again(a) == rest
                assert again(b) == []

                # A rewind to a time: from the first record at or after it.
                await wait_for(
                    lambda: fleet.leases()[a]["checkpoint"]["S"] == by_shard[a][-1], 30, "caught up"
                )
                later = await kinesis.put(stream, numbered(20, keys=6, start=100))
                new_b = [p["SequenceNumber"] for p in later if p["ShardId"] == b]
                assert new_b
                await wait_for(lambda: new_b[-1] in kcl.sequences(), 30, "the new part read")
                cut = await kinesis.arrival(stream, b, new_b[0]) - 0.001
                seen = len(kcl.rows())
                result = await engine.control(
                    ControlRequest(Action.REWIND, b, Position.at_timestamp(cut), actor="t")
                )
                assert result.ok, result.message
                assert fleet.leases()[b]["checkpoint"]["S"] == by_shard[b][-1]
                await wait_for(lambda: len(again(b)) >= len(new_b), 40, "shard b read again")
                assert again(b) == new_b

                # Undo, before the KCL takes the lease again: the checkpoint the rewind
                # overwrote is back, and the KCL reads nothing twice.
                await wait_for(
                    lambda: fleet.leases()[b]["checkpoint"]["S"] == new_b[-1], 30, "caught up"
                )
                await engine.refresh()
                result = await engine.control(
                    ControlRequest(Action.REWIND, b, Position.trim_horizon(), actor="t")
                )
                assert result.ok, result.message
                assert fleet.leases()[b]["checkpoint"]["S"] == TRIM_HORIZON
                result = await engine.control(ControlRequest(Action.UNDO, actor="t"))
                assert result.ok, result.message
                seen = len(kcl.rows())  # from here on, nothing of b may be read again
                assert fleet.leases()[b]["checkpoint"]["S"] == new_b[-1]
                history = await engine.history(b)
                assert [h.cause for h in history[:2]] == ["undo", "rewind"]

                # Skip to the tip: the records put before it are never read again, the next
                # ones are.
                await engine.refresh()
                result = await engine.control(ControlRequest(Action.SKIP, a, skip_to=SkipTo.LATEST))
                assert result.ok, result.message
                # The KCL drops each lease at its next renewal and takes it back at a lease
                # round (what it read meanwhile would be read twice: at least once).
                for shard_id in (a, b):
                    await wait_for(
                        lambda s=shard_id: (
                            fleet.leases()[s].get("leaseOwner", {}).get("S") == "kcl-worker-1"
                        ),
                        60,
                        f"{shard_id} taken back",
                    )
                tail = await kinesis.put(stream, numbered(30, keys=6, start=200))
                tail_a = [p["SequenceNumber"] for p in tail if p["ShardId"] == a]
                tail_b = [p["SequenceNumber"] for p in tail if p["ShardId"] == b]
                assert tail_a and tail_b
                await wait_for(
                    lambda: len(again(a)) >= len(tail_a) and len(again(b)) >= len(tail_b),
                    40,
                    "the tails",
                )
                assert again(a) == tail_a  # none of what was there before the skip
                assert again(b) == tail_b  # none of what the undone rewind would have re-read

                # Split b while the KCL runs: the child leases appear under their parent.
                await kinesis.split(stream, b)
                await wait_for(
                    lambda: (
                        len(state.lineage.children.get(b, ())) == 2
                        and all(
                            state.shards[k].lease is not None for k in state.lineage.children[b]
                        )
                    ),
                    60,
                    "the child leases",
                )
                kids = fleet.leases()
                for kid in state.lineage.children[b]:
                    assert kids[kid]["parentShardId"]["SS"] == [b]
                    assert kids[kid]["checkpoint"]["S"] in (TRIM_HORIZON, *by_shard.get(kid, ()))
                # The KCL read b to its end (the front adds ChildShards as Kinesis does).
                await wait_for(lambda: state.shards[b].status is ShardStatus.DONE, 30, "b done")

                # Kill the KCL worker: its leases show as expired after the failover time.
                await wait_for(lambda: state.shards[a].owner == "kcl-worker-1", 30, "a held again")
                kcl.kill()
                held = {sid for sid, v in state.shards.items() if v.owner == "kcl-worker-1"}
                assert held
                await wait_for(
                    lambda: all(state.shards[sid].lease.expired for sid in held),
                    10 + 15,
                    "expired leases",
                )
                told = {e.shard_id for e in engine.events.since(0) if e.kind == "lease_expired"}
                live = {sid for sid in held if state.shards[sid].status is not ShardStatus.DONE}
                assert live and told >= live, (
                    held,
                    live,
                    [(e.kind, e.message) for e in engine.events.since(0)],
                )
            finally:
                await engine.stop()
    finally:
        if kcl.proc is not None:
            kcl.stop()
        fleet.close()
