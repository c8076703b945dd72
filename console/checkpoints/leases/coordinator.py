"""The two tables a KCL 3.x application keeps beside its lease table, in the KCL 3.1's own
format (../shared/LEASES.md; read in the KCL's source, v3.1.3), so that a KCL worker and ours
share them: ``<app>-CoordinatorState`` (HASH ``key`` S) holds the migration item
``Migration3.0`` and the leader's lock item ``Leader``; ``<app>-WorkerMetricStats`` (HASH
``wid`` S) holds one row per worker, which makes it eligible for leases.

The lock is the DynamoDB lock client's (1.4, which the KCL 3.1 uses): the holder heartbeats by
replacing ``recordVersionNumber`` (conditional on the one it wrote and on its name); a contender
that has seen one ``recordVersionNumber`` unchanged for the item's ``leaseDuration`` takes the
lock with a put conditional on that number; a release deletes the item. Passive: who contends,
and when, is the engine's (console.engine.ownership.assigned).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from console.checkpoints.leases.calls import error_code, table_error
from console.checkpoints.leases.errors import LeaseTableError

MIGRATION_KEY = "Migration3.0"
KCL_ROW_INTERVAL = 30.0  # workerMetricsReporterFreqInMillis
LEADER_KEY = "Leader"
V2 = "CLIENT_VERSION_2X"
V3 = "CLIENT_VERSION_3X"
V3_ROLLBACK = "CLIENT_VERSION_3X_WITH_ROLLBACK"
UPGRADE = "CLIENT_VERSION_UPGRADE_FROM_2X"
INIT = "CLIENT_VERSION_INIT"
# The versions in which a leader assigns the leases; in the others every worker takes its own.
ASSIGNED_VERSIONS = frozenset({V3, V3_ROLLBACK})
# ``leases migrate``'s moves, as the KCL's MigrationStateMachine allows them (3X is final).
MOVES = {
    "3x": {None: V3, V2: V3_ROLLBACK, UPGRADE: V3_ROLLBACK, V3_ROLLBACK: V3},
    "2x": {None: V2, V3_ROLLBACK: V2, UPGRADE: V2},
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: str | None  # None: no item (a KCL 2.x application, or none yet)
    by: str | None = None
    at_ms: int | None = None
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class LeaderLock:
    owner: str
    duration_ms: int
    version: str  # recordVersionNumber
    released: bool = False
    ours: bool = False  # taken by shard-console (``scLeader``): it nudges whom it assigns to


@dataclass(frozen=True, slots=True)
class MetricRow:
    worker: str
    updated: float  # ``lut``, epoch seconds
    interval: float | None = None  # ``scInterval``: shard-console's, how often it writes it

    @property
    def ours(self) -> bool:
        return self.interval is not None

    def fresh(self, wall: float) -> bool:
        """Whether the row stands for a live worker: written within two of its intervals (the
        KCL's rule, its rows every 30 s), a second's slack (``lut`` is in whole seconds)."""
        every = self.interval if self.interval is not None else KCL_ROW_INTERVAL
        return wall - self.updated <= 2 * every + 1.0


def coordinator_name(lease_table: str) -> str:
    return f"{lease_table}-CoordinatorState"


def metrics_name(lease_table: str) -> str:
    return f"{lease_table}-WorkerMetricStats"


class Coordinator:
    """``<app>-CoordinatorState`` and ``<app>-WorkerMetricStats``, through a DynamoDB client
    the caller owns. Every conditional write returns False when its condition fails."""

    def __init__(self, client: Any, lease_table: str) -> None:
        self.client = client
        self.state_table = coordinator_name(lease_table)
        self.metrics_table = metrics_name(lease_table)

    async def _call(self, table: str, op: str, action: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, op)(TableName=table, **kwargs)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise
            raise table_error(exc, table, action) from exc

    async def _conditional(self, table: str, op: str, action: str, **kwargs: Any) -> bool:
        try:
            await self._call(table, op, action, **kwargs)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- the tables -----------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Both tables, created as the KCL creates them (on demand) when absent."""
        for table, key in ((self.state_table, "key"), (self.metrics_table, "wid")):
            try:
                await self._call(
                    table,
                    "create_table",
                    "creating it",
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except LeaseTableError as exc:
                if "ResourceInUseException" not in str(exc):
                    raise
        for table in (self.state_table, self.metrics_table):
            await self._wait_active(table)

    async def _wait_active(self, table: str) -> None:
        async with asyncio.timeout(120.0):
            delay = 0.05
            while True:
                resp = await self._call(table, "describe_table", "describing it")
                if resp["Table"].get("TableStatus") == "ACTIVE":
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _get(self, key: str) -> dict[str, Any] | None:
        try:
            resp = await self._call(
                self.state_table,
                "get_item",
                f"reading {key}",
                Key={"key": {"S": key}},
                ConsistentRead=True,
            )
        except LeaseTableError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        item = resp.get("Item")
        return dict(item) if item else None

    # -- the migration item ---------------------------------------------------------------------

    async def migration(self) -> Migration:
        item = await self._get(MIGRATION_KEY)
        if item is None:
            return Migration(None)
        history = tuple(
            {k: next(iter(v.values())) for k, v in entry.get("M", {}).items()}
            for entry in item.get("h", {}).get("L", ())
        )
        mts = item.get("mts", {}).get("N")
        return Migration(
            item.get("cv", {}).get("S"),
            item.get("mb", {}).get("S"),
            int(mts) if mts is not None else None,
            history,
        )

    async def set_migration(self, version: str, by: str, seen: Migration) -> bool:
        """The migration item at ``version``, conditional on what was seen (none, or its
        version): the KCL's own writes, its history kept (newest first, ten at most)."""
        now_ms = int(time.time() * 1000)
        previous = {"cv": seen.version or INIT, "mb": seen.by or by, "mts": seen.at_ms or now_ms}
        history = [previous, *seen.history][:10]
        item = {
            "key": {"S": MIGRATION_KEY},
            "cv": {"S": version},
            "mb": {"S": by},
            "mts": {"N": str(now_ms)},
            "h": {
                "L": [
                    {
                        "M": {
                            "cv": {"S": str(h["cv"])},
                            "mb": {"S": str(h["mb"])},
                            "mts": {"N": str(h["mts"])},
                        }
                    }
                    for h in history
                ]
            },
        }
        if seen.version is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#k)"}
            names = {"#k": "key"}
        else:
            condition = {
                "ConditionExpression": "cv = :seen",
                "ExpressionAttributeValues": {":seen": {"S": seen.version}},
            }
            names = {}
        return await self._conditional(
            self.state_table,
            "put_item",
            "writing the migration state",
            Item=item,
            **condition,
            **({"ExpressionAttributeNames": names} if names else {}),
        )

    # -- the leader's lock ----------------------------------------------------------------------

    async def leader(self) -> LeaderLock | None:
        item = await self._get(LEADER_KEY)
        if item is None:
            return None
        try:
            return LeaderLock(
                item["ownerName"]["S"],
                int(item["leaseDuration"]["S"]),
                item["recordVersionNumber"]["S"],
                "isReleased" in item,
                "scLeader" in item,
            )
        except (KeyError, ValueError):
            return None  # not the lock client's item: left alone, and nobody leads by it

    def _lock_item(self, me: str, duration_ms: int) -> tuple[dict[str, Any], str]:
        version = str(uuid.uuid4())
        return {
            "key": {"S": LEADER_KEY},
            "ownerName": {"S": me},
            "leaseDuration": {"S": str(duration_ms)},
            "recordVersionNumber": {"S": version},
            # Ours (the lock client keeps attributes it does not know; a KCL worker that takes
            # the lock writes its item anew, without it).
            "scLeader": {"S": "1"},
        }, version

    async def acquire_leader(
        self, me: str, duration_ms: int, expired: LeaderLock | None
    ) -> str | None:
        """The lock, when nobody holds it (``expired`` None) or when ``expired`` (as seen
        unchanged for its duration, or released) is still what the table holds. Returns the
        record version to heartbeat with, or None when another got it first."""
        item, version = self._lock_item(me, duration_ms)
        if expired is None:
            extra: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#k)",
                "ExpressionAttributeNames": {"#k": "key"},
            }
        else:
            extra = {
                "ConditionExpression": "attribute_exists(#k) AND recordVersionNumber = :rvn",
                "ExpressionAttributeNames": {"#k": "key"},
                "ExpressionAttributeValues": {":rvn": {"S": expired.version}},
            }
        ok = await self._conditional(
            self.state_table, "put_item", "taking the leader's lock", Item=item, **extra
        )
        return version if ok else None

    async def heartbeat_leader(self, me: str, version: str, duration_ms: int) -> str | None:
        """The lock kept: a new record version, conditional on ours and on our name. Returns
        it, or None when the lock is not ours any more."""
        new = str(uuid.uuid4())
        ok = await self._conditional(
            self.state_table,
            "update_item",
            "renewing the leader's lock",
            Key={"key": {"S": LEADER_KEY}},
            UpdateExpression="SET leaseDuration = :d, recordVersionNumber = :new",
            ConditionExpression="attribute_exists(#k) AND recordVersionNumber = :rvn "
            "AND ownerName = :me",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues={
                ":d": {"S": str(duration_ms)},
                ":new": {"S": new},
                ":rvn": {"S": version},
                ":me": {"S": me},
            },
        )
        return new if ok else None

    async def release_leader(self, me: str, version: str) -> bool:
        return await self._conditional(
            self.state_table,
            "delete_item",
            "releasing the leader's lock",
            Key={"key": {"S": LEADER_KEY}},
            ConditionExpression="attribute_exists(#k) AND recordVersionNumber = :rvn "
            "AND ownerName = :me",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues={":rvn": {"S": version}, ":me": {"S": me}},
        )

    # -- workers' metric rows -------------------------------------------------------------------

    async def report(self, worker: str, interval: float, at: float | None = None) -> None:
        """This worker's row as a KCL worker off EC2 writes it (no CPU figures: the leader
        balances by throughput), with ``scInterval``: how often shard-console writes it, so a
        leader can tell a row gone stale from one the KCL writes every 30 s. ``at``: the
        worker's wall clock, now by default."""
        await self._call(
            self.metrics_table,
            "update_item",
            "writing this worker's metric row",
            Key={"wid": {"S": worker}},
            UpdateExpression="SET lut = :lut, sts = if_not_exists(sts, :empty), "
            "opr = if_not_exists(opr, :empty), scInterval = :every",
            ExpressionAttributeValues={
                ":lut": {"N": str(int(time.time() if at is None else at))},
                ":empty": {"M": {}},
                ":every": {"N": f"{interval:g}"},
            },
        )

    async def retire(self, worker: str) -> None:
        """This worker's row removed as it leaves: it is no longer eligible for leases."""
        await self._call(
            self.metrics_table, "delete_item", "removing this worker's metric row",
            Key={"wid": {"S": worker}},
        )  # fmt: skip

    async def metric_rows(self) -> list[MetricRow]:
        rows: list[MetricRow] = []
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        while True:
            resp = await self._call(
                self.metrics_table, "scan", "reading the workers' metric rows", **kwargs
            )
            for item in resp.get("Items", ()):
                try:
                    rows.append(
                        MetricRow(
                            item["wid"]["S"],
                            float(item["lut"]["N"]),
                            float(item["scInterval"]["N"]) if "scInterval" in item else None,
                        )
                    )
                except (KeyError, ValueError):
                    continue  # not a row the KCL would count either
            last = resp.get("LastEvaluatedKey")
            if not last:
                return rows
            kwargs["ExclusiveStartKey"] = last


def moved_version(current: str | None, to: str) -> str:
    """Where ``leases migrate --to`` takes a table from ``current``; LeaseTableError when the
    KCL's state machine has no such move."""
    target = MOVES[to].get(current)
    if target is not None:
        return target
    if current == V3 and to == "2x":
        raise LeaseTableError(
            f"{V3} is final for the KCL (its workers would keep following a leader): stop every "
            "worker, then move the table by hand if you must"
        )
    raise LeaseTableError(f"it is at {current} already")
