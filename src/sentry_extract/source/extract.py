"""Pages -> rows for each stream shape, with the parameters that stop silent data loss.

Windowed lists (issues, and each project's events) are read in time slices, oldest
slice first, newest first within a slice; every page comes with the crawl's coverage
once its rows are stored, so a run can checkpoint anywhere and the next one resumes
there. Projects' crawls run side by side on a small pool; their pages reach the
reader through a queue bounded in bytes and pages.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from sentry_extract.errors import AuthenticationError, SourceError
from sentry_extract.source.client import RequestCounter, SentryClient
from sentry_extract.source.streams import EVENTS, PAGE_SIZE, PROJECTS, Shape, StreamSpec
from sentry_extract.source.windows import (
    SENTRY_RETENTION,
    Coverage,
    Slicer,
    Window,
    format_datetime,
    read_from,
)

Rows = list[dict[str, Any]]

# Pages read ahead of the writer: the crawl goes on while a batch is copied into
# PostgreSQL. Bounded in bytes (the memory budget) and in pages: pages read but not yet
# committed are what a killed run reads again.
QUEUED_PAGES = 30


@dataclass(frozen=True)
class Project:
    id: str
    slug: str


@dataclass(frozen=True)
class SlicedPage:
    """A page of a windowed list, and the crawl's coverage once its rows are stored."""

    rows: Rows
    nbytes: int
    coverage: Coverage


@dataclass(frozen=True)
class ProjectPage:
    project: Project
    page: SlicedPage


@dataclass(frozen=True)
class ProjectDone:
    project: Project
    error: SourceError | None = None


@dataclass(frozen=True)
class Crawl:
    """Where a windowed crawl starts: its window, what earlier runs read, the lookback."""

    window: Window
    coverage: Coverage
    lookback: timedelta


def request_params(
    spec: StreamSpec, window: Window | None, query: str = ""
) -> dict[str, str | int]:
    params: dict[str, str | int] = dict(spec.params)
    if spec.page_size_param:
        params[spec.page_size_param] = PAGE_SIZE
    if window is not None:
        # start and end always together: one alone is a 400, none means "last 90 days".
        params["start"] = format_datetime(window.start)
        params["end"] = format_datetime(window.end)
    if "query" in params:
        params["query"] = query
    return params


def stream_path(spec: StreamSpec, organization: str, project: str = "") -> str:
    return spec.path.format(organization=organization, project=project)


def read_organization_stream(
    client: SentryClient,
    spec: StreamSpec,
    organization: str,
    counter: RequestCounter,
) -> Iterator[Rows]:
    """Pages of an organization-level stream that has no window (one object, or a list)."""
    path = stream_path(spec, organization)
    params = request_params(spec, None)
    if spec.shape is Shape.SINGLE:
        body = client.get(path, params, counter).body
        if isinstance(body, dict):
            yield [body]
        return
    for page in client.paginate(path, params, counter):
        yield page.rows


def read_sliced(
    client: SentryClient,
    spec: StreamSpec,
    path: str,
    crawl: Crawl,
    counter: RequestCounter,
    query: str = "",
    raw_values: bool = False,
) -> Iterator[SlicedPage]:
    """Every page of a windowed list, slice by slice, oldest slice first.

    Inside a slice pages come newest first (`start` and `end` frozen for every page, so
    rows arriving meanwhile cannot shift the offsets); each page says what is covered
    once it is stored: the slices before it, and the part of its slice above its oldest
    row. The next slice's length follows the rows this one held.
    """
    time_field = spec.update_key or ""
    horizon = crawl.window.end - SENTRY_RETENTION
    slicer = Slicer(crawl.coverage.gaps(crawl.window, crawl.lookback), horizon=horizon)
    progress = crawl.coverage.started_at(crawl.window.start)
    while (piece := slicer.next()) is not None:
        params = request_params(spec, piece, query)
        oldest: datetime | None = None
        rows = 0
        for page in client.paginate(path, params, counter, raw_values):
            rows += len(page.rows)
            oldest = _oldest(page.rows, time_field, oldest)
            if page.last:
                covered = progress.add(piece)
            else:
                done = read_from(oldest, piece) if oldest is not None else None
                covered = progress.add(done) if done is not None else progress
            yield SlicedPage(page.rows, page.nbytes, covered)
        progress = progress.add(piece)
        slicer.record(rows)


