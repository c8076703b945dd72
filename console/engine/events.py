"""Things an operator should hear about: resharding, errors, retention loss, operator actions.

Rare by design (never one per record). Kept in a ring for screens that arrive late, and handed
synchronously to subscribers (the headless logger, the TUI's event pane).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at: float
    level: Level
    kind: str  # short stable word: shard_started, shard_done, resharded, failing, ...
    message: str
    shard_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventLog:
    def __init__(self, keep: int = 1000) -> None:
        self._ring: deque[Event] = deque(maxlen=keep)
        self._subscribers: list[Subscriber] = []
        self._seq = 0

    def emit(
        self,
        kind: str,
        message: str,
        *,
        level: Level = Level.INFO,
        shard_id: str | None = None,
        at: float | None = None,
        **fields: Any,
    ) -> Event:
        self._seq += 1
        when = time.time() if at is None else at
        event = Event(self._seq, when, level, kind, message, shard_id, fields)
        self._ring.append(event)
        for subscriber in list(self._subscribers):
            subscriber(event)
        return event

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def since(self, seq: int) -> list[Event]:
        return [e for e in self._ring if e.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._seq


class ExpiryTeller:
    """Says once that a lease expired (nobody renews it), and again only after it was renewed
    or taken since: for the fleet's view and the attached console alike."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.told: set[str] = set()

    def see(self, shard_id: str, owner: str | None, expired: bool) -> None:
        if expired and owner is not None and shard_id not in self.told:
            self.told.add(shard_id)
            self.events.emit(
                "lease_expired",
                f"lease on {shard_id} expired: worker {owner} stopped renewing it",
                level=Level.WARNING,
                shard_id=shard_id,
            )
        elif not (expired and owner is not None):
            self.told.discard(shard_id)
