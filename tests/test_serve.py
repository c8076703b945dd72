"""``shard-console serve``: the console in a real browser (Debian's chromium, headless), over a
demo consumer running in another process; the token; bad input."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from console.cli.commands import build_parser
from console.web.server import COOKIE
from tests.browser import browser, chromium
from tests.conftest import run_cli

TOKEN = "t0ken-for-the-test"
# What the page's console must show: the consumer's four shards, whose console it is, and that
# it changes nothing.
WANTED = (
    *(f"shardId-00000000000{i}" for i in range(4)),
    "attached to the consumer of",
    "READ-ONLY",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def published(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return bool(conn.execute("SELECT count(*) FROM snapshots").fetchone()[0])
    except sqlite3.Error:
        return False


def wait_until(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def consumer_db(tmp_path: Path) -> Iterator[Path]:
    """A demo consumer, headless, in its own process, publishing its snapshot into ``db``."""
    db = tmp_path / "c.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "demo", "--no-ui", "--db", str(db), "--duration", "300"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: published(db), "the consumer's first snapshot")
        yield db
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_serve(*args: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: " at http://" in log.read_text() or proc.poll() is not None, "serve")
    assert proc.poll() is None, log.read_text()
    return proc, log.read_text()


async def status_of(url: str, **kw: object) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as resp:  # type: ignore[arg-type]
        await resp.read()
        return resp.status, {k: v for k, v in resp.cookies.items()}  # type: ignore[misc]


def test_the_token_is_asked_of_every_request_and_other_sites_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"")  # serve checks it is there; each page's attach reads it
    proc, said = start_serve(
        "--db", str(db), "--host", "0.0.0.0", "--port", "0", "--token", TOKEN,
        log=tmp_path / "serve.log",
    )  # fmt: skip
    try:
        assert TOKEN not in said  # the address is announced, the token never
        assert "(read-only); open it with ?token=TOKEN" in said
        found = re.search(r"at http://0\.0\.0\.0:(\d+)/", said)
        assert found is not None and found.group(1) != "0", said  # port 0: the one it got
        base = f"http://127.0.0.1:{found.group(1)}"

        async def check() -> str:
            # Without the token (or with another), nothing: the page, its files, its socket.
            for path in ("/", "/static/js/textual.js", "/ws"):
                assert (await status_of(base + path))[0] == 401, path
            assert (await status_of(f"{base}/?token=wrong"))[0] == 401
            assert (await status_of(base + "/", headers={"Authorization": "Bearer x"}))[0] == 401
            code, cookies = await status_of(f"{base}/?token={TOKEN}")
            assert code == 200 and COOKIE in cookies
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await status_of(base + "/static/js/textual.js", headers=bearer))[0] == 200
            # Another site's page is refused, token or not (a browser always says its origin).
            evil = {**bearer, "Origin": "http://evil.example"}
            assert (await status_of(base + "/ws", headers=evil))[0] == 403
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/", headers=bearer) as resp:
                    return await resp.text()

        page = asyncio.run(check())
        # The page names no other server: its files and socket are relative to it.
        assert "<script" in page and "http://" not in page and "https://" not in page
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_on_loopback_a_rebound_name_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"")
    proc, said = start_serve("--db", str(db), "--port", "0", log=tmp_path / "serve.log")
    try:
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/ \(read-only\)$", said.strip())
        assert found is not None, said
        base = found.group(1)
        port = base.rsplit(":", 1)[1]

        async def check() -> None:
            assert (await status_of(base + "/"))[0] == 200
            for host in ("localhost", "[::1]"):
                assert (await status_of(base + "/", headers={"Host": f"{host}:{port}"}))[0] == 200
            rebound = {"Host": f"attacker.example:{port}"}
            assert (await status_of(base + "/", headers=rebound))[0] == 403
            assert (await status_of(base + "/ws", headers=rebound))[0] == 403
            # Its own page is let in; another local web app's page (another port) is not.
            own = {"Origin": f"http://127.0.0.1:{port}"}
            assert (await status_of(base + "/", headers=own))[0] == 200
            other_port = 3000 if port != "3000" else 3001
            neighbour = {"Origin": f"http://127.0.0.1:{other_port}"}
            assert (await status_of(base + "/", headers=neighbour))[0] == 403
            assert (await status_of(base + "/ws", headers=neighbour))[0] == 403

        asyncio.run(check())
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.mark.skipif(
    chromium() is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium as root; it could "
    "not here): the browser test cannot run",
)
def test_a_browser_shows_the_live_consumer(consumer_db: Path, tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_serve(
        "--db", str(consumer_db), "--host", "0.0.0.0", "--port", str(port), "--token", TOKEN,
        log=tmp_path / "serve.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        async def check() -> tuple[str, list[str]]:
            async with browser() as page:
                await page.open(f"{base}/?token={TOKEN}")
                deadline = time.monotonic() + 60
                text = ""
                while time.monotonic() < deadline:
                    text = await page.text()
                    if all(want in text for want in WANTED):
                        break
                    await asyncio.sleep(0.2)
                loaded = await page.evaluate(
                    "performance.getEntriesByType('resource').map(e => e.name)"
                )
                return text, loaded

        text, loaded = asyncio.run(check())
        assert all(want in text for want in WANTED), text
        # Everything the page loaded came from this server.
        assert all(u.startswith(f"{base}/") for u in loaded), loaded
        assert f"{base}/static/js/textual.js" in loaded
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_a_page_is_read_only_unless_changes_are_allowed(tmp_path: Path) -> None:
    from console.cli.attach import served_argv

    db = str(tmp_path / "c.db")
    args = build_parser().parse_args(["serve", "--db", db, "--scan-interval", "3"])
    argv = served_argv(args)
    assert argv[:4] == [sys.executable, "-m", "console", "attach"]
    # What was given, as given: the page's attach reads the environment and the file itself.
    assert argv[4:] == ["--db", db, "--scan-interval", "3", "--read-only"]
    args = build_parser().parse_args(["serve", "--db", db, "--allow-changes"])
    assert "--read-only" not in served_argv(args)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"")  # serve only checks that it is there; attach says more in each page
    cases = [
        (
            ("--db", str(db), "--host", "0.0.0.0"),
            "serving on 0.0.0.0 needs a token: pass --token or set SHARD_CONSOLE_TOKEN "
            "(or serve on 127.0.0.1)",
        ),
        (
            ("--db", str(tmp_path / "none.db")),
            f"no database at {tmp_path / 'none.db'}: pass --db with a consumer's database, "
            "or --lease-table",
        ),
        (
            ("--lease-table", "app"),
            "serve --lease-table needs --stream: the stream it leases",
        ),
        (
            ("--db", str(db), "--host", "0.0.0.0", "--token", "x"),
            "the token is 1 character(s): use one of 16 or more, as from python3 -c 'import "
            "secrets; print(secrets.token_urlsafe())'",
        ),
        (
            ("--db", str(db), "--host", "not an address", "--token", "t" * 16),
            "--host 'not an address' is not an address: give an IP address (0.0.0.0, "
            "127.0.0.1) or a name",
        ),
        (
            ("--db", str(db), "--lease-table", "app"),
            "--lease-table and --db name two consumers: pass one",
        ),
    ]
    for args, message in cases:
        res = run_cli("serve", *args, env={"SHARD_CONSOLE_TOKEN": ""})
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr == f"shard-console: error: {message}\n", args
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli("serve", "--db", str(db), "--port", str(port))
    assert res.returncode == 2 and res.stdout == ""  # nothing announced: it never listened
    assert res.stderr.splitlines() == [
        f"shard-console: error: --port {port}: the port is in use on 127.0.0.1; pick another "
        "port (0 picks a free one)"
    ], res.stderr
