"""``shard-console tail``: reading without consuming, through the wire (kinesalite, moto), as
an operator runs it; and the decoding of what travels on Kinesis (console.decode)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kinesis, numbered, run_cli, unique
from tests.test_dynamodb import changes, create_table


def tail(url: str, *args: str, **kw: Any) -> Any:
    return run_cli("tail", *args, "--endpoint-url", url, **kw)


def rows(res: Any) -> list[dict[str, Any]]:
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def cloudwatch_envelope(messages: list[str]) -> bytes:
    """As CloudWatch Logs writes a subscription's record: gzip of the JSON document."""
    doc = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/lambda/orders",
        "logStream": "2026/11/28/[$LATEST]abc",
        "subscriptionFilters": ["to-kinesis"],
        "logEvents": [
            {"id": str(i), "timestamp": 1795880000000 + i, "message": m}
            for i, m in enumerate(messages)
        ],
    }
    return gzip.compress(json.dumps(doc).encode())


async def test_from_a_time_across_a_split_exactly_the_records_after_it_in_key_order(
    kinesalite: str,
) -> None:
    name = unique("tail")
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    (parent,) = [s["ShardId"] for s in await k.shards(name)]
    await k.put(name, numbered(30, keys=6))
    time.sleep(0.3)  # the clock is the subject: an instant between two puts
    instant = time.time()
    time.sleep(0.3)
    await k.put(name, numbered(30, keys=6, start=30))
    await k.split(name, parent)
    await k.put(name, numbered(30, keys=6, start=60))

    out = rows(tail(kinesalite, name, "--from", iso(instant), "--no-follow", timeout=60))
    got = [r["decoded"]["text"] for r in out]
    assert sorted(got) == sorted(d.decode() for _, d in numbered(60, keys=6, start=30))
    last: dict[str, int] = {}
    for text in got:  # per key, in the order written, the parent before its children
        key, _, n = text.partition(":")
        assert int(n) > last.get(key, -1), (key, n)
        last[key] = int(n)
    assert {r["shard_id"] for r in out[:30]} == {parent}
    assert all(r["decoded"]["how"] == "text" for r in out)
    assert all(r["data"] == r["decoded"]["text"] for r in out)  # the jsonl: fields, and more

    # Filters: a key, a pattern, both with a limit.
    by_key = rows(tail(kinesalite, name, "--from", "trim_horizon", "--no-follow", "--key", "k3"))
    assert [r["decoded"]["text"] for r in by_key] == [f"k3:{i}" for i in range(3, 90, 6)]
    grep = rows(
        tail(kinesalite, name, "--from", "trim_horizon", "--no-follow", "--grep", r"^k[12]:\d*7$")
    )
    assert [r["decoded"]["text"] for r in grep] == ["k1:7", "k1:37", "k1:67"]
    assert len(rows(tail(kinesalite, name, "--from", "trim_horizon", "--limit", "4"))) == 4


async def test_what_travels_on_kinesis_comes_out_decoded_and_a_bad_gzip_raw(
    kinesalite: str,
) -> None:
    name = unique("tail")
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    envelope = cloudwatch_envelope(["START RequestId: 1", "ERROR boom at line 7"])
    control = gzip.compress(
        json.dumps(
            {
                "messageType": "CONTROL_MESSAGE",
                "owner": "CloudwatchLogs",
                "logGroup": "",
                "logStream": "",
                "subscriptionFilters": [],
                "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE"}],
            }
        ).encode()
    )
    torn = gzip.compress(b'{"a": 1}')[:-9]
    records = [
        ("a", envelope),
        ("a", control),
        ("a", torn),
        ("a", zlib.compress(b'{"z": [1, 2]}')),
        ("a", b"\x00\x01\xfe\xff"),
    ]
    await k.put(name, records)
    out = rows(tail(kinesalite, name, "--from", "trim_horizon", "--no-follow"))
    decoded = [r["decoded"] for r in out]
    assert decoded[0]["how"] == "gzip > cloudwatch-logs"
    assert [e["message"] for e in decoded[0]["log_events"]] == [
        "START RequestId: 1",
        "ERROR boom at line 7",
    ]
    assert decoded[0]["envelope"]["logGroup"] == "/aws/lambda/orders"
    assert decoded[1]["how"] == "gzip > cloudwatch-control"
    assert decoded[2]["how"] == "binary" and "gzip but does not inflate" in decoded[2]["problem"]
    assert bytes.fromhex(decoded[2]["hex"]) == torn  # shown raw, nothing dropped
    assert decoded[3] == {"how": "zlib > json", "json": {"z": [1, 2]}}
    assert decoded[4] == {"how": "binary", "hex": "0001feff", "base64": "AAH+/w=="}
    # --grep looks in the log events' messages, not in the compressed bytes.
    found = rows(tail(kinesalite, name, "--from", "trim_horizon", "--no-follow", "--grep", "boom"))
    assert [r["sequence_number"] for r in found] == [out[0]["sequence_number"]]


