"""Time windows: which range of `lastSeen` / `dateCreated` a run asks for.

A crawl's progress is a `Coverage`: everything before its watermark has been read,
and so have the ranges after it. A run reads the gaps, oldest first, in slices whose
length adapts to how many rows they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_HISTORY = timedelta(days=365)
SENTRY_RETENTION = timedelta(days=90)  # what sentry.io keeps; older rows are history
SECOND = timedelta(seconds=1)
FIRST_SLICE = timedelta(days=7)  # a gap longer than this is read in slices
SLICE_ROWS = 1_000  # rows a slice aims at
MAX_GROWTH = 8  # a slice is at most this many times longer than the one before


@dataclass(frozen=True)
class Window:
    """A time range [start, end) sent to the API as `start` and `end`."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


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


@dataclass(frozen=True)
class Coverage:
    """What a crawl has read: everything before `watermark`, and `ranges` after it.

    The watermark only moves forward: a range that reaches it is absorbed. After a
    complete run the watermark is the run's start and there are no ranges.
    """

    watermark: datetime | None = None
    ranges: tuple[Window, ...] = ()

    def add(self, window: Window) -> Coverage:
        """This coverage with `window` read too."""
        if window.end <= window.start:
            return self
        watermark = self.watermark
        pending = sorted((*self.ranges, window), key=lambda w: w.start)
        merged: list[Window] = []
        for item in pending:
            if watermark is not None and item.start <= watermark:
                watermark = max(watermark, item.end)
            elif merged and item.start <= merged[-1].end:
                merged[-1] = Window(merged[-1].start, max(merged[-1].end, item.end))
            else:
                merged.append(item)
        while watermark is not None and merged and merged[0].start <= watermark:
            watermark = max(watermark, merged.pop(0).end)
        return Coverage(watermark, tuple(merged))

    def merged(self, other: Coverage, since: datetime) -> Coverage:
        """This coverage and `other`, a crawl that started at `since`."""
        if self.watermark is None:
            return other
        result = self.add(Window(since, other.watermark)) if other.watermark else self
        for window in other.ranges:
            result = result.add(window)
        return result

    def started_at(self, start: datetime) -> Coverage:
        """A crawl with no watermark yet starts at `start` (the anchor): nothing before it."""
        return self if self.watermark is not None else Coverage(start, self.ranges)

    def gaps(self, window: Window, lookback: timedelta) -> list[Window]:
        """What a run covering `window` still has to read, oldest first: the ranges are
        read, except the `lookback` before each of their ends (events arrive late)."""
        done = [
            Window(r.start, r.end - lookback) for r in self.ranges if r.end - lookback > r.start
        ]
        return list(_subtract(window, done))

    def measure(self, window: Window) -> float:
        """Seconds of `window` this coverage holds (from `window.start` when it has no
        watermark yet)."""
        held = [Window(window.start, self.watermark)] if self.watermark else []
        held += list(self.ranges)
        total = 0.0
        for item in held:
            start, end = max(item.start, window.start), min(item.end, window.end)
            total += max(0.0, (end - start).total_seconds())
        return total

    def lag(self, moment: datetime) -> timedelta:
        """How far the watermark is behind `moment`."""
        if self.watermark is None:
            return timedelta(0)
        return max(timedelta(0), moment - self.watermark)


def _subtract(window: Window, done: Iterable[Window]) -> Iterator[Window]:
    cursor = window.start
    for item in sorted(done, key=lambda w: w.start):
        if item.end <= cursor or item.start >= window.end:
            continue
        if item.start > cursor:
            yield Window(cursor, item.start)
        cursor = max(cursor, item.end)
    if cursor < window.end:
        yield Window(cursor, window.end)


class Slicer:
    """Cuts gaps into slices, oldest first; each slice's length follows the row density
    of the one before, so a slice holds about `SLICE_ROWS` rows.

    What lies before `horizon` (Sentry's retention: the server answers nothing older) is
    one slice, so a first run from an anchor a year back does not walk empty months.
    """

    def __init__(
        self,
        gaps: Iterable[Window],
        first: timedelta = FIRST_SLICE,
        horizon: datetime | None = None,
    ) -> None:
        self.gaps = list(gaps)
        self.first = first
        self.length = first
        self.horizon = horizon
        self.current: Window | None = None

    def next(self) -> Window | None:
        while self.gaps:
            gap = self.gaps[0]
            end = min(gap.end, whole_second(gap.start + self.length))
            if self.horizon is not None and gap.start < self.horizon < gap.end:
                end = max(end, whole_second(self.horizon))
            if end >= gap.end or end <= gap.start:
                self.gaps.pop(0)
                end = gap.end
            else:
                self.gaps[0] = Window(end, gap.end)
            self.current = Window(gap.start, end)
            return self.current
        return None

    def record(self, rows: int) -> None:
        """The slice just read held `rows` rows: size the next one."""
        if self.current is None:
            return
        if self.horizon is not None and self.current.end <= self.horizon:
            self.length = self.first  # before the horizon says nothing of the density after it
            return
        seconds = max(self.current.seconds, 1.0)
        wanted = seconds * SLICE_ROWS / max(rows, 1)
        wanted = min(wanted, seconds * MAX_GROWTH)
        self.length = timedelta(seconds=max(wanted, 1.0))


def read_from(oldest: datetime, slice_: Window) -> Window | None:
    """The part of a slice read newest first whose rows are all read, once the oldest
    row so far is `oldest`: rows of that same second may still be on the next page."""
    start = whole_second(oldest) + SECOND
    return Window(start, slice_.end) if start < slice_.end else None


def whole_second(moment: datetime) -> datetime:
    """`moment` to the second, as Sentry's `start` and `end` take it."""
    return moment.replace(microsecond=0)


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: what Sentry's API expects."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
