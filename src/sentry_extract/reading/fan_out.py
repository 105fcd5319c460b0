"""Lists read once per parent row (release deploys and commits, monitor check-ins,
issue tag values, user feedback per project): the parents come from the stream the spec
names (`Parents`), read whole or, for a windowed one, over the stream's window."""

from __future__ import annotations

import logging
from dataclasses import replace

from sentry_extract.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    SourceError,
)
from sentry_extract.model.spec import Parent, ParentRow, Shape
from sentry_extract.model.windows import Coverage, Crawl
from sentry_extract.reading.base import ReadPlan, Scope, Session, described, first_request
from sentry_extract.reading.per_project import choose_projects
from sentry_extract.source.extract import list_parents, read_children, read_sliced, stream_path
from sentry_extract.state import StreamState

log = logging.getLogger("sentry_extract")


class FanOutReader:
    """One list per parent. A parent that is gone (404) or forbidden (403) is skipped
    and reported; the others go on. A list newest first by its update key (check-ins)
    stops where the last run's began, less the lookback."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def plan(self, state: StreamState) -> ReadPlan:
        scope = self.scope
        windows: tuple[str, ...] = ()
        if scope.spec.is_incremental:
            crawl = scope.window.crawl(state.coverage)
            windows = (described(crawl, scope.window.origin(state.coverage)),)
        return ReadPlan(windows, first_request(scope, None))

    def read(self, state: StreamState, session: Session) -> None:
        scope, sink = self.scope, session.sink
        spec, source = scope.spec, scope.source
        assert spec.parents is not None
        problems = 0
        if spec.has_windowed_parents:
            parents, coverage = self._changed_parents(state, session)
        else:
            parents = list_parents(
                session.client, spec.parents, source.organization, session.counter
            )
            if spec.parent is Parent.PROJECT:  # those `inputs.projects` names
                parents, problems = choose_projects(scope, session, parents)
            coverage = Coverage(scope.started)
        if spec.parents.by_tag_key:
            parents = [parent.with_tag_key(key) for parent in parents for key in source.tag_keys]
        stop_before = scope.window.stop_before(state.watermark) if spec.update_key else None
        capped = failed = 0
        for parent in parents:
            sink.check_cancelled()
            try:
                pages = read_children(
                    session.client, spec, source.organization, parent, session.counter, stop_before
                )
                for page in pages:
                    capped += page.capped
                    sink.add(page.rows)
                    sink.checkpoint_if_due(state)  # rows only: the state moves at the end
            except AuthenticationError:
                raise
            except (PermissionDeniedError, NotFoundError) as error:
                if spec.has_windowed_parents and error.status == 404:
                    continue  # merged or deleted since the window listed it
                problem = f"{parent.label} skipped: {error.message} ({error.status})"
                log.warning("%s: %s", spec.name, problem)
                sink.problem(problem)
                failed += 1
        if capped:
            missing = (
                "the oldest entries are not in the table, unless an earlier run read them"
                if spec.shape is Shape.SINGLE
                else "the values seen least recently are not in the table"
            )
            cap = f"{spec.row_cap:,}"
            sink.problem(f"{capped} lists stopped at Sentry's cap of {cap} rows; {missing}")
            problems += 1
        if failed and scope.stream.mode.replaces_rows:
            raise SourceError(
                f"nothing replaced: {scope.stream.mode} needs every {spec.parent.value}"
            )
        sink.finish(None if failed else replace(state, coverage=coverage))
        if problems or failed:
            sink.mark_partial()

    def _changed_parents(
        self, state: StreamState, session: Session
    ) -> tuple[list[ParentRow], Coverage]:
        """The parents seen in the stream's window (since the last run, less the lookback),
        read from the parent stream's list; and the coverage once they are done."""
        scope = self.scope
        parents = scope.spec.parents
        assert parents is not None
        crawl = scope.crawl(state.coverage)
        crawl = Crawl(crawl.window, Coverage(), crawl.lookback)  # the parents, not the children
        path = stream_path(parents.stream, scope.source.organization)
        kept = session.kept(scope.retention)
        found: dict[str, ParentRow] = {}
        for page in read_sliced(
            session.client, parents.stream, path, crawl, session.counter, kept=kept
        ):
            session.sink.check_cancelled()
            for row in page.rows:
                parent = parents.parent_of(row)
                if parent is not None:
                    found.setdefault(parent.label, parent)
        done = state.coverage.started_at(crawl.window.start).add(crawl.window)
        return list(found.values()), done
