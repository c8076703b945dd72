"""The library face: what `console` exports, and the README's embedding example, run exactly as
the README prints it (its stream and endpoint come from the environment, as botocore reads
them: AWS_ENDPOINT_URL_KINESIS)."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Kinesis, checkpoints_in, numbered, wait_flushed_through

README = Path(__file__).parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Embedding the consumer in your own program", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return code


def test_every_exported_name_resolves_and_import_stays_light() -> None:
    import console

    assert set(console.__all__) == {*console._EXPORTS, "__version__"}  # one list, not two
    for name in console.__all__:
        assert getattr(console, name) is not None, name
    # `import console` alone loads none of it (the CLI's --help stays instant).
    code = "import sys, console; print(sorted(m for m in sys.modules if m.startswith('console.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert importlib.import_module("console.cli.wiring").open_consumer is console.open_consumer


def test_the_readme_example_runs_as_written(kinesalite: str, tmp_path: Path) -> None:
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 14  # a short program
    k = Kinesis(kinesalite)
    asyncio.run(k.create("orders", 2))
    sent = numbered(30)
    asyncio.run(k.put("orders", sent))
    program = tmp_path / "example.py"
    program.write_text(code)
    env = {**os.environ, "AWS_ENDPOINT_URL_KINESIS": kinesalite}
    proc = subprocess.Popen(
        [sys.executable, str(program)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_flushed_through(tmp_path / "orders.db", Kinesis.tips["orders"])  # read it all
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    printed = sorted(line.split()[-1] for line in out.splitlines())
    assert printed == sorted(d.decode() for _, d in sent)
    assert len(checkpoints_in(tmp_path / "orders.db")) == 2
    assert oct((tmp_path / "orders.db").stat().st_mode & 0o777) == "0o600"


async def test_open_consumer_takes_a_function_a_processor_or_a_spec(
    demo_endpoint, tmp_path: Path
) -> None:
    from console import ConsumerOptions, Processor, open_consumer
    from tests.conftest import wait_for

    e = demo_endpoint
    e.call(e.kinesis.create_stream, "lib", 2)
    for i in range(6):
        e.call(e.kinesis.put, "lib", f"k{i}", f"r{i}".encode())
    seen: dict[str, list[bytes]] = {"sync": [], "processor": []}

    def plain(records, ctx):  # type: ignore[no-untyped-def]
        seen["sync"].extend(r.data for r in records)

    class Mine(Processor):
        async def process(self, records, ctx):  # type: ignore[no-untyped-def]
            seen["processor"].extend(r.data for r in records)

    out = tmp_path / "out.jsonl"
    options = ConsumerOptions(idle_interval=0.05, flush_interval=0.2)
    for name, processor in (("sync", plain), ("processor", Mine()), ("spec", f"jsonl:{out}")):
        async with open_consumer(
            "lib",
            processor,
            db=tmp_path / f"{name}.db",
            kind="kinesis",
            region="us-east-1",
            endpoint_url=e.url,
            options=options,
        ) as consumer:
            assert consumer.source.location == e.url

            def done(name: str = name) -> bool:
                if name == "spec":
                    return out.exists() and consumer.state.records_total == 6
                return len(seen[name]) == 6

            await wait_for(done, what=name)
    expected = sorted(f"r{i}".encode() for i in range(6))
    assert sorted(seen["sync"]) == expected and sorted(seen["processor"]) == expected
    import json

    assert sorted(json.loads(line)["data"].encode() for line in out.read_text().splitlines()) == (
        expected
    )
