"""Shard discovery: list the stream's shards, keep the lineage, tell what changed.

The consumer lists on an interval, at every shard end, and at once when a worker meets
ChildShards. An unchanged listing costs one comparison and no rework; a changed one returns the
shards that changed (the consumer hands them to its ownership strategy, which saves the shard map
and, with a lease table, creates their leases) and announces the resharding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.retry import Backoff
from console.model import Shard
from console.sources.base import RetryableError, StreamSource

FIRST_LISTING_ATTEMPTS = 8


def resharding_text(new: Iterable[Shard], closed: Iterable[str] = ()) -> str | None:
    """``resharding: new A (from P), B (from P); closed P``, or None if nothing changed."""
    parts = []
    born = ", ".join(f"{s.shard_id} (from {'+'.join(s.parents) or 'none'})" for s in new)
    if born:
        parts.append(f"new {born}")
    gone = ", ".join(closed)
    if gone:
        parts.append(f"closed {gone}")
    return "resharding: " + "; ".join(parts) if parts else None


class Discovery:
    """The stream's shards as last listed (plus children learned from ChildShards that no
    listing has shown yet), as a :class:`Lineage`."""

    def __init__(self, source: StreamSource, events: EventLog) -> None:
        self.source = source
        self.events = events
        self.key = source.stream  # the store's key for the stream; the consumer sets the ARN
        self.lineage = Lineage.build(())
        self._fingerprint: tuple[tuple[str, str | None], ...] | None = None
        self._learned: dict[str, Shard] = {}  # children seen in ChildShards, not listed yet

    async def refresh(self) -> tuple[list[Shard], Lineage | None]:
        """List the shards. Returns the shards new or changed since the last listing, and the
        new lineage if anything changed (else nothing and None)."""
        shards = await self.source.list_shards()
        fingerprint = tuple((s.shard_id, s.ending_sequence_number) for s in shards)
        if fingerprint == self._fingerprint:
            return [], None
        first = self._fingerprint is None
        self._fingerprint = fingerprint
        known = self.lineage.shards
        changed = [s for s in shards if known.get(s.shard_id) != s]
        listed = {s.shard_id for s in shards}
        for sid in [sid for sid in self._learned if sid in listed]:
            del self._learned[sid]
        self.lineage = Lineage.build([*shards, *self._learned.values()])
        if not first:
            new = [s for s in changed if s.shard_id not in known]
            closed = [
                s.shard_id
                for s in changed
                if s.is_closed and s.shard_id in known and not known[s.shard_id].is_closed
            ]
            self._announce(new, closed)
        return changed, self.lineage

    async def first_list(self, backoff: Backoff) -> list[Shard]:
        """The first listing must succeed before anything runs: throttling or a 5xx at start-up
        is retried with backoff (about half a minute in all) before the start fails. Returns
        every shard."""
        for attempt in range(1, FIRST_LISTING_ATTEMPTS + 1):
            try:
                shards, _ = await self.refresh()
                return shards
            except RetryableError as exc:
                if attempt == FIRST_LISTING_ATTEMPTS:
                    raise
                self.events.emit(
                    "discovery_error",
                    f"listing shards failed, retrying: {exc}",
                    level=Level.WARNING,
                )
                await asyncio.sleep(backoff.next_delay())
        raise AssertionError("unreachable")  # pragma: no cover

    def learn(self, children: Sequence[Shard]) -> Lineage | None:
        """ChildShards at a shard's end: known at once, without waiting for a listing. The new
        lineage, or None if every child was known."""
        new = [c for c in children if c.shard_id not in self.lineage]
        if not new:
            return None
        for child in new:
            self._learned[child.shard_id] = child
        self.lineage = Lineage.build([*self.lineage.shards.values(), *new])
        self._announce(new, ())
        return self.lineage

    def _announce(self, new: Sequence[Shard], closed: Sequence[str]) -> None:
        text = resharding_text(new, closed)
        if text is not None:
            # Each split or merge once, by the parents its new shards came from (the children
            # may be learned at a shard's end and the parent seen closed at a later listing).
            operations = sorted({tuple(sorted(s.parents)) for s in new if s.parents})
            self.events.emit("resharded", text, operations=operations)
