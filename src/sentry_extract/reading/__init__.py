"""Reading a stream: one reader for each way of reading, whatever the stream.

    base.py          Scope (what is read), Session (what it is read with), Sink (where
                     rows go: the loader), ReadPlan (what the dry run shows)
    organization.py  the organization and its lists, read whole (soft deletes)
    windowed.py      an organization's list over a time window, in slices (issues...)
    reconcile.py     stored rows that vanished from Sentry, stamped `_deleted_at`
    per_project.py   a windowed list per project, side by side (events)
    fan_out.py       a list per row of a parent stream (deploys, check-ins, tag values...)
    series.py        time series in whole days (usage, release health)
    lag.py           whether a stream keeps up

Each reader has `plan(state)` and `read(state, session)`; which one reads a stream is
the spec's `reading`. Readers ask `source/` for requests and hand rows to the sink.
"""

from __future__ import annotations

from collections.abc import Callable

from sentry_extract.model.spec import Reading
from sentry_extract.reading.base import Reader, Scope
from sentry_extract.reading.fan_out import FanOutReader
from sentry_extract.reading.organization import OrganizationListReader
from sentry_extract.reading.per_project import PerProjectReader
from sentry_extract.reading.series import TimeSeriesReader
from sentry_extract.reading.windowed import WindowedListReader

READERS: dict[Reading, Callable[[Scope], Reader]] = {
    Reading.ORGANIZATION_LIST: OrganizationListReader,
    Reading.WINDOWED_LIST: WindowedListReader,
    Reading.PER_PROJECT: PerProjectReader,
    Reading.FAN_OUT: FanOutReader,
    Reading.TIME_SERIES: TimeSeriesReader,
}


def reader_for(scope: Scope) -> Reader:
    return READERS[scope.spec.reading](scope)
