"""Pages -> rows for each stream shape, with the parameters that stop silent data loss.

Events are read one pagination chain per project; chains run side by side on a
small pool and their pages arrive here through a bounded queue, each tagged with
its project, followed by a `ProjectDone` that says whether that project is complete.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from sentry_extract.errors import AuthenticationError, SourceError
from sentry_extract.source.client import RequestCounter, SentryClient
from sentry_extract.source.streams import EVENTS, PAGE_SIZE, PROJECTS, Shape, StreamSpec
from sentry_extract.source.windows import Window, format_datetime

Rows = list[dict[str, Any]]

# Pages read ahead of the writer: about a batch of full events (some 10 MB, kept as raw
# JSON), so the crawl goes on while the writer copies a batch into PostgreSQL.
QUEUED_PAGES = 200


@dataclass(frozen=True)
class Project:
    id: str
    slug: str


@dataclass(frozen=True)
class ProjectPage:
    project: Project
    rows: Rows


@dataclass(frozen=True)
class ProjectDone:
    project: Project
    error: SourceError | None = None


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
    window: Window | None = None,
    query: str = "",
) -> Iterator[Rows]:
    """Pages of an organization-level stream (single object, list or windowed list)."""
    path = stream_path(spec, organization)
    params = request_params(spec, window if spec.shape is Shape.WINDOWED else None, query)
    if spec.shape is Shape.SINGLE:
        body = client.get(path, params, counter).body
        if isinstance(body, dict):
            yield [body]
        return
    yield from client.paginate(path, params, counter)


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
    window: Window,
    counter: RequestCounter,
) -> Iterator[Rows]:
    """Newest first; the window's `end` is frozen so new events cannot shift the offsets.

    Row values are undecoded JSON (`msgspec.Raw`), for the typer to decode.
    """
    params = request_params(EVENTS, window)
    path = stream_path(EVENTS, organization, project.slug)
    project_id = msgspec.Raw(msgspec.json.encode(project.id))
    for rows in client.paginate(path, params, counter, raw_values=True):
        for row in rows:
            row.setdefault("projectID", project_id)
        yield rows


EventsItem = ProjectPage | ProjectDone


def read_events(
    client: SentryClient,
    organization: str,
    windows: Mapping[Project, Window],
    counter: RequestCounter,
    concurrency: int,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[EventsItem]:
    """Pages of every project's events, projects side by side.

    A project that fails (403, 404, retries exhausted) ends with a `ProjectDone`
    carrying the error; the others go on. A 401 stops everything.
    """
    items: queue.Queue[EventsItem | BaseException] = queue.Queue(maxsize=QUEUED_PAGES)
    stop = threading.Event()

    def put(item: EventsItem | BaseException) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def crawl(project: Project) -> None:
        try:
            for rows in read_project_events(
                client, organization, project, windows[project], counter
            ):
                if stop.is_set() or is_cancelled():
                    return
                put(ProjectPage(project, rows))
            put(ProjectDone(project))
        except AuthenticationError as error:
            put(error)
        except SourceError as error:
            put(ProjectDone(project, error))
        except BaseException as error:  # handed to the reader, which re-raises it
            put(error)

    pending = len(windows)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="events")
    try:
        for project in windows:
            pool.submit(crawl, project)
        while pending:
            try:
                item = items.get(timeout=0.2)
            except queue.Empty:
                if is_cancelled():
                    return  # the caller sees the cancellation and commits nothing
                continue
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, ProjectDone):
                pending -= 1
            yield item
    finally:
        stop.set()
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
