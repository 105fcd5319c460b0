"""What a stream is, as data: its request, its parents, its keys, its columns.

A stream is one `StreamSpec`. Its `shape` says how its list is read, its `parents` what
each request hangs from (one request for the organization, or one per row of another
stream: a project, release, issue or monitor), and the few behaviours that differ
between endpoints are small functions the spec names (`series`: how a time-series answer
becomes rows; `Parents.parent_of`: how a row of the parent stream becomes a parent).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote


class ColumnType(enum.Enum):
    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    JSON = "json"


class Shape(enum.Enum):
    """How a stream's answers are read."""

    SINGLE = "single"  # one object, no pagination
    LIST = "list"  # one paginated list (a parent's, or the organization's)
    WINDOWED = "windowed"  # a paginated list bounded by start/end, read in time slices
    SERIES = "series"  # time series (no cursor): one answer a window, flattened into rows


class Parent(enum.Enum):
    """What each request of a stream hangs from: one request, or one per parent row."""

    ORGANIZATION = "organization"
    PROJECT = "project"
    RELEASE = "release"
    ISSUE = "issue"
    MONITOR = "monitor"
    REPOSITORY = "repository"


class Reading(enum.Enum):
    """Which reader reads a stream: one for each way of reading, whatever the stream."""

    ORGANIZATION_LIST = "organization list"  # one object, or one list, read whole
    WINDOWED_LIST = "windowed list"  # one list of the organization, over a time window
    PER_PROJECT = "per project"  # one windowed list per project, side by side
    FAN_OUT = "fan-out"  # one list per row of a parent stream
    TIME_SERIES = "time series"  # whole days, flattened into rows


class Order(enum.Enum):
    """The order rows come in inside a window (what a checkpoint can rely on)."""

    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"


@dataclass(frozen=True)
class Column:
    source_name: str
    type: ColumnType
    path: tuple[str, ...] = ()  # a value inside an object: ("project", "id")


Row = dict[str, Any]
Params = Mapping[str, str | int | tuple[str, ...]]
# A series endpoint's request: parameters in, the decoded answer out.
Fetch = Callable[[Params], Any]


@dataclass(frozen=True, eq=False)  # parents are told apart by identity
class ParentRow:
    """One parent of a fanned-out stream: its values (added to its children's rows) and
    what its requests put in the path."""

    values: Mapping[str, str]
    path_values: Mapping[str, str]
    label: str  # "release '1.2.0'", for messages

    def with_tag_key(self, key: str) -> ParentRow:
        """This parent once per tag key: each is one list of tag values."""
        return ParentRow(
            {**self.values, "key": key},
            {**self.path_values, "key": quote(key, safe="")},
            f"{self.label}, tag '{key}'",
        )


@dataclass(frozen=True)
class Parents:
    """Where a fanned-out stream's parents come from: the rows of `stream` (all of them,
    or, for a windowed stream, those its window lists), each made a parent by
    `parent_of` (None: that row is none)."""

    kind: Parent
    stream: StreamSpec
    parent_of: Callable[[Row], ParentRow | None]
    by_tag_key: bool = False  # one parent per row and key of `inputs.tag_keys`


@dataclass(frozen=True)
class SeriesPiece:
    """One window of a series stream, flattened into rows."""

    rows: list[Row]
    cut: bool = False  # the server kept only its largest groups: rows may be missing


# Reads one window of a series stream (one or more requests); says when the answer was
# cut, and raises `RangeTooLargeError` when the window is more than the endpoint spans.
SeriesReader = Callable[[Fetch, datetime, datetime], SeriesPiece]


