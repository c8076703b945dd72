"""The console in a browser: textual-serve runs ``shard-console attach`` for each browser session.

Every page gets its own attached console (a process watching the consumer's database or lease
table), so opening the page never starts a second consumer. The page, its script, styles and
font come from this server (textual-serve's packaged files, our template): nothing from a CDN.

Bound to a non-loopback address, every request must carry the token: ``?token=`` on the first
page (which then sets an HttpOnly cookie for the page's own requests and its websocket), the
cookie, or ``Authorization: Bearer``. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from textual_serve.server import Server

TEMPLATES = Path(__file__).parent / "templates"
COOKIE = "shard_console_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
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
        announce: Callable[[str], None],
    ) -> None:
        super().__init__(command, host=host, port=port, title=title, templates_path=TEMPLATES)
        self.token = token
        self._announce = announce

    def initialize_logging(self) -> None:
        # Quiet: no banner, no access log (a first page's URL carries the token).
        logging.getLogger("textual-serve").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def on_startup(self, app: web.Application) -> None:
        self._announce(self.public_url)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        if self.token is not None:
            app.middlewares.append(self._check_token)
        return app

    async def handle_index(self, request: web.Request) -> Any:
        # The page's websocket goes back to the host the browser used (0.0.0.0 is no address).
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

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
