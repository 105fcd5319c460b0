"""Windowed lists of the organization (issues, replays, the Explore error index): one
crawl over the stream's window, in slices, oldest first, with checkpoints."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from sentry_extract.reading.base import (
    ReadPlan,
    Scope,
    Session,
    described,
    first_request,
    first_slice,
)
from sentry_extract.reading.reconcile import Reconcile, is_reconcile_due
from sentry_extract.source.extract import SlicedPage, oldest_moment, read_sliced, stream_path
from sentry_extract.state import StreamState

log = logging.getLogger("sentry_extract")


class WindowedListReader:
    """Reads the window from the saved coverage. When a reconcile is due, the crawl
    covers the whole window instead, and the stored rows it did not meet are checked
    (`reconcile.py`)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.sampled = False  # a page came from sampled data (reported once)

    def plan(self, state: StreamState) -> ReadPlan:
        self.scope.retention.remember(state.retention_days)
        crawl = self.scope.crawl(state.coverage)
        origin = self.scope.window.origin(state.coverage)
        return ReadPlan((described(crawl, origin),), first_request(self.scope, first_slice(crawl)))

    def read(self, state: StreamState, session: Session) -> None:
        scope, sink = self.scope, session.sink
        spec = scope.spec
        scope.retention.remember(state.retention_days)
        reconciling = is_reconcile_due(scope, state)
        seen = sink.watch_keys() if reconciling else set()
        crawl = (
            scope.window.whole(scope.retention.period)
            if reconciling
            else scope.crawl(state.coverage)
        )
        log.debug("%s: window %s to %s", spec.name, crawl.window.start, crawl.window.end)
        path = stream_path(spec, scope.source.organization)
        kept = session.kept(scope.retention)
        pages = read_sliced(
            session.client, spec, path, crawl, session.counter, scope.stream.query, kept=kept
        )
        start = crawl.window.start
        oldest_listed: datetime | None = None
        for page in pages:
            sink.check_cancelled()
            self._note_sampled(page, session)
            if reconciling:
                oldest_listed = oldest_moment(page.rows, spec.update_key or "", oldest_listed)
            sink.add(page.rows, page.held_bytes)
            covered = state.coverage.merged(page.coverage, start) if reconciling else page.coverage
            sink.checkpoint_if_due(scope.with_retention(replace(state, coverage=covered)))
        done = crawl.done
        session.lag.note("", crawl.window, done)
        if reconciling:
            done = state.coverage.merged(done, start)
            Reconcile(scope, session, seen).run(crawl.window, oldest_listed)
        reconciled_at = scope.started if reconciling else state.reconciled_at
        sink.finish(
            scope.with_retention(replace(state, coverage=done, reconciled_at=reconciled_at))
        )

    def _note_sampled(self, page: SlicedPage, session: Session) -> None:
        if page.sampled and not self.sampled:
            self.sampled = True
            problem = (
                "Sentry answered some pages from sampled data (meta.dataScanned: partial); "
                "rows may be missing there: read a shorter range again with backfill"
            )
            log.warning("%s: %s", self.scope.stream.name, problem)
            session.sink.problem(problem, partial=True)
