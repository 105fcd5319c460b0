"""What every reader shares: what it reads (`Scope`), what it reads with during a run
(`Session`), where its rows go (`Sink`), and what it would ask (`ReadPlan`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sentry_extract.config.connections import SentryConnection
from sentry_extract.config.replication import StreamConfig
from sentry_extract.model.spec import StreamSpec
from sentry_extract.model.windows import (
    SECOND,
    Coverage,
    Crawl,
    IncrementalWindow,
    Slicer,
    Window,
    format_datetime,
    whole_second,
)
from sentry_extract.reading.lag import Lag
from sentry_extract.source.client import RequestCounter, SentryClient, query_text
from sentry_extract.source.extract import KeptRange, Rows, request_params
from sentry_extract.source.retention import Retention
from sentry_extract.state import StreamState


class Sink(Protocol):
    """Where a reader's rows go (the loader): it buffers them, writes them in batches,
    and commits them with the state that covers them."""

    def add(self, rows: Rows, held_bytes: int = 0) -> None:
        """Rows read (`held_bytes`: what they hold in memory, as their pages count it)."""

    def checkpoint_if_due(self, state: StreamState) -> None:
        """Commit the rows so far with `state`, when a checkpoint is due."""

    def finish(self, state: StreamState | None) -> None:
        """The last rows, and the final state (None: the state stays as it was)."""

    def check_cancelled(self) -> None:
        """Raise `RunCancelled` once the run is stopped."""

    def watch_keys(self) -> set[str]:
        """From now on, the keys of the rows written are added to the set returned."""

    def stored_keys(self, column: str | None, window: Window | None) -> set[str]:
        """The live stored keys (those whose `column` lies in `window`, when given), the
        rows read so far included."""

    def mark_deleted(
        self, keys: Collection[str], moment: datetime, merged: Mapping[str, str] | None = None
    ) -> None:
        """Stamp these stored rows `_deleted_at` (`merged`: those merged into another)."""

    def problem(self, text: str, partial: bool = False) -> None:
        """Reported beside the rows; `partial`: rows may be missing, the stream says so."""

    def mark_partial(self) -> None:
        """Rows may be missing: the stream ends partial."""

    def reconciled(self, deleted: int) -> None:
        """Every stored key was compared with Sentry; `deleted` rows were stamped."""


@dataclass(frozen=True)
class Scope:
    """What a reader reads: the stream as the replication says, the source's inputs, the
    rule for its time range, and the organization's retention as the run knows it."""

    stream: StreamConfig
    source: SentryConnection
    window: IncrementalWindow
    retention: Retention
    spec: StreamSpec  # the stream's, resolved by its configuration

    @classmethod
    def of(
        cls,
        stream: StreamConfig,
        source: SentryConnection,
        started: datetime,
        retention: Retention,
    ) -> Scope:
        window = IncrementalWindow(
            stream.mode, started, source.anchor_date, source.lookback, stream.backfill_range
        )
        return cls(stream, source, window, retention, stream.spec)

    @property
    def started(self) -> datetime:
        return self.window.started

    def crawl(self, coverage: Coverage) -> Crawl:
        """The crawl from a saved coverage, with the retention as now known."""
        return self.window.crawl(coverage, self.retention.period)

    def with_retention(self, state: StreamState) -> StreamState:
        """`state` with the retention this run learned (kept for the next runs)."""
        learned = self.retention.learned
        return state if learned is None else replace(state, retention_days=learned)


@dataclass(frozen=True)
class Session:
    """What a reader reads with during a run: the shared client, the stream's request
    counter, where its rows go, how far its crawls got, and the organization the run
    read first (None when the token may not read it)."""

    client: SentryClient
    counter: RequestCounter
    sink: Sink
    lag: Lag
    is_cancelled: Callable[[], bool]
    organization: dict[str, Any] | None = None

    def kept(self, retention: Retention) -> KeptRange:
        """After Sentry refused a range with a 400: the part of it Sentry keeps (empty
        when none), once the retention is learned; None when the start is not the reason."""

        def kept(asked: Window) -> Window | None:
            if not retention.learn(self.counter):
                return None
            oldest = whole_second(retention.oldest_kept()) + SECOND
            if asked.start >= oldest:
                return None
            return Window(min(oldest, asked.end), asked.end)

        return kept


class Reader(Protocol):
    """One way of reading a stream. The dry run and the run ask the same object."""

    def plan(self, state: StreamState) -> ReadPlan:
        """What `read` would ask, from the saved state; no request is sent."""

    def read(self, state: StreamState, session: Session) -> None:
        """Read the stream from the saved state into the session's sink."""


@dataclass(frozen=True)
class ReadPlan:
    """What a reader would do (`run --dry-run`): the ranges it would read, one line each
    (none for a list read whole), and its first request."""

    windows: tuple[str, ...]
    first_request: str


def saved_state(spec: StreamSpec, load: Callable[[], StreamState]) -> StreamState:
    """What a reader starts from: the last run's state for a stream read from a
    watermark; none for a list read whole."""
    return load() if spec.is_incremental else StreamState()


def first_request(scope: Scope, piece: Window | None) -> str:
    """`GET /api/0/...`: a parent's part of the path stays `{name}`."""
    path = scope.spec.path.replace("{organization}", scope.source.organization)
    query = query_text(request_params(scope.spec, piece, scope.stream.query))
    return f"GET /api/0/{path}" + (f"?{query}" if query else "")


def first_slice(crawl: Crawl) -> Window | None:
    """The range a crawl asks for first: the first slice of its first gap, as
    `read_sliced` cuts them."""
    return Slicer(crawl.coverage.gaps(crawl.window, crawl.lookback), horizon=crawl.horizon).next()


def described(crawl: Crawl, origin: str) -> str:
    """`<start> to <end> (<where the start comes from>)`: at most 70 characters."""
    window = crawl.window
    read = len(crawl.coverage.ranges)
    if read:
        origin += f"; {read} part{'s' if read > 1 else ''} read"
    return f"{format_datetime(window.start)} to {format_datetime(window.end)} ({origin})"
