"""Local endpoints on loopback, for the tests and the benchmarks alike: a node script that
prints ``PORT n`` (kinesalite, the KCL's h2c front) and moto's server."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


class LoopbackServer(abc.ABC):
    """An aiohttp server on 127.0.0.1, on a thread and loop of its own (so synchronous tests and
    subprocesses can use it alike), with one client session to ``upstream``: what the test
    proxies share. A subclass answers each POST in ``_handle``; ``stop`` cancels answers still
    streaming."""

    thread_name = "loopback-server"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self._client: Any = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), f"{self.thread_name} did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        from aiohttp import ClientSession, web

        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._tracked)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        async with ClientSession(auto_decompress=False) as self._client:
            self._ready.set()
            await self._stop.wait()
            for task in self._handlers:  # answers still streaming or held: end them now
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await runner.shutdown()
        await runner.cleanup()

    async def _tracked(self, request: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._handle(request)
        finally:
            self._handlers.discard(task)

    @abc.abstractmethod
    async def _handle(self, request: Any) -> Any:
        """The answer to one POST."""
