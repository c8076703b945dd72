"""What the embedded services share on the wire: API errors and shard iterators.

An iterator names the stream (or table), the shard, an absolute record index and when it was
issued; it is opaque to clients, as AWS's are, and expires like them.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass


class ApiError(Exception):
    """An error response: ``code`` becomes ``__type``, as AWS's JSON protocols send it."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class Iterator:
    container: str  # the stream's or the table's name
    shard_id: str
    index: int  # absolute: records trimmed from the front keep their numbers
    issued: float


def encode_iterator(container: str, shard_id: str, index: int) -> str:
    raw = f"{container}|{shard_id}|{index}|{time.time():.3f}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_iterator(token: str, invalid: ApiError, ttl: float, expired: ApiError) -> Iterator:
    """The iterator ``token`` names; ``invalid`` if it is not one of ours, ``expired`` once it
    is older than ``ttl`` seconds."""
    try:
        container, shard_id, index, issued = (
            base64.urlsafe_b64decode(token.encode()).decode().split("|")
        )
        it = Iterator(container, shard_id, int(index), float(issued))
    except (ValueError, binascii.Error):
        raise invalid from None
    if time.time() - it.issued > ttl:
        raise expired
    return it
