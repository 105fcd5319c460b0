"""Reconcile: stored rows that vanished from Sentry are stamped `_deleted_at`.

A windowed list (issues) is reconciled every `inputs.reconcile_every`: its crawl then
covers the whole window, and each stored issue Sentry should still keep that the crawl
did not meet is asked for by its key. Those Sentry answers 404 for were deleted; those it
answers with another issue were merged into it. Issues last seen before what Sentry
keeps aged out: they stay, as history.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sentry_extract.events import emit
from sentry_extract.model.modes import Mode
from sentry_extract.model.windows import Window
from sentry_extract.reading.base import Scope, Session
from sentry_extract.source.extract import read_one
from sentry_extract.state import StreamState

log = logging.getLogger("sentry_extract")

MAX_CHECKED = 1_000  # stored issues missing from a reconcile asked for one by one, at most


def is_reconcile_due(scope: Scope, previous: StreamState) -> bool:
    """Only what can vanish from Sentry's window is reconciled, in incremental mode, and
    once `inputs.reconcile_every` has passed since the last time."""
    every = scope.source.reconcile_every
    if not scope.spec.soft_deletes:
        return False
    if scope.stream.mode is not Mode.INCREMENTAL or every is None:
        return False
    last = previous.reconciled_at
    return last is None or scope.started - last >= every


def report_reconciled(session: Session, stream: str, deleted: int, merged: int = 0) -> None:
    session.sink.reconciled(deleted)
    into = f" ({merged} merged into other issues)" if merged else ""
    emit(
        log,
        logging.INFO,
        "reconcile",
        f"{stream}: reconciled with Sentry, {deleted} rows marked deleted{into}",
        stream=stream,
        deleted=deleted,
        merged=merged,
    )


class Reconcile:
    """Compares a windowed stream's stored keys with what its whole-window crawl met
    (`seen`, kept by the sink as rows are written)."""

    def __init__(self, scope: Scope, session: Session, seen: set[str]) -> None:
        self.scope = scope
        self.session = session
        self.seen = seen

    def run(self, window: Window, oldest_listed: datetime | None) -> None:
        """Stored issues Sentry still keeps that the crawl did not meet: each is asked for
        (a new event during the crawl moves an issue past the cursor)."""
        retention, sink, stream = self.scope.retention, self.session.sink, self.scope.stream
        if oldest_listed is not None:
            retention.observe(oldest_listed)
        missing = self._missing(window, oldest_listed)
        if len(missing) > MAX_CHECKED:
            problem = (
                f"{len(missing)} stored issues that Sentry should still keep are missing from "
                f"its list; none was marked deleted (more than {MAX_CHECKED}: set "
                "inputs.retention_days if the server keeps less than "
                f"{retention.days} days)"
            )
            log.warning("%s: %s", stream.name, problem)
            sink.problem(problem, partial=True)
            return
        gone: list[str] = []
        merged: dict[str, str] = {}
        for key in missing:
            sink.check_cancelled()
            answered = self._ask(key)
            if answered is None:
                gone.append(key)
            elif answered != key:
                merged[key] = answered
        sink.mark_deleted([*gone, *merged], self.scope.started, merged)
        report_reconciled(self.session, stream.name, len(gone) + len(merged), len(merged))

    def _missing(self, window: Window, oldest_listed: datetime | None) -> list[str]:
        """Live stored issues last seen since what Sentry keeps, that the crawl did not
        meet. Unless `inputs.retention_days` says what Sentry keeps, issues older than any
        Sentry still lists may have aged out: Sentry is asked what it keeps first (once a
        run); if it cannot tell and no run learned it before, those count as aged out."""
        retention, sink, seen = self.scope.retention, self.session.sink, self.seen
        column = self.scope.stream.update_key
        started = self.scope.started

        def missing_since(moment: datetime) -> list[str]:
            checked = Window(max(window.start, moment), started)
            return sorted(sink.stored_keys(column, checked) - seen)

        # One figure for both questions: another stream may learn or remember what Sentry
        # keeps between them, and the missing issues asked with 90 days, then found not
        # ambiguous with 30, stamped issues that had only aged out.
        kept_since = retention.oldest_kept()
        missing = missing_since(kept_since)
        newest_unlisted = oldest_listed or started
        if missing and retention.configured is None:  # a learned figure is checked again
            ambiguous = sink.stored_keys(column, Window(kept_since, newest_unlisted))
            if ambiguous - seen:
                if retention.learn(self.session.counter):
                    return missing_since(retention.oldest_kept())
                return missing_since(max(retention.oldest_kept(), newest_unlisted))
        return missing

    def _ask(self, key: str) -> str | None:
        """Ask Sentry for one issue: None when it is gone (404); else the id of the issue
        that answers, stored anew: the same, or the one it was merged into (Sentry serves
        the survivor for a merged id, with its own id and no redirect)."""
        if self.scope.stream.primary_key != ("id",):
            return None  # a key of the user's choosing: no way to ask for it
        session = self.session
        organization = self.scope.source.organization
        row = read_one(session.client, self.scope.spec, organization, key, session.counter)
        if row is None:
            return None
        if row.get("id") is None:
            return key
        session.sink.add([row])
        return str(row["id"])
