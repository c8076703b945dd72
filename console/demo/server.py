"""The demo's AWS endpoint on loopback: real HTTP and AWS's JSON protocols, in front of the
embedded Kinesis (kinesis.py) and DynamoDB with its streams (dynamodb.py).

It runs on its own thread and event loop, so the demo's producer keeps its pace whatever the
consumer and the console are doing. ``shard-console demo`` reads it through the same aioboto3
client as ``run`` reads AWS.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from console.demo.dynamodb import EmbeddedDynamoDB
from console.demo.kinesis import EmbeddedKinesis
from console.demo.wire import ApiError


class EmbeddedEndpoint:
    """One HTTP server for both services. The models' methods run on the endpoint's own loop
    thread; use :meth:`call` to run one from elsewhere."""

    def __init__(
        self,
        region: str = "us-east-1",
        account: str = "000000000000",
        keep_records_per_shard: int = 200_000,
    ) -> None:
        self.region = region
        self.account = account
        self.kinesis = EmbeddedKinesis(region, account, keep_records_per_shard)
        self.dynamodb = EmbeddedDynamoDB(region, account)
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() first"
        return self._loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="demo-endpoint", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise self._startup_error
        if not self.port:
            raise RuntimeError("the embedded endpoint did not start within 10 s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the endpoint thread and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # handed back to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        target = request.headers.get("X-Amz-Target", "")
        kinesis = self.kinesis.operation(target)
        # Kinesis speaks JSON 1.1, DynamoDB and DynamoDB Streams JSON 1.0.
        content_type = f"application/x-amz-json-{'1.1' if kinesis else '1.0'}"
        try:
            handler = kinesis or self.dynamodb.operation(target)
            if handler is None:
                raise ApiError("UnknownOperationException", f"unknown operation {target!r}")
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                raise ApiError("SerializationException", "body is not JSON") from None
            result = handler(body)
            payload = (
                result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
            )
            status = 200
        except ApiError as exc:
            payload = json.dumps({"__type": exc.code, "message": str(exc)})
            status = exc.status
        return web.Response(
            body=payload.encode(),
            status=status,
            content_type=content_type,
            headers={"x-amzn-RequestId": f"demo-{self.requests}"},
        )
