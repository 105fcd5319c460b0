"""Reading one stream: pages from the source, typed batches to the target's writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
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
    Crawl,
    Project,
    ProjectPage,
    list_projects,
    read_events,
    read_organization_stream,
    read_sliced,
    select_projects,
    stream_path,
)
from sentry_extract.source.streams import ORGANIZATIONS, Shape
from sentry_extract.source.windows import Coverage, Window, full_window, incremental_window
from sentry_extract.state import StreamState
from sentry_extract.targets.base import StreamWriter

if TYPE_CHECKING:
    from sentry_extract.pipeline.run import RunContext

log = logging.getLogger("sentry_extract")


class RunCancelled(SentryExtractError):
    """The run was stopped (a 401 elsewhere, or a signal) before this stream finished."""


CHECKPOINT_ROWS = 500  # rows between checkpoints, at least: a killed run reads these again


class Checkpoints:
    """When the rows read so far are committed with the state that covers them.

    At least every `every` seconds while rows arrive, and every `CHECKPOINT_ROWS` rows
    or a twentieth of what the stream has committed, whichever is larger: a killed run reads
    again at most that much, and a long backfill does not spend its time committing.
    """

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every = every
        self.clock = clock
        self.last = clock()
        self.pending_rows = 0
        self.committed_rows = 0
        self.count = 0

    def add(self, rows: int) -> None:
        self.pending_rows += rows

    def is_due(self) -> bool:
        if self.pending_rows >= max(CHECKPOINT_ROWS, self.committed_rows // 20):
            return True
        return self.pending_rows > 0 and self.clock() - self.last >= self.every

    def done(self) -> None:
        self.committed_rows += self.pending_rows
        self.pending_rows = 0
        self.last = self.clock()
        self.count += 1


class Loader:
    """Reads one stream's pages and hands typed batches to its writer.

    Batches are cut by bytes (a quarter of the memory budget) as well as rows. In modes
    that commit as they go, checkpoints commit the rows read so far together with the
    coverage they complete.
    """

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
        self.buffered_bytes = 0
        self.batch_bytes = max(1, context.source.memory_budget // 4)
        self.read = 0
        self.run_started_at: datetime = context.replication.run_started_at
        self.checkpoints = Checkpoints(
            context.source.checkpoint_every.total_seconds(), context.settings.clock
        )

    def check_cancelled(self) -> None:
        if self.context.settings.cancelled.is_set():
            raise RunCancelled(self.stream.name)

    def _add(self, rows: list[dict[str, Any]], nbytes: int = 0) -> None:
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
        self.buffered_bytes += nbytes
        self.checkpoints.add(len(rows))
        if (
            len(self.buffer) >= self.context.settings.batch_rows
            or self.buffered_bytes >= self.batch_bytes
        ):
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write(self.typer.to_batch(self.buffer))
            self.buffer = []
            self.buffered_bytes = 0

    def _checkpoint_if_due(self, state: StreamState) -> None:
        if self.stream.mode.commits_as_it_goes and self.checkpoints.is_due():
            self.check_cancelled()
            self._flush()
            self.writer.checkpoint(state)
            self.checkpoints.done()
            self.result.checkpoints = self.checkpoints.count
            emit(
                log,
                logging.INFO,
                "checkpoint",
                f"{self.stream.name}: checkpoint {self.checkpoints.count}, "
                f"{self.checkpoints.committed_rows} rows committed",
                stream=self.stream.name,
                checkpoints=self.checkpoints.count,
                rows=self.checkpoints.committed_rows,
            )

    def _finish(self, state: StreamState | None) -> None:
        """The last rows; the final state where the mode keeps one."""
        self.check_cancelled()  # a stopped run commits nothing it did not finish
        self._flush()
        if state is not None and self.stream.mode.keeps_state:
            self.writer.checkpoint(state)

    def _crawl(self, coverage: Coverage, watermark: datetime | None) -> Crawl:
        window = stream_window(self.stream, self.context.source, watermark, self.run_started_at)
        if not self.stream.mode.merges_by_key or self.stream.mode.reads_range:
            coverage = Coverage()  # a full read, or a backfill's range: state does not narrow it
        return Crawl(window, coverage, self.context.source.lookback)

    def load_organization_stream(self) -> None:
        spec = self.stream.spec
        if spec.shape is Shape.WINDOWED:
            self.load_windowed()
            return
        pages = read_organization_stream(
            self.context.client, spec, self.context.source.organization, self.counter
        )
        if spec is ORGANIZATIONS and self.context.organization is not None:
            pages = iter([[self.context.organization]])  # read once, by the preflight
        for rows in pages:
            self.check_cancelled()
            self._add(rows)
        self._finish(None)

    def load_windowed(self) -> None:
        """Issues: one crawl over the window, in slices, with checkpoints."""
        spec = self.stream.spec
        previous = self.writer.load_state()
        crawl = self._crawl(previous.coverage, previous.watermark)
        log.debug("%s: window %s to %s", self.stream.name, crawl.window.start, crawl.window.end)
        path = stream_path(spec, self.context.source.organization)
        pages = read_sliced(self.context.client, spec, path, crawl, self.counter, self.stream.query)
        for page in pages:
            self.check_cancelled()
            self._add(page.rows, page.nbytes)
            self._checkpoint_if_due(replace(previous, coverage=page.coverage))
        done = crawl.coverage.started_at(crawl.window.start).add(crawl.window)
        self._finish(replace(previous, coverage=done))

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
        crawls = {
            project: self._crawl(
                previous.projects.get(project.id, Coverage()),
                previous.project_watermarks.get(project.id),
            )
            for project in projects
        }
        progress = dict(previous.projects)
        items = read_events(
            client,
            source.organization,
            crawls,
            self.counter,
            source.concurrency,
            max(1, source.memory_budget // 4),
            self.context.settings.cancelled.is_set,
        )
        for item in items:
            self.check_cancelled()
            if isinstance(item, ProjectPage):
                self._add(item.page.rows, item.page.nbytes)
                progress[item.project.id] = item.page.coverage
            elif item.error is not None:
                problem = self._project_problem(item.project, item.error)
                log.warning("%s: %s", self.stream.name, problem)
                self.result.problems.append(problem)
                continue
            else:
                crawl = crawls[item.project]
                done = crawl.coverage.started_at(crawl.window.start).add(crawl.window)
                progress[item.project.id] = done
            self._checkpoint_if_due(replace(previous, projects=dict(progress)))
        if self.result.problems and self.stream.mode.replaces_rows:
            raise SourceError(f"nothing replaced: {self.stream.mode} needs every project")
        self._finish(replace(previous, projects=dict(progress)))
        if self.result.problems:
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
