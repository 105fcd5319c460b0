"""Time windows: which range of `lastSeen` / `dateCreated` a run asks for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_HISTORY = timedelta(days=365)


@dataclass(frozen=True)
class Window:
    """A time range [start, end) sent to the API as `start` and `end`."""

    start: datetime
    end: datetime


def full_window(anchor: datetime | None, run_started_at: datetime) -> Window:
    """From the anchor date (default: a year before the run) to the run's start."""
    return Window(anchor or run_started_at - DEFAULT_HISTORY, run_started_at)


def incremental_window(
    watermark: datetime | None,
    anchor: datetime | None,
    run_started_at: datetime,
    lookback: timedelta,
) -> Window:
    """From the previous run's start minus the lookback to this run's start.

    The watermark is the previous run's start time, never the largest `lastSeen`
    read: an issue that got a new event during that run jumped ahead of its cursor.
    """
    if watermark is None:
        return full_window(anchor, run_started_at)
    return Window(min(watermark - lookback, run_started_at), run_started_at)


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: what Sentry's API expects."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
