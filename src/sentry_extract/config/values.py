"""Parsing of the small values users write: dates, durations, names."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw])?\s*$")
_DURATION_UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}


def parse_datetime(value: object) -> datetime:
    """`2024-01-01T00:00:00Z`, an offset, or a date alone; always returned in UTC.

    Raises ValueError with a message meant for the user.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date-time: use YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD"
            ) from None
    else:
        raise ValueError(f"{value!r} is not a date-time: use YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_duration(value: object) -> timedelta:
    """`500ms`, `90s`, `30m`, `1h`, `2d`, `1w` (or a number of seconds, `0` included)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration: use e.g. 90s, 30m, 1h, 2d")
    amount, unit = match.groups()
    return timedelta(**{_DURATION_UNITS[unit or "s"]: float(amount)})


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_SIZE_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(value: object) -> int:
    """`256MB`, `1GiB`, `500kB` (or a number of bytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a size: use e.g. 128MB, 512MB, 1GB")
    amount, unit = match.groups()
    return int(float(amount) * _SIZE_UNITS[(unit or "b").lower()])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
