"""Reading one stream: pages from the source, typed batches to the target's writer."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sentry_extract.config.connections import SentryConnection
from sentry_extract.config.replication import StreamConfig
from sentry_extract.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RangeTooLargeError,
    RunCancelled,
    SourceError,
)
from sentry_extract.events import counted, emit
from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import Fetch, Params, Parent, ParentRow, SeriesPiece, Shape
from sentry_extract.model.windows import (
    SECOND,
    Coverage,
    Crawl,
    IncrementalWindow,
    Window,
    day_ceiling,
    whole_second,
)
from sentry_extract.pipeline.results import STATUS_PARTIAL, StreamResult
from sentry_extract.records import (
    KEY_SEPARATOR,
    RecordTyper,
    column_name,
    fill_missing_keys,
    key_values,
)
from sentry_extract.source.client import RequestCounter
from sentry_extract.source.extract import (
    ProjectPage,
    SlicedPage,
    count_events_by_project,
    list_parents,
    oldest_moment,
    read_children,
    read_events,
    read_one,
    read_organization_stream,
    read_sliced,
    select_parents,
    stream_path,
)
from sentry_extract.source.retention import Retention
from sentry_extract.source.series import SNUBA_LIMIT
from sentry_extract.state import StreamState
from sentry_extract.targets.base import StreamWriter

if TYPE_CHECKING:
    from sentry_extract.pipeline.run import RunContext

log = logging.getLogger("sentry_extract")


CHECKPOINT_ROWS = 500  # rows between checkpoints, at least: a killed run reads these again
MAX_CHECKED = 1_000  # stored issues missing from a reconcile asked for one by one, at most
RETENTION_MARGIN = timedelta(days=1)  # Explore's counts are not asked that near the edge


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


MIN_ROWS_FOR_RATES = 100  # fewer rows say nothing about rates


class TypedCost:
    """How many bytes of Arrow batch the rows of a stream become, per byte they hold.

    Undecoded JSON becomes its text once (about one to one); decoded rows hold several
    times their typed size. Starts at one to one, then follows the last batch."""

    def __init__(self) -> None:
        self.ratio = 1.0

    def estimate(self, held_bytes: int) -> int:
        return int(held_bytes * self.ratio)

    def observe(self, held_bytes: int, typed_bytes: int) -> None:
        if held_bytes > 0:
            self.ratio = typed_bytes / held_bytes


def describe_lag(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds % 60):02d}s"


class Loader:
    """Reads one stream's pages and hands typed batches to its writer.

    Batches are cut by rows, and by what they hold in memory: the rows read (as their
    pages count them) and, once typed, their Arrow batch, together within a quarter of
    the memory budget. In modes that commit as they go, checkpoints commit the rows read
    so far together with the coverage they complete.
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
        self.buffered_bytes = 0  # what the buffered rows hold in memory
        self.seen: set[str] | None = None  # keys read, while the stream reconciles
        self.batch_bytes = max(1, context.source.memory_budget // 4)
        self.typed = TypedCost()
        self.read = 0
        self.run_started_at: datetime = context.replication.run_started_at
        self.checkpoints = Checkpoints(
            context.source.checkpoint_every.total_seconds(), context.settings.clock
        )
        self.started = context.settings.clock()
        self.progress: dict[str, tuple[Window, Coverage]] = {}  # each crawl's window and place
        self.sampled = False  # a page came from sampled data (reported once)
        self.retention: Retention = context.retention
        self.window = stream_window(stream, context.source, self.run_started_at)

    def check_cancelled(self) -> None:
        if self.context.settings.cancelled.is_set():
            raise RunCancelled(self.stream.name)

    def _add(self, rows: list[dict[str, Any]], held_bytes: int = 0) -> None:
        """Buffer a page's rows; a batch that the page would take past its bytes is
        written first, so a batch holds at most one page more than its share."""
        if self.buffer and self._batch_cost(self.buffered_bytes + held_bytes) > self.batch_bytes:
            self._flush()
        self.read += len(rows)
        emit(
            log,
            logging.INFO,
            "page",
            f"{self.stream.name}: {counted(self.read, 'row')} read",
            stream=self.stream.name,
            rows=len(rows),
            total_rows=self.read,
            requests=self.counter.requests,
        )
        self.buffer.extend(rows)
        self.buffered_bytes += held_bytes
        self.checkpoints.add(len(rows))
        if (
            len(self.buffer) >= self.context.settings.batch_rows
            or self._batch_cost(self.buffered_bytes) >= self.batch_bytes
        ):
            self._flush()

    def _batch_cost(self, held_bytes: int) -> int:
        """Rows holding `held_bytes`, and their Arrow batch once typed."""
        return held_bytes + self.typed.estimate(held_bytes)

    def _flush(self) -> None:
        if self.buffer:
            rows, held_bytes = self.buffer, self.buffered_bytes
            self.buffer, self.buffered_bytes = [], 0
            typed = self.typer.to_batch(rows)
            del rows  # the pages go before the batch is written
            self.typed.observe(held_bytes, typed.nbytes)
            batch, keyless = fill_missing_keys(typed, self.stream.primary_key)
            del typed
            if keyless:
                columns = ", ".join(self.stream.primary_key)
                log.warning(
                    "%s: %d rows came without a value for %s; they are stored with an empty "
                    "key, where rows with the same key replace each other",
                    self.stream.name,
                    keyless,
                    columns,
                )
            if self.seen is not None:
                self.seen.update(key_values(batch, self.stream.primary_key).to_pylist())
            self.writer.write(batch)

    def _checkpoint_if_due(self, state: StreamState) -> None:
        if self.stream.mode.commits_as_it_goes and self.checkpoints.is_due():
            self.check_cancelled()
            self._flush()
            self.writer.checkpoint(state if self.stream.mode.keeps_state else None)
            self.checkpoints.done()
            self.result.checkpoints = self.checkpoints.count
            self.result.rows = self.checkpoints.committed_rows  # kept, even if the run stops
            emit(
                log,
                logging.INFO,
                "checkpoint",
                f"{self.stream.name}: checkpoint {self.checkpoints.count}, "
                f"{counted(self.checkpoints.committed_rows, 'row')} committed",
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

    def _crawl(self, coverage: Coverage) -> Crawl:
        return self.window.crawl(coverage, self.retention.period)

    def _kept(self, asked: Window) -> Window | None:
        """After Sentry refused `asked` with a 400: the part of it Sentry keeps (empty when
        none), once the retention is learned; None when the start is not the reason."""
        if not self.retention.learn(self.counter):
            return None
        oldest = whole_second(self.retention.oldest_kept()) + SECOND
        if asked.start >= oldest:
            return None
        return Window(min(oldest, asked.end), asked.end)

    def _state(self, state: StreamState) -> StreamState:
        """`state` with the retention this run learned (kept for the next runs)."""
        learned = self.retention.learned
        return state if learned is None else replace(state, retention_days=learned)

    def load(self) -> None:
        """Read the whole stream into the writer, the way its shape and parent say."""
        spec = self.stream.spec
        if spec.shape is Shape.SERIES:
            self.load_series()
        elif spec.shape is Shape.WINDOWED and spec.parent is Parent.PROJECT:
            self.load_per_project()
        elif spec.shape is Shape.WINDOWED:
            self.load_windowed()
        elif spec.fans_out:
            self.load_children()
        else:
            self.load_organization_stream()

    def load_organization_stream(self) -> None:
        spec = self.stream.spec
        pages = read_organization_stream(
            self.context.client, spec, self.context.source.organization, self.counter
        )
        if spec.preflight and self.context.organization is not None:
            pages = iter([[self.context.organization]])  # read once, by the preflight
        vanishing = spec.soft_deletes and self.stream.mode is Mode.INCREMENTAL
        self.seen = set() if vanishing else None
        for rows in pages:
            self.check_cancelled()
            self._add(rows)
        if vanishing:  # the whole list was read: a stored key missing from it is gone
            self._flush()
            gone = self.writer.live_keys(None, None) - (self.seen or set())
            self.writer.mark_deleted(gone, self.run_started_at)
            self._reconciled(len(gone))
        self._finish(None)

    def load_windowed(self) -> None:
        """Issues: one crawl over the window, in slices, with checkpoints. When a reconcile
        is due, the crawl covers the whole window instead, and stored issues it did not
        meet are checked one by one, then stamped `_deleted_at` if Sentry has them no more."""
        spec = self.stream.spec
        previous = self.writer.load_state()
        self.retention.remember(previous.retention_days)
        reconciling = self._is_reconcile_due(previous)
        if reconciling:
            crawl = self.window.whole(self.retention.period)
            self.seen = set()
        else:
            crawl = self._crawl(previous.coverage)
        log.debug("%s: window %s to %s", self.stream.name, crawl.window.start, crawl.window.end)
        path = stream_path(spec, self.context.source.organization)
        pages = read_sliced(
            self.context.client, spec, path, crawl, self.counter, self.stream.query, kept=self._kept
        )
        start = crawl.window.start
        oldest_listed: datetime | None = None
        for page in pages:
            self.check_cancelled()
            self._note_sampled(page)
            if reconciling:
                oldest_listed = oldest_moment(page.rows, spec.update_key or "", oldest_listed)
            self._add(page.rows, page.held_bytes)
            covered = (
                previous.coverage.merged(page.coverage, start) if reconciling else page.coverage
            )
            self._checkpoint_if_due(self._state(replace(previous, coverage=covered)))
        done = crawl.done
        self.progress[""] = (crawl.window, done)
        if reconciling:
            done = previous.coverage.merged(done, start)
            self._reconcile_issues(crawl.window, oldest_listed)
        reconciled_at = self.run_started_at if reconciling else previous.reconciled_at
        self._finish(self._state(replace(previous, coverage=done, reconciled_at=reconciled_at)))

    def _note_sampled(self, page: SlicedPage) -> None:
        if page.sampled and not self.sampled:
            self.sampled = True
            problem = (
                "Sentry answered some pages from sampled data (meta.dataScanned: partial); "
                "rows may be missing there: read a shorter range again with backfill"
            )
            log.warning("%s: %s", self.stream.name, problem)
            self.result.problems.append(problem)
            self.result.status = STATUS_PARTIAL

    def _is_reconcile_due(self, previous: StreamState) -> bool:
        every = self.context.source.reconcile_every
        if not self.stream.spec.soft_deletes:
            return False  # only what can vanish from Sentry's window is reconciled
        if self.stream.mode is not Mode.INCREMENTAL or every is None:
            return False
        last = previous.reconciled_at
        return last is None or self.run_started_at - last >= every

    def _reconcile_issues(self, window: Window, oldest_listed: datetime | None) -> None:
        """Stored issues Sentry still keeps that the crawl did not meet: each is asked for
        (a new event during the crawl moves an issue past the cursor). Those Sentry answers
        404 for were deleted; those it answers with another issue were merged into it.
        Issues last seen before what Sentry keeps aged out: they stay, as history."""
        assert self.seen is not None
        self._flush()
        if oldest_listed is not None:
            self.retention.observe(oldest_listed)
        missing = self._missing_issues(window, oldest_listed)
        if len(missing) > MAX_CHECKED:
            problem = (
                f"{len(missing)} stored issues that Sentry should still keep are missing from "
                f"its list; none was marked deleted (more than {MAX_CHECKED}: set "
                "inputs.retention_days if the server keeps less than "
                f"{self.retention.days} days)"
            )
            log.warning("%s: %s", self.stream.name, problem)
            self.result.problems.append(problem)
            self.result.status = STATUS_PARTIAL
            return
        gone: list[str] = []
        merged: dict[str, str] = {}
        for key in missing:
            self.check_cancelled()
            answered = self._ask_issue(key)
            if answered is None:
                gone.append(key)
            elif answered != key:
                merged[key] = answered
        self._flush()
        self.writer.mark_deleted([*gone, *merged], self.run_started_at, merged)
        self._reconciled(len(gone) + len(merged), len(merged))

    def _missing_issues(self, window: Window, oldest_listed: datetime | None) -> list[str]:
        """Live stored issues last seen since what Sentry keeps, that the crawl did not
        meet. Unless `inputs.retention_days` says what Sentry keeps, issues older than any
        Sentry still lists may have aged out: Sentry is asked what it keeps first (once a
        run); if it cannot tell and no run learned it before, those count as aged out."""
        seen = self.seen
        assert seen is not None
        column = self.stream.update_key

        def missing_since(moment: datetime) -> list[str]:
            checked = Window(max(window.start, moment), self.run_started_at)
            return sorted(self.writer.live_keys(column, checked) - seen)

        missing = missing_since(self.retention.oldest_kept())
        newest_unlisted = oldest_listed or self.run_started_at
        if missing and self.retention.configured is None:  # a learned figure is checked again
            ambiguous = self.writer.live_keys(
                column, Window(self.retention.oldest_kept(), newest_unlisted)
            )
            if ambiguous - seen:
                if self.retention.learn(self.counter):
                    return missing_since(self.retention.oldest_kept())
                return missing_since(max(self.retention.oldest_kept(), newest_unlisted))
        return missing

    def _ask_issue(self, key: str) -> str | None:
        """Ask Sentry for one issue: None when it is gone (404); else the id of the issue
        that answers, stored anew: the same, or the one it was merged into (Sentry serves
        the survivor for a merged id, with its own id and no redirect)."""
        if self.stream.primary_key != ("id",):
            return None  # a key of the user's choosing: no way to ask for it
        organization = self.context.source.organization
        row = read_one(self.context.client, self.stream.spec, organization, key, self.counter)
        if row is None:
            return None
        if row.get("id") is None:
            return key
        self._add([row])
        return str(row["id"])

    def _reconciled(self, deleted: int, merged: int = 0) -> None:
        self.result.reconciled = True
        self.result.deleted = deleted
        into = f" ({merged} merged into other issues)" if merged else ""
        emit(
            log,
            logging.INFO,
            "reconcile",
            f"{self.stream.name}: reconciled with Sentry, {deleted} rows marked deleted{into}",
            stream=self.stream.name,
            deleted=deleted,
            merged=merged,
        )

    def load_per_project(self) -> None:
        """A windowed list per project (events): projects side by side, each from its own
        saved coverage. Projects Sentry's org-wide index shows without new rows in their
        windows are marked read without a request to their (tightly limited) endpoint."""
        source = self.context.source
        client = self.context.client
        previous = self.writer.load_state()
        self.retention.remember(previous.retention_days)
        assert self.stream.spec.parents is not None
        every_project = list_parents(
            client, self.stream.spec.parents, source.organization, self.counter
        )
        projects, missing = select_parents(every_project, source.projects)
        self._missing_projects(missing)
        crawls = {
            project: self._crawl(previous.projects.get(project.values["id"], Coverage()))
            for project in projects
        }
        progress = dict(previous.projects)
        for project in self._quiet_projects(crawls):
            crawl = crawls.pop(project)
            done = crawl.done
            progress[project.values["id"]] = done
            self.progress[project.values["id"]] = (crawl.window, done)
        for project, crawl in crawls.items():
            self.progress[project.values["id"]] = (crawl.window, crawl.coverage)
        items = read_events(
            client,
            self.stream.spec,
            source.organization,
            crawls,
            self.counter,
            source.concurrency,
            max(1, source.memory_budget // 4),
            self.context.settings.cancelled.is_set,
            self._kept,
        )
        for item in items:
            self.check_cancelled()
            if isinstance(item, ProjectPage):
                self._add(item.page.rows, item.page.held_bytes)
                project_id = item.project.values["id"]
                progress[project_id] = item.page.coverage
                self.progress[project_id] = (crawls[item.project].window, item.page.coverage)
            elif item.error is not None:
                problem = self._project_problem(item.project, item.error)
                log.warning("%s: %s", self.stream.name, problem)
                self.result.problems.append(problem)
                continue
            else:
                crawl = crawls[item.project]
                done = crawl.done
                progress[item.project.values["id"]] = done
                self.progress[item.project.values["id"]] = (crawl.window, done)
            self._checkpoint_if_due(self._state(replace(previous, projects=dict(progress))))
        if self.result.problems and self.stream.mode.replaces_rows:
            raise SourceError(f"nothing replaced: {self.stream.mode} needs every project")
        self._finish(self._state(replace(previous, projects=dict(progress))))
        if self.result.problems:
            self.result.status = STATUS_PARTIAL

    def _quiet_projects(self, crawls: dict[ParentRow, Crawl]) -> list[ParentRow]:
        """Projects with nothing new in what is left of their windows: Sentry's org-wide
        count of their events there (one request) is no more than the rows already stored
        there (the lookback re-reads the end of the last run). Only for windows inside
        Sentry's retention (hourly runs): a first run reads every project, and so does a
        backfill."""
        gaps = [gap for c in crawls.values() for gap in c.coverage.gaps(c.window, c.lookback)]
        if not gaps or not self.stream.spec.skips_quiet_projects:
            return []
        if self.stream.mode.reads_range:
            return []  # a backfill reads its range again, whatever is stored
        window = Window(min(g.start for g in gaps), max(g.end for g in gaps))
        if window.start < self.retention.oldest_kept() + RETENTION_MARGIN:
            return []  # Sentry no longer counts what is stored from before its retention
        counts = count_events_by_project(
            self.context.client, self.context.source.organization, window, self.counter
        )
        if counts is None:
            log.info(
                "%s: the org-wide event count is not available; reading every project",
                self.stream.name,
            )
            return []
        stored = self._stored_by_project(window)
        quiet = [
            p for p in crawls if counts.get(p.values["id"], 0) <= stored.get(p.values["id"], 0)
        ]
        emit(
            log,
            logging.INFO,
            "quiet_projects",
            f"{self.stream.name}: {len(crawls) - len(quiet)} of {len(crawls)} projects have "
            "new events",
            stream=self.stream.name,
            projects=len(crawls),
            quiet=len(quiet),
        )
        return quiet

    def _stored_by_project(self, window: Window) -> Counter[str]:
        """Stored rows per project whose update key lies in `window` (none when the
        mode replaces what is stored, or the key does not start with the project)."""
        project_column = column_name(self.stream.spec.primary_key[0], self.stream.column_casing)
        key = self.stream.primary_key
        if self.stream.mode.replaces_rows or not key or key[0] != project_column:
            return Counter()
        keys = self.writer.live_keys(self.stream.update_key, window)
        return Counter(stored.split(KEY_SEPARATOR, 1)[0] for stored in keys)

    def load_series(self) -> None:
        """Time series (usage, release health): whole days from the saved watermark, less
        the days whose figures still change, in windows the endpoint accepts."""
        spec = self.stream.spec
        assert spec.series is not None
        previous = self.writer.load_state()
        self.retention.remember(previous.retention_days)
        crawl = self._crawl(previous.coverage)
        window = self.window.whole_days(crawl, previous.watermark, spec.late_arrivals)
        start = window.start
        path = spec.path_for(self.context.source.organization)

        def fetch(params: Params) -> Any:
            return self.context.client.get(path, params, self.counter).body

        progress = Coverage().started_at(start)
        self.progress[""] = (Window(start, window.end), progress)
        piece_start, days, cut_days = start, spec.series_days, 0
        while piece_start < window.end:
            self.check_cancelled()
            piece_end = min(piece_start + timedelta(days=days), window.end)
            try:
                piece = self._read_series_piece(fetch, Window(piece_start, piece_end), days)
            except BadRequestError:
                kept = self._kept(Window(piece_start, window.end))
                if kept is None:
                    raise
                # A start before what Sentry keeps: from its first whole day.
                kept_start = min(day_ceiling(kept.start), window.end)
                progress = progress.add(Window(piece_start, kept_start))
                piece_start = kept_start
                continue
            if piece is None:  # asked again for half as many days
                days = max(1, days // 2)
                continue
            cut_days += piece.cut
            self._add(piece.rows)
            progress = progress.add(Window(piece_start, piece_end))
            self.progress[""] = (Window(start, window.end), progress)
            self._checkpoint_if_due(self._state(replace(previous, coverage=progress)))
            piece_start = piece_end
        self._note_cut_days(cut_days)
        self._finish(self._state(replace(previous, coverage=progress)))

    def _read_series_piece(self, fetch: Fetch, window: Window, days: int) -> SeriesPiece | None:
        """One window of a series, or None when a stream that halves would get more from
        fewer days: Sentry kept only its largest groups (release health keeps
        `5000 // intervals`, silently), or the range was too large for it."""
        spec = self.stream.spec
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

    def _note_cut_days(self, cut_days: int) -> None:
        """Days still cut when asked alone: their smallest groups are missing; say so."""
        if not cut_days:
            return
        problem = (
            f"on {counted(cut_days, 'day')} Sentry answered only its largest groups, even "
            f"for that day alone (it keeps {SNUBA_LIMIT:,} a day); the rows of the smaller "
            "groups of those days are missing"
        )
        log.warning("%s: %s", self.stream.name, problem)
        self.result.problems.append(problem)
        self.result.status = STATUS_PARTIAL

    def load_children(self) -> None:
        """One list per parent (release, monitor, project, or issue and tag key). A parent
        that is gone (404) or forbidden (403) is skipped and reported; the others go on."""
        spec = self.stream.spec
        source = self.context.source
        previous = self.writer.load_state() if spec.is_incremental else StreamState()
        coverage = previous.coverage
        assert spec.parents is not None
        if spec.has_windowed_parents:
            parents, coverage = self._changed_parents(previous)
        else:
            parents = list_parents(
                self.context.client, spec.parents, source.organization, self.counter
            )
            if spec.parent is Parent.PROJECT:  # those `inputs.projects` names
                parents, missing = select_parents(parents, source.projects)
                self._missing_projects(missing)
            coverage = Coverage(self.run_started_at)
        if spec.parents.by_tag_key:
            parents = [parent.with_tag_key(key) for parent in parents for key in source.tag_keys]
        stop_before = self.window.stop_before(previous.watermark) if spec.update_key else None
        capped = failed = 0
        for parent in parents:
            self.check_cancelled()
            try:
                pages = read_children(
                    self.context.client,
                    spec,
                    source.organization,
                    parent,
                    self.counter,
                    stop_before,
                )
                for page in pages:
                    capped += page.capped
                    self._add(page.rows)
                    self._checkpoint_if_due(previous)  # rows only: the state moves at the end
            except AuthenticationError:
                raise
            except (PermissionDeniedError, NotFoundError) as error:
                if spec.has_windowed_parents and error.status == 404:
                    continue  # merged or deleted since the window listed it
                self._parent_problem(parent, error)
                failed += 1
        if capped:
            self.result.problems.append(
                f"{capped} lists stopped at Sentry's cap of {spec.row_cap:,} rows; the values "
                "seen least recently are not in the table"
            )
        if failed and self.stream.mode.replaces_rows:
            raise SourceError(
                f"nothing replaced: {self.stream.mode} needs every {spec.parent.value}"
            )
        self._finish(None if failed else replace(previous, coverage=coverage))
        if self.result.problems:
            self.result.status = STATUS_PARTIAL

    def _changed_parents(self, previous: StreamState) -> tuple[list[ParentRow], Coverage]:
        """The parents seen in the stream's window (since the last run, less the lookback),
        read from the parent stream's list; and the coverage once they are done."""
        parents = self.stream.spec.parents
        assert parents is not None
        crawl = self._crawl(previous.coverage)
        crawl = Crawl(crawl.window, Coverage(), crawl.lookback)  # the parents, not the children
        path = stream_path(parents.stream, self.context.source.organization)
        found: dict[str, ParentRow] = {}
        pages = read_sliced(
            self.context.client, parents.stream, path, crawl, self.counter, kept=self._kept
        )
        for page in pages:
            self.check_cancelled()
            for row in page.rows:
                parent = parents.parent_of(row)
                if parent is not None:
                    found.setdefault(parent.label, parent)
        done = previous.coverage.started_at(crawl.window.start).add(crawl.window)
        return list(found.values()), done

    def _missing_projects(self, slugs: list[str]) -> None:
        """Projects named in `inputs.projects` that the organization does not have."""
        organization = self.context.source.organization
        for slug in slugs:
            self.result.problems.append(
                f"project '{slug}' is not in organization '{organization}'; skipped"
            )

    def _parent_problem(self, parent: ParentRow, error: SourceError) -> None:
        problem = f"{parent.label} skipped: {error.message} ({error.status})"
        log.warning("%s: %s", self.stream.name, problem)
        self.result.problems.append(problem)

    def behind(self) -> dict[str, Any] | None:
        """Figures and advice when the stream cannot keep up, else None: its watermark is
        behind the run's start (the run ended first), or rows arrive in Sentry faster than
        this run read them."""
        if not self.progress:
            return None
        started = self.run_started_at
        crawls = list(self.progress.values())
        lag = max(c.started_at(w.start).lag(started) for w, c in crawls).total_seconds()
        covered = sum(coverage.measure(window) for window, coverage in crawls)
        elapsed = max(self.context.settings.clock() - self.started, 1e-3)
        read = self.read / elapsed * 60
        arriving = self.read / covered * 60 if covered > 0 else 0.0
        slower = self.read >= MIN_ROWS_FOR_RATES and arriving > read
        if lag <= 0 and not slower:
            return None
        advice = (
            "raise the rate limits (inputs.rate_limit, or ask Sentry for more), narrow "
            "inputs.projects, or read a lighter stream (issues instead of events)"
        )
        if not slower:
            advice = "the next run goes on from there; if this repeats, " + advice
        return {
            "lag_seconds": round(lag),
            "rows_per_minute_read": round(read),
            "rows_per_minute_arriving": round(arriving),
            "message": (
                f"falling behind: the watermark is {describe_lag(lag)} behind the run's start; "
                f"read {read:,.0f} rows a minute while about {arriving:,.0f} arrive; {advice}"
            ),
        }

    def _project_problem(self, project: ParentRow, error: SourceError) -> str:
        reason = error.message
        if error.status in (403, 404):
            reason = f"{error.message} ({error.status})"
        return f"{project.label} skipped: {reason}"


def stream_window(
    stream: StreamConfig, source: SentryConnection, started: datetime
) -> IncrementalWindow:
    """The rule for the time range a stream's run reads."""
    return IncrementalWindow(
        stream.mode, started, source.anchor_date, source.lookback, stream.backfill_range
    )
