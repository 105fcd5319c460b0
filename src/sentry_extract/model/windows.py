"""Time windows: which range of `lastSeen` / `dateCreated` a run asks for.

`IncrementalWindow` is the one rule for a stream's range, asked by the run and by the
dry run alike. A crawl's progress is a `Coverage`: everything before its watermark has
been read, and so have the ranges after it. A run reads the gaps, oldest first, in
slices whose length adapts to how many rows they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sentry_extract.model.modes import Mode

DEFAULT_HISTORY = timedelta(days=365)
ASSUMED_DAYS = 90  # sentry.io's paid plans; what is assumed until Sentry says otherwise
CLOCK_MARGIN = timedelta(minutes=1)  # Sentry's clock, and the time since a request left
DAY = timedelta(days=1)
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


@dataclass(frozen=True)
class Crawl:
    """Where a windowed crawl starts: its window, what earlier runs read, the lookback,
    and how far back Sentry keeps data (before that, one slice: it answers nothing)."""

    window: Window
    coverage: Coverage
    lookback: timedelta
    retention: timedelta = timedelta(days=ASSUMED_DAYS)

    @property
    def horizon(self) -> datetime:
        return self.window.end - self.retention

    @property
    def done(self) -> Coverage:
        """The coverage once the whole window is read."""
        return self.coverage.started_at(self.window.start).add(self.window)


@dataclass(frozen=True)
class IncrementalWindow:
    """The time range a stream's run reads, by its mode, and what earlier runs already
    read of it: the one rule the run and the dry run both ask.

    A mode that merges by key goes on from the saved watermark less the lookback (a first
    run starts at the anchor, else a year back); a backfill reads its range whatever is
    saved; the other modes read everything from the anchor to the run's start.
    """

    mode: Mode
    started: datetime  # the run's start: every window ends there
    anchor: datetime | None  # `inputs.anchor_date`
    lookback: timedelta
    backfill: Window | None = None  # `source_options.range`

    def window(self, watermark: datetime | None) -> Window:
        """The range a run asks for, from the saved watermark."""
        if self.mode.reads_range and self.backfill is not None:
            return self.backfill
        if self.mode.merges_by_key:
            return incremental_window(watermark, self.anchor, self.started, self.lookback)
        return full_window(self.anchor, self.started)

    def crawl(
        self, coverage: Coverage, retention: timedelta = timedelta(days=ASSUMED_DAYS)
    ) -> Crawl:
        """The crawl from a saved coverage: only a mode that merges by key keeps what
        earlier runs read (a full read, or a backfill's range, reads it all again)."""
        window = self.window(coverage.watermark)
        if not self.mode.merges_by_key or self.mode.reads_range:
            coverage = Coverage()
        return Crawl(window, coverage, self.lookback, retention)

    def whole(self, retention: timedelta) -> Crawl:
        """Everything from the anchor, as if nothing were read (a reconcile)."""
        return Crawl(full_window(self.anchor, self.started), Coverage(), self.lookback, retention)

    def whole_days(self, crawl: Crawl, watermark: datetime | None, late: timedelta) -> Window:
        """The whole UTC days a time series reads: from the crawl's start, less the days
        whose figures still change (`late`) when it goes on from a watermark, never before
        Sentry's retention (older is a 400 there, not a clamp)."""
        start = crawl.window.start
        if watermark is not None and self.mode.merges_by_key:
            start -= late
        oldest = day_ceiling(crawl.window.end - crawl.retention + CLOCK_MARGIN)
        return Window(max(day_floor(start), oldest), crawl.window.end)

    def stop_before(self, watermark: datetime | None) -> datetime | None:
        """Where a list newest first stops: what is older was read by an earlier run."""
        if watermark is None or not self.mode.merges_by_key:
            return None
        return watermark - self.lookback

    def origin(self, coverage: Coverage) -> str:
        """Where the window's start comes from, for the dry run."""
        if self.mode.reads_range and self.backfill is not None:
            return "backfill range"
        if self.mode.merges_by_key and (coverage.watermark is not None or coverage.ranges):
            return "saved state"
        if self.anchor is not None:
            return "anchor_date"
        return "a year, no anchor_date"


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


def day_floor(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def day_ceiling(moment: datetime) -> datetime:
    floor = day_floor(moment)
    return floor if floor == moment else floor + DAY


def whole_second(moment: datetime) -> datetime:
    """`moment` to the second, as Sentry's `start` and `end` take it."""
    return moment.replace(microsecond=0)


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: what Sentry's API expects."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
