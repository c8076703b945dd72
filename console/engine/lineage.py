"""The shard tree, pure: no I/O, no clock. Built anew only when the shard list changes.

A child may start only when every parent is finished, or has left the stream (a parent that is
no longer listed aged out with the retention period). Merges give a child two parents; the tree
view shows it under its first parent.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass

from console.model import Shard


@dataclass(frozen=True, slots=True)
class Lineage:
    shards: dict[str, Shard]
    children: dict[str, tuple[str, ...]]

    @classmethod
    def build(cls, shards: Iterable[Shard]) -> Lineage:
        by_id: dict[str, Shard] = {}
        for shard in shards:
            by_id[shard.shard_id] = shard
        kids: dict[str, list[str]] = {}
        for shard in by_id.values():
            for parent in shard.parents:
                if parent in by_id:
                    kids.setdefault(parent, []).append(shard.shard_id)
        return cls(by_id, {k: tuple(sorted(v)) for k, v in kids.items()})

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self.shards

    def __len__(self) -> int:
        return len(self.shards)

    def present_parents(self, shard_id: str) -> tuple[str, ...]:
        return tuple(p for p in self.shards[shard_id].parents if p in self.shards)

    def gone_parents(self, shard_id: str) -> tuple[str, ...]:
        return tuple(p for p in self.shards[shard_id].parents if p not in self.shards)

    def is_ready(self, shard_id: str, finished: Container[str]) -> bool:
        """All parents finished or gone."""
        return all(p in finished or p not in self.shards for p in self.shards[shard_id].parents)

    def ready(self, finished: Container[str]) -> list[str]:
        return [sid for sid in self.shards if sid not in finished and self.is_ready(sid, finished)]

    def descendants(self, shard_id: str) -> list[str]:
        """Every shard below ``shard_id``, breadth first, each once."""
        out: list[str] = []
        seen = {shard_id}
        frontier = [shard_id]
        while frontier:
            nxt: list[str] = []
            for sid in frontier:
                for child in self.children.get(sid, ()):
                    if child not in seen:
                        seen.add(child)
                        out.append(child)
                        nxt.append(child)
            frontier = nxt
        return out

    def roots(self) -> list[str]:
        return [sid for sid, s in self.shards.items() if not self.present_parents(sid)]

    def walk(self) -> Iterator[tuple[str, int]]:
        """(shard_id, depth) in tree order: each root, then its subtree; a merged child appears
        once, under its first listed parent."""
        for root in sorted(self.roots()):
            stack = [(root, 0)]
            while stack:
                sid, depth = stack.pop()
                yield sid, depth
                kids = [c for c in self.children.get(sid, ()) if self.present_parents(c)[0] == sid]
                stack.extend((child, depth + 1) for child in reversed(kids))
