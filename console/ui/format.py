"""How values read on screen: glyphs, short sequence numbers, ages, sparklines, durations.

Pure functions, no Textual: the table, the header, the dialogs and the tests share them.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence

from console.decode import C1_AS_JSON, Decoded, decode, printable
from console.model import Position, PositionKind, ShardStatus, format_duration

# Status by glyph as well as by colour, so the table reads on a monochrome terminal too.
GLYPHS: dict[ShardStatus, str] = {
    ShardStatus.WAITING: "◌",
    ShardStatus.READY: "○",
    ShardStatus.ACTIVE: "●",
    ShardStatus.PAUSED: "‖",
    ShardStatus.FAILING: "▲",
    ShardStatus.FAILED: "✖",
    ShardStatus.DONE: "✔",
    ShardStatus.SKIPPED: "»",
    ShardStatus.LEASED: "◍",
}

_SPARKS = "▁▂▃▄▅▆▇█"


def short_seq(seq: str | None, width: int = 12) -> str:
    """Sequence numbers are 56 digits: keep the tail, where they differ."""
    if seq is None:
        return "-"
    return seq if len(seq) <= width else "…" + seq[-(width - 1) :]


def position_text(position: Position | None, width: int = 12) -> str:
    if position is None:
        return "-"
    kind = position.kind
    if kind is PositionKind.TRIM_HORIZON:
        return "start"
    if kind is PositionKind.LATEST:
        return "tip"
    if kind is PositionKind.AT_TIMESTAMP:
        assert position.timestamp is not None
        return "@" + time.strftime("%H:%M:%S", time.gmtime(position.timestamp))
    sub = "" if position.sub_sequence_number is None else f"/{position.sub_sequence_number}"
    return short_seq(position.sequence_number, width - len(sub)) + sub  # fits its column


def age(seconds: float | None) -> str:
    """Compact age: 4s, 12m, 3h, 2d."""
    return "-" if seconds is None else format_duration(seconds)


def lag_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    return age(ms / 1000)


def rate_text(rate: float) -> str:
    if rate < 0.05:
        return "0"
    if rate < 10:
        return f"{rate:.1f}"
    if rate < 10_000:
        return f"{rate:.0f}"
    return f"{rate / 1000:.0f}k"


def sparkline(values: Sequence[int | None], width: int) -> str:
    """The last ``width`` samples, scaled to their own maximum; blank where nothing is known."""
    tail = list(values)[-width:]
    known = [v for v in tail if v is not None]
    top = max(known, default=0)
    out = []
    for v in tail:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(_SPARKS[0])
        else:
            out.append(_SPARKS[min(len(_SPARKS) - 1, int(v / top * (len(_SPARKS) - 1) + 0.5))])
    return "".join(out).rjust(width)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def decode_data(data: bytes, width: int = 76) -> str:
    """A record's payload for people; see :func:`shown`."""
    return shown(decode(data), data, width)


def shown(d: Decoded, data: bytes, width: int = 76) -> str:
    """A record's payload for people (console.decode): gzip and zlib inflated, a CloudWatch Logs
    envelope as its log events, JSON pretty-printed, text as it is, binary as hex and base64,
    and a first line saying how when it took more than reading. Text with control characters
    counts as binary, and log messages have theirs escaped: a record must never be able to send
    escape sequences to the operator's terminal."""
    lines: list[str] = []
    if " > " in d.how or d.problem:
        lines.append(f"[{d.how}]" + (f" {d.problem}" if d.problem else ""))
    if d.how.endswith("cloudwatch-logs"):
        envelope = d.value if isinstance(d.value, dict) else {}
        lines.append(
            printable(f"{envelope.get('logGroup')} {envelope.get('logStream')}: ")
            + f"{len(d.events)} log events"
        )
        lines.extend(printable(str(e.get("message", ""))) for e in d.events)
    elif d.text is not None and not _CONTROL.search(d.text):
        structured = d.how.endswith("json") or d.how.endswith("cloudwatch-control")
        shown = json.dumps(d.value, indent=2, ensure_ascii=False) if structured else d.text
        lines.append(shown.translate(C1_AS_JSON) if structured else shown)
    else:
        raw = d.raw or data
        hexed = raw[:48].hex(" ")
        more = f" … ({len(raw)} bytes)" if len(raw) > 48 else ""
        lines.append(f"hex {hexed}{more}\nbase64 {base64.b64encode(raw).decode()[:width]}")
    return "\n".join(lines)
