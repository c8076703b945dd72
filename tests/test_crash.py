"""kill -9 at random instants while a producer writes and the stream reshards: nothing is lost.

The fast variant (3 kills) runs in CI; ``pytest -m slow`` runs the 10-kill one.
"""

import asyncio
import json
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.conftest import Kinesis, unique


async def produce(k: Kinesis, name: str, total: int, keys: int, done: asyncio.Event) -> None:
    sent = 0
    while sent < total:
        batch = [
            (f"k{(sent + i) % keys}", f"k{(sent + i) % keys}:{sent + i}".encode())
            for i in range(min(40, total - sent))
        ]
        await k.put(name, batch)
        sent += len(batch)
        await asyncio.sleep(0.05)
    done.set()


async def crash_run(kinesalite: str, tmp: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    name = unique("crash")
    k = Kinesis(kinesalite)
    await k.create(name, 3)
    out = tmp / "out.jsonl"
    db = tmp / "c.db"
    total, keys = 1500 + 150 * kills, 16
    produced = asyncio.Event()
    producer = asyncio.create_task(produce(k, name, total, keys, produced))

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console",
            "run",
            name,
            "--endpoint-url",
            kinesalite,
            "--db",
            str(db),
            "--processor",
            f"jsonl:{out}",
            "--flush-interval",
            "0.3",
            "--discovery-interval",
            "0.5",
            "--idle-interval",
            "0.05",
            "--no-ui",
            stderr=asyncio.subprocess.DEVNULL,
        )

    resharded = False
    for i in range(kills):
        proc = await start()
        await asyncio.sleep(rng.uniform(0.6, 2.0))
        if not resharded and i == kills // 2:
            shards = await k.shards(name)
            await k.split(name, shards[0]["ShardId"])
            opened = sorted(
                s["ShardId"]
                for s in await k.shards(name)
                if "EndingSequenceNumber" not in s["SequenceNumberRange"]
            )
            await k.merge(name, opened[0], opened[1])
            resharded = True
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    await produced.wait()
    await producer
    proc = await start()
    try:
        for _ in range(600):
            if (
                out.exists()
                and len({json.loads(x)["data"] for x in out.read_text().splitlines()}) >= total
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0

    rows = [json.loads(x) for x in out.read_text().splitlines()]
    delivered = [r["data"] for r in rows]
    expected = {f"k{i % keys}:{i}" for i in range(total)}
    assert expected - set(delivered) == set(), "records lost"
    # Per key, first deliveries come in production order.
    seen: set[str] = set()
    last: dict[str, int] = {}
    for data in delivered:
        if data in seen:
            continue
        seen.add(data)
        key, n = data.split(":")
        assert int(n) > last.get(key, -1), f"{key} out of order: {n} after {last.get(key)}"
        last[key] = int(n)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    statuses = dict(
        conn.execute("SELECT status, count(*) FROM checkpoints GROUP BY status").fetchall()
    )
    assert statuses.get("done", 0) >= 3  # the split parent and the merged pair finished


async def test_kill_9_and_restart_lose_nothing(kinesalite: str, tmp_path: Path) -> None:
    await crash_run(kinesalite, tmp_path, kills=3, seed=1)


@pytest.mark.slow
async def test_kill_9_ten_times(kinesalite: str, tmp_path: Path) -> None:
    await crash_run(kinesalite, tmp_path, kills=10, seed=2)
