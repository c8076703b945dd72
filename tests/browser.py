"""Headless Chromium driven over the DevTools protocol (a websocket; no extra packages), for the
browser test of ``shard-console serve``.

The page's terminal (xterm.js, drawn on a canvas) is read from its buffer: a script run before
the page's own catches the ``Terminal`` when textual.js stores it, and ``text()`` returns the
rows as drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
)

# textual.js does `this.terminal = new Terminal(...)`: a setter on Object.prototype sees it.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {
      value, writable: true, configurable: true, enumerable: true,
    });
    if (value && value.buffer) { window.__terminal = value; }
  },
});
"""

READ_TERMINAL = """
(() => {
  const t = window.__terminal;
  if (!t) { return ""; }
  const b = t.buffer.active, rows = [];
  for (let i = 0; i < b.length; i++) {
    const line = b.getLine(i);
    if (line) { rows.push(line.translateToString(true)); }
  }
  return rows.join("\\n");
})()
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async for message in self.ws:
            doc = message.json()
            if doc.get("id") == ident:
                if "error" in doc:
                    raise RuntimeError(f"{method}: {doc['error']}")
                return dict(doc.get("result", {}))
        raise RuntimeError("the browser closed the connection")

    async def open(self, url: str) -> None:
        await self.call("Page.enable")
        await self.call("Page.addScriptToEvaluateOnNewDocument", source=CATCH_TERMINAL)
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def text(self) -> str:
        return str(await self.evaluate(READ_TERMINAL) or "")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Page]:
    exe = chromium()
    assert exe is not None
    # Chromium's helpers may still write into its profile as it exits.
    with tempfile.TemporaryDirectory(
        prefix="shard-console-chromium-", ignore_cleanup_errors=True
    ) as profile:
        proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(600):
                if port_file.exists() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json()
                page = next(t for t in targets if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    yield Page(ws)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