def _oldest(rows: Rows, field: str, oldest: datetime | None) -> datetime | None:
    for row in rows:
        moment = _moment(row.get(field))
        if moment is not None and (oldest is None or moment < oldest):
            oldest = moment
    return oldest


def _moment(value: Any) -> datetime | None:
    if type(value) is msgspec.Raw:
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def list_projects(
    client: SentryClient, organization: str, counter: RequestCounter
) -> list[Project]:
    projects: list[Project] = []
    for rows in read_organization_stream(client, PROJECTS, organization, counter):
        projects.extend(Project(str(row["id"]), str(row["slug"])) for row in rows if "slug" in row)
    return projects


def read_project_events(
    client: SentryClient,
    organization: str,
    project: Project,
    crawl: Crawl,
    counter: RequestCounter,
) -> Iterator[SlicedPage]:
    """One project's events, in slices. Row values are undecoded JSON (`msgspec.Raw`),
    for the typer to decode."""
    path = stream_path(EVENTS, organization, project.slug)
    project_id = msgspec.Raw(msgspec.json.encode(project.id))
    for page in read_sliced(client, EVENTS, path, crawl, counter, raw_values=True):
        for row in page.rows:
            row.setdefault("projectID", project_id)
        yield page


EventsItem = ProjectPage | ProjectDone


class PageQueue:
    """A queue bounded in bytes and in items; one item always fits in an empty queue."""

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: deque[tuple[EventsItem | BaseException, int]] = deque()
        self._bytes = 0
        self._condition = threading.Condition()
        self.stopped = False

    def put(self, item: EventsItem | BaseException, nbytes: int = 0) -> None:
        with self._condition:
            while (
                self._items
                and not self.stopped
                and (self._bytes + nbytes > self.max_bytes or len(self._items) >= self.max_items)
            ):
                self._condition.wait(0.1)
            if self.stopped:
                return
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._condition.notify_all()

    def get(self, timeout: float) -> EventsItem | BaseException | None:
        with self._condition:
            if not self._items:
                self._condition.wait(timeout)
            if not self._items:
                return None
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._condition.notify_all()
            return item

    def stop(self) -> None:
        with self._condition:
            self.stopped = True
            self._condition.notify_all()


def read_events(
    client: SentryClient,
    organization: str,
    crawls: Mapping[Project, Crawl],
    counter: RequestCounter,
    concurrency: int,
    queued_bytes: int,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[EventsItem]:
    """Pages of every project's events, projects side by side.

    A project that fails (403, 404, retries exhausted) ends with a `ProjectDone`
    carrying the error; the others go on. A 401 stops everything.
    """
    items = PageQueue(queued_bytes, QUEUED_PAGES)

    def crawl(project: Project) -> None:
        try:
            for page in read_project_events(
                client, organization, project, crawls[project], counter
            ):
                if items.stopped or is_cancelled():
                    return
                items.put(ProjectPage(project, page), page.nbytes)
            items.put(ProjectDone(project))
        except AuthenticationError as error:
            items.put(error)
        except SourceError as error:
            items.put(ProjectDone(project, error))
        except BaseException as error:  # handed to the reader, which re-raises it
            items.put(error)

    pending = len(crawls)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="events")
    try:
        for project in crawls:
            pool.submit(crawl, project)
        while pending:
            item = items.get(timeout=0.2)
            if item is None:
                if is_cancelled():
                    return  # the caller sees the cancellation and commits nothing more
                continue
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, ProjectDone):
                pending -= 1
            yield item
    finally:
        items.stop()
        pool.shutdown(wait=True, cancel_futures=True)


def select_projects(
    projects: Sequence[Project], wanted: Sequence[str] | None
) -> tuple[list[Project], list[str]]:
    """The projects to read (all, or those named) and the named slugs that do not exist."""
    if wanted is None:
        return list(projects), []
    by_slug = {project.slug: project for project in projects}
    by_id = {project.id: project for project in projects}
    chosen = [by_slug.get(name) or by_id.get(name) for name in wanted]
    missing = [name for name, project in zip(wanted, chosen, strict=True) if project is None]
    return [project for project in chosen if project is not None], missing
