"""What a demo with a database keeps beside it (``PATH.demo.json``): the embedded endpoint's
streams and tables, and the producer's counters, so the next demo on that database resumes
them. Written atomically, 0600, when the demo stops; read when it starts."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from console.demo.dynamodb import EmbeddedDynamoDB, Table, TableShard
from console.demo.kinesis import EmbeddedKinesis, KinesisShard, KinesisStream

STATE_VERSION = 1


class DemoStateError(Exception):
    """The demo's saved state cannot be read."""


def load_state(path: Path) -> dict[str, Any] | None:
    """A demo's saved state, or None when it has none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DemoStateError(f"cannot read the demo's state {path}: {exc.strerror}") from None
    try:
        state = json.loads(text)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError("not a state this version wrote")
    except ValueError as exc:
        raise DemoStateError(
            f"the demo's state {path} is unreadable ({exc}): delete it to start the demo afresh"
        ) from None
    return state


def save_state(path: Path, snapshot: dict[str, Any]) -> None:
    """Atomically: a demo killed while saving keeps the state it had."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(snapshot, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def kinesis_snapshot(model: EmbeddedKinesis) -> dict[str, Any]:
    """Everything the model holds, as JSON carries it: a demo with a database keeps it
    beside the database and resumes from it."""
    return {
        "streams": [
            {
                "name": st.name,
                "arn": st.arn,
                "created": st.created,
                "retention_hours": st.retention_hours,
                "shards": [
                    {
                        "index": sh.index,
                        "start_hash": str(sh.start_hash),
                        "end_hash": str(sh.end_hash),
                        "parent": sh.parent,
                        "adjacent": sh.adjacent,
                        "closed": sh.closed,
                        "seqs": [str(q) for q in sh.seqs],
                        "arrivals": sh.arrivals,
                        "keys": sh.keys,
                        "data": [base64.b64encode(d).decode("ascii") for d in sh.data],
                        "trimmed": sh.trimmed,
                        "counter": sh.counter,
                    }
                    for sh in st.shards.values()
                ],
            }
            for st in model.streams.values()
        ]
    }


def restore_kinesis(model: EmbeddedKinesis, snapshot: dict[str, Any]) -> None:
    for item in snapshot.get("streams", ()):
        stream = KinesisStream(
            item["name"], item["arn"], item["created"], retention_hours=item["retention_hours"]
        )
        for sh in item["shards"]:
            shard = KinesisShard(
                sh["index"],
                int(sh["start_hash"]),
                int(sh["end_hash"]),
                sh["parent"],
                sh["adjacent"],
                sh["closed"],
                [int(q) for q in sh["seqs"]],
                list(sh["arrivals"]),
                list(sh["keys"]),
                [base64.b64decode(d) for d in sh["data"]],
                sh["trimmed"],
                sh["counter"],
            )
            stream.shards[shard.shard_id] = shard
        model.streams[stream.name] = stream


def dynamodb_snapshot(model: EmbeddedDynamoDB) -> dict[str, Any]:
    """Everything the model holds, as JSON carries it (see EmbeddedKinesis.snapshot)."""
    return {
        "tables": [
            {
                "name": t.name,
                "keys": list(t.keys),
                "arn": t.arn,
                "stream_arn": t.stream_arn,
                "label": t.label,
                "created": t.created,
                "partitions": t.partitions,
                "items": t.items,
                "shards": [
                    {
                        "shard_id": sh.shard_id,
                        "starting": str(sh.starting),
                        "parent": sh.parent,
                        "ending": None if sh.ending is None else str(sh.ending),
                        "seqs": [str(q) for q in sh.seqs],
                        "records": sh.records,
                        "trimmed": sh.trimmed,
                    }
                    for sh in t.shards.values()
                ],
                "open": t.open,
                "counter": t.counter,
                "held": t.held,
                "enabled": t.enabled,
            }
            for t in model.tables.values()
        ]
    }


def restore_dynamodb(model: EmbeddedDynamoDB, snapshot: dict[str, Any]) -> None:
    for item in snapshot.get("tables", ()):
        table = Table(
            item["name"],
            tuple(item["keys"]),
            item["arn"],
            item["stream_arn"],
            item["label"],
            item["created"],
            item["partitions"],
            dict(item["items"]),
            open=list(item["open"]),
            counter=item["counter"],
            held=item["held"],
            enabled=item["enabled"],
        )
        for sh in item["shards"]:
            table.shards[sh["shard_id"]] = TableShard(
                sh["shard_id"],
                int(sh["starting"]),
                sh["parent"],
                None if sh["ending"] is None else int(sh["ending"]),
                [int(q) for q in sh["seqs"]],
                list(sh["records"]),
                sh["trimmed"],
            )
        model.tables[table.name] = table