async def test_dynamodb_changes_come_out_as_changes(moto: str) -> None:
    table, arn = await create_table(moto)
    assert arn is not None
    await changes(moto, table)
    out = rows(tail(moto, arn, "--from", "trim_horizon", "--no-follow"))
    assert [r["event_name"] for r in out] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    assert out[2]["keys"] == {"pk": "a", "sk": 1} and out[2]["new_image"]["qty"] == 4


async def test_tail_writes_nothing_and_ctrl_c_exits_0_at_once(
    kinesalite: str, tmp_path: Path
) -> None:
    name = unique("tail")
    await Kinesis(kinesalite).create(name, 2)
    await Kinesis(kinesalite).put(name, numbered(10))
    home = tmp_path / "home"
    env = {"XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config")}
    res = tail(kinesalite, name, "--from", "trim_horizon", "--no-follow", env=env)
    assert len(rows(res)) == 10
    assert not home.exists()  # no database, no folder: tail writes nothing

    import os

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and a container's stop
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "tail",
                name,
                "--endpoint-url",
                kinesalite,
                "--from",
                "trim_horizon",
                "--follow",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline()  # reading: then the signal
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0, sig
        assert time.monotonic() - t0 < 3
        assert proc.stderr is not None and proc.stderr.read() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--from", "yesterday"),
            "--from 'yesterday' is not a position: use trim_horizon, latest, -15m, an ISO time "
            "or sequence:N",
        ),
        (
            ("--from", "checkpoint:3"),
            "tail --from takes no checkpoint: tail reads no database; use trim_horizon",
        ),
        (("--from", "-99999999d"), "is before 1970"),
        (("--grep", "(x"), "--grep '(x' is not a regular expression"),
        (("--limit", "0"), "--limit must be 1 or more, not 0"),
        (("--shard", "shardId-000000000009"), "has no shard shardId-000000000009"),
        (("--from", "sequence:123"), "tail --from sequence:N needs --shard"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    kinesalite: str, args: tuple[str, ...], message: str
) -> None:
    name = unique("tail")
    await Kinesis(kinesalite).create(name, 1)
    res = tail(kinesalite, name, "--no-follow", *args)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(f"shard-console: error: {message}") or message in res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr


async def test_a_position_of_another_shard_is_one_line_and_exit_2(kinesalite: str) -> None:
    name = unique("tail")
    await Kinesis(kinesalite).create(name, 2)
    puts = await Kinesis(kinesalite).put(name, numbered(20))
    other = next(p["SequenceNumber"] for p in puts if p["ShardId"].endswith("1"))
    res = tail(kinesalite, name, "--shard", "shardId-000000000000", "--from", f"sequence:{other}")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(
        "shard-console: error: InvalidArgumentException while getting an iterator for "
        "shardId-000000000000:"
    )
    assert len(res.stderr.splitlines()) == 1
    # One kinesalite answers a sequence number before the shard's first with a 500, again and
    # again: the tail says it retries, then gives up, exit 1, instead of hanging.
    res = tail(
        kinesalite,
        name,
        "--shard",
        "shardId-000000000000",
        "--from",
        "sequence:49000000000000000000000000",
    )
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("shard-console: shardId-000000000000: InternalFailure")
    assert lines[0].endswith("; retrying") and len(lines) == 2
    assert lines[1].startswith("shard-console: error: shardId-000000000000: gave up after 6")


