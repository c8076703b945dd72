"""/metrics, /healthz, /readyz and /status: scraped over HTTP from a consumer reading kinesalite,
parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from console.checkpoints.sqlite import SqliteStore
from console.engine.changes.plan import Action, ControlRequest
from console.engine.consume.consumer import Consumer
from console.engine.events import EventLog
from console.engine.state import EngineState, LeaseInfo
from console.model import Record, ShardContext, ShardStatus
from console.observe.endpoint import Endpoint
from console.observe.metrics import METRICS, registry_for
from console.processors.base import Processor
from console.processors.builtin import NullProcessor
from console.sources.faults import FaultInjector
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, run_cli, unique, wait_for

ROOT = Path(__file__).resolve().parent.parent


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def scrape(endpoint: Endpoint) -> dict[str, list[Any]]:
    """Every sample served, by metric family name (counters without their _total)."""
    status, text = await get(f"{endpoint.url}/metrics")
    assert status == 200
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def per_shard(samples: dict[str, list[Any]], sample: str) -> dict[str, float]:
    family = sample.removesuffix("_total")
    return {s.labels["shard_id"]: s.value for s in samples.get(family, ()) if s.name == sample}


def total(samples: dict[str, list[Any]], sample: str) -> float:
    (value,) = [s.value for s in samples[sample.removesuffix("_total")] if s.name == sample]
    return value


async def test_a_scrape_shows_every_metric_and_agrees_with_the_processor_and_status(
    kinesalite: str, store: SqliteStore
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 3)
    await k.put(name, numbered(120, keys=12, size=50))
    processor = Collect()
    endpoint = Endpoint("127.0.0.1", 0)
    await endpoint.open()
    # Half the GetRecords calls throttled at the client boundary (the first one among them, with
    # this seed): errors to count.
    faults = FaultInjector({"throttle": 0.5}, seed=1, operations=("GetRecords",))
    try:
        async with KinesisSource(name, aws(kinesalite), faults.hooks()) as source:
            consumer = Consumer(source, store, processor, FAST)
            endpoint.watch(consumer)
            async with consumer:
                await wait_for(lambda: len(processor.seen) == 120, what="120 records")
                some = processor.seen[0][0]
                assert (await consumer.control(ControlRequest(Action.PAUSE, some))).ok
                assert not (await consumer.control(ControlRequest(Action.PAUSE, some))).ok
                assert (await consumer.control(ControlRequest(Action.RESUME, some))).ok
                first = await scrape(endpoint)
                await k.put(name, numbered(60, keys=12, start=120, size=50))
                await wait_for(lambda: len(processor.seen) == 180, what="180 records")
                await wait_for(lambda: consumer.state.records_total == 180, what="counted")
                faults.enabled = False  # so no status changes between the scrape and /status
                await wait_for(
                    lambda: all(
                        v.status is ShardStatus.ACTIVE for v in consumer.state.shards.values()
                    ),
                    what="every shard reading again",
                )
                second = await scrape(endpoint)
                status, body = await get(f"{endpoint.url}/status")
                doc = json.loads(body)
    finally:
        await endpoint.close()

    fleet_only = {m.name.removesuffix("_total") for m in METRICS if m.fleet_only}
    for doc_metric in METRICS:
        family = doc_metric.name.removesuffix("_total")
        if family in fleet_only:
            assert family not in second, f"{family} outside fleet mode"
            continue
        assert family in second, f"{doc_metric.name} is documented but not served"
        assert second[family], f"{doc_metric.name} has no samples"

    # What the processor saw, shard by shard, is what the counters say.
    seen: dict[str, int] = {}
    for sid, _ in processor.seen:
        seen[sid] = seen.get(sid, 0) + 1
    assert per_shard(second, "shard_console_shard_records_processed_total") == seen
    assert total(second, "shard_console_records_processed_total") == 180
    sizes: dict[str, int] = {}
    for sid, r in processor.seen:
        sizes[sid] = sizes.get(sid, 0) + len(r.data)
    assert per_shard(second, "shard_console_shard_bytes_processed_total") == sizes
    assert total(second, "shard_console_bytes_processed_total") == 180 * 50

    # Counters only grow between scrapes (and these grew: 60 more records came).
    for sample in (
        "shard_console_shard_records_processed_total",
        "shard_console_shard_bytes_processed_total",
    ):
        before, after = per_shard(first, sample), per_shard(second, sample)
        assert all(after[sid] >= before[sid] for sid in before), sample
        assert sum(after.values()) > sum(before.values()), sample
    before_calls = total(first, "shard_console_get_records_calls_total")
    assert total(second, "shard_console_get_records_calls_total") > before_calls
    counts = {
        s.labels["shard_id"]: s.value
        for s in second["shard_console_shard_processor_seconds"]
        if s.name == "shard_console_shard_processor_seconds_count"
    }
    assert set(counts) == set(seen) and all(n >= 1 for n in counts.values())
    assert counts == {
        s.labels["shard_id"]: s.value
        for s in second["shard_console_shard_processor_seconds"]
        if s.name == "shard_console_shard_processor_seconds_bucket" and s.labels["le"] == "+Inf"
    }

    # Every throttle is counted once, on the shard it hit.
    errors = [s for s in second["shard_console_shard_errors"] if s.name.endswith("_total")]
    assert {s.labels["kind"] for s in errors} == {"throttled"}
    throttles = total(second, "shard_console_throttles_total")
    assert throttles >= 1 and sum(s.value for s in errors) == throttles
    assert doc["retries"] == {"throttled": throttles}

    changes = {
        s.labels["outcome"]: s.value
        for s in second["shard_console_operator_changes"]
        if s.name.endswith("_total")
    }
    assert changes == {"applied": 2, "refused": 1, "failed": 0}

    # /status is the same snapshot: the same counts, the same shards.
    assert status == 200 and doc["ready"] is True
    assert doc["records_total"] == 180 and doc["summary"]["records"] == 180
    assert {row["shard_id"]: row["records"] for row in doc["shards"]} == seen
    assert doc["stream"] == name
    states = {
        s.labels["status"]: s.value
        for s in second["shard_console_shards"]
        if s.labels["status"] in doc["summary"]["shards"]
    }
    assert states == doc["summary"]["shards"] == {"active": 3}


class Hang(Processor):
    """Returns for the first batch, then never again: the run fails on its timeout."""

    name = "hang"

    def __init__(self) -> None:
        self.batches = 0
        self.release = asyncio.Event()  # set at the end, so a failing test does not hang

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        self.batches += 1
        if self.batches > 1:
            await self.release.wait()


async def test_health_and_readiness_before_during_and_after_a_fatal_error(
    kinesalite: str, store: SqliteStore
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    await k.put(name, numbered(5))
    endpoint = Endpoint("127.0.0.1", 0)
    await endpoint.open()
    processor = Hang()
    try:
        # Before the consumer exists (its stream is being described): alive, not ready.
        assert await get(f"{endpoint.url}/healthz") == (200, "ok\n")
        assert (await get(f"{endpoint.url}/readyz"))[0] == 503
        assert (await get(f"{endpoint.url}/status"))[0] == 503
        options = dataclasses.replace(FAST, processor_timeout=1.0)
        async with KinesisSource(name, aws(kinesalite)) as source:
            consumer = Consumer(source, store, processor, options)
            endpoint.watch(consumer)
            assert (await get(f"{endpoint.url}/readyz"))[0] == 503  # created, not started
            await consumer.start()
            assert await get(f"{endpoint.url}/readyz") == (200, "ready\n")
            assert await get(f"{endpoint.url}/healthz") == (200, "ok\n")
            await k.put(name, numbered(5, start=5))  # the second batch hangs
            await wait_for(lambda: consumer.failure is not None, what="the run to fail")
            code, text = await get(f"{endpoint.url}/healthz")
            assert code == 503 and "did not return within 1 s" in text
            code, text = await get(f"{endpoint.url}/readyz")
            assert code == 503 and text.startswith("failed: processor hang")
            code, body = await get(f"{endpoint.url}/status")
            assert json.loads(body)["failure"] == consumer.failure
            # An error's text may quote a key: /status says it masked, as the log does.
            key_id = "AKIA" + "Z" * 16
            consumer.events.emit("source_error", f"denied for {key_id}")
            code, body = await get(f"{endpoint.url}/status")
            assert key_id not in body and "AKIA****" in body
            samples = await scrape(endpoint)
            assert total(samples, "shard_console_ready") == 0
            processor.release.set()
            await consumer.stop()
    finally:
        processor.release.set()
        await endpoint.close()


async def test_an_outage_is_said_not_shown_as_no_lag(kinesalite: str, store: SqliteStore) -> None:
    """Every call of the stream fails (a dead endpoint, a revoked role): the lag is not "0 ms",
    the status line says every shard is failing, the process is not ready, and after a while
    not healthy either (a restart may help; the operator is told either way)."""
    from console.headless import status_text
    from tests.proxy import Reply, proxy

    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 2)
    await k.put(name, numbered(20))
    down = False
    calls = itertools.count()

    def rule(operation: str, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        if not down:
            return None
        # The errors change from call to call (an outage rarely says one thing): still one.
        if next(calls) % 2:
            return Reply(400, "ProvisionedThroughputExceededException", "Rate exceeded")
        return Reply(503, "ServiceUnavailable", "down")

    endpoint = Endpoint("127.0.0.1", 0, stalled_after=1.0)
    await endpoint.open()
    try:
        with proxy(kinesalite, rule) as p:
            async with KinesisSource(name, aws(p.url)) as source:
                consumer = Consumer(source, store, NullProcessor(), FAST)
                endpoint.watch(consumer)
                async with consumer:
                    await wait_for(lambda: consumer.state.records_total == 20, what="read")
                    await wait_for(lambda: consumer.state.max_lag_ms() == 0, what="caught up")
                    assert await get(f"{endpoint.url}/healthz") == (200, "ok\n")
                    down = True
                    await wait_for(
                        lambda: all(
                            v.status is ShardStatus.FAILING for v in consumer.state.shards.values()
                        ),
                        what="every shard failing",
                    )
                    assert consumer.state.max_lag_ms() is None
                    assert "max lag unknown: every shard failing for" in status_text(consumer.state)
                    code, text = await get(f"{endpoint.url}/readyz")
                    assert code == 503 and text.startswith("every shard failing: ")
                    healthz: list[tuple[int, str]] = []

                    async def unhealthy() -> bool:
                        healthz.append(await get(f"{endpoint.url}/healthz"))
                        return healthz[-1][0] == 503

                    deadline = time.monotonic() + 10
                    while not await unhealthy():
                        assert time.monotonic() < deadline, healthz[-1]
                        await asyncio.sleep(0.1)
                    code, text = healthz[-1]
                    assert "every shard failing for" in text
                    assert "ServiceUnavailable" in text or "Rate exceeded" in text
                    down = False
                    await wait_for(
                        lambda: all(
                            v.status is ShardStatus.ACTIVE for v in consumer.state.shards.values()
                        ),
                        what="recovered",
                    )
                    assert await get(f"{endpoint.url}/healthz") == (200, "ok\n")
                    assert await get(f"{endpoint.url}/readyz") == (200, "ready\n")
    finally:
        await endpoint.close()


def test_an_outage_is_reads_failing_everywhere_not_a_processor_failing() -> None:
    """A processor failing on its records (a poison record, a sink down) on every shard is not
    an outage: a restart would meet the same records. Only reads that fail everywhere are."""
    from console.engine.snapshot import failing_since

    state = EngineState("s", "kinesis", "here")
    for sid in ("a", "b", "c"):
        state.update(sid, status=ShardStatus.ACTIVE)
    state.update("c", status=ShardStatus.PAUSED)  # not read: not counted either way
    assert failing_since(state) is None
    failing = ShardStatus.FAILING
    state.update("a", status=failing, last_error="503", error_at=130.0, read_failing_since=100.0)
    assert failing_since(state) is None  # b reads on
    state.update("b", status=failing, last_error="throttled", error_at=140.0)
    assert failing_since(state) is None  # b's processor fails: its reads get through
    state.update("b", read_failing_since=120.0)
    assert failing_since(state) == (100.0, "throttled")
    state.update("a", read_failing_since=None)  # a read of a got through
    assert failing_since(state) is None


def state_with(worker: str | None, rows: dict[str, tuple[ShardStatus, str | None]]) -> Any:
    class Watched:
        def __init__(self) -> None:
            self.state = EngineState("s", "kinesis", "here")
            self.state.set_watch(worker_id=worker)
            self.events = EventLog()
            self.failure = None
            self.ready = True

    watched = Watched()
    for sid, (status, owner) in rows.items():
        lease = LeaseInfo(owner) if owner is not None else None
        watched.state.update(sid, status=status, lease=lease, records=1)
    return watched


def served_shards(watched: Any) -> dict[str, dict[str, str]]:
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(watched)).decode()
    return {
        s.labels["shard_id"]: s.labels
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name == "shard_console_shard_records_processed"
    }


def test_a_finished_or_lost_shard_drops_its_label_sets_and_fleet_series_name_the_worker() -> None:
    watched = state_with(
        "w1",
        {
            "a": (ShardStatus.ACTIVE, "w1"),
            "b": (ShardStatus.ACTIVE, "w1"),
            "c": (ShardStatus.LEASED, "w2"),  # another worker's
            "d": (ShardStatus.DONE, "w1"),  # finished
        },
    )
    shown = served_shards(watched)
    assert set(shown) == {"a", "b"}
    assert shown["a"] == {"stream": "s", "worker": "w1", "shard_id": "a"}
    # b's lease is lost to w2: its series go at the next scrape.
    watched.state.update("b", lease=LeaseInfo("w2"))
    watched.events.emit("lease_lost", "lost b", shard_id="b")
    assert set(served_shards(watched)) == {"a"}
    from prometheus_client import generate_latest

    families = {
        f.name: f.samples
        for f in text_string_to_metric_families(generate_latest(registry_for(watched)).decode())
    }
    # a, and d: a finished shard's lease is held until the table forgets it, as in the KCL.
    assert [s.value for s in families["shard_console_leases_held"]] == [2]
    assert [s.value for s in families["shard_console_leases_lost"]] == [1]
    assert [s.value for s in families["shard_console_leases_taken"]] == [0]
    # Not in fleet mode: no worker label, every unfinished shard.
    single = state_with(None, {"a": (ShardStatus.ACTIVE, None), "d": (ShardStatus.DONE, None)})
    assert served_shards(single) == {"a": {"stream": "s", "shard_id": "a"}}


def test_units_and_buckets_are_prometheus_base_units() -> None:
    from prometheus_client import generate_latest

    watched = state_with(None, {"a": (ShardStatus.ACTIVE, None)})
    watched.state.update("a", lag_ms=1500, checkpoint_at=time.time() - 7)
    for seconds in (0.0004, 0.01, 0.02, 3.0):  # 0.01 sits on a bucket's upper bound
        watched.state.processor_time("a", seconds)
    text = generate_latest(registry_for(watched)).decode()
    samples = {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("shard_console_shard_behind_latest_seconds", None)] == 1.5
    assert 7 <= samples[("shard_console_shard_checkpoint_age_seconds", None)] < 9
    buckets = {
        le: v for (name, le), v in samples.items() if name.endswith("_bucket") and le is not None
    }
    assert buckets == {"0.001": 1, "0.01": 2, "0.1": 3, "1.0": 3, "10.0": 4, "+Inf": 4}
    assert samples[("shard_console_shard_processor_seconds_count", None)] == 4
    assert abs(samples[("shard_console_shard_processor_seconds_sum", None)] - 3.0304) < 1e-9


async def test_a_split_shards_series_go_when_it_finishes(
    kinesalite: str, store: SqliteStore
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    await k.put(name, numbered(20))
    processor = Collect()
    endpoint = Endpoint("127.0.0.1", 0)
    await endpoint.open()
    try:
        async with KinesisSource(name, aws(kinesalite)) as source:
            consumer = Consumer(source, store, processor, FAST)
            endpoint.watch(consumer)
            async with consumer:
                await wait_for(lambda: len(processor.seen) == 20, what="20 records")
                parent = processor.seen[0][0]
                before = await scrape(endpoint)
                assert set(per_shard(before, "shard_console_shard_records_processed_total")) == {
                    parent
                }
                await k.split(name, parent)
                await k.put(name, numbered(20, start=20))
                await wait_for(
                    lambda: (
                        consumer.state.shards[parent].status is ShardStatus.DONE
                        and len(processor.seen) == 40
                    ),
                    what="the parent done and the children read",
                )
                after = await scrape(endpoint)
    finally:
        await endpoint.close()
    children = set(consumer.lineage.children[parent])
    assert len(children) == 2
    for sample in (
        "shard_console_shard_records_processed_total",
        "shard_console_shard_bytes_processed_total",
        "shard_console_shard_behind_latest_seconds",
    ):
        assert set(per_shard(after, sample)) == children, sample
    labelled = {s.labels.get("shard_id") for fam in after.values() for s in fam}
    assert parent not in labelled
    assert total(after, "shard_console_resharding_events_total") == 1  # one split
    assert total(after, "shard_console_records_processed_total") == 40


def test_the_readme_and_the_dashboard_name_every_metric_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text()
    for m in METRICS:
        row = next(
            (line for line in readme.splitlines() if line.startswith(f"| `{m.name}` |")), None
        )
        assert row is not None, f"README does not document {m.name}"
        assert m.kcl.split(" ")[0] in row, f"README's row for {m.name} lacks its KCL metric"
    served = {m.name for m in METRICS} | {
        f"{m.name}_{suffix}"
        for m in METRICS
        if m.kind == "histogram"
        for suffix in ("bucket", "sum", "count")
    }
    dashboard = json.loads((ROOT / "grafana" / "shard-console.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert exprs
    used = {name for expr in exprs for name in re.findall(r"shard_console_[a-z_]+", expr)}
    assert used <= served, f"the dashboard asks for metrics nobody serves: {used - served}"
    assert len(used) >= 8


def free_port_in_use() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_the_cli_serves_metrics_and_a_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    taken = free_port_in_use()
    try:
        port = taken.getsockname()[1]
        demo = ("demo", "--no-ui", "--duration", "20")
        res = run_cli(*demo, "--metrics-port", str(port))
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        # The demo says where its endpoint is first (an info line); then the one error line.
        assert len(lines) == 2 and "demo endpoint" in lines[0]
        assert lines[-1] == (
            f"shard-console: error: --metrics-port {port}: the port is in use on 127.0.0.1; "
            "pick another port (0 picks a free one)"
        ), res.stderr
        # run binds before it describes the stream or opens the database: one line, nothing else.
        res = run_cli(
            "run", "nowhere", "--endpoint-url", "http://127.0.0.1:9", "--no-ui",
            "--db", str(tmp_path / "c.db"), "--metrics-port", str(port),
        )  # fmt: skip
        assert res.returncode == 2 and res.stdout == "" and not (tmp_path / "c.db").exists()
        assert res.stderr == (
            f"shard-console: error: --metrics-port {port}: the port is in use on 127.0.0.1; "
            "pick another port (0 picks a free one)\n"
        )
        res = run_cli(*demo, "--metrics-port", "0", "--metrics-host", "192.0.2.1")
        assert res.returncode == 2
        assert (
            res.stderr.strip()
            .splitlines()[-1]
            .startswith("shard-console: error: --metrics-host 192.0.2.1: cannot listen there")
        ), res.stderr
    finally:
        taken.close()

    log = tmp_path / "demo.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", *demo, "--metrics-port", "0", "--rate", "200"],
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, log.read_text()

        async def until_records() -> float:
            while True:
                _, text = await get(f"{url}/metrics")
                families = {f.name: f for f in text_string_to_metric_families(text)}
                n = families["shard_console_records_processed"].samples[0].value
                if n > 0:
                    return float(n)
                await asyncio.sleep(0.1)

        assert asyncio.run(asyncio.wait_for(until_records(), 30)) > 0
        assert asyncio.run(get(f"{url}/readyz")) == (200, "ready\n")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


async def test_a_split_counts_once_though_it_is_told_twice(demo_endpoint: Any, store: Any) -> None:
    """The embedded endpoint ends a closed shard with ChildShards: the children are learned
    there, and the parent is seen closed at the next listing. Two announcements, one split."""
    from prometheus_client import generate_latest

    from tests.test_control import PARENT, put

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    put(demo_endpoint, "s", "a", range(5))
    processor = Collect()
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        consumer = Consumer(source, store, processor, FAST)
        told: list[Any] = []
        consumer.events.subscribe(lambda e: told.append(e) if e.kind == "resharded" else None)
        async with consumer:
            await wait_for(lambda: len(processor.seen) == 5, what="the parent read")
            demo_endpoint.call(demo_endpoint.kinesis.split, "s", PARENT, 2**127)
            for key in ("a", "b", "c", "d"):
                put(demo_endpoint, "s", key, range(5, 8))
            await wait_for(lambda: len(processor.seen) == 17, what="the children read")
            consumer.trigger_discovery()
            await wait_for(lambda: len(told) == 2, what="the listing that sees the parent closed")
            text = generate_latest(registry_for(consumer)).decode()
    assert "closed" not in told[0].message and "closed" in told[1].message
    (value,) = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "shard_console_resharding_events_total"
    ]
    assert value == 1
