"""The values a setting may take, each checked by one parser: a flag's text, an environment
variable's text and a TOML value alike, so all three say the same thing of a bad value (one
line, a usage error: exit 2). console.settings names each setting's parser."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from console.errors import UsageError


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be a non-empty string")
    return value.strip()


def _number(name: str, value: Any, unit: str) -> float:
    """A finite number (not a bool: TOML's true is not 1 second), or one line saying so."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise UsageError(f"{name} must be a number of {unit}, not {value!r}")
    return number


def positive(name: str, value: Any) -> float:
    number = _number(name, value, "seconds")
    if not number > 0:
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


def non_negative(name: str, value: Any) -> float:
    number = _number(name, value, "seconds")
    if number < 0:
        raise UsageError(f"{name} must be zero or more seconds, not {value!r}")
    return number


MIN_FAILOVER = 3.0  # below this a renewal every second is not safely ahead of expiry


def failover(name: str, value: Any) -> float:
    """A lease table's failover time: renewals go every third of it, so not below 3 s."""
    number = positive(name, value)
    if number < MIN_FAILOVER:
        raise UsageError(f"{name} {number:g} is below the safe minimum of {MIN_FAILOVER:g} s")
    return number


def assignment_interval(name: str, value: Any) -> float:
    """How often a fleet's leader assigns: not below a second (each pass scans the table)."""
    number = positive(name, value)
    if number < 1:
        raise UsageError(f"{name} must be 1 second or more, not {value!r}")
    return number


def _whole(name: str, value: Any, what: str) -> int:
    """``value`` as an int (a bool, or a float with a fraction, is not one), else "NAME must be
    WHAT, not VALUE"."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name} must be {what}, not {value!r}") from None


def count(name: str, value: Any, high: int | None = None) -> int:
    number = _whole(name, value, "a whole number")
    if number < 1 or (high is not None and number > high):
        bound = f"between 1 and {high}" if high else "1 or more"
        raise UsageError(f"{name} must be {bound}, not {value!r}")
    return number


def flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{name} must be true or false, not {value!r}")


def choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        word = str(value).strip().lower()
        if word not in choices:
            raise UsageError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return word

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def fan_out(name: str, value: Any) -> str | None:
    """A stream consumer's name, or true for the default one; false for polling."""
    if isinstance(value, bool):
        return "" if value else None
    word = str(value).strip()
    if word.lower() in ("1", "true", "yes", "on"):
        return ""
    if word.lower() in ("0", "false", "no", "off", ""):
        return None
    return word


def records_per_call(name: str, value: Any) -> int:
    return count(name, value, 10_000)


def max_records(name: str, value: Any) -> int:
    return count(name, value)


def refresh_rate(name: str, value: Any) -> float:
    number = _number(name, value, "refreshes per second")
    if not 0.2 <= number <= 60:
        raise UsageError(f"{name} must be between 0.2 and 60 per second, not {value!r}")
    return number


def port(name: str, value: Any) -> int:
    number = _whole(name, value, "a port number")
    if not 0 <= number <= 65535:
        raise UsageError(f"{name} must be a port between 0 and 65535 (0: any free one)")
    return number


def keymap(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f'[{name}] must map binding ids to keys, as in quit = "ctrl+q"')
    return dict(value)


def retries(name: str, value: Any) -> int:
    number = _whole(name, value, "a whole number of attempts")
    if number < 0:
        raise UsageError(f"{name} must be 0 or more attempts, not {value!r}")
    return number


DEAD_LETTER_SCHEMES = ("jsonl:", "sqs:", "kinesis:", "s3://")


def dead_letter(name: str, value: Any) -> str:
    """Where parked records also go: jsonl:PATH, sqs:QUEUE_URL, kinesis:STREAM or
    s3://bucket[/prefix] (console.sources.dead_letter)."""
    spec = text(name, value)
    scheme = next((s for s in DEAD_LETTER_SCHEMES if spec.startswith(s)), None)
    if scheme is None:
        raise UsageError(
            f"{name} {spec!r}: unknown destination; give jsonl:PATH, sqs:QUEUE_URL, "
            "kinesis:STREAM or s3://bucket/prefix"
        )
    rest = spec[len(scheme) :].strip()
    if not rest or (scheme == "s3://" and not rest.partition("/")[0]):
        raise UsageError(f"{name} {spec!r}: {scheme} needs a target, as in {scheme}parked")
    return spec
