"""Shared fixtures: real endpoints on loopback (moto's server, kinesalite, the demo endpoint).

kinesalite is installed from the npm registry on first use (``npm ci`` in tests/kinesalite) and
started on 127.0.0.1 for the session. Nothing of ours is mocked: faults are injected at the
client boundary (console.sources.faults).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

# Dummy credentials for the emulators, set before anything imports botocore. Real ones from the
# developer's machine must never reach a test.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        # Subprocess runs have no terminal: headless, as in a container. The console's own
        # tests run it in-process with Textual's pilot.
        "SHARD_CONSOLE_NO_UI": "1",
    }
)
# One home for a whole run, gone at its end. Mutation testing runs pytest again in a forked
# child per mutant, which ends without atexit: the children reuse their parent's home.
_HOME = os.environ.get("PYTEST_SHARD_CONSOLE_HOME", "")
if not _HOME:
    _HOME = tempfile.mkdtemp(prefix="shard-console-tests-")
    os.environ["PYTEST_SHARD_CONSOLE_HOME"] = _HOME
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["XDG_CONFIG_HOME"] = str(Path(_HOME) / "config")
os.environ["XDG_DATA_HOME"] = str(Path(_HOME) / "data")

from console.engine.consume.consumer import ConsumerOptions  # noqa: E402
from console.model import Record, ShardContext  # noqa: E402
from console.processors.base import Processor  # noqa: E402
from console.sources.aws import AwsSettings  # noqa: E402
from tests.servers import moto_server, node_server  # noqa: E402

TESTS = Path(__file__).parent
KINESALITE = TESTS / "kinesalite"
KINESIS_MOCK = TESTS / "kinesis-mock"

# Fixtures that start a server in another process: a test that uses one (directly or through
# another fixture) is marked ``emulator``, so ``pytest -m "not emulator"`` is the fast loop, and
# what mutation testing runs (pyproject.toml, [tool.mutmut]). The demo's embedded endpoint runs
# in-process and starts in milliseconds: not one of them.
EMULATORS = frozenset({"kinesalite", "stock_kinesalite", "kinesis_mock", "moto"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if EMULATORS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


FAST = ConsumerOptions(
    discovery_interval=0.5,
    flush_interval=0.2,
    idle_interval=0.05,
    backoff_base=0.01,
    backoff_cap=0.05,
    processor_backoff_cap=0.05,
    command_interval=0.1,
    tick_interval=0.2,
)


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _install(folder: Path, package: str) -> None:
    """``npm ci`` in ``folder`` unless ``package`` is installed there already."""
    if (folder / "node_modules" / package).is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed to install {package} for the tests")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        check=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def kinesalite() -> Iterator[str]:
    _install(KINESALITE, "kinesalite")
    with node_server(KINESALITE / "start.js", "0") as url:
        yield url


@pytest.fixture(scope="session")
def stock_kinesalite() -> Iterator[str]:
    """kinesalite as users run it: GetShardIterator AT_TIMESTAMP with no record that new never
    answers (the kinesalite fixture mends that)."""
    _install(KINESALITE, "kinesalite")
    with node_server(KINESALITE / "start.js", "0", "stock") as url:
        yield url


@pytest.fixture(scope="session")
def kinesis_mock() -> Iterator[str]:
    """kinesis-mock (npm kinesis-local): the emulator with enhanced fan-out."""
    _install(KINESIS_MOCK, "kinesis-local")
    with node_server(KINESIS_MOCK / "start.js", "0") as url:
        yield url


@pytest.fixture
def efo(kinesis_mock: str) -> Iterator[Any]:
    """kinesis-mock behind tests/efo_shim.py: SubscribeToShard as AWS serves it."""
    from tests.efo_shim import EfoShim

    shim = EfoShim(kinesis_mock)
    shim.start()
    try:
        yield shim
    finally:
        shim.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def demo_endpoint() -> Iterator[Any]:
    from console.demo import EmbeddedEndpoint

    endpoint = EmbeddedEndpoint()
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def aws(url: str, read_path: str = "fast") -> AwsSettings:
    return AwsSettings(region="us-east-1", endpoint_url=url, read_path=read_path)


@pytest.fixture(params=["fast", "botocore"])
def read_path(request: pytest.FixtureRequest) -> str:
    """Both read paths (sources/wire.py and botocore's client methods), for the tests that
    must hold on each."""
    return str(request.param)


class Kinesis:
    """Test-side producer and admin, through aioboto3 like everything else. ``tips`` keeps,
    per stream, the last sequence number each shard was given."""

    tips: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, url: str) -> None:
        self.url = url

    def client(self) -> Any:
        import aioboto3

        return aioboto3.Session().client("kinesis", endpoint_url=self.url, region_name="us-east-1")

    async def create(self, name: str, shards: int) -> None:
        async with self.client() as k:
            await k.create_stream(StreamName=name, ShardCount=shards)
            await self._active(k, name)

    async def _active(self, k: Any, name: str) -> None:
        for _ in range(200):
            d = await k.describe_stream_summary(StreamName=name)
            if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"stream {name} did not become ACTIVE")

    async def put(self, name: str, records: list[tuple[str, bytes]]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        async with self.client() as k:
            for i in range(0, len(records), 500):
                chunk = records[i : i + 500]
                resp = await k.put_records(
                    StreamName=name,
                    Records=[{"PartitionKey": pk, "Data": data} for pk, data in chunk],
                )
                assert resp.get("FailedRecordCount", 0) == 0, resp
                out.extend(resp["Records"])
        tips = Kinesis.tips.setdefault(name, {})
        for sid, seq in last_sequence(out).items():
            if sid not in tips or int(seq) > int(tips[sid]):
                tips[sid] = seq
        return out

    async def arrival(self, name: str, shard_id: str, seq: str) -> float:
        """The approximate arrival time the stream gave record ``seq``."""
        async with self.client() as k:
            it = (
                await k.get_shard_iterator(
                    StreamName=name,
                    ShardId=shard_id,
                    ShardIteratorType="AT_SEQUENCE_NUMBER",
                    StartingSequenceNumber=seq,
                )
            )["ShardIterator"]
            record = (await k.get_records(ShardIterator=it, Limit=1))["Records"][0]
            return float(record["ApproximateArrivalTimestamp"].timestamp())

    async def shards(self, name: str) -> list[dict[str, Any]]:
        async with self.client() as k:
            resp = await k.list_shards(StreamName=name)
            return list(resp["Shards"])

    async def split(self, name: str, shard_id: str) -> None:
        async with self.client() as k:
            shards = (await k.list_shards(StreamName=name))["Shards"]
            shard = next(s for s in shards if s["ShardId"] == shard_id)
            lo = int(shard["HashKeyRange"]["StartingHashKey"])
            hi = int(shard["HashKeyRange"]["EndingHashKey"])
            await k.split_shard(
                StreamName=name, ShardToSplit=shard_id, NewStartingHashKey=str((lo + hi + 1) // 2)
            )
            await self._active(k, name)

    async def merge(self, name: str, a: str, b: str) -> None:
        async with self.client() as k:
            await k.merge_shards(StreamName=name, ShardToMerge=a, AdjacentShardToMerge=b)
            await self._active(k, name)


def numbered(n: int, keys: int = 10, start: int = 0, size: int = 0) -> list[tuple[str, bytes]]:
    """Records numbered per key: data is "key:n" (padded to ``size`` bytes when asked)."""
    out = []
    counters: dict[str, int] = {}
    for i in range(start, start + n):
        key = f"k{i % keys}"
        counters[key] = counters.get(key, 0) + 1
        data = f"{key}:{i}".encode()
        out.append((key, data.ljust(size, b".") if size else data))
    return out


class Collect(Processor):
    """Remembers every record it is handed, in order, with its shard."""

    name = "collect"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Record]] = []
        self.at: list[float] = []  # time.monotonic() of each record's delivery
        self.calls = 0
        self.fail: Callable[[list[Record], ShardContext], None] | None = None

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        self.calls += 1
        if self.fail is not None:
            self.fail(records, ctx)
        self.seen.extend((ctx.shard_id, r) for r in records)
        self.at.extend([time.monotonic()] * len(records))

    def data(self) -> list[bytes]:
        return [r.data for _, r in self.seen]


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "checkpoints.db")


@pytest.fixture
async def store(db: str) -> AsyncIterator[Any]:
    from console.checkpoints.sqlite import SqliteStore

    s = await SqliteStore.open(db)
    try:
        yield s
    finally:
        await s.close()


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None, **kw: Any) -> Any:
    """Run ``shard-console`` as a subprocess, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kw,
    )


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files and folders read-only for us. Root writes through file modes, so as root the
    immutable attribute (chattr +i) does it; where root may not set it (a container without
    CAP_LINUX_IMMUTABLE, a filesystem without the attribute) the test is skipped, saying why."""
    if os.geteuid() != 0:
        for p in paths:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in paths:
                os.chmod(p, 0o755 if p.is_dir() else 0o600)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: cannot make a file read-only for root")
    done: list[Path] = []
    try:
        for p in paths:
            result = subprocess.run(
                [chattr, "+i", str(p)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                pytest.skip(
                    "running as root and chattr +i is refused here "
                    f"({result.stderr.strip() or result.returncode}): cannot make {p.name} "
                    "read-only for root"
                )
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run([chattr, "-i", str(p)], check=True)


class Calls:
    """An observer at the client boundary (a botocore before-send hook that answers nothing):
    how many calls of each operation the client has made. Used to wait for something to have
    had its chance to happen ("a worker would have polled by now"), instead of sleeping."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hooks(self, service: str = "kinesis") -> list[tuple[str, Callable[..., Any]]]:
        def seen(request: Any, event_name: str = "", **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            self.counts[operation] = self.counts.get(operation, 0) + 1

        return [(f"before-send.{service}", seen)]

    def __getitem__(self, operation: str) -> int:
        return self.counts.get(operation, 0)


def checkpoints_in(db: Path | str) -> dict[str, str]:
    """shard -> position, as flushed to the database (read-only, from another connection)."""
    import sqlite3

    if not Path(db).exists():
        return {}
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT shard_id, position FROM checkpoints").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        conn.close()


def last_sequence(puts: list[dict[str, str]]) -> dict[str, str]:
    """shard -> the last sequence number a PutRecords reply gave it."""
    last: dict[str, str] = {}
    for r in puts:
        if r["ShardId"] not in last or int(r["SequenceNumber"]) > int(last[r["ShardId"]]):
            last[r["ShardId"]] = r["SequenceNumber"]
    return last


def wait_flushed_through(db: Path | str, last: dict[str, str], timeout: float = 30.0) -> None:
    """Until the consumer's checkpoints, on disk, are past each shard's last record: it has
    read to the tip and will deliver nothing more of what was put."""
    want = {sid: f"after_sequence:{seq}" for sid, seq in last.items()}
    deadline = time.monotonic() + timeout
    while True:
        got = checkpoints_in(db)
        if all(got.get(sid) == pos for sid, pos in want.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"checkpoints {got} never reached {want}")
        time.sleep(0.05)
