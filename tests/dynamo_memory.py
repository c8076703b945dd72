"""An in-memory DynamoDB for the lease protocol's model test (tests/test_lease_model.py): the
operations and the expression language shard-console's lease code uses, with DynamoDB's
semantics for them (a condition is checked and the update applied as one step; a failed
condition raises ConditionalCheckFailedException and changes nothing). It answers in
microseconds where moto's server takes milliseconds, so thousands of protocol steps run in
seconds. tests/test_lease_writes.py runs every test on it and on moto's server alike (the
KCL 3.x writes, the 2.x ones it shares, the coordinator's); the companion table's operations
are exercised here only through the model.

Faults are injected where the network is: :meth:`MemoryDynamo.client` hands each worker a
client whose next write can be dropped (never applied) or have its answer lost (applied, then
the connection fails), as botocore raises them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError

Item = dict[str, dict[str, Any]]

_TOKEN = re.compile(
    r"\s*(?:(?P<op><>|<=|>=|=|<|>|\(|\)|,|\+|-)|(?P<value>:[A-Za-z0-9_]+)"
    r"|(?P<name>#?[A-Za-z_][A-Za-z0-9_.]*))"
)


def _tokens(text: str) -> list[str]:
    out, at = [], 0
    text = text.strip()
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            raise ValueError(f"cannot parse {text[at:]!r}")
        out.append(m.group(0).strip())
        at = m.end()
    return out


def _error(code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code}}, "op")


def _number(value: dict[str, Any]) -> Decimal:
    return Decimal(value["N"])


def _compare(a: dict[str, Any] | None, op: str, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return op == "<>" and not (a is None and b is None)  # a missing attribute is no value
    (ta, va), (tb, vb) = next(iter(a.items())), next(iter(b.items()))
    if ta != tb:
        return op == "<>"
    if ta == "N":
        va, vb = Decimal(va), Decimal(vb)
    if op == "=":
        return bool(va == vb)
    if op == "<>":
        return bool(va != vb)
    return bool({"<": va < vb, "<=": va <= vb, ">": va > vb, ">=": va >= vb}[op])


class _Expression:
    """One expression's tokens, with its names and values resolved."""

    def __init__(self, text: str, names: dict[str, str], values: dict[str, Any]) -> None:
        self.tokens, self.at = _tokens(text), 0
        self.names, self.values = names, values

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected.upper()):
            raise ValueError(f"expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def path(self) -> str:
        token = self.take()
        if token.startswith("#"):
            return self.names[token]
        if token.startswith(":") or not re.match(r"[A-Za-z_]", token):
            raise ValueError(f"not an attribute: {token!r}")
        return token

    def value(self) -> dict[str, Any]:
        token = self.take()
        if not token.startswith(":"):
            raise ValueError(f"not a value: {token!r}")
        return dict(self.values[token])


class _Condition(_Expression):
    """attribute_exists, attribute_not_exists, begins_with, comparisons, AND, OR, NOT and
    parentheses."""

    def evaluate(self, item: Item) -> bool:
        result = self._or(item)
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return result

    def _or(self, item: Item) -> bool:
        result = self._and(item)
        while (self.peek() or "").upper() == "OR":
            self.take()
            right = self._and(item)
            result = result or right
        return result

    def _and(self, item: Item) -> bool:
        result = self._not(item)
        while (self.peek() or "").upper() == "AND":
            self.take()
            right = self._not(item)
            result = result and right
        return result

    def _not(self, item: Item) -> bool:
        if (self.peek() or "").upper() == "NOT":
            self.take()
            return not self._not(item)
        return self._atom(item)

    def _atom(self, item: Item) -> bool:
        token = self.peek()
        if token == "(":
            self.take("(")
            result = self._or(item)
            self.take(")")
            return result
        if token in ("attribute_exists", "attribute_not_exists", "begins_with"):
            self.take()
            self.take("(")
            name = self.path()
            if token == "begins_with":
                self.take(",")
                prefix = self.value()
                self.take(")")
                have = item.get(name)
                return have is not None and "S" in have and have["S"].startswith(prefix["S"])
            self.take(")")
            return (name in item) == (token == "attribute_exists")
        left = self._operand(item)
        op = self.take()
        if op not in ("=", "<>", "<", "<=", ">", ">="):
            raise ValueError(f"not a comparison: {op!r}")
        return _compare(left, op, self._operand(item))

    def _operand(self, item: Item) -> dict[str, Any] | None:
        token = self.peek() or ""
        return self.value() if token.startswith(":") else item.get(self.path())


class _Update(_Expression):
    """SET (with if_not_exists and + / -), REMOVE and ADD, applied to a copy."""

    def apply(self, item: Item) -> Item:
        out = {k: dict(v) for k, v in item.items()}
        seen: set[str] = set()
        while self.peek() is not None:
            clause = self.take().upper()
            if clause in seen or clause not in ("SET", "REMOVE", "ADD"):
                raise ValueError(f"bad clause {clause!r}")
            seen.add(clause)
            while True:
                if clause == "SET":
                    name = self.path()
                    self.take("=")
                    value = self._set_value(item)
                    out[name] = value
                elif clause == "REMOVE":
                    out.pop(self.path(), None)
                else:
                    name = self.path()
                    add = self.value()
                    old = item.get(name)
                    out[name] = {"N": str((_number(old) if old else Decimal(0)) + _number(add))}
                if self.peek() != ",":
                    break
                self.take(",")
        return out

    def _set_value(self, item: Item) -> dict[str, Any]:
        value = self._set_operand(item)
        if self.peek() in ("+", "-"):
            sign = self.take()
            other = self._set_operand(item)
            total = _number(value) + (_number(other) if sign == "+" else -_number(other))
            return {"N": str(total)}
        return value

    def _set_operand(self, item: Item) -> dict[str, Any]:
        token = self.peek() or ""
        if token == "if_not_exists":
            self.take()
            self.take("(")
            name = self.path()
            self.take(",")
            fallback = self._set_operand(item)
            self.take(")")
            return dict(item[name]) if name in item else fallback
        if token.startswith(":"):
            return self.value()
        name = self.path()
        if name not in item:
            raise _error("ValidationException", f"{name} does not exist")
        return dict(item[name])


class _Table:
    def __init__(
        self,
        name: str,
        keys: list[str],
        attributes: list[dict[str, str]],
        indexes: list[dict[str, Any]],
    ) -> None:
        self.name, self.keys, self.attributes, self.indexes = name, keys, attributes, indexes
        self.items: dict[tuple[str, ...], Item] = {}

    def key(self, key: Item) -> tuple[str, ...]:
        if set(key) != set(self.keys):
            raise _error("ValidationException", "the key does not match the schema")
        return tuple(next(iter(key[k].values())) for k in self.keys)


class MemoryDynamo:
    """The tables, shared by every client of one model run."""

    def __init__(self) -> None:
        self.tables: dict[str, _Table] = {}
        self.requests = 0

    def client(self, fault: Callable[[str], str | None] | None = None) -> MemoryClient:
        """A client; ``fault(op)`` says what happens to a call: None (answered), "drop" (never
        reaches the table) or "lose" (applied, its answer lost)."""
        return MemoryClient(self, fault)

    def table(self, name: str) -> _Table:
        table = self.tables.get(name)
        if table is None:
            raise _error("ResourceNotFoundException", f"table {name} not found")
        return table

    def items(self, name: str) -> Iterator[Item]:
        return iter(list(self.table(name).items.values()))


_WRITES = frozenset({"put_item", "update_item", "delete_item"})
_EXPRESSIONS = (
    "ConditionExpression",
    "UpdateExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)


def _all_used(kwargs: dict[str, Any]) -> None:
    """DynamoDB refuses a request with a name or value no expression of it uses."""
    used = {t for e in _EXPRESSIONS if e in kwargs for t in _tokens(kwargs[e])}
    for given in ("ExpressionAttributeValues", "ExpressionAttributeNames"):
        unused = set(kwargs.get(given, {})) - used
        if unused:
            raise _error("ValidationException", f"{given} unused in expressions: {unused}")


class MemoryClient:
    def __init__(self, dynamo: MemoryDynamo, fault: Callable[[str], str | None] | None) -> None:
        self.dynamo = dynamo
        self.fault = fault

    def __getattr__(self, op: str) -> Callable[..., Any]:
        handler = getattr(self, f"_{op}", None)
        if handler is None:
            raise AttributeError(op)

        async def call(**kwargs: Any) -> Any:
            self.dynamo.requests += 1
            _all_used(kwargs)
            what = self.fault(op) if self.fault is not None and op in _WRITES else None
            if what == "drop":
                raise ConnectionClosedError(endpoint_url="memory://dynamodb")
            answer = handler(**kwargs)
            if what == "lose":
                raise ConnectionClosedError(endpoint_url="memory://dynamodb")
            return answer

        return call

    # -- tables -------------------------------------------------------------------------------

    def _create_table(self, TableName: str, KeySchema: list[dict[str, str]], **kw: Any) -> Any:
        if TableName in self.dynamo.tables:
            raise _error("ResourceInUseException", f"table {TableName} exists")
        keys = [k["AttributeName"] for k in sorted(KeySchema, key=lambda k: k["KeyType"])]
        self.dynamo.tables[TableName] = _Table(
            TableName,
            keys,
            list(kw.get("AttributeDefinitions", ())),
            list(kw.get("GlobalSecondaryIndexes", ())),
        )
        return {"TableDescription": self._describe(TableName)}

    def _describe(self, name: str) -> dict[str, Any]:
        table = self.dynamo.table(name)
        out: dict[str, Any] = {
            "TableName": name,
            "TableStatus": "ACTIVE",
            "KeySchema": [
                {"AttributeName": k, "KeyType": "HASH" if i == 0 else "RANGE"}
                for i, k in enumerate(table.keys)
            ],
            "AttributeDefinitions": table.attributes,
            "ItemCount": len(table.items),
        }
        if table.indexes:
            out["GlobalSecondaryIndexes"] = [{**i, "IndexStatus": "ACTIVE"} for i in table.indexes]
        return out

    def _describe_table(self, TableName: str) -> Any:
        return {"Table": self._describe(TableName)}

    # -- items --------------------------------------------------------------------------------

    @staticmethod
    def _check(
        item: Item, condition: str | None, names: dict[str, str], values: dict[str, Any]
    ) -> None:
        if condition and not _Condition(condition, names, values).evaluate(item):
            raise _error("ConditionalCheckFailedException", "The conditional request failed")

    def _get_item(self, TableName: str, Key: Item, **_: Any) -> Any:
        item = self.dynamo.table(TableName).items.get(self.dynamo.table(TableName).key(Key))
        return {"Item": {k: dict(v) for k, v in item.items()}} if item is not None else {}

    def _put_item(
        self,
        TableName: str,
        Item: Item,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        table = self.dynamo.table(TableName)
        key = table.key({k: Item[k] for k in table.keys})
        self._check(
            table.items.get(key, {}),
            ConditionExpression,
            ExpressionAttributeNames or {},
            ExpressionAttributeValues or {},
        )
        table.items[key] = {k: dict(v) for k, v in Item.items()}
        return {}

    def _update_item(
        self,
        TableName: str,
        Key: Item,
        UpdateExpression: str,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        ReturnValues: str = "NONE",
        **_: Any,
    ) -> Any:
        table = self.dynamo.table(TableName)
        key = table.key(Key)
        names, values = ExpressionAttributeNames or {}, ExpressionAttributeValues or {}
        old = table.items.get(key, {})
        self._check(old, ConditionExpression, names, values)
        new = _Update(UpdateExpression, names, values).apply(old)
        new.update({k: dict(v) for k, v in Key.items()})
        table.items[key] = new
        if ReturnValues == "ALL_NEW":
            return {"Attributes": {k: dict(v) for k, v in new.items()}}
        if ReturnValues == "UPDATED_NEW":
            return {"Attributes": {k: v for k, v in new.items() if old.get(k) != v}}
        return {}

    def _delete_item(
        self,
        TableName: str,
        Key: Item,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        table = self.dynamo.table(TableName)
        key = table.key(Key)
        self._check(
            table.items.get(key, {}),
            ConditionExpression,
            ExpressionAttributeNames or {},
            ExpressionAttributeValues or {},
        )
        table.items.pop(key, None)
        return {}

    def _scan(
        self,
        TableName: str,
        FilterExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        items = list(self.dynamo.table(TableName).items.values())
        if FilterExpression:
            names, values = ExpressionAttributeNames or {}, ExpressionAttributeValues or {}
            items = [i for i in items if _Condition(FilterExpression, names, values).evaluate(i)]
        return {"Items": [{k: dict(v) for k, v in i.items()} for i in items]}

    def _query(
        self,
        TableName: str,
        KeyConditionExpression: str,
        ExpressionAttributeValues: dict[str, Any],
        ExpressionAttributeNames: dict[str, str] | None = None,
        IndexName: str | None = None,
        ScanIndexForward: bool = True,
        **_: Any,
    ) -> Any:
        table = self.dynamo.table(TableName)
        names = ExpressionAttributeNames or {}
        items = [
            i
            for i in table.items.values()
            if _Condition(KeyConditionExpression, names, ExpressionAttributeValues).evaluate(i)
        ]
        if IndexName is not None:
            index = next((x for x in table.indexes if x["IndexName"] == IndexName), None)
            if index is None:
                raise _error("ValidationException", f"no index {IndexName}")
            keep = set(table.keys) | {k["AttributeName"] for k in index["KeySchema"]}
            if index.get("Projection", {}).get("ProjectionType") == "KEYS_ONLY":
                items = [{k: v for k, v in i.items() if k in keep} for i in items]
        elif len(table.keys) > 1:
            items.sort(key=lambda i: next(iter(i[table.keys[1]].values())))
            if not ScanIndexForward:
                items.reverse()
        return {"Items": [{k: dict(v) for k, v in i.items()} for i in items]}
