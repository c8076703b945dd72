"""One line per figure, for ``python -m bench`` to gather into bench/RESULTS.md."""

from __future__ import annotations

PREFIX = "RESULT\t"


def result(pid: str, what: str, figure: str, target: str, met: bool) -> None:
    """``pid`` is the issue's name for the figure (P1 ... P7)."""
    print(PREFIX + "\t".join((pid, what, figure, target, "yes" if met else "NO")), flush=True)


def parse(line: str) -> tuple[str, ...] | None:
    if not line.startswith(PREFIX):
        return None
    parts = tuple(line[len(PREFIX) :].rstrip("\n").split("\t"))
    return parts if len(parts) == 5 else None
