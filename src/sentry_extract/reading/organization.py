"""The organization's own lists (projects, teams, members, releases...) and the
organization itself: one object, or one paginated list, read whole."""

from __future__ import annotations

from collections.abc import Iterator

from sentry_extract.model.modes import Mode
from sentry_extract.reading.base import ReadPlan, Scope, Session, first_request
from sentry_extract.reading.reconcile import report_reconciled
from sentry_extract.source.extract import Rows, read_organization_stream
from sentry_extract.state import StreamState


class OrganizationListReader:
    """Reads the whole list every run. Where rows can vanish from Sentry (soft deletes)
    and the mode keeps what is stored, a stored key missing from the list is stamped
    `_deleted_at`."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def plan(self, state: StreamState) -> ReadPlan:
        return ReadPlan((), first_request(self.scope, None))

    def read(self, state: StreamState, session: Session) -> None:
        stream, sink = self.scope.stream, session.sink
        vanishing = stream.spec.soft_deletes and stream.mode is Mode.INCREMENTAL
        seen = sink.watch_keys() if vanishing else set()
        for rows in self._pages(session):
            sink.check_cancelled()
            sink.add(rows)
        if vanishing:  # the whole list was read: a stored key missing from it is gone
            gone = sink.stored_keys(None, None) - seen
            sink.mark_deleted(gone, self.scope.started)
            report_reconciled(session, stream.name, len(gone))
        sink.finish(None)

    def _pages(self, session: Session) -> Iterator[Rows]:
        spec = self.scope.spec
        if spec.preflight and session.organization is not None:
            return iter([[session.organization]])  # read once, by the run's first request
        organization = self.scope.source.organization
        return read_organization_stream(session.client, spec, organization, session.counter)
