"""Processors: built-ins, loading user code from an explicit spec, and durability order."""

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer
from console.errors import UsageError
from console.model import Record, ShardContext
from console.processors import load_processor
from console.processors.builtin import JsonlProcessor, PrintProcessor
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, aws, wait_for

CTX = ShardContext("orders", "shardId-000000000001", ("shardId-000000000000",))


async def test_jsonl_writes_the_documented_fields(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    p = JsonlProcessor(str(out), "orders")
    await p.open()
    await p.process(
        [
            Record("11", "pk", '{"a": "é"}'.encode(), 0.5),
            Record("12", "pk", b"\xff\x00binary", 1.0, sub_sequence_number=3),
        ],
        CTX,
    )
    await p.close()
    a, b = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert a == {
        "stream": "orders",
        "shard_id": "shardId-000000000001",
        "sequence_number": "11",
        "sub_sequence_number": None,
        "partition_key": "pk",
        "approximate_arrival": "1970-01-01T00:00:00.500Z",
        "data": '{"a": "é"}',
    }
    assert b["data"] == {"base64": "/wBiaW5hcnk="} and b["sub_sequence_number"] == 3
    assert oct(out.stat().st_mode & 0o777) == "0o600"


async def test_print_writes_one_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    await PrintProcessor().process([Record("11", "pk", b"hello", 0.0)], CTX)
    assert capsys.readouterr().out == "shardId-000000000001 11 pk hello\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown processor"),
        ("nonsense", "unknown processor"),
        ("jsonl:", "needs a file path"),
        ("jsonl:/no/such/folder/x.jsonl", "does not exist"),
        ("os.path:nope", "has no attribute"),
        ("os:sep", "is not callable"),
        ("not a module:f", "unknown processor"),
        ("no_such_pkg_zz:f", "cannot import processor module"),
    ],
)
def test_bad_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_processor(spec, "s")


async def test_user_processors_sync_and_async(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "userproc.py").write_text(
        "import threading\n"
        "seen = []\n"
        "def sync_handler(records, ctx):\n"
        "    seen.append(('sync', ctx.shard_id, len(records), threading.current_thread().name))\n"
        "async def async_handler(records, ctx):\n"
        "    seen.append(('async', ctx.shard_id, len(records)))\n"
        "class Sink:\n"
        "    def __init__(self): self.flushed = 0\n"
        "    def __call__(self, records, ctx): pass\n"
        "    def flush(self): self.flushed += 1\n"
        "sink = Sink()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sync = load_processor("userproc:sync_handler", "s")
    asyncio_ = load_processor("userproc:async_handler", "s")
    records = [Record("1", "k", b"x", 0.0)]
    await sync.process(records, CTX)
    await asyncio_.process(records, CTX)
    userproc = sys.modules["userproc"]
    assert userproc.seen[0][:3] == ("sync", CTX.shard_id, 1)
    assert userproc.seen[0][3] != "MainThread"  # a sync processor never blocks the loop
    assert userproc.seen[1] == ("async", CTX.shard_id, 1)
    sink = load_processor("userproc:sink", "s")
    await sink.flush()
    assert userproc.sink.flushed == 1


async def test_output_is_durable_before_the_checkpoint_that_covers_it(
    demo_endpoint, db, monkeypatch
) -> None:
    """Before every checkpoint write, the jsonl file is fsynced, with every line it was handed
    (observed: os.fsync on the file, and the file's lines at that moment)."""
    import os

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    for i in range(5):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k", f"{i}".encode())
    out = Path(db).with_suffix(".jsonl")
    order: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # an observer that calls through
        real_fsync(fd)
        if os.path.samefile(f"/proc/self/fd/{fd}", out):
            order.append(("output fsynced", len(out.read_text().splitlines())))

    monkeypatch.setattr(os, "fsync", fsync)
    handed = 0

    class Counting(JsonlProcessor):
        async def process(self, records, ctx):  # type: ignore[no-untyped-def]
            nonlocal handed
            await super().process(records, ctx)
            handed += len(records)

    store = await SqliteStore.open(db)
    real_save = store.save

    async def save(stream, changes, finish=None):
        order.append(("checkpoint written", handed))
        await real_save(stream, changes, finish)

    store.save = save  # an observer on the real store, not a replacement
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, Counting(str(out), "s"), FAST):
            await wait_for(lambda: ("checkpoint written", 5) in order, what="the records' write")
    await store.close()
    writes = [i for i, (step, _) in enumerate(order) if step == "checkpoint written"]
    assert len(writes) >= 2  # the first start's checkpoints, then the five records'
    for i in writes:
        step, lines = order[i - 1]
        # Just before: an fsync of the file holding every line handed to it so far.
        assert step == "output fsynced" and lines == order[i][1], order


