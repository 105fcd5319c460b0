"""The time windows a run asks for, and how they are written in requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sentry_extract.model.windows import (
    DEFAULT_HISTORY,
    Window,
    format_datetime,
    full_window,
    incremental_window,
)

STARTED = datetime(2026, 5, 10, 12, 0, 0, tzinfo=UTC)
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_a_full_window_runs_from_the_anchor_to_the_run_start() -> None:
    assert full_window(ANCHOR, STARTED) == Window(ANCHOR, STARTED)


def test_without_an_anchor_a_full_window_covers_a_year() -> None:
    assert full_window(None, STARTED) == Window(datetime(2025, 5, 10, 12, tzinfo=UTC), STARTED)


def test_a_first_incremental_run_reads_from_the_anchor() -> None:
    assert incremental_window(None, ANCHOR, STARTED, HOUR) == Window(ANCHOR, STARTED)
    assert incremental_window(None, None, STARTED, HOUR).start == STARTED - DEFAULT_HISTORY


def test_a_later_run_starts_a_lookback_before_the_previous_run() -> None:
    previous = datetime(2026, 5, 10, 11, 45, tzinfo=UTC)
    window = incremental_window(previous, ANCHOR, STARTED, HOUR)
    assert window == Window(datetime(2026, 5, 10, 10, 45, tzinfo=UTC), STARTED)
    no_lookback = incremental_window(previous, ANCHOR, STARTED, timedelta(0))
    assert no_lookback.start == previous  # the anchor no longer matters


def test_a_watermark_ahead_of_the_run_never_makes_the_window_run_backwards() -> None:
    """A clock set back between runs: the window is empty, not inverted."""
    ahead = STARTED + timedelta(days=1)
    assert incremental_window(ahead, ANCHOR, STARTED, HOUR) == Window(STARTED, STARTED)


def test_datetimes_are_sent_in_utc_with_a_z_to_the_second() -> None:
    assert format_datetime(datetime(2026, 5, 10, 12, 0, 0, 999999, tzinfo=UTC)) == (
        "2026-05-10T12:00:00Z"
    )
    paris = timezone(timedelta(hours=2))
    assert format_datetime(datetime(2026, 5, 10, 14, 30, tzinfo=paris)) == "2026-05-10T12:30:00Z"
