"""Start kinesalite for a benchmark: the same install and script the tests use."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import node_server

ROOT = Path(__file__).resolve().parent.parent
KINESALITE = ROOT / "tests" / "kinesalite"


@contextmanager
def kinesalite() -> Iterator[str]:
    if not (KINESALITE / "node_modules" / "kinesalite").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=KINESALITE, check=True)
    with node_server(KINESALITE / "start.js", "0") as url:
        yield url