@dataclass(frozen=True)
class StreamSpec:
    name: str
    description: str
    path: str  # relative to /api/0/: {organization}, and the parent's {project}, {version}...
    shape: Shape
    params: tuple[tuple[str, str | tuple[str, ...]], ...]  # a tuple value is repeated
    page_size_param: str | None  # "per_page", "limit", or None when unpaginated
    primary_key: tuple[str, ...]  # source field names
    update_key: str | None  # source field name
    columns: tuple[Column, ...] = field(default=())
    fixed_update_key: bool = False  # a row's update key never changes (an event's time)
    soft_deletes: bool = False  # rows that vanish from Sentry get `_deleted_at`, not removed
    merges: bool = False  # a row merged into another (issues) names it in `merged_into_id`
    parents: Parents | None = None  # None: one request for the organization
    parent_columns: tuple[tuple[str, str], ...] = ()  # (row field, parent value) added to rows
    scope: str = "org:read"  # the token scope the endpoint needs
    named_only: bool = False  # `'*'` leaves it out: it runs only when named
    rows_key: str | None = None  # rows come under this key of an object (`data`), not bare
    order: Order = Order.NEWEST_FIRST
    raw_values: bool = False  # heavy rows: values stay undecoded JSON until typed
    series: SeriesReader | None = None  # SERIES: one window's requests into rows
    series_days: int = 90  # SERIES: the longest window one read may ask for
    halves: bool = False  # SERIES: a window too long (cut, or refused) is asked again halved
    late_arrivals: timedelta = timedelta(0)  # re-read at least this much before the watermark
    row_cap: int | None = None  # the server stops paging after this many rows of one query
    operation: str = ""  # the operationId in Sentry's OpenAPI description
    skips_quiet_projects: bool = False  # asks the org-wide error index which projects to read
    preflight: bool = False  # the organization: read before any stream, its answer reused
    more_columns: tuple[Column, ...] = ()  # Explore: typed fields a field list may ask for

    @property
    def takes_fields(self) -> bool:
        """Asks Explore for a field list, which a replication may replace."""
        return self.path == EXPLORE_PATH

    @property
    def parent(self) -> Parent:
        return self.parents.kind if self.parents is not None else Parent.ORGANIZATION

    @property
    def fans_out(self) -> bool:
        """One request (at least) per parent row, not one for the organization."""
        return self.parents is not None

    @property
    def has_windowed_parents(self) -> bool:
        """Its parents are the rows a window of another stream lists (tag values: the
        issues changed since the last run)."""
        return self.parents is not None and self.parents.stream.shape is Shape.WINDOWED

    @property
    def reading(self) -> Reading:
        if self.shape is Shape.SERIES:
            return Reading.TIME_SERIES
        if self.shape is Shape.WINDOWED and self.parent is Parent.PROJECT:
            return Reading.PER_PROJECT
        if self.shape is Shape.WINDOWED:
            return Reading.WINDOWED_LIST
        if self.fans_out:
            return Reading.FAN_OUT
        return Reading.ORGANIZATION_LIST

    @property
    def is_incremental(self) -> bool:
        """Read from a saved watermark by default (a window, or a list newest first)."""
        if self.reads_time_range:
            return True
        return self.shape is Shape.LIST and self.update_key is not None

    @property
    def reads_time_range(self) -> bool:
        """Reads a range of time (so a backfill can choose it): a window, a series, or
        the parents a window lists."""
        return self.shape in (Shape.WINDOWED, Shape.SERIES) or self.has_windowed_parents

    def path_for(self, organization: str, values: Mapping[str, str] | None = None) -> str:
        return self.path.format(organization=organization, **(values or {}))


PAGE_SIZE = 100
EXPLORE_PATH = "organizations/{organization}/events/"
EXPLORE_MAX_FIELDS = 20  # Sentry refuses a query of more fields


def with_fields(spec: StreamSpec, fields: tuple[str, ...]) -> StreamSpec:
    """An Explore stream asking for `fields` instead of its default list: its columns
    follow, typed as the stream knows them (text for a field it does not know)."""
    known = {column.source_name: column for column in (*spec.columns, *spec.more_columns)}
    columns = tuple(known.get(name, Column(name, ColumnType.TEXT)) for name in fields)
    params = tuple((key, fields if key == "field" else value) for key, value in spec.params)
    return replace(spec, params=params, columns=columns)


def columns_of(**types: ColumnType) -> tuple[Column, ...]:
    return tuple(Column(name, column_type) for name, column_type in types.items())


def names(specs: Sequence[StreamSpec]) -> tuple[str, ...]:
    return tuple(spec.name for spec in specs)
