"""Reading one stream: pages from the source, typed batches to the target's writer."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sentry_extract.config.connections import SentryConnection
from sentry_extract.config.replication import StreamConfig
from sentry_extract.errors import SentryExtractError, SourceError
from sentry_extract.events import emit
from sentry_extract.pipeline.results import STATUS_PARTIAL, StreamResult
from sentry_extract.records import RecordTyper
from sentry_extract.source.client import RequestCounter
from sentry_extract.source.extract import (
    Project,
    ProjectDone,
    list_projects,
    read_events,
    read_organization_stream,
    select_projects,
)
from sentry_extract.source.streams import ORGANIZATIONS, Shape
from sentry_extract.source.windows import Window, full_window, incremental_window
from sentry_extract.state import StreamState
from sentry_extract.targets.base import StreamWriter

if TYPE_CHECKING:
    from sentry_extract.pipeline.run import RunContext

log = logging.getLogger("sentry_extract")


class RunCancelled(SentryExtractError):
    """The run was stopped (a 401 elsewhere, or a signal) before this stream finished."""


class Loader:
    """Reads one stream's pages and hands typed batches to its writer."""

    def __init__(
        self,
        context: RunContext,
        stream: StreamConfig,
        writer: StreamWriter,
        typer: RecordTyper,
        counter: RequestCounter,
        result: StreamResult,
    ) -> None:
        self.context = context
        self.stream = stream
        self.writer = writer
        self.typer = typer
        self.counter = counter
        self.result = result
        self.buffer: list[dict[str, Any]] = []
        self.read = 0
        self.run_started_at: datetime = context.replication.run_started_at

    def check_cancelled(self) -> None:
        if self.context.settings.cancelled.is_set():
            raise RunCancelled(self.stream.name)

    def _add(self, rows: list[dict[str, Any]]) -> None:
        self.read += len(rows)
        emit(
            log,
            logging.INFO,
            "page",
            f"{self.stream.name}: {self.read} rows read",
            stream=self.stream.name,
            rows=len(rows),
            total_rows=self.read,
            requests=self.counter.requests,
        )
        self.buffer.extend(rows)
        if len(self.buffer) >= self.context.settings.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write(self.typer.to_batch(self.buffer))
            self.buffer = []

    def _window(self, watermark: datetime | None) -> Window:
        return stream_window(self.stream, self.context.source, watermark, self.run_started_at)

    def load_organization_stream(self) -> None:
        spec = self.stream.spec
        window = None
        if spec.shape is Shape.WINDOWED:
            window = self._window(self.writer.load_state().watermark)
            log.debug("%s: window %s to %s", self.stream.name, window.start, window.end)
        pages = read_organization_stream(
            self.context.client,
            spec,
            self.context.source.organization,
            self.counter,
            window,
            self.stream.query,
        )
        if spec is ORGANIZATIONS and self.context.organization is not None:
            pages = iter([[self.context.organization]])  # read once, by the preflight
        for rows in pages:
            self.check_cancelled()
            self._add(rows)
        self._flush()
        if spec.shape is Shape.WINDOWED and self.stream.mode.keeps_state:
            self.writer.checkpoint(StreamState(watermark=self.run_started_at))

    def load_events(self) -> None:
        source = self.context.source
        client = self.context.client
        previous = self.writer.load_state()
        every_project = list_projects(client, source.organization, self.counter)
        projects, missing = select_projects(every_project, source.projects)
        for slug in missing:
            self.result.problems.append(
                f"project '{slug}' is not in organization '{source.organization}'; skipped"
            )
        windows = {p: self._window(previous.project_watermarks.get(p.id)) for p in projects}
        done: dict[str, datetime] = dict(previous.project_watermarks)
        items = read_events(
            client,
            source.organization,
            windows,
            self.counter,
            source.concurrency,
            self.context.settings.cancelled.is_set,
        )
        for item in items:
            self.check_cancelled()
            if not isinstance(item, ProjectDone):
                self._add(item.rows)
                continue
            if item.error is not None:
                problem = self._project_problem(item.project, item.error)
                log.warning("%s: %s", self.stream.name, problem)
                self.result.problems.append(problem)
                continue
            done[item.project.id] = self.run_started_at
            self._flush()
            if self.stream.mode.keeps_state:
                self.writer.checkpoint(StreamState(project_watermarks=dict(done)))
        self._flush()
        if self.result.problems:
            if self.stream.mode.replaces_rows:
                raise SourceError(f"nothing replaced: {self.stream.mode} needs every project")
            self.result.status = STATUS_PARTIAL

    def _project_problem(self, project: Project, error: SourceError) -> str:
        reason = error.message
        if error.status in (403, 404):
            reason = f"{error.message} ({error.status})"
        return f"project '{project.slug}' skipped: {reason}"


def stream_window(
    stream: StreamConfig, source: SentryConnection, watermark: datetime | None, started: datetime
) -> Window:
    """The time range a windowed stream asks for: by mode, from the saved watermark."""
    if stream.mode.reads_range and stream.backfill_range is not None:
        return stream.backfill_range
    if stream.mode.merges_by_key:
        return incremental_window(watermark, source.anchor_date, started, source.lookback)
    return full_window(source.anchor_date, started)
