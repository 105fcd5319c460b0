"""Time series (usage, release health): whole days from the saved watermark, less the
days whose figures still change, in windows the endpoint accepts."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sentry_extract.errors import BadRequestError, RangeTooLargeError
from sentry_extract.events import counted
from sentry_extract.model.spec import Fetch, Params, SeriesPiece
from sentry_extract.model.windows import Coverage, Window, day_ceiling
from sentry_extract.reading.base import ReadPlan, Scope, Session, described, first_request
from sentry_extract.source.series import SNUBA_LIMIT
from sentry_extract.state import StreamState

log = logging.getLogger("sentry_extract")


class TimeSeriesReader:
    """Reads `series_days` a request at most (the spec's `series` function makes the
    requests of one window). A stream whose spec `halves` asks again for half as many
    days, down to one, when an answer was cut or the range was too large for Sentry."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def plan(self, state: StreamState) -> ReadPlan:
        scope = self.scope
        retention = scope.retention
        retention.remember(state.retention_days)
        crawl = scope.crawl(state.coverage)
        origin = scope.window.origin(state.coverage)
        window = scope.window.whole_days(crawl, state.watermark, scope.spec.late_arrivals)
        if window.start > crawl.window.start:  # what Sentry keeps, not the anchor
            origin = f"Sentry keeps {retention.days} days, {retention.origin}"
        days = replace(crawl, window=window)
        return ReadPlan((described(days, origin),), first_request(scope, None))

    def read(self, state: StreamState, session: Session) -> None:
        scope, sink = self.scope, session.sink
        spec = scope.spec
        scope.retention.remember(state.retention_days)
        crawl = scope.crawl(state.coverage)
        window = scope.window.whole_days(crawl, state.watermark, spec.late_arrivals)
        start = window.start
        path = spec.path_for(scope.source.organization)
        kept = session.kept(scope.retention)

        def fetch(params: Params) -> Any:
            return session.client.get(path, params, session.counter).body

        progress = Coverage().started_at(start)
        session.lag.note("", Window(start, window.end), progress)
        piece_start, days, cut_days = start, spec.series_days, 0
        while piece_start < window.end:
            sink.check_cancelled()
            piece_end = min(piece_start + timedelta(days=days), window.end)
            try:
                piece = self._read_piece(fetch, Window(piece_start, piece_end), days)
            except BadRequestError:
                left = kept(Window(piece_start, window.end))
                if left is None:
                    raise
                # A start before what Sentry keeps: from its first whole day.
                kept_start = min(day_ceiling(left.start), window.end)
                progress = progress.add(Window(piece_start, kept_start))
                piece_start = kept_start
                continue
            if piece is None:  # asked again for half as many days
                days = max(1, days // 2)
                continue
            cut_days += piece.cut
            sink.add(piece.rows)
            progress = progress.add(Window(piece_start, piece_end))
            session.lag.note("", Window(start, window.end), progress)
            sink.checkpoint_if_due(scope.with_retention(replace(state, coverage=progress)))
            piece_start = piece_end
        self._note_cut_days(cut_days, session)
        sink.finish(scope.with_retention(replace(state, coverage=progress)))

    def _read_piece(self, fetch: Fetch, window: Window, days: int) -> SeriesPiece | None:
        """One window of a series, or None when a stream that halves would get more from
        fewer days: Sentry kept only its largest groups (release health keeps
        `5000 // intervals`, silently), or the range was too large for it."""
        spec = self.scope.spec
        assert spec.series is not None
        halves = spec.halves and days > 1
        try:
            piece = spec.series(fetch, window.start, window.end)
        except RangeTooLargeError:
            if not halves:
                raise
            return None
        if piece.cut and halves:
            return None
        return piece

    def _note_cut_days(self, cut_days: int, session: Session) -> None:
        """Days still cut when asked alone: their smallest groups are missing; say so."""
        if not cut_days:
            return
        problem = (
            f"on {counted(cut_days, 'day')} Sentry answered only its largest groups, even "
            f"for that day alone (it keeps {SNUBA_LIMIT:,} a day); the rows of the smaller "
            "groups of those days are missing"
        )
        log.warning("%s: %s", self.scope.stream.name, problem)
        session.sink.problem(problem, partial=True)
