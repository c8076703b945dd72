"""What a record's bytes hold, as an operator wants to read them: for ``tail`` and the console.

What travels on Kinesis, in the order it is unwrapped (KPL aggregates are split into user
records before this, by the sources):

1. gzip (``1f 8b``) or zlib (``78 01|5e|9c|da``) payloads are inflated. Data that claims to be
   compressed but does not inflate is shown raw, with the reason: never dropped.
2. A CloudWatch Logs subscription envelope (JSON with ``messageType``, ``logGroup``,
   ``logStream``, ``logEvents``) becomes its log events; a ``CONTROL_MESSAGE`` (the reachability
   check CloudWatch Logs sends first) is recognised as one.
3. JSON is parsed; UTF-8 text stays text; anything else is binary, shown as hex and base64.

Every result says how it was decoded (``how``: ``gzip > cloudwatch-logs``, ``json``, ...).
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
GZIP_MAGIC = b"\x1f\x8b"
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
MAX_INFLATED = 16 * 1024 * 1024  # a record is at most 1 MB; a bomb stops here, per record


@dataclass(frozen=True, slots=True)
class Decoded:
    how: str  # the steps taken: "gzip > json", "text", "binary", ...
    value: Any = None  # JSON: the parsed value; cloudwatch-logs: the envelope's other fields
    text: str | None = None  # the text as read (JSON and text), None for binary
    events: list[dict[str, Any]] = field(default_factory=list)  # cloudwatch-logs: logEvents
    problem: str | None = None  # why a step that was announced could not be taken
    raw: bytes = b""

    @property
    def searchable(self) -> str:
        """What ``--grep`` and the console's search look in."""
        if self.events:
            return "\n".join(str(e.get("message", "")) for e in self.events)
        if self.text is not None:
            return self.text
        return self.raw.hex()

    def as_json(self) -> dict[str, Any]:
        """The decoded record as JSON-ready data (``tail``'s ``decoded`` field)."""
        out: dict[str, Any] = {"how": self.how}
        if self.problem:
            out["problem"] = self.problem
        if self.how.endswith("cloudwatch-logs"):
            out["envelope"] = self.value
            out["log_events"] = self.events
        elif self.how.endswith("json") or self.how.endswith("cloudwatch-control"):
            out["json"] = self.value
        elif self.text is not None:
            out["text"] = self.text
        else:
            out["hex"] = self.raw.hex()
            out["base64"] = base64.b64encode(self.raw).decode("ascii")
        return out


def _inflate(data: bytes, wbits: int) -> bytes:
    """Every member (gzip allows several, one after another), up to MAX_INFLATED in all."""
    out = b""
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(rest, MAX_INFLATED - len(out) or 1)
        if inflater.unconsumed_tail or len(out) >= MAX_INFLATED:
            raise zlib.error(f"inflates to more than {MAX_INFLATED // (1024 * 1024)} MB")
        if not inflater.eof:
            raise zlib.error("the compressed data ends early")
        rest = inflater.unused_data
    return out


def decode(data: bytes) -> Decoded:
    steps: list[str] = []
    problem: str | None = None
    body = data
    for name, test, wbits in (
        ("gzip", data.startswith(GZIP_MAGIC), 16 + zlib.MAX_WBITS),
        ("zlib", data[:2] in ZLIB_HEADERS, zlib.MAX_WBITS),
    ):
        if test:
            try:
                body = _inflate(data, wbits)
                steps.append(name)
            except zlib.error as exc:
                if name == "gzip" or not _is_text(data):
                    problem = f"looks like {name} but does not inflate ({exc}): shown raw"
            break
    return _decode_plain(body, steps, problem)


def _decode_plain(body: bytes, steps: list[str], problem: str | None) -> Decoded:
    def how(last: str) -> str:
        return " > ".join([*steps, last])

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Decoded(how("binary"), problem=problem, raw=body)
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[", '"') or stripped[:1].isdigit() or stripped in ("true", "false"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
            pass
        else:
            envelope = _cloudwatch(value)
            if envelope is not None:
                kind, events, rest = envelope
                return Decoded(how(kind), value=rest, text=text, events=events, problem=problem)
            return Decoded(how("json"), value=value, text=text, problem=problem, raw=body)
    return Decoded(how("text"), text=text, problem=problem, raw=body)


def _cloudwatch(value: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]] | None:
    """A CloudWatch Logs subscription envelope: its kind, its log events, the rest."""
    if not isinstance(value, dict) or "messageType" not in value or "logEvents" not in value:
        return None
    events = value.get("logEvents")
    if not isinstance(events, list):
        return None
    rest = {k: v for k, v in value.items() if k != "logEvents"}
    if value.get("messageType") == "CONTROL_MESSAGE":
        return "cloudwatch-control", [], rest
    return "cloudwatch-logs", [e for e in events if isinstance(e, dict)], rest


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# C1 controls and DEL as JSON escapes: json.dumps(ensure_ascii=False) leaves them raw, and
# U+009B is a terminal's CSI.
C1_AS_JSON = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def printable(text: str) -> str:
    """Control characters escaped (\\n, \\x1b…): one record, one line, no terminal escapes."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
