"""The headless core never imports the UI: checked in a fresh interpreter."""

import ast
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
    assert loaded(f"import {module}", ("textual", "rich")) == []


def test_a_headless_start_with_nothing_of_the_ui_configured_does_not_load_it() -> None:
    """Checking a theme or [keys] loads Textual (a fifth of a second): a container's start
    with the bundled theme and no keys need not pay it."""
    code = (
        "from console.cli.launch import check_ui\n"
        "from console.settings import Settings\n"
        "check_ui(Settings(no_ui=True))"
    )
    assert loaded(code, ("textual", "console.ui")) == []


def loaded(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules named ``prefixes``* that ``code`` loads, in a fresh interpreter."""
    show = f"\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run(
        [sys.executable, "-c", code + show], capture_output=True, text=True, check=True
    )
    return list(ast.literal_eval(out.stdout))


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
