"""The KCL 3.x protocol's writes beyond a lease's holder's own: the leader's assignments and
nudges, the graceful handoff and its completion, the owner index's query
(../shared/LEASES.md)."""

from __future__ import annotations

from typing import Any

from console.checkpoints.leases.calls import TableCalls
from console.checkpoints.leases.items import NUDGE, Lease

GSI = "LeaseOwnerToLeaseKeyIndex"


class AssignmentWrites(TableCalls):
    """A lease table's KCL 3.x writes (:class:`~console.checkpoints.leases.table.LeaseTable`
    has them all)."""

    async def owned_keys(self, owner: str) -> list[str]:
        """The keys of the leases whose ``leaseOwner`` is ``owner``, through the KCL 3.x's
        index (eventually consistent: read each lease before trusting it), paged."""
        keys: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "IndexName": GSI,
            "KeyConditionExpression": "leaseOwner = :me",
            "ExpressionAttributeValues": {":me": {"S": owner}},
        }
        while True:
            resp = await self._call("query", f"finding the leases of {owner}", **kwargs)
            keys.extend(item["leaseKey"]["S"] for item in resp.get("Items", ()))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return keys
            kwargs["ExclusiveStartKey"] = last

    async def nudge(self, lease: Lease, at: float) -> bool:
        """A leader's mark on a lease its owner holds: "look for new assignments". The owner
        sees it in the answer to its next renewal or checkpoint and looks at once, so workers
        that hold leases need not poll for assignments often. Conditional only on the owner
        seen; no counter, so nobody's renewal fails for it."""
        return await self._conditional(
            "update_item",
            f"nudging the holder of lease {lease.key}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression=f"SET {NUDGE} = :at",
            ConditionExpression="leaseOwner = :owner AND attribute_not_exists(checkpointOwner)",
            ExpressionAttributeValues={
                ":at": {"N": f"{at:.3f}"},
                ":owner": {"S": lease.owner or ""},
            },
        )

    async def hand_off(self, lease: Lease, to: str) -> bool:
        """The KCL 3.x leader's graceful handoff: ``leaseOwner`` = ``to``, ``checkpointOwner`` =
        the holder, which checkpoints and then completes it (:meth:`complete_handoff`). No
        counter bump: the holder keeps renewing. Conditional on the holder and no handoff
        under way. ``lease`` follows on success."""
        ok = await self._conditional(
            "update_item",
            f"handing lease {lease.key} to {to}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression="SET leaseOwner = :to, checkpointOwner = :from",
            ConditionExpression="leaseOwner = :from AND attribute_not_exists(checkpointOwner)",
            ExpressionAttributeValues={":to": {"S": to}, ":from": {"S": lease.owner or ""}},
        )
        if ok:
            lease.checkpoint_owner, lease.owner = lease.owner, to
        return ok

    async def decline(self, lease: Lease, me: str) -> bool:
        """The worker a handoff goes to, leaving before it completed, gives the lease back to
        the worker handing it over: ``leaseOwner`` = the ``checkpointOwner``, which is
        removed; conditional on both as seen. No counter bump: the holder's renewals go on,
        and it reads on from where it is (console.engine.ownership.assigned). ``lease``
        follows on success."""
        holder = lease.checkpoint_owner
        if holder is None or lease.owner != me:
            return False
        ok = await self._conditional(
            "update_item",
            f"declining the handoff of lease {lease.key}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression="SET leaseOwner = :from REMOVE checkpointOwner",
            ConditionExpression="leaseOwner = :me AND checkpointOwner = :from",
            ExpressionAttributeValues={":me": {"S": me}, ":from": {"S": holder}},
        )
        if ok:
            lease.owner, lease.checkpoint_owner = holder, None
        return ok

    async def assign(self, lease: Lease, to: str) -> bool:
        """The KCL 3.x's assignLease: ``leaseOwner`` = ``to``, ``checkpointOwner`` removed,
        counter+1; conditional on the owners as seen and the counter seen (an owner's renewal
        in between wins). The leader's assignment of an unowned or expired lease, a handoff's
        completion by the worker that checkpointed, and the forcing of one not completed in
        time. ``lease`` follows on success."""
        values: dict[str, Any] = {
            ":to": {"S": to},
            ":c": {"N": str(lease.counter)},
            ":next": {"N": str(lease.counter + 1)},
        }
        conditions = ["leaseCounter = :c"]
        for name, seen, label in (
            ("leaseOwner", lease.owner, ":owner"),
            ("checkpointOwner", lease.checkpoint_owner, ":cpowner"),
        ):
            if seen is None:
                conditions.append(f"attribute_not_exists({name})")
            else:
                conditions.append(f"{name} = {label}")
                values[label] = {"S": seen}
        switches = ""
        if lease.owner is not None and lease.owner != to and lease.checkpoint_owner is None:
            switches = ", ownerSwitchesSinceCheckpoint = :switches"
            values[":switches"] = {"N": str(lease.owner_switches + 1)}
        ok = await self._conditional(
            "update_item",
            f"assigning lease {lease.key} to {to}",
            Key={"leaseKey": {"S": lease.key}},
            UpdateExpression=f"SET leaseOwner = :to, leaseCounter = :next{switches} "
            "REMOVE checkpointOwner",
            ConditionExpression=" AND ".join(conditions),
            ExpressionAttributeValues=values,
        )
        if ok:
            if switches:
                lease.owner_switches += 1
            lease.owner, lease.checkpoint_owner = to, None
            lease.counter += 1
        return ok
