"""One small HTTP server inside the consumer's process: ``/metrics``, ``/healthz``, ``/readyz``,
``/status``.

It is bound before anything else starts (a port in use is a usage error, exit 2, before the
stream is described) and answers from then on, on the consumer's own event loop:

- ``/healthz``: 200 while the loop answers and the run has not failed; 503 with the reason after a
  fatal error (a hung processor, a lost store), and while every shard it reads has been failing
  for STALLED_AFTER seconds (an outage: the endpoint, the network, the credentials).
- ``/readyz``: 200 once the consumer has started (stream described, checkpoints loaded, workers
  running); 503 before that, while stopping, after a failure, and while every shard it reads is
  failing.
- ``/metrics``: the Prometheus text format (console.observe.metrics).
- ``/status``: the snapshot as JSON, the one an attached console reads (console.engine.snapshot),
  with the status line's summary and the two answers above.
"""

from __future__ import annotations

import errno
import json
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from console.engine.snapshot import failing_since, snapshot_doc, status_fields
from console.errors import UsageError
from console.observe.metrics import Observed, registry_for
from console.redact import REDACTOR

STALLED_AFTER = 60.0  # seconds every shard may fail before the process is reported unhealthy


class Endpoint:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, stalled_after: float = STALLED_AFTER
    ) -> None:
        self.host = host
        self.port = port
        self.stalled_after = stalled_after
        self.consumer: Observed | None = None
        self._registry: CollectorRegistry | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def open(self) -> None:
        """Bind and serve. A port in use or an address that cannot be bound: UsageError."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(bind_error(exc, self.host, self.port)) from None
        self._runner = runner
        self.port = runner.addresses[0][1]  # the one picked, when port 0 was asked for

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def watch(self, consumer: Observed) -> None:
        """Serve this consumer's state from now on (before: starting, not ready)."""
        self.consumer = consumer
        self._registry = registry_for(consumer)

    # -- handlers -------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry) if self._registry is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        consumer = self.consumer
        failure = consumer.failure if consumer is not None else None
        if failure is not None:
            return web.Response(status=503, text=REDACTOR(f"failed: {failure}\n"))
        stalled = failing_since(consumer.state) if consumer is not None else None
        if stalled is not None and time.time() - stalled[0] >= self.stalled_after:
            since = time.time() - stalled[0]
            text = f"every shard failing for {since:.0f} s: {stalled[1]}\n"
            return web.Response(status=503, text=REDACTOR(text))
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, why = self._readiness()
        return web.Response(status=200 if ready else 503, text=REDACTOR(why + "\n"))

    async def _status(self, request: web.Request) -> web.Response:
        consumer = self.consumer
        ready, why = self._readiness()
        if consumer is None:
            doc: dict[str, object] = {"ready": False, "why": why, "failure": None}
            return web.json_response(doc, status=503, dumps=_dumps)
        doc = snapshot_doc(consumer.state, consumer.events, running=consumer.ready)
        doc |= {
            "ready": ready,
            "why": why,
            "failure": consumer.failure,
            "summary": status_fields(consumer.state),
        }
        return web.json_response(doc, dumps=_dumps)

    def _readiness(self) -> tuple[bool, str]:
        consumer = self.consumer
        if consumer is None:
            return False, "starting: describing the stream"
        if consumer.failure is not None:
            return False, f"failed: {consumer.failure}"
        stalled = failing_since(consumer.state)
        if stalled is not None:
            return False, f"every shard failing: {stalled[1]}"
        if consumer.ready:
            return True, "ready"
        return False, "not reading: starting or stopping"


def _dumps(doc: object) -> str:
    """JSON through the redactor, as every log line goes: an error's text may quote a key."""
    return REDACTOR(json.dumps(doc, default=str))


def bind_error(
    exc: OSError,
    host: str,
    port: int,
    flags: tuple[str, str] = ("--metrics-host", "--metrics-port"),
) -> str:
    """What went wrong binding ``host:port``, in one line naming the flag to change."""
    host_flag, port_flag = flags
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{port_flag} {port}: the port is in use on {host}; pick another port "
            "(0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"{port_flag} {port}: not allowed to listen on it here (ports below 1024 need "
            "privileges); pick a port above 1024"
        )
    return (
        f"{host_flag} {host}: cannot listen there ({exc.strerror or exc}); use an address "
        "of this machine, such as 127.0.0.1 or 0.0.0.0"
    )
