"""The headless core never imports the UI: checked in a fresh interpreter."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "console.engine.consumer",
        "console.sources.kinesis",
        "console.checkpoints.sqlite",
        "console.headless",
    ],
)
def test_headless_modules_do_not_import_textual(module: str) -> None:
    code = f"import sys, {module}; print([m for m in ('textual', 'rich') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
