"""A loopback HTTP proxy in front of an emulator, for faults a subprocess must meet at its client
boundary: an answer AWS could give (an error that echoes the request's headers, as signature
errors do), or no answer at all (a call that hangs while the test signals the process).

It runs on its own thread and loop, so synchronous tests and subprocesses can use it alike.
A rule sees each request's operation, body and headers and returns None (forward it), a
``Reply``, or ``HOLD`` (never answer).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, web


@dataclass(frozen=True)
class Reply:
    status: int
    code: str
    message: str


HOLD = "hold"
Rule = Callable[[str, dict[str, Any], dict[str, str]], "Reply | str | None"]


class Proxy:
    def __init__(self, upstream: str, rule: Rule) -> None:
        self.upstream = upstream
        self.rule = rule
        self.seen: list[str] = []  # operations, in the order they arrived
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []  # operation, body, headers
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="test-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        async with ClientSession() as self._client:
            self._ready.set()
            await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        self.seen.append(operation)
        self.requests.append((operation, raw, dict(request.headers)))
        decision = self.rule(operation, json.loads(raw or b"{}"), dict(request.headers))
        if decision == HOLD:
            assert self._stop is not None
            await self._stop.wait()
        if isinstance(decision, Reply):
            body = json.dumps({"__type": decision.code, "message": decision.message})
            return web.Response(
                status=decision.status,
                body=body.encode(),
                content_type=request.content_type,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._client.post(self.upstream, data=raw, headers=headers) as upstream:
            payload = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=payload,
                headers={"Content-Type": upstream.headers.get("Content-Type", "")},
            )

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


@contextmanager
def proxy(upstream: str, rule: Rule) -> Iterator[Proxy]:
    p = Proxy(upstream, rule)
    p.start()
    try:
        yield p
    finally:
        p.stop()
