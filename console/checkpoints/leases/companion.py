"""shard-console's own table beside a lease table: ``<lease table>-shard-console``.

The lease table is the KCL's and holds leases only. What shard-console keeps besides them lives
here, one item per thing, keyed ``pk`` (S, HASH) and ``sk`` (S, RANGE), its body a JSON document:

====================  ===================  ==================================================
pk                    sk                   what
====================  ===================  ==================================================
``stream|KEY``        ``meta``             the stream (name, kind, initial position, retention)
``stream|KEY``        ``shard|ID``         a shard as last listed; the operator's marks on it
                                           as attributes of their own (paused, skipped)
``history|KEY``       ``000000000042``     one change of a checkpoint, with who and why
``command``           ``000000000007``     one operator request and its result
``counter``           ``history|command``  the next id (atomic ADD)
``stream|KEY``        ``worker|ID``        a worker's heartbeat: host, pid, leases, lag, rates
====================  ===================  ==================================================
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from console.checkpoints.base import Command, StreamRecord
from console.checkpoints.leases.calls import error_code, table_error
from console.checkpoints.leases.errors import LeaseTableError
from console.model import HistoryEntry, Position, Shard

SUFFIX = "-shard-console"


def companion_name(lease_table: str) -> str:
    return lease_table + SUFFIX


def _pos(text: str | None) -> Position | None:
    return Position.decode(text) if text else None


def _enc(position: Position | None) -> str | None:
    return position.encode() if position is not None else None


@dataclass(frozen=True, slots=True)
class Marks:
    """What an operator set on a shard that the lease table has no attribute for."""

    paused: bool = False
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker: str
    host: str
    pid: int
    started_at: float
    at: float
    leases: tuple[str, ...] = ()
    records: int = 0
    rate: float = 0.0
    shards: dict[str, dict[str, float | None]] = field(default_factory=dict)


class Companion:
    def __init__(self, client: Any, lease_table: str) -> None:
        self.client = client
        self.name = companion_name(lease_table)
        self.exists = False  # known to exist (ensure() says)

    async def _call(self, op: str, action: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, op)(TableName=self.name, **kwargs)
        except Exception as exc:
            raise table_error(exc, self.name, action) from exc

    async def ensure(self, create: bool, missing_ok: bool = False) -> None:
        """Use the table, or create it when ``create``. Missing and not created: an error,
        unless ``missing_ok`` (then every read finds nothing, and nothing is written)."""
        if self.exists:
            return
        try:
            await self._call("describe_table", "describing it")
            self.exists = True
            return
        except LeaseTableError as exc:
            if "does not exist" not in str(exc):
                raise
        if not create:
            if missing_ok:
                return
            raise LeaseTableError(
                f"shard-console's table '{self.name}' does not exist beside the lease table: "
                "drop --no-create-table once to create it"
            )
        try:
            await self._call(
                "create_table",
                "creating it",
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except LeaseTableError as exc:
            if "ResourceInUseException" not in str(exc):
                raise
        self.exists = True

    # -- items --------------------------------------------------------------------------------

    async def _put(self, pk: str, sk: str, doc: dict[str, Any], **attrs: str) -> None:
        item = {"pk": {"S": pk}, "sk": {"S": sk}, "doc": {"S": json.dumps(doc)}}
        for name, value in attrs.items():
            item[name] = {"S": value}
        await self._call("put_item", f"writing {pk} {sk}", Item=item)

    async def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        if not self.exists:
            return None
        resp = await self._call(
            "get_item",
            f"reading {pk} {sk}",
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return json.loads(item["doc"]["S"]) if item else None

    async def _query(
        self, pk: str, prefix: str | None = None, newest_first: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        return [(sk, doc) for sk, doc, _ in await self._items(pk, prefix, newest_first)]

    async def _items(
        self, pk: str, prefix: str | None = None, newest_first: bool = False
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(sk, the JSON document, the raw item) of every item of a partition."""
        if not self.exists:
            return []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk"
            + (" AND begins_with(sk, :prefix)" if prefix else ""),
            "ExpressionAttributeValues": {":pk": {"S": pk}}
            | ({":prefix": {"S": prefix}} if prefix else {}),
            "ConsistentRead": True,
            "ScanIndexForward": not newest_first,
        }
        out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        while True:
            resp = await self._call("query", f"reading {pk}", **kwargs)
            out.extend((i["sk"]["S"], json.loads(i["doc"]["S"]), i) for i in resp.get("Items", ()))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return out
            kwargs["ExclusiveStartKey"] = last

    async def next_ids(self, what: str, n: int = 1) -> int:
        """Reserve ``n`` ids; returns the first."""
        resp = await self._call(
            "update_item",
            f"numbering {what}",
            Key={"pk": {"S": "counter"}, "sk": {"S": what}},
            UpdateExpression="ADD n :n",
            ExpressionAttributeValues={":n": {"N": str(n)}},
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["n"]["N"]) - n + 1

    # -- the stream and its shards --------------------------------------------------------------

    async def stream_record(self, stream: str) -> StreamRecord | None:
        doc = await self._get(f"stream|{stream}", "meta")
        if doc is None:
            return None
        return StreamRecord(
            stream,
            doc["name"],
            doc["source"],
            Position.decode(doc["initial_position"]),
            doc["created_at"],
            doc.get("retention_hours"),
        )

    async def register_stream(self, record: StreamRecord) -> None:
        doc = {
            "name": record.name,
            "source": record.source,
            "initial_position": record.initial_position.encode(),
            "created_at": record.created_at,
            "retention_hours": record.retention_hours,
        }
        await self._put(f"stream|{record.stream}", "meta", doc)

    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None:
        """The shards as listed; the operator's marks on them (attributes of their own) stay."""
        for shard in shards:
            doc = {
                "parent_id": shard.parent_id,
                "adjacent_parent_id": shard.adjacent_parent_id,
                "starting_hash_key": shard.starting_hash_key,
                "ending_hash_key": shard.ending_hash_key,
                "starting_sequence_number": shard.starting_sequence_number,
                "ending_sequence_number": shard.ending_sequence_number,
            }
            await self._call(
                "update_item",
                f"writing shard {shard.shard_id}",
                Key={"pk": {"S": f"stream|{stream}"}, "sk": {"S": f"shard|{shard.shard_id}"}},
                UpdateExpression="SET doc = :doc",
                ExpressionAttributeValues={":doc": {"S": json.dumps(doc)}},
            )

    async def _shard_docs(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (sk.removeprefix("shard|"), doc)
            for sk, doc in await self._query(f"stream|{stream}", "shard|")
        ]

    async def shards(self, stream: str) -> list[Shard]:
        return [
            Shard(
                sid,
                doc.get("parent_id"),
                doc.get("adjacent_parent_id"),
                doc.get("starting_hash_key"),
                doc.get("ending_hash_key"),
                doc.get("starting_sequence_number"),
                doc.get("ending_sequence_number"),
            )
            for sid, doc in await self._shard_docs(stream)
        ]

    async def marks_and_workers(self, stream: str) -> tuple[dict[str, Marks], list[Heartbeat]]:
        """The operator's marks on the shards and the workers' heartbeats: one query."""
        marks: dict[str, Marks] = {}
        workers: list[Heartbeat] = []
        for sk, doc, item in await self._items(f"stream|{stream}"):
            if sk.startswith("shard|"):
                paused = item.get("paused", {}).get("BOOL", False)
                skipped = item.get("skipped", {}).get("BOOL", False)
                marks[sk[6:]] = Marks(bool(paused), bool(skipped))
            elif sk.startswith("worker|"):
                workers.append(self._heartbeat(sk[7:], doc))
        return marks, workers

    async def set_marks(self, stream: str, shard_id: str, mark: Marks) -> None:
        await self._call(
            "update_item",
            f"marking shard {shard_id}",
            Key={"pk": {"S": f"stream|{stream}"}, "sk": {"S": f"shard|{shard_id}"}},
            UpdateExpression="SET paused = :p, skipped = :s, doc = if_not_exists(doc, :empty)",
            ExpressionAttributeValues={
                ":p": {"BOOL": mark.paused},
                ":s": {"BOOL": mark.skipped},
                ":empty": {"S": "{}"},
            },
        )

    async def streams(self) -> list[StreamRecord]:
        if not self.exists:
            return []
        resp = await self._call(
            "scan",
            "listing streams",
            FilterExpression="sk = :meta",
            ExpressionAttributeValues={":meta": {"S": "meta"}},
        )
        out = []
        for item in resp.get("Items", ()):
            record = await self.stream_record(item["pk"]["S"].removeprefix("stream|"))
            if record is not None:
                out.append(record)
        return out

    # -- history ------------------------------------------------------------------------------

    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> list[int]:
        if not entries:
            return []
        first = await self.next_ids(f"history|{stream}", len(entries))
        now = time.time()
        ids = []
        for i, h in enumerate(entries):
            entry_id = first + i
            doc = {
                "shard_id": h.shard_id,
                "at": h.at or now,
                "cause": h.cause,
                "actor": h.actor,
                "old_position": _enc(h.old_position),
                "new_position": _enc(h.new_position),
                "old_status": h.old_status,
                "new_status": h.new_status,
                "command_id": h.command_id,
                "note": h.note,
            }
            await self._put(f"history|{stream}", f"{entry_id:012d}", doc)
            ids.append(entry_id)
        return ids

    @staticmethod
    def _entry(sk: str, doc: dict[str, Any]) -> HistoryEntry:
        return HistoryEntry(
            id=int(sk),
            shard_id=doc["shard_id"],
            at=doc["at"],
            cause=doc["cause"],
            actor=doc["actor"],
            old_position=_pos(doc.get("old_position")),
            new_position=_pos(doc.get("new_position")),
            old_status=doc.get("old_status"),
            new_status=doc.get("new_status"),
            command_id=doc.get("command_id"),
            note=doc.get("note"),
        )

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        """Newest first, as the SQLite store gives it."""
        out = []
        for sk, doc in await self._query(f"history|{stream}", newest_first=True):
            if shard_id is None or doc["shard_id"] == shard_id:
                out.append(self._entry(sk, doc))
                if len(out) >= limit:
                    break
        return out

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None:
        doc = await self._get(f"history|{stream}", f"{entry_id:012d}")
        return self._entry(f"{entry_id:012d}", doc) if doc is not None else None

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]:
        return [
            self._entry(sk, doc)
            for sk, doc in await self._query(f"history|{stream}")
            if doc.get("command_id") == command_id
        ]

    async def last_change_id(self, stream: str, before: int | None = None) -> int | None:
        """The newest applied operator command that changed something."""
        changed = {
            doc["command_id"]
            for _, doc in await self._query(f"history|{stream}")
            if doc.get("command_id") is not None
        }
        for command in sorted(await self._commands(), key=lambda c: -c.id):
            if (
                command.stream == stream
                and command.state == "applied"
                and command.id in changed
                and (before is None or command.id < before)
            ):
                return command.id
        return None

    # -- commands -----------------------------------------------------------------------------

    async def add_command(
        self, stream: str, shard_id: str | None, action: str, args: dict[str, Any], actor: str
    ) -> int:
        command_id = await self.next_ids("command")
        command = Command(command_id, stream, shard_id, action, args, actor, time.time())
        await self._put_command(command)
        return command_id

    async def _put_command(self, c: Command) -> None:
        doc = {
            "stream": c.stream,
            "shard_id": c.shard_id,
            "action": c.action,
            "args": c.args,
            "actor": c.actor,
            "requested_at": c.requested_at,
            "state": c.state,
            "result": c.result,
        }
        await self._put("command", f"{c.id:012d}", doc)

    @staticmethod
    def _command(sk: str, doc: dict[str, Any]) -> Command:
        return Command(
            int(sk),
            doc["stream"],
            doc.get("shard_id"),
            doc["action"],
            doc.get("args") or {},
            doc["actor"],
            doc["requested_at"],
            doc.get("state", "pending"),
            doc.get("result"),
        )

    async def _commands(self) -> list[Command]:
        return [self._command(sk, doc) for sk, doc in await self._query("command")]

    async def command(self, command_id: int) -> Command | None:
        doc = await self._get("command", f"{command_id:012d}")
        return self._command(f"{command_id:012d}", doc) if doc is not None else None

    async def pending_commands(self, stream: str) -> list[Command]:
        return [c for c in await self._commands() if c.stream == stream and c.state == "pending"]

    async def finish_command(self, command_id: int, ok: bool, result: str) -> None:
        command = await self.command(command_id)
        if command is None:
            return
        await self._put_command(
            Command(
                command.id,
                command.stream,
                command.shard_id,
                command.action,
                command.args,
                command.actor,
                command.requested_at,
                "applied" if ok else "failed",
                result,
            )
        )

    # -- workers ------------------------------------------------------------------------------

    async def beat(self, stream: str, hb: Heartbeat) -> None:
        doc = {
            "host": hb.host,
            "pid": hb.pid,
            "started_at": hb.started_at,
            "at": hb.at,
            "leases": list(hb.leases),
            "records": hb.records,
            "rate": hb.rate,
            "shards": hb.shards,
        }
        await self._put(f"stream|{stream}", f"worker|{hb.worker}", doc)

    @staticmethod
    def _heartbeat(worker: str, doc: dict[str, Any]) -> Heartbeat:
        return Heartbeat(
            worker,
            doc["host"],
            doc["pid"],
            doc["started_at"],
            doc["at"],
            tuple(doc.get("leases", ())),
            doc.get("records", 0),
            doc.get("rate", 0.0),
            doc.get("shards", {}),
        )

    async def gone(self, stream: str, worker: str) -> None:
        """A worker that stopped: its heartbeat goes."""
        with contextlib.suppress(LeaseTableError):
            await self._call(
                "delete_item",
                "removing a heartbeat",
                Key={"pk": {"S": f"stream|{stream}"}, "sk": {"S": f"worker|{worker}"}},
            )


__all__ = ["Companion", "Heartbeat", "Marks", "companion_name", "error_code"]