async def test_a_hung_processor_stops_the_run_and_checkpoints_nothing_of_its_batch(
    demo_endpoint, db
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k", b"x")

    class Hang(JsonlProcessor):
        async def process(self, records, ctx):
            await asyncio.sleep(3600)

    store = await SqliteStore.open(db)
    options = dataclasses.replace(FAST, processor_timeout=0.3)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        consumer = Consumer(source, store, Hang(str(Path(db).with_suffix(".jsonl")), "s"), options)
        await asyncio.wait_for(consumer.run(), 10)
        checkpoints = await store.load(consumer.key)
    await store.close()
    assert consumer.failure and "did not return within 0.3 s" in consumer.failure
    assert checkpoints["shardId-000000000000"].position.sequence_number is None


async def test_print_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    await PrintProcessor().process([Record("11", "k\x1b", b"line\nbreak \x1b[2J", 0.0)], CTX)
    assert capsys.readouterr().out == "shardId-000000000001 11 k\\x1b line\\nbreak \\x1b[2J\n"


def test_the_console_shows_text_with_control_characters_as_binary() -> None:
    from console.ui.format import decode_data

    assert decode_data(b'{"a": 1}') == '{\n  "a": 1\n}'
    assert decode_data(b"tab\tand newline\nstay text") == "tab\tand newline\nstay text"
    shown = decode_data(b"\x1b[2Jclear screen")
    assert shown.startswith("hex 1b 5b 32 4a") and "\x1b" not in shown


def test_the_console_unpacks_what_travels_on_kinesis() -> None:
    import gzip
    import json

    from console.decode import decode
    from console.ui.format import decode_data

    doc = {
        "messageType": "DATA_MESSAGE",
        "logGroup": "/aws/lambda/orders",
        "logStream": "s1",
        "logEvents": [{"id": "1", "timestamp": 1, "message": "\x1b[31mERROR\x1b[0m boom"}],
    }
    shown = decode_data(gzip.compress(json.dumps(doc).encode()))
    assert shown.splitlines() == [
        "[gzip > cloudwatch-logs]",
        "/aws/lambda/orders s1: 1 log events",
        "\\x1b[31mERROR\\x1b[0m boom",  # escaped: no escape sequence reaches the terminal
    ]
    assert decode(gzip.compress(b"x")).how == "gzip > text"  # for processors too
    torn = decode_data(gzip.compress(b'{"a": 1}')[:-9])
    assert torn.startswith("[binary] looks like gzip but does not inflate") and "hex 1f 8b" in torn


async def test_jsonl_moves_a_line_torn_by_a_crash_aside_and_says_where(tmp_path) -> None:
    from console.processors.builtin import JsonlProcessor

    path = tmp_path / "out.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')  # killed mid-write
    sink = JsonlProcessor(str(path), "s")
    [warning] = await sink.open()
    await sink.close()
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    [aside] = tmp_path.glob("out.jsonl.torn-*")
    assert aside.read_text() == '{"c": ' and str(aside) in warning
    assert oct(aside.stat().st_mode & 0o777) == "0o600"
    # A file with no whole line at all: everything is moved aside, nothing is lost.
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"x" * (3 << 20))  # longer than one read
    sink = JsonlProcessor(str(other), "s")
    [warning] = await sink.open()
    await sink.close()
    [aside] = tmp_path.glob("other.jsonl.torn-*")
    assert other.read_bytes() == b"" and aside.read_bytes() == b"x" * (3 << 20)
    # A whole file is left alone, and nothing is said.
    sink = JsonlProcessor(str(path), "s")
    assert await sink.open() == []
    await sink.close()
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'


async def test_the_consumer_tells_the_operator_what_the_processor_found_on_open(
    demo_endpoint, db, tmp_path
) -> None:
    from console.processors.builtin import JsonlProcessor

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    path = tmp_path / "out.jsonl"
    path.write_text('{"torn')
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource("s", aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, JsonlProcessor(str(path), "s"), FAST)
            async with consumer:
                pass
    finally:
        await store.close()
    [event] = [e for e in consumer.events.since(0) if e.kind == "processor_warning"]
    assert event.level.value == "warning" and "out.jsonl.torn-" in event.message


async def test_a_full_disk_leaves_no_torn_line_in_the_middle_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills half-way through a batch (ENOSPC at the OS boundary): the file is cut
    back to where the batch began, so when there is room again the batch comes whole, and no
    line is ever glued to a piece of another."""
    import errno
    import os

    out = tmp_path / "o.jsonl"
    p = JsonlProcessor(str(out), "orders")
    await p.open()
    first = [Record("1", "k", b"one", 1.0)]
    await p.process(first, CTX)
    before = out.read_bytes()
    real_write = os.write
    calls = 0

    def full(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # half the batch fits
        raise OSError(errno.ENOSPC, "No space left on device")

    batch = [Record(str(i), "k", b"x" * 100, 2.0) for i in range(2, 12)]
    monkeypatch.setattr("console.processors.builtin.os.write", full)
    with pytest.raises(OSError, match="No space left"):
        await p.process(batch, CTX)
    assert out.read_bytes() == before  # not half a batch, not half a line
    monkeypatch.setattr("console.processors.builtin.os.write", real_write)
    await p.process(batch, CTX)  # retried, as the worker does: whole
    await p.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sequence_number"] for r in rows] == [str(i) for i in range(1, 12)]


def test_a_jsonl_file_that_cannot_be_written_is_said_before_anything_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        load_processor(f"jsonl:{tmp_path}", "orders")
    with pytest.raises(UsageError, match="does not exist"):
        load_processor(f"jsonl:{tmp_path / 'nope' / 'o.jsonl'}", "orders")
    assert load_processor(f"jsonl:{tmp_path / 'o.jsonl'}", "orders").name == "jsonl"
