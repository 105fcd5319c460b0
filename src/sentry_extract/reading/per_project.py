"""Windowed lists per project (events): projects side by side, each crawled from its own
saved coverage, and the quiet-project check that spares most of their requests."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import timedelta

from sentry_extract.errors import SourceError
from sentry_extract.events import emit
from sentry_extract.model.spec import ParentRow
from sentry_extract.model.windows import Coverage, Crawl, Window
from sentry_extract.reading.base import (
    ReadPlan,
    Scope,
    Session,
    described,
    first_request,
    first_slice,
)
from sentry_extract.records import KEY_SEPARATOR, column_name
from sentry_extract.source.extract import (
    ProjectPage,
    count_events_by_project,
    list_parents,
    read_events,
    select_parents,
)
from sentry_extract.state import StreamState

log = logging.getLogger("sentry_extract")

PROJECTS_SHOWN = 20  # dry run: saved projects listed one by one; the others are counted
RETENTION_MARGIN = timedelta(days=1)  # Explore's counts are not asked that near the edge


def choose_projects(
    scope: Scope, session: Session, listed: list[ParentRow]
) -> tuple[list[ParentRow], int]:
    """The projects `inputs.projects` names (all when it names none); each name that
    matches no project is a problem. Returns them, and how many problems were said."""
    chosen, missing = select_parents(listed, scope.source.projects)
    organization = scope.source.organization
    for slug in missing:
        session.sink.problem(f"project '{slug}' is not in organization '{organization}'; skipped")
    return chosen, len(missing)


class PerProjectReader:
    """Reads each project's window from its saved coverage, projects side by side.
    Projects Sentry's org-wide index shows without new rows in their windows are marked
    read without a request to their (tightly limited) endpoint. A project that fails
    (403, 404, retries spent) is skipped and reported; the others go on."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def plan(self, state: StreamState) -> ReadPlan:
        """One line per project with saved state, then one for every other project."""
        scope = self.scope
        scope.retention.remember(state.retention_days)
        fresh = scope.crawl(Coverage())
        fresh_line = described(fresh, scope.window.origin(Coverage()))
        saved = sorted(state.projects.items()) if scope.stream.mode.merges_by_key else []
        if scope.stream.mode.reads_range or not saved:
            return ReadPlan((f"every project: {fresh_line}",), self._request(fresh))
        lines = []
        crawls = []
        for project, coverage in saved:
            crawl = scope.crawl(coverage)
            crawls.append(crawl)
            lines.append(f"project {project}: {described(crawl, scope.window.origin(coverage))}")
        if len(lines) > PROJECTS_SHOWN:
            hidden = len(lines) - PROJECTS_SHOWN + 1
            lines[PROJECTS_SHOWN - 1 :] = [f"{hidden} more projects, each from its saved state"]
        lines.append(f"other projects: {fresh_line}")
        return ReadPlan(tuple(lines), self._request(crawls[0]))

    def _request(self, crawl: Crawl) -> str:
        return first_request(self.scope, first_slice(crawl))

    def read(self, state: StreamState, session: Session) -> None:
        scope, sink = self.scope, session.sink
        source, spec = scope.source, scope.spec
        assert spec.parents is not None
        scope.retention.remember(state.retention_days)
        listed = list_parents(session.client, spec.parents, source.organization, session.counter)
        projects, problems = choose_projects(scope, session, listed)
        crawls = {p: scope.crawl(state.projects.get(p.values["id"], Coverage())) for p in projects}
        progress = dict(state.projects)
        for project in self._quiet(crawls, session):
            crawl = crawls.pop(project)
            progress[project.values["id"]] = crawl.done
            session.lag.note(project.values["id"], crawl.window, crawl.done)
        for project, crawl in crawls.items():
            session.lag.note(project.values["id"], crawl.window, crawl.coverage)
        items = read_events(
            session.client,
            spec,
            source.organization,
            crawls,
            session.counter,
            source.concurrency,
            max(1, source.memory_budget // 4),
            session.is_cancelled,
            session.kept(scope.retention),
        )
        for item in items:
            sink.check_cancelled()
            project_id = item.project.values["id"]
            crawl = crawls[item.project]
            if isinstance(item, ProjectPage):
                sink.add(item.page.rows, item.page.held_bytes)
                progress[project_id] = item.page.coverage
                session.lag.note(project_id, crawl.window, item.page.coverage)
            elif item.error is not None:
                problem = _skipped(item.project, item.error)
                log.warning("%s: %s", spec.name, problem)
                sink.problem(problem)
                problems += 1
                continue
            else:
                progress[project_id] = crawl.done
                session.lag.note(project_id, crawl.window, crawl.done)
            sink.checkpoint_if_due(scope.with_retention(replace(state, projects=dict(progress))))
        if problems and scope.stream.mode.replaces_rows:
            raise SourceError(f"nothing replaced: {scope.stream.mode} needs every project")
        sink.finish(scope.with_retention(replace(state, projects=dict(progress))))
        if problems:
            sink.mark_partial()

    def _quiet(self, crawls: dict[ParentRow, Crawl], session: Session) -> list[ParentRow]:
        """Projects with nothing new in what is left of their windows: Sentry's org-wide
        count of their events there (one request) is no more than the rows already stored
        there (the lookback re-reads the end of the last run). Only for windows inside
        Sentry's retention (hourly runs): a first run reads every project, and so does a
        backfill."""
        scope = self.scope
        gaps = [gap for c in crawls.values() for gap in c.coverage.gaps(c.window, c.lookback)]
        if not gaps or not scope.spec.skips_quiet_projects:
            return []
        if scope.stream.mode.reads_range:
            return []  # a backfill reads its range again, whatever is stored
        window = Window(min(g.start for g in gaps), max(g.end for g in gaps))
        if window.start < scope.retention.oldest_kept() + RETENTION_MARGIN:
            return []  # Sentry no longer counts what is stored from before its retention
        counts = count_events_by_project(
            session.client, scope.source.organization, window, session.counter
        )
        if counts is None:
            log.info(
                "%s: the org-wide event count is not available; reading every project",
                scope.stream.name,
            )
            return []
        stored = self._stored_by_project(window, session)
        quiet = [
            p for p in crawls if counts.get(p.values["id"], 0) <= stored.get(p.values["id"], 0)
        ]
        emit(
            log,
            logging.INFO,
            "quiet_projects",
            f"{scope.stream.name}: {len(crawls) - len(quiet)} of {len(crawls)} projects have "
            "new events",
            stream=scope.stream.name,
            projects=len(crawls),
            quiet=len(quiet),
        )
        return quiet

    def _stored_by_project(self, window: Window, session: Session) -> Counter[str]:
        """Stored rows per project whose update key lies in `window` (none when the
        mode replaces what is stored, or the key does not start with the project)."""
        stream = self.scope.stream
        project_column = column_name(stream.spec.primary_key[0], stream.column_casing)
        key = stream.primary_key
        if stream.mode.replaces_rows or not key or key[0] != project_column:
            return Counter()
        keys = session.sink.stored_keys(stream.update_key, window)
        return Counter(stored.split(KEY_SEPARATOR, 1)[0] for stored in keys)


def _skipped(project: ParentRow, error: SourceError) -> str:
    reason = error.message
    if error.status in (403, 404):
        reason = f"{error.message} ({error.status})"
    return f"{project.label} skipped: {reason}"
