"""Local endpoints on loopback, for the tests and the benchmarks alike: a node script that
prints ``PORT n`` (kinesalite, the KCL's h2c front) and moto's server."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def node_server(script: Path, *args: str) -> Iterator[str]:
    """A node script that prints ``PORT n`` once it listens on loopback: its URL, while it runs."""
    node = shutil.which("node")
    assert node, "node is needed to run " + script.name
    proc = subprocess.Popen(
        [node, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(
            f"{script.name} did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    try:
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in this process, on a free loopback port: its URL, while it runs."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
