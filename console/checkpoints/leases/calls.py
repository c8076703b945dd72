"""Calls to a lease table, and DynamoDB's errors made lines an operator can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from console.checkpoints.leases.errors import LeaseTableError, LeaseTableUnavailable
from console.checkpoints.leases.items import NUDGE, Lease

_RETRYABLE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
        "TransactionConflictException",
    }
)


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", "")) or None
    return None


def table_error(exc: BaseException, table: str, action: str) -> LeaseTableError:
    """One line an operator can act on, for whatever DynamoDB (or the network) raised."""
    if isinstance(exc, LeaseTableError):
        return exc
    code = error_code(exc)
    if code == "ResourceNotFoundException":
        return LeaseTableError(f"lease table '{table}' does not exist ({action})")
    if code in ("AccessDeniedException", "AccessDenied"):
        return LeaseTableError(
            f"access denied on lease table '{table}' while {action}: grant dynamodb:"
            "DescribeTable, Scan, GetItem, PutItem, UpdateItem, CreateTable on it"
        )
    if code in ("UnrecognizedClientException", "InvalidSignatureException"):
        return LeaseTableError(
            f"DynamoDB rejected the credentials ({code}) while {action}: check the profile "
            "or the access keys"
        )
    status = 0
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _RETRYABLE or status >= 500 or status == 429:
        return LeaseTableUnavailable(f"{code} on lease table '{table}' while {action}")
    if code is None:
        from botocore import exceptions as bce

        if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
            return LeaseTableUnavailable(f"cannot reach DynamoDB while {action}: {exc}")
        if isinstance(exc, bce.NoCredentialsError):
            return LeaseTableError("no AWS credentials found for DynamoDB: set AWS_PROFILE")
        if isinstance(exc, OSError | TimeoutError | bce.HTTPClientError):
            return LeaseTableUnavailable(
                f"connection error on lease table '{table}' while {action}: {exc}"
            )
    return LeaseTableError(f"{code or type(exc).__name__} while {action}: {exc}")


class TableCalls:
    """Calls to one KCL lease table, through an aiobotocore DynamoDB client the caller owns:
    what DynamoDB raised made one line (:func:`table_error`), a failed condition False."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    async def _call(self, op: str, action: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, op)(**kwargs)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise
            raise table_error(exc, self.name, action) from exc

    async def _conditional(self, op: str, action: str, **kwargs: Any) -> bool:
        return await self._held_write(None, op, action, **kwargs)

    async def _held_write(self, lease: Lease | None, op: str, action: str, **kwargs: Any) -> bool:
        """A conditional write; with ``lease``, a write to a lease this process holds, whose
        answer carries the item as written: a leader's nudge on it is noticed (no extra
        request)."""
        if lease is not None:
            kwargs["ReturnValues"] = "ALL_NEW"
        try:
            answer = await self._call(op, action, TableName=self.name, **kwargs)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        if lease is not None:
            nudge = (answer or {}).get("Attributes", {}).get(NUDGE, {}).get("N")
            with contextlib.suppress(ValueError):
                lease.nudge = float(nudge) if nudge is not None else None
        return True
