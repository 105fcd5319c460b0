"""The plan of a run (`run --dry-run`): what each stream would ask, from saved state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from sentry_extract.config.connections import ConnectionEntry, SentryConnection
from sentry_extract.config.replication import Replication, StreamConfig
from sentry_extract.model.spec import Parent, Shape
from sentry_extract.model.windows import ASSUMED_DAYS, Coverage, Crawl, Slicer, format_datetime
from sentry_extract.pipeline.connect import resolve_source, state_stores
from sentry_extract.pipeline.loader import stream_window
from sentry_extract.source.cassettes import Recording
from sentry_extract.source.client import query_text
from sentry_extract.source.extract import request_params
from sentry_extract.state import StreamState

PROJECTS_SHOWN = 20  # saved projects listed one by one; the others are counted


@dataclass(frozen=True)
class StreamPlan:
    """What a run would do for one stream (`run --dry-run`)."""

    name: str
    mode: str
    object: str
    windows: tuple[str, ...]  # what it would read: one line, or one per saved project
    first_request: str


def plan_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
    replay: Recording | None = None,
) -> list[StreamPlan]:
    """The plan of a run, from the saved state; no request is sent and nothing written."""
    source = resolve_source(replication, connections, replay)
    plans = []
    for stream, key, store in state_stores(replication, connections, state_location, replay):
        spec = stream.spec
        state = store.load(key) if spec.is_incremental else StreamState()
        windows: tuple[str, ...] = ()
        crawl: Crawl | None = None
        if spec.shape is Shape.WINDOWED and spec.parent is Parent.PROJECT:
            windows, crawl = _project_windows(stream, source, replication, state)
        elif spec.is_incremental:
            rule = stream_window(stream, source, replication.run_started_at)
            crawl = rule.crawl(state.coverage)
            origin = rule.origin(state.coverage)
            if spec.shape is Shape.SERIES:  # whole days, the late ones again
                days, retention = _retention(source, state)
                crawl = replace(crawl, retention=days)
                window = rule.whole_days(crawl, state.coverage.watermark, spec.late_arrivals)
                if window.start > crawl.window.start:  # what Sentry keeps, not the anchor
                    origin = f"Sentry keeps {days.days} days, {retention}"
                crawl = Crawl(window, crawl.coverage, crawl.lookback)
            windows = (_described(crawl, origin),)
        piece = None  # lists asked by time show their first slice; others take no range
        if crawl is not None and spec.shape is Shape.WINDOWED:
            piece = Slicer(crawl.coverage.gaps(crawl.window, crawl.lookback)).next()
        path = spec.path.replace("{organization}", source.organization)  # a parent's: {name}
        params = request_params(spec, piece, stream.query)
        query = query_text(params)
        plans.append(
            StreamPlan(
                stream.name,
                str(stream.mode),
                stream.object,
                windows,
                f"GET /api/0/{path}" + (f"?{query}" if query else ""),
            )
        )
    return plans


def _project_windows(
    stream: StreamConfig, source: SentryConnection, replication: Replication, state: StreamState
) -> tuple[tuple[str, ...], Crawl]:
    """One line per project with saved state, then one for every other project."""
    rule = stream_window(stream, source, replication.run_started_at)
    fresh = rule.crawl(Coverage())
    fresh_line = _described(fresh, rule.origin(Coverage()))
    saved = sorted(state.projects.items()) if stream.mode.merges_by_key else []
    if stream.mode.reads_range or not saved:
        return (f"every project: {fresh_line}",), fresh
    lines = []
    crawls = []
    for project, coverage in saved:
        crawl = rule.crawl(coverage)
        crawls.append(crawl)
        lines.append(f"project {project}: {_described(crawl, rule.origin(coverage))}")
    if len(lines) > PROJECTS_SHOWN:
        hidden = len(lines) - PROJECTS_SHOWN + 1
        lines[PROJECTS_SHOWN - 1 :] = [f"{hidden} more projects, each from its saved state"]
    lines.append(f"other projects: {fresh_line}")
    return tuple(lines), crawls[0]


def _retention(source: SentryConnection, state: StreamState) -> tuple[timedelta, str]:
    """The retention a run would start with, and where the figure comes from."""
    if source.retention_days is not None:
        return timedelta(days=source.retention_days), "inputs.retention_days"
    if state.retention_days is not None:
        return timedelta(days=state.retention_days), "learned"
    return timedelta(days=ASSUMED_DAYS), "assumed"


def _described(crawl: Crawl, origin: str) -> str:
    """`<start> to <end> (<where the start comes from>)`: at most 70 characters."""
    window = crawl.window
    read = len(crawl.coverage.ranges)
    if read:
        origin += f"; {read} part{'s' if read > 1 else ''} read"
    return f"{format_datetime(window.start)} to {format_datetime(window.end)} ({origin})"
