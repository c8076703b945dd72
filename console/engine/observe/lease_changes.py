"""What changed in a lease table between two scans, told as events: leases created, deleted,
taken, stolen, given up, fenced by an operator's change, finished, moved back, handed over (KCL
3.x), and expired (once, until renewed or taken). The attached console over a lease table keeps
one :class:`LeaseChanges` and hands it each scan."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from console.checkpoints.leases import Lease
from console.engine.events import EventLog, ExpiryTeller, Level
from console.engine.ownership.taker import LeaseObserver
from console.model import seq_int


class LeaseChanges:
    def __init__(
        self, events: EventLog, observer: LeaseObserver, failover: float, mono: Callable[[], float]
    ) -> None:
        self.events = events
        self.observer = observer
        self.failover = failover
        self.mono = mono
        # shard -> (the change that took its lease away, when it was written)
        self.fenced: dict[str, tuple[int, float]] = {}
        self.handoff_seen: dict[str, float] = {}  # shard -> when its handoff was first seen
        self._expiries = ExpiryTeller(events)

    def fencing(self, shard_id: str, change: int, written: float) -> None:
        """An operator's change took this lease from its holder (the next scan says so)."""
        self.fenced[shard_id] = (change, written)

    def handoff_for(self, shard_id: str, now: float) -> float | None:
        """Seconds the shard's KCL 3.x handoff has been seen (None: none seen)."""
        since = self.handoff_seen.get(shard_id)
        return None if since is None else now - since

    def scanned(self, before: Mapping[str, Lease], tell: bool, scan_started: float) -> None:
        """An event for every lease change between the last scan (``before``) and this one
        (the observer's). ``tell`` False: the first scan, which only learns the table."""
        after = {s.lease.shard_id: s for s in self.observer.seen.values()}
        now = self.mono()
        if tell:
            for sid in sorted(set(before) - set(after)):
                self.events.emit("lease_deleted", f"lease {sid} was deleted", shard_id=sid)
        for sid, seen in sorted(after.items()):
            lease = seen.lease
            old = before.get(sid)
            expired = self.observer.expired(seen, self.failover, now) and not lease.finished
            self._expiries.see(sid, lease.checkpoint_owner or lease.owner, expired)
            if lease.checkpoint_owner is not None:
                self.handoff_seen.setdefault(sid, now)
            else:
                self.handoff_seen.pop(sid, None)
            if not tell:
                continue
            if old is None:
                parents = f" (child of {', '.join(lease.parents)})" if lease.parents else ""
                self.events.emit("lease_created", f"lease {sid} was created{parents}", shard_id=sid)
                continue
            if old.owner != lease.owner:
                self._tell_owner(sid, old.owner, lease.owner)
            if old.checkpoint != lease.checkpoint and lease.finished:
                self.events.emit("shard_done", f"{sid} reached SHARD_END", shard_id=sid)
            elif moved_back(old, lease):
                self.events.emit(
                    "checkpoint_back",
                    f"checkpoint of {sid} moved back: {old.checkpoint} -> {lease.checkpoint}",
                    level=Level.WARNING,
                    shard_id=sid,
                )
            if lease.checkpoint_owner is not None and old.checkpoint_owner is None:
                self.events.emit(
                    "lease_handoff",
                    f"{lease.checkpoint_owner} hands {sid} over to {lease.owner}",
                    shard_id=sid,
                )
        # A scan that started after a change's write has told what it fenced (or never will).
        self.fenced = {
            sid: (change, at) for sid, (change, at) in self.fenced.items() if at > scan_started
        }

    def _tell_owner(self, sid: str, old: str | None, new: str | None) -> None:
        fenced = self.fenced.pop(sid, None)
        change = fenced[0] if fenced is not None else None
        if new is None and change is not None:
            self.events.emit(
                "lease_fenced",
                f"change #{change} took lease {sid} from {old}: it drops the shard at its next "
                "renewal, and the next taker reads from the new checkpoint",
                shard_id=sid,
            )
        elif new is None:
            self.events.emit("lease_released", f"{old} gave up lease {sid}", shard_id=sid)
        elif old is None:
            self.events.emit("lease_taken", f"{new} took lease {sid}", shard_id=sid)
        else:
            self.events.emit("lease_stolen", f"{new} took lease {sid} from {old}", shard_id=sid)


def moved_back(old: Lease, new: Lease) -> bool:
    """A checkpoint that went back (an operator's rewind, or a worker's bug)."""
    if not (old.checkpoint.isdigit() and new.checkpoint.isdigit()):
        return new.checkpoint == "TRIM_HORIZON" and old.checkpoint.isdigit()
    return seq_int(new.checkpoint) < seq_int(old.checkpoint)
