"""What an attached console finds wrong, as values: the snapshot carries them (console.engine.state)
and front ends show them; console.engine.observe.diagnosis makes them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Finding(StrEnum):
    STUCK_CHILD = "stuck child"
    NO_LEASE = "no lease"
    ORPHAN_LEASE = "lease without shard"
    EXPIRED = "expired"
    UNOWNED = "unowned"
    HANDOFF_STUCK = "handoff stuck"
    IDLE_WORKER = "idle worker"
    DATA_LOST = "data lost"
    RETENTION = "leaving retention"
    NOT_RUNNING = "not running"
    MALFORMED = "malformed lease"
    LEADER_STALE = "leader gone"
    NOT_RENEWING = "not renewing"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    finding: Finding
    subject: str  # the shard (or the worker) it is about
    text: str
    severe: bool = False  # data is lost, or will be if nobody acts
    about: str = ""  # what else it is about (the parent a child waits on)

    def line(self) -> str:
        return f"{self.finding.value}: {self.text}"

    @property
    def key(self) -> tuple[Finding, str, str]:
        """What it is about (its text may change, durations in it grow)."""
        return (self.finding, self.subject, self.about)
