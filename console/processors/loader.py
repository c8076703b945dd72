"""``--processor`` specs: null, print, jsonl:PATH, or package.module:function.

A user's processor is imported only from that explicit spec: no plugin discovery, no file paths,
nothing implicit.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

from console.errors import UsageError
from console.processors.base import CallableProcessor, Processor
from console.processors.builtin import JsonlProcessor, NullProcessor, PrintProcessor

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_writable(spec: str, path: Path) -> None:
    """A file a processor appends to must be one it can write: checked before anything is
    written anywhere (the database included), one line each."""
    target = path.resolve()
    if target.is_dir():
        raise UsageError(f"processor {spec}: {target} is a folder: name a file in it")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise UsageError(f"processor {spec}: {target} is not writable: fix its permissions")
        return
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"processor {spec}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"processor {spec}: folder {parent} is not writable: fix its permissions")


def load_processor(spec: str, stream: str) -> Processor:
    """Turn a ``--processor`` spec into a processor, or raise UsageError with one line."""
    text = spec.strip()
    if text == "null":
        return NullProcessor()
    if text == "print":
        return PrintProcessor()
    if text.startswith("jsonl:"):
        path = text[len("jsonl:") :]
        if not path:
            raise UsageError("processor 'jsonl:' needs a file path, as in jsonl:out.jsonl")
        check_writable(text, Path(path).expanduser())
        return JsonlProcessor(str(Path(path).expanduser()), stream)
    module_name, sep, attr = text.partition(":")
    if not sep or not _IDENT.match(module_name) or not _IDENT.match(attr):
        raise UsageError(
            f"unknown processor '{spec}': use null, print, jsonl:PATH or package.module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import processor module '{module_name}' ({exc}): install it or add its "
            "folder to PYTHONPATH"
        ) from None
    except Exception as exc:
        raise UsageError(
            f"processor module '{module_name}' failed to import: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f"processor '{spec}': module '{module_name}' has no attribute '{attr}'"
            ) from None
    if not callable(target):
        raise UsageError(f"processor '{spec}' is not callable")
    return CallableProcessor(target, text)
