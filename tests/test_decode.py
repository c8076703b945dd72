"""What a record's bytes hold (console.decode), as ``tail`` prints it and the console shows it:
each kind of payload decoded whole, and what each leaves for --grep. Pure; milliseconds."""

from __future__ import annotations

import base64
import fnmatch
import gzip
import json
import zlib

import pytest

from console.decode import MAX_INFLATED, Decoded, decode, printable

LOG_EVENTS = [
    {"id": "1", "timestamp": 1700000000000, "message": "first line"},
    {"id": "2", "timestamp": 1700000000001, "message": "second line"},
]
ENVELOPE = {
    "messageType": "DATA_MESSAGE",
    "owner": "123456789012",
    "logGroup": "/app/orders",
    "logStream": "i-0abc",
    "subscriptionFilters": ["all"],
    "logEvents": LOG_EVENTS,
}
REST = {k: v for k, v in ENVELOPE.items() if k != "logEvents"}


def test_json_in_full() -> None:
    data = b'  {"a": [1, 2]}'
    shown = decode(data)
    assert shown == Decoded("json", value={"a": [1, 2]}, text='  {"a": [1, 2]}', raw=data)
    assert shown.as_json() == {"how": "json", "json": {"a": [1, 2]}}
    assert shown.searchable == '  {"a": [1, 2]}'
    # Every JSON value a producer may send alone, not only objects.
    for text, value in (("42", 42), ('"s"', "s"), ("true", True), ("false", False), ("[]", [])):
        assert decode(text.encode()).as_json() == {"how": "json", "json": value}, text
    # Looks like JSON, is not: text.
    assert decode(b"{not json").as_json() == {"how": "text", "text": "{not json"}
    assert decode(b"12 apples").as_json() == {"how": "text", "text": "12 apples"}


def test_text_and_binary_in_full() -> None:
    shown = decode(b"plain words")
    assert shown == Decoded("text", text="plain words", raw=b"plain words")
    assert shown.as_json() == {"how": "text", "text": "plain words"}
    assert shown.searchable == "plain words"
    data = b"\xff\x00\x10binary"
    shown = decode(data)
    assert shown == Decoded("binary", raw=data)
    assert shown.as_json() == {
        "how": "binary",
        "hex": data.hex(),
        "base64": base64.b64encode(data).decode("ascii"),
    }
    assert shown.searchable == data.hex()


def test_a_cloudwatch_logs_envelope_becomes_its_events() -> None:
    data = gzip.compress(json.dumps(ENVELOPE).encode())
    shown = decode(data)
    assert shown.how == "gzip > cloudwatch-logs"
    assert (shown.value, shown.events, shown.problem) == (REST, LOG_EVENTS, None)
    assert shown.as_json() == {
        "how": "gzip > cloudwatch-logs",
        "envelope": REST,
        "log_events": LOG_EVENTS,
    }
    assert shown.searchable == "first line\nsecond line"
    # Events that are not objects are left out; an event without a message searches as "".
    odd = {**ENVELOPE, "logEvents": ["junk", {"id": "3"}, LOG_EVENTS[0]]}
    shown = decode(json.dumps(odd).encode())
    assert shown.events == [{"id": "3"}, LOG_EVENTS[0]]
    assert shown.searchable == "\nfirst line"


def test_the_control_message_and_look_alikes() -> None:
    control = {**ENVELOPE, "messageType": "CONTROL_MESSAGE", "logEvents": [{"message": "x"}]}
    shown = decode(json.dumps(control).encode())
    rest = {k: v for k, v in control.items() if k != "logEvents"}
    assert (shown.how, shown.value, shown.events) == ("cloudwatch-control", rest, [])
    assert shown.as_json() == {"how": "cloudwatch-control", "json": rest}
    # Missing logEvents or messageType, or logEvents not a list: plain JSON.
    for doc in (
        {k: v for k, v in ENVELOPE.items() if k != "logEvents"},
        {k: v for k, v in ENVELOPE.items() if k != "messageType"},
        {**ENVELOPE, "logEvents": "not a list"},
        [ENVELOPE],
    ):
        assert decode(json.dumps(doc).encode()).as_json() == {"how": "json", "json": doc}


