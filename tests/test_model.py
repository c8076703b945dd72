import pytest

from console.model import Position, PositionError, PositionKind, format_ts, parse_ts


@pytest.mark.parametrize(
    "position",
    [
        Position.trim_horizon(),
        Position.latest(),
        Position.at_timestamp(1795469915.123),
        Position.at_sequence("49590338271490256608559692538361571095921575989136588898"),
        Position.after_sequence("12", 3),
        Position.after_sequence("7"),
    ],
)
def test_position_round_trips_through_its_text(position: Position) -> None:
    assert Position.decode(position.encode()) == position


def test_position_text_is_readable() -> None:
    assert Position.after_sequence("12", 3).encode() == "after_sequence:12/3"
    assert Position.at_timestamp(0).encode() == "at_timestamp:1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "text",
    ["", "later", "trim_horizon:x", "after_sequence:12a", "after_sequence:1/x", "at_timestamp:no"],
)
def test_bad_position_text_is_refused(text: str) -> None:
    with pytest.raises(PositionError):
        Position.decode(text)


def test_initial_position_grammar() -> None:
    assert Position.parse_initial("trim_horizon").kind is PositionKind.TRIM_HORIZON
    assert Position.parse_initial("LATEST").kind is PositionKind.LATEST
    p = Position.parse_initial("at_timestamp:2026-11-23T08:00:00Z")
    assert p.kind is PositionKind.AT_TIMESTAMP
    assert format_ts(p.timestamp or 0) == "2026-11-23T08:00:00.000Z"
    for bad in ("at_timestamp", "at_timestamp:yesterday", "sequence:1", "nope"):
        with pytest.raises(PositionError, match=r"trim_horizon|ISO 8601"):
            Position.parse_initial(bad)


def test_timestamps_without_offset_are_utc() -> None:
    assert parse_ts("2026-11-23T08:00:00") == parse_ts("2026-11-23T08:00:00+00:00")
    assert parse_ts("2026-11-23T09:00:00+01:00") == parse_ts("2026-11-23T08:00:00Z")


def test_a_time_before_1970_is_said_not_an_internal_error() -> None:
    import pytest

    from console.model import PositionError, parse_when

    for text in ("-99999999d", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        with pytest.raises(PositionError, match="before 1970"):
            parse_when(text)
    assert parse_when("-1d", now=100_000.0) == 100_000.0 - 86_400
