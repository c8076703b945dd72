"""A loopback HTTP proxy in front of an emulator, for faults a subprocess must meet at its client
boundary: an answer AWS could give (an error that echoes the request's headers, as signature
errors do), or no answer at all (a call that hangs while the test signals the process).

It runs on its own thread and loop, so synchronous tests and subprocesses can use it alike.
A rule sees each request's operation, body and headers and returns None (forward it), a
``Reply``, or ``HOLD`` (never answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.servers import LoopbackServer


@dataclass(frozen=True)
class Reply:
    status: int
    code: str
    message: str


HOLD = "hold"
Rule = Callable[[str, dict[str, Any], dict[str, str]], "Reply | str | None"]


class Proxy(LoopbackServer):
    thread_name = "test-proxy"

    def __init__(self, upstream: str, rule: Rule) -> None:
        super().__init__(upstream)
        self.rule = rule
        self.seen: list[str] = []  # operations, in the order they arrived
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []  # operation, body, headers

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


@contextmanager
def proxy(upstream: str, rule: Rule) -> Iterator[Proxy]:
    p = Proxy(upstream, rule)
    p.start()
    try:
        yield p
    finally:
        p.stop()
