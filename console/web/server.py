"""The console in a browser: textual-serve runs ``shard-console attach`` for each browser session.

Every page gets its own attached console (a process watching the consumer's database or lease
table), so opening the page never starts a second consumer. The page, its script, styles and
font come from this server (textual-serve's packaged files, our template): nothing from a CDN.

Bound to a non-loopback address, every request must carry the token: ``?token=`` on the first
page (which then sets an HttpOnly cookie for the page's own requests and its websocket), the
cookie, or ``Authorization: Bearer``. The token is compared in constant time and never logged.
Whatever the address, a request from another site's page (its Origin) is refused, and on
loopback so is a Host that is not a loopback name (DNS rebinding).

The page asks for its files and its websocket relative to its own address, so it works behind
a reverse proxy (https, a path prefix) without the server knowing its public name.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from textual_serve.server import Server

TEMPLATES = Path(__file__).parent / "templates"
COOKIE = "shard_console_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


MIN_TOKEN = 16  # characters: a token a browser carries must not be guessable


def host_error(host: str) -> str | None:
    """What is wrong with an address to listen on (None: nothing): an IP address, or a name
    made of letters, digits, dots and dashes."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return None
    except ValueError:
        pass
    labels = bare.rstrip(".").split(".")
    if bare and all(label and _LABEL.fullmatch(label) for label in labels):
        return None
    return f"--host {host!r} is not an address: give an IP address (0.0.0.0, 127.0.0.1) or a name"


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConsoleServer(Server):
    def __init__(
        self,
        command: str,
        *,
        host: str,
        port: int,
        token: str | None,
        title: str,
    ) -> None:
        super().__init__(command, host=host, port=port, title=title, templates_path=TEMPLATES)
        self.token = token

    def initialize_logging(self) -> None:
        # Quiet: no banner, no access log (a first page's URL carries the token).
        logging.getLogger("textual-serve").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def on_startup(self, app: web.Application) -> None:
        """textual-serve's banner: not ours (:meth:`run` says where it listens, once bound)."""

    async def run(self, stop: asyncio.Event, bound: Callable[[str], None]) -> None:
        """Listen until ``stop`` is set; ``bound(url)`` once listening. OSError: cannot bind."""
        self.initialize_logging()
        app = await self._make_app()
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
            host = f"[{self.host}]" if ":" in self.host else self.host
            bound(f"http://{host}:{self.port}")
            await stop.wait()
        finally:
            # Closes every page's websocket: textual-serve then stops that page's attach.
            await runner.cleanup()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._same_origin)
        if self.token is not None:
            app.middlewares.append(self._check_token)
        return app

    @web.middleware
    async def _same_origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Another site's page may not open a console here (its websocket carries its own
        Origin), nor a name rebound to 127.0.0.1 (loopback is asked for by a loopback name)."""
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return web.Response(status=403, text="shard-console serve: another site's page\n")
        if is_loopback(self.host) and not is_loopback(urlsplit(f"//{request.host}").hostname):
            return web.Response(status=403, text="shard-console serve: not a loopback name\n")
        return await handler(request)

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self.token is not None
        auth = request.headers.get("Authorization", "")
        given = (
            request.query.get("token")
            or request.cookies.get(COOKIE)
            or (auth[7:] if auth.startswith("Bearer ") else None)
        )
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(
                status=401,
                text="shard-console serve: this console needs its token: open the address "
                "with ?token=TOKEN\n",
            )
        response = await handler(request)
        if request.query.get("token") and isinstance(response, web.Response):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response