def test_compressed_payloads_are_inflated_and_say_so() -> None:
    assert decode(gzip.compress(b"gz text")).as_json() == {"how": "gzip > text", "text": "gz text"}
    assert decode(zlib.compress(b'{"z": 1}')).as_json() == {"how": "zlib > json", "json": {"z": 1}}
    for level in (1, 6, 9):  # each zlib header: 78 01, 78 5e, 78 9c, 78 da
        assert decode(zlib.compress(b"level", level)).how == "zlib > text"
    # gzip allows several members, one after another.
    assert decode(gzip.compress(b"one ") + gzip.compress(b"two")).text == "one two"


@pytest.mark.parametrize(
    ("data", "how", "problem"),
    [
        (
            b"\x1f\x8b" + b"not gzip at all",
            "binary",
            "looks like gzip but does not inflate (Error -3 while decompressing data: *): "
            "shown raw",
        ),
        (
            b"\x1f\x8b\xff",
            "binary",
            "looks like gzip but does not inflate (the compressed data ends early): shown raw",
        ),
        (
            gzip.compress(b"whole") + b"\x1f\x8b",  # a second member cut short
            "binary",
            "looks like gzip but does not inflate (the compressed data ends early): shown raw",
        ),
        (
            b"x\x9c\xff\xfe",
            "binary",
            "looks like zlib but does not inflate (Error -3 while decompressing data: *): "
            "shown raw",
        ),
    ],
)
def test_what_claims_to_be_compressed_and_is_not_is_shown_raw_with_the_reason(
    data: bytes, how: str, problem: str
) -> None:
    """The reason is zlib's own words (which zlib's version may change: * stands for them)."""
    shown = decode(data)
    assert (shown.how, shown.raw) == (how, data)
    assert fnmatch.fnmatchcase(shown.problem or "", problem), shown.problem
    assert shown.as_json()["problem"] == shown.problem


def test_text_that_starts_like_a_zlib_header_is_text() -> None:
    shown = decode(b"x^ is text")
    assert (shown.how, shown.problem, shown.text) == ("text", None, "x^ is text")
    assert decode(b"x\x01 also").problem is None


def test_nested_past_python_s_stack_is_still_shown() -> None:
    assert decode(b"[" * 100_000).how == "text"


def test_an_inflated_record_has_a_limit() -> None:
    big = gzip.compress(b"0" * (MAX_INFLATED + 1))
    assert decode(big).problem == (
        "looks like gzip but does not inflate (inflates to more than 16 MB): shown raw"
    )
    exact = gzip.compress(b"0" * (MAX_INFLATED - 1))
    assert decode(exact).problem is None
    # Members together count toward the limit.
    half = gzip.compress(b"0" * (MAX_INFLATED // 2 + 1))
    assert decode(half + half).problem is not None


def test_a_compression_bomb_is_stopped_while_it_inflates() -> None:
    """A record of 250 KB that inflates to 256 MB: refused, and never held whole in memory."""
    import tracemalloc

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip
    chunk = bytes(1024 * 1024)
    bomb = b"".join(packer.compress(chunk) for _ in range(256)) + packer.flush()
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        shown = decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shown.how == "binary" and "more than 16 MB" in (shown.problem or "")
    assert shown.raw == bomb  # shown raw, not dropped
    assert peak < 3 * MAX_INFLATED, f"{peak / 2**20:.0f} MB held while inflating"


def test_printable_escapes_every_control_character_and_nothing_else() -> None:
    assert printable("a\nb\tc\x1b[31m\x7f\x9b\x00 é ✓") == "a\\nb\\tc\\x1b[31m\\x7f\\x9b\\x00 é ✓"
    assert printable("plain") == "plain"
