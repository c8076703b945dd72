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

    def __init__(self, tmp: Path, stream: str, table: str, kinesis: str, dynamodb: str) -> None:
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
                    "clientVersionConfig = CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
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
        if not self.log.exists():
            return []
        return [line.split("\t")[2] for line in self.log.read_text().splitlines()]


async def test_an_application_moves_from_the_kcl_to_shard_console_and_back(
    tmp_path: Path, kinesalite: str, moto: str, h2c: str
) -> None:
    stream = unique("kcl")
    fleet = Fleet(tmp_path, kinesalite, moto, stream)
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 2)
    kcl = KCL(tmp_path, stream, fleet.table, h2c, moto)
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
        # Beside the live KCL worker, shard-console refuses to start.
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
        await wait_for(lambda: {r.seq for r in fleet.rows()} >= second, 90, "shard-console read")
        assert fleet.stop("sc-1") == 0
        assert sorted(r.seq for r in fleet.rows()) == sorted(second)  # nothing of the KCL's
        items = fleet.leases()
        assert all("leaseOwner" not in i for i in items.values())  # given back on stop
        assert {k: i["checkpoint"]["S"] for k, i in items.items()} == _last_per_shard(fleet, second)
        # Nothing of ours in the KCL's table: its leases only, as the KCL wrote them.
        assert set(items) == set(last)

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


def _last_per_shard(fleet: Fleet, sequences: set[str]) -> dict[str, str]:
    """The last sequence number of ``sequences`` in each shard, from the puts' answers."""
    from tests.conftest import Kinesis as K

    tips = K.tips.get(fleet.stream, {})
    return {sid: seq for sid, seq in tips.items() if seq in sequences}
