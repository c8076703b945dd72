"""Faults at the client boundary: the real client gets throttled, 5xx'd, reset, timed out, and
its iterators expire. The consumer delivers everything anyway, and shows what it went through."""

import dataclasses

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer
from console.sources.faults import KINDS, FaultInjector
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, unique, wait_for


@pytest.mark.parametrize("kind", [*KINDS, "mixed"])
async def test_faults_lose_nothing_and_show(
    kinesalite: str, db: str, kind: str, read_path: str
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 2)
    sent = numbered(400, keys=8)
    await k.put(name, sent)
    rates = {k_: 0.2 / len(KINDS) for k_ in KINDS} if kind == "mixed" else {kind: 0.2}
    faults = FaultInjector(rates, seed=11)
    processor = Collect()
    store = await SqliteStore.open(db)
    events: list[str] = []
    async with KinesisSource(
        name, aws(kinesalite, read_path), faults.hooks(), page_size=1
    ) as source:
        consumer = Consumer(
            source, store, processor, dataclasses.replace(FAST, records_per_call=25)
        )
        consumer.events.subscribe(lambda e: events.append(e.kind))
        async with consumer:
            await wait_for(
                lambda: len(processor.seen) >= 400 and sum(faults.counts.values()) >= 3,
                timeout=60,
                what=f"all records through {kind} faults",
            )
            retries = dict(consumer.state.retries)
    await store.close()
    assert sorted(processor.data()) == sorted(d for _, d in sent)
    assert sum(faults.counts.values()) >= 3, faults.counts
    expected = {"throttle": "throttled", "expired": "expired"}.get(kind, "source_error")
    if kind != "mixed":
        assert retries.get(expected, 0) >= 1, retries
        # The operator saw it: an event per episode (the shard shown failing meanwhile).
        assert {"throttled": "throttled", "expired": "iterator_expired"}.get(
            expected, "source_error"
        ) in events


def test_fault_spec_parsing() -> None:
    f = FaultInjector.parse("throttle=0.1,expired=0.05,seed=3")
    assert f.rates == {"throttle": 0.1, "expired": 0.05}
    assert FaultInjector.parse("all=0.5").rates == {k: 0.1 for k in KINDS}
    for bad in ("throttle", "throttle=2", "gremlins=0.1", "throttle=x"):
        with pytest.raises(Exception, match="fault"):
            FaultInjector.parse(bad)


def test_faults_show_in_the_status_line_and_the_log_of_a_headless_run(
    kinesalite: str, tmp_path, read_path: str
) -> None:
    """20% of calls fail, every kind mixed, through ``--inject-faults`` on the real command:
    everything arrives, and the operator reading stderr sees what happened."""
    import asyncio
    import json

    from tests.conftest import run_cli

    name = unique()
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 2))
    sent = numbered(300, keys=6)
    asyncio.run(k.put(name, sent))
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "run",
        name,
        "--endpoint-url",
        kinesalite,
        "--db",
        str(tmp_path / "c.db"),
        "--processor",
        f"jsonl:{out}",
        "--no-ui",
        "--records-per-call",
        "4",  # ~150 reads: each kind (4% of calls) shows up
        "--idle-interval",
        "0.1",
        "--status-interval",
        "0.5",
        "--max-records",
        "300",
        "--inject-faults",
        "all=0.2,seed=5",
        "--read-path",
        read_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = sorted(json.loads(line)["data"] for line in out.read_text().splitlines())
    assert got == sorted(d.decode() for _, d in sent)  # 0 lost
    status = [line for line in result.stderr.splitlines() if " STATUS " in line]
    assert any("retries " in line for line in status), status[-3:]
    log = result.stderr
    for seen in ("Rate exceeded (injected)", "internal failure (injected)", "iterator expired"):
        assert seen in log, (seen, log[-2000:])
