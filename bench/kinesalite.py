"""Start kinesalite for a benchmark: the same install and script the tests use."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINESALITE = ROOT / "tests" / "kinesalite"


@contextmanager
def kinesalite() -> Iterator[str]:
    if not (KINESALITE / "node_modules" / "kinesalite").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=KINESALITE, check=True)
    node = shutil.which("node")
    assert node, "node is needed"
    proc = subprocess.Popen(
        [node, str(KINESALITE / "start.js"), "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    try:
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(10)
