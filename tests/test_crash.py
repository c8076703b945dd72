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

    def lines() -> int:
        return len(out.read_text().splitlines()) if out.exists() else 0

    def owner() -> int | None:
        if not db.exists():
            return None
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT pid FROM owners").fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
        return int(row[0]) if row else None

    def flushed() -> dict[str, int]:
        """Each shard's checkpoint on disk: after this sequence number (0: from the start)."""
        if not db.exists():
            return {}
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT shard_id, position FROM checkpoints").fetchall()
        finally:
            conn.close()
        return {
            sid: int(pos.split(":", 1)[1].split("/")[0]) if pos.startswith("after_") else 0
            for sid, pos in rows
        }

    # After each kill: where the output stood, and what the checkpoints said.
    kills_at: list[tuple[int, dict[str, int]]] = []
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
        kills_at.append((lines(), flushed()))
    await produced.wait()
    await producer
    proc = await start()
    # Once the program runs it handles SIGTERM (start-up included); a signal before Python has
    # even started it would not be ours. Wait until it holds the stream.
    for _ in range(600):
        if owner() == proc.pid:
            break
        await asyncio.sleep(0.05)
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
    # Duplicates stay within one checkpoint window: what a restart delivers again comes after
    # the checkpoint flushed before the kill, never from further back.
    first_at: dict[str, int] = {}
    bounds = [*(n for n, _ in kills_at), len(rows)]
    duplicates = 0
    for index, row in enumerate(rows):
        data = row["data"]
        if data not in first_at:
            first_at[data] = index
            continue
        duplicates += 1
        segment = next(j for j, end in enumerate(bounds) if index < end)
        assert segment > 0, f"{data} delivered twice within one run"
        checkpoint = kills_at[segment - 1][1].get(row["shard_id"], 0)
        assert int(row["sequence_number"]) > checkpoint, (
            f"{data} replayed from before the flushed checkpoint of {row['shard_id']}"
        )
    assert duplicates < len(rows) // 2, duplicates
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