def test_an_unknown_stream_is_one_line_and_exit_2(kinesalite: str) -> None:
    res = tail(kinesalite, "no-such-stream", "--no-follow")
    assert res.returncode == 2
    assert res.stderr == (
        f"shard-console: error: stream 'no-such-stream' not found at {kinesalite}: check the "
        "name, --region and --endpoint-url\n"
    )


async def test_no_follow_ends_on_a_shard_written_to_all_the_time(kinesalite: str) -> None:
    import asyncio

    name = unique("tail")
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    await k.put(name, numbered(50))
    stop = asyncio.Event()

    async def writer() -> None:
        i = 1000
        async with k.client() as client:  # records keep coming: every page has some
            while not stop.is_set():
                batch = numbered(50, start=i)
                await client.put_records(
                    StreamName=name, Records=[{"PartitionKey": p, "Data": d} for p, d in batch]
                )
                i += 50

    writing = asyncio.create_task(writer())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "tail", name, "--endpoint-url", kinesalite,
            "--from", "trim_horizon", "--no-follow",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        stop.set()
        await writing
    assert proc.returncode == 0, err
    assert len(out.splitlines()) >= 50


async def test_no_follow_reads_past_a_full_page_put_in_one_instant(kinesalite: str) -> None:
    """MillisBehindLatest counts time: a full page of records put together says 0 with more
    behind it. The tail must read on (the benchmark caught it stopping at 40,000 of 100,000)."""
    name = unique("tail")
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    await k.put(name, numbered(10_500))  # a page holds at most 10,000
    res = tail(kinesalite, name, "--from", "trim_horizon", "--no-follow", timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 10_500


async def test_following_from_latest_reads_the_children_of_a_split_whole(kinesalite: str) -> None:
    import asyncio

    name = unique("tail")
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    (parent,) = [s["ShardId"] for s in await k.shards(name)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "tail", name, "--endpoint-url", kinesalite,
        "--relist", "5", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        seen: list[str] = []

        async def until(n: int) -> None:
            while len(seen) < n:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
                seen.append(json.loads(line)["decoded"]["text"])

        # Following from the tip: a record put now comes out (retried until it does: the tail
        # may still be starting, and LATEST is where it stands when it starts).
        for i in range(100):
            await k.put(name, [("k", f"early:{i}".encode())])
            try:
                await asyncio.wait_for(until(1), 1)
                break
            except TimeoutError:
                continue
        await k.split(name, parent)
        # Into the children at once: the tail finds them at the parent's end (ChildShards) or
        # at its next listing, and reads them whole, after the parent.
        await k.put(name, numbered(30, keys=6))
        await until(1 + 30)
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert sorted(seen[1:]) == sorted(d.decode() for _, d in numbered(30, keys=6))


async def test_control_characters_never_reach_the_terminal_raw(kinesalite: str) -> None:
    name = unique("tail")
    await Kinesis(kinesalite).create(name, 1)
    raw = '{"x": "\u009b2J\u001b[31m"}'  # raw controls: text, not JSON
    escaped = b'{"x": "\\u009b2J\\u001b[31m"}'  # the same escaped: JSON
    await Kinesis(kinesalite).put(name, [("k", raw.encode()), ("k", escaped)])
    res = tail(kinesalite, name, "--from", "trim_horizon", "--no-follow")
    assert res.returncode == 0 and "\x9b" not in res.stdout and "\x1b" not in res.stdout
    first, second = (json.loads(line)["decoded"] for line in res.stdout.splitlines())
    assert first["text"] == raw  # intact through the escapes
    assert second["json"] == {"x": "\u009b2J\u001b[31m"}
