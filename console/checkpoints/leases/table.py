"""The lease table's writes, each one conditional as the KCL makes it (../shared/LEASES.md).

Every method returns False when its condition fails (someone else moved the lease first) and
raises :class:`LeaseTableError` for anything else: :class:`LeaseTableUnavailable` when trying
again may help (throttling, 5xx, a dropped connection), plain LeaseTableError when it cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from console.checkpoints.leases.calls import error_code, table_error
from console.checkpoints.leases.errors import LeaseTableError, MalformedLease
from console.checkpoints.leases.handoffs import GSI, AssignmentWrites
from console.checkpoints.leases.items import SHARD_END, Lease, lease_of, new_item

CLIENT_VERSION_ENTITY = "CLIENT_VERSION_MIGRATION"
KCL3_VERSIONS = frozenset({"CLIENT_VERSION_3X", "CLIENT_VERSION_3X_WITH_ROLLBACK"})

_ATTRIBUTES = [
    {"AttributeName": "leaseKey", "AttributeType": "S"},
    {"AttributeName": "leaseOwner", "AttributeType": "S"},
]
_INDEX = {
    "IndexName": GSI,
    "KeySchema": [
        {"AttributeName": "leaseOwner", "KeyType": "HASH"},
        {"AttributeName": "leaseKey", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}


class LeaseTable(AssignmentWrites):
    """One KCL lease table, through an aiobotocore DynamoDB client the caller owns: its
    creation, its reads, and its holders' writes (the 3.x ones: :mod:`handoffs`)."""

    # -- the table itself -----------------------------------------------------------------

    async def describe(self) -> dict[str, Any] | None:
        """The table's description, or None when it does not exist."""
        try:
            resp = await self._call("describe_table", "describing it", TableName=self.name)
        except LeaseTableError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        return dict(resp["Table"])

    async def ensure(self, create: bool) -> bool:
        """Use the table as it is, or create it the KCL's way (True: created now). Refuses a
        table whose key is not ``leaseKey`` (S), and a missing one when ``create`` is False."""
        table = await self.describe()
        if table is None:
            if not create:
                raise LeaseTableError(
                    f"lease table '{self.name}' does not exist: drop --no-create-table to "
                    "create it, or check the name and --dynamodb-endpoint-url"
                )
            return await self._create()
        check_key_schema(table, self.name)
        if table.get("TableStatus") != "ACTIVE":
            await self._wait_active()
        return False

    async def has_owner_index(self) -> bool:
        table = await self.describe() or {}
        return any(i.get("IndexName") == GSI for i in table.get("GlobalSecondaryIndexes", ()))

    async def add_owner_index(self) -> None:
        """The KCL 3.x's index on ``leaseOwner``, added to a table made before it (a KCL 2.x
        application's), and waited for."""
        await self._call(
            "update_table",
            "adding the LeaseOwnerToLeaseKeyIndex index",
            TableName=self.name,
            AttributeDefinitions=_ATTRIBUTES,
            GlobalSecondaryIndexUpdates=[{"Create": _INDEX}],
        )
        async with asyncio.timeout(600.0):
            while True:
                table = await self.describe() or {}
                index = [
                    i for i in table.get("GlobalSecondaryIndexes", ()) if i["IndexName"] == GSI
                ]
                if index and index[0].get("IndexStatus", "ACTIVE") == "ACTIVE":
                    return
                await asyncio.sleep(1.0)

    async def _create(self) -> bool:
        try:
            await self._call(
                "create_table",
                "creating it",
                TableName=self.name,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=_ATTRIBUTES,
                BillingMode="PAY_PER_REQUEST",
                GlobalSecondaryIndexes=[_INDEX],
            )
        except LeaseTableError as exc:
            if "ResourceInUseException" not in str(exc):  # another worker created it first
                raise
            await self._wait_active()
            return False
        await self._wait_active()
        return True

    async def _wait_active(self) -> None:
        async with asyncio.timeout(120.0):
            delay = 0.05
            while True:
                table = await self.describe()
                if table is not None and table.get("TableStatus") == "ACTIVE":
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- reading ----------------------------------------------------------------------------

    async def scan(self) -> list[dict[str, Any]]:
        """Every item of the table, consistently read, paginated."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True}
        while True:
            resp = await self._call("scan", "reading the leases", **kwargs)
            items.extend(resp.get("Items", ()))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    async def leases(self, stream: str | None) -> tuple[list[Lease], list[MalformedLease]]:
        """The stream's leases, and the items that claim to be leases of it but are not valid
        ones (shown, never used nor written)."""
        return read_leases(await self.scan(), stream)

    async def get(self, key: str, stream: str | None) -> Lease | None:
        resp = await self._call(
            "get_item",
            f"reading lease {key}",
            TableName=self.name,
            Key={"leaseKey": {"S": key}},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return lease_of(item, stream) if item else None

    # -- the protocol's writes ----------------------------------------------------------------

    async def renew(self, lease: Lease, throughput: float | None = None) -> bool:
        """counter c -> c+1, conditional on c and on holding it: as its owner with no handoff
        under way, or, during a KCL 3.x graceful handoff, as the ``checkpointOwner`` that is to
        checkpoint before letting go (the KCL renews it then too). ``throughput`` (KB/s) is
        written as the KCL 3.x renewer writes it: what its leader balances by. ``lease``
        follows on success."""
        condition, values = self._holding(lease)
        sets = "leaseCounter = :next"
        if throughput is not None:
            sets += ", throughputKBps = :kbps"
            values[":kbps"] = {"N": f"{throughput:.3f}"}
        ok = await self._held_write(
            lease,
            "update_item",
            f"renewing lease {lease.key}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression=f"SET {sets}",
            ConditionExpression=f"leaseCounter = :c AND {condition}",
            ExpressionAttributeValues={
                ":c": {"N": str(lease.counter)},
                ":next": {"N": str(lease.counter + 1)},
                **values,
            },
        )
        if ok:
            lease.counter += 1
        return ok

    @staticmethod
    def _holding(lease: Lease) -> tuple[str, dict[str, Any]]:
        """The condition that this process still holds ``lease``: its owner, no handoff under
        way; or, while one is, the worker it is handed from (``checkpoint_owner``)."""
        if lease.checkpoint_owner is not None:
            return "checkpointOwner = :me", {":me": {"S": lease.checkpoint_owner}}
        return "leaseOwner = :me AND attribute_not_exists(checkpointOwner)", {
            ":me": {"S": lease.owner or ""}
        }

    async def take(self, lease: Lease, me: str) -> bool:
        """Take (or steal): owner = me, counter+1, ownerSwitches+1, conditional on the counter
        seen. ``lease`` follows on success."""
        ok = await self._conditional(
            "update_item",
            f"taking lease {lease.key}",
            Key={"leaseKey": {"S": lease.key}},
            # A KCL 3.x handoff left half-way (checkpointOwner) ends with the take.
            UpdateExpression="SET leaseOwner = :me, leaseCounter = :next, "
            "ownerSwitchesSinceCheckpoint = :switches REMOVE checkpointOwner",
            ConditionExpression="leaseCounter = :c",
            ExpressionAttributeValues={
                ":c": {"N": str(lease.counter)},
                ":next": {"N": str(lease.counter + 1)},
                ":me": {"S": me},
                ":switches": {"N": str(lease.owner_switches + 1)},
            },
        )
        if ok:
            lease.owner = me
            lease.counter += 1
            lease.owner_switches += 1
        return ok

    async def release(self, lease: Lease) -> bool:
        """Give the lease back (the KCL's evict): REMOVE leaseOwner, counter+1, conditional on
        the owner, the counter and no handoff under way (a release must not remove the owner a
        handoff names)."""
        ok = await self._conditional(
            "update_item",
            f"releasing lease {lease.key}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression="SET leaseCounter = :next REMOVE leaseOwner",
            ConditionExpression="leaseCounter = :c AND leaseOwner = :me "
            "AND attribute_not_exists(checkpointOwner)",
            ExpressionAttributeValues={
                ":c": {"N": str(lease.counter)},
                ":next": {"N": str(lease.counter + 1)},
                ":me": {"S": lease.owner or ""},
            },
        )
        if ok:
            lease.owner = None
            lease.counter += 1
        return ok

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> bool:
        """The holder's checkpoint (during a handoff, the worker handing it over): conditional
        on its counter and on holding it; ``lease`` follows."""
        condition, values = self._holding(lease)
        return await self._set_checkpoint(
            lease,
            checkpoint,
            sub,
            f"checkpointing lease {lease.key}",
            condition=f"leaseCounter = :c AND {condition}",
            values=values,
        )

    async def fence(
        self, lease: Lease, checkpoint: str, sub: int, *, keep_holder: bool = False
    ) -> bool:
        """An operator's change of a lease anyone may hold: conditional on the counter seen and
        on the handoff seen (none, or, forced, the one ``lease`` shows: then ended, its
        ``checkpointOwner`` removed), set the checkpoint, bump the counter and remove the owner
        (KCL 2.x: whoever takes the lease next reads from here). ``keep_holder`` (KCL 3.x,
        where a leader assigns): the owner stays; its next write fails, it reads the lease
        again and reads on from here; nobody else may read meanwhile."""
        handing = lease.checkpoint_owner
        keep = keep_holder and checkpoint != SHARD_END  # a finished lease is nobody's work
        ok = await self._set_checkpoint(
            lease,
            checkpoint,
            sub,
            f"changing lease {lease.key}",
            condition="leaseCounter = :c AND "
            + ("checkpointOwner = :from" if handing else "attribute_not_exists(checkpointOwner)"),
            values={":from": {"S": handing}} if handing else None,
            remove=("" if keep else "leaseOwner, ") + ("checkpointOwner, " if handing else ""),
        )
        if ok and not keep:
            lease.owner = None
        if ok:
            lease.checkpoint_owner = None
        return ok

    async def _set_checkpoint(
        self,
        lease: Lease,
        checkpoint: str,
        sub: int,
        action: str,
        *,
        condition: str,
        values: dict[str, Any] | None = None,
        remove: str = "",
    ) -> bool:
        """SET the checkpoint, ownerSwitches 0, counter+1; REMOVE the pending checkpoint (and
        ``remove``); conditional on ``condition``. ``lease`` follows on success."""
        ok = await self._held_write(
            lease,
            "update_item",
            action,
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression="SET checkpoint = :cp, checkpointSubSequenceNumber = :sub, "
            "ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next "
            f"REMOVE {remove}pendingCheckpoint, pendingCheckpointSubSequenceNumber, "
            "pendingCheckpointState",
            ConditionExpression=condition,
            ExpressionAttributeValues={
                ":c": {"N": str(lease.counter)},
                ":next": {"N": str(lease.counter + 1)},
                ":cp": {"S": checkpoint},
                ":sub": {"N": str(sub)},
                ":zero": {"N": "0"},
                **(values or {}),
            },
        )
        if ok:
            lease.counter += 1
            lease.checkpoint, lease.sub, lease.owner_switches = checkpoint, sub, 0
            lease.pending = None
        return ok

    async def create(
        self,
        key: str,
        checkpoint: str,
        parents: tuple[str, ...] = (),
        hash_range: tuple[str, str] | None = None,
    ) -> bool:
        """A new lease, nobody's, only if absent (the KCL's shard sync and SHARD_END)."""
        return await self._conditional(
            "put_item",
            f"creating lease {key}",
            Item=new_item(key, checkpoint, 0, parents, hash_range),
            ConditionExpression="attribute_not_exists(leaseKey)",
        )

    async def set_children(self, key: str, children: tuple[str, ...]) -> bool:
        """childShardIds on a parent at SHARD_END."""
        if not children:
            return True
        return await self._conditional(
            "update_item",
            f"recording the children of lease {key}",
            Key={"leaseKey": {"S": key}},
            UpdateExpression="SET childShardIds = :kids",
            ConditionExpression="attribute_exists(leaseKey)",
            ExpressionAttributeValues={":kids": {"SS": sorted(children)}},
        )

    # -- KCL 3.x ------------------------------------------------------------------------------

    async def client_version(self, items: list[dict[str, Any]] | None = None) -> str | None:
        """The KCL 3.x migration state, where the application keeps one: the single-table
        format's item in the lease table, or ``Migration3.0`` in ``<table>-CoordinatorState``."""
        for item in items if items is not None else await self.scan():
            if item.get("entityType", {}).get("S") == CLIENT_VERSION_ENTITY:
                return str(item.get("cv", {}).get("S")) or None
        try:
            resp = await self.client.get_item(
                TableName=f"{self.name}-CoordinatorState",
                Key={"key": {"S": "Migration3.0"}},
                ConsistentRead=True,
            )
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise table_error(exc, f"{self.name}-CoordinatorState", "reading it") from exc
        item = resp.get("Item")
        return str(item["cv"]["S"]) if item and "cv" in item else None


def read_leases(
    items: list[dict[str, Any]], stream: str | None
) -> tuple[list[Lease], list[MalformedLease]]:
    good: list[Lease] = []
    bad: list[MalformedLease] = []
    for item in items:
        try:
            lease = lease_of(item, stream)
        except MalformedLease as exc:
            bad.append(exc)
            continue
        if lease is not None:
            good.append(lease)
    return good, bad


def check_key_schema(table: Mapping[str, Any], name: str) -> None:
    schema = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", ())]
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", ())}
    if schema != [("leaseKey", "HASH")] or types.get("leaseKey") != "S":
        shown = ", ".join(f"{n} ({types.get(n, '?')}, {t})" for n, t in schema)
        raise LeaseTableError(
            f"table '{name}' is not a KCL lease table: its key is {shown}, not leaseKey (S, HASH)"
        )
