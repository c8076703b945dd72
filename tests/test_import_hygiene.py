"""The headless core never imports the UI: checked in a fresh interpreter."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "console.engine.consume.consumer",
        "console.sources.kinesis",
        "console.checkpoints.sqlite",
        "console.headless",
    ],
)
def test_headless_modules_do_not_import_textual(module: str) -> None:
    code = f"import sys, {module}; print([m for m in ('textual', 'rich') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_package_of_the_code_is_installed() -> None:
    """`pip install .` ships exactly the packages pyproject.toml lists: a package missing there
    works in the editable install the tests use and fails for every user."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "console").rglob("__init__.py")
    }
    assert found == listed - {"console.themes"}  # themes/ ships as console.themes
