"""What goes wrong with a lease table, as the rest of shard-console sees it."""

from __future__ import annotations

from console.checkpoints.base import StoreError


class LeaseTableError(StoreError):
    """The lease table cannot be used as asked."""


class LeaseTableUnavailable(LeaseTableError):
    """A failure that may pass: throttling, a 5xx, the endpoint not answering."""


class MalformedLease(LeaseTableError):
    """An item of the lease table that claims to be a lease and is not a valid one (written by
    hand, or by a program that got the format wrong). It is shown and left untouched."""

    def __init__(self, key: str, shard_id: str, reason: str) -> None:
        super().__init__(
            f"lease {key} is malformed ({reason}): it is left untouched, its shard is not read "
            "and its children wait; fix or delete the item"
        )
        self.key = key
        self.shard_id = shard_id
        self.reason = reason
