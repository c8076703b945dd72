"""The command line: every ``shard-console`` command, and the wiring that puts a consumer
together from names (:mod:`console.cli.wiring`, which ``console.open_consumer`` is).

``main`` loads the parser only when called, so ``import console`` stays instant. The floors,
top down (an import contract keeps them): :mod:`commands` (the parser, ``run`` and ``demo``);
:mod:`attach` and :mod:`tail`; :mod:`launch` (from settings to a running consumer or attached
console) and :mod:`control` (checkpoints and changes); :mod:`stores` (the store and stream a
command is about); :mod:`wiring` and :mod:`signals`.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from console.cli.commands import main as run

    return run(argv)


__all__ = ["main"]
