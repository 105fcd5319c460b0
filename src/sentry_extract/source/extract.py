"""Pages -> rows for each stream shape, with the parameters that stop silent data loss.

Windowed lists (issues, and each project's events) are read in time slices, oldest
slice first, newest first within a slice; every page comes with the crawl's coverage
once its rows are stored, so a run can checkpoint anywhere and the next one resumes
there. Projects' crawls run side by side on a small pool; their pages reach the
reader through a queue bounded in the bytes they hold in memory, and in pages.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import msgspec

from sentry_extract.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RangeTooLargeError,
    ReplayMissError,
    ServerError,
    SourceError,
)
from sentry_extract.model.spec import PAGE_SIZE, Order, ParentRow, Parents, Shape, StreamSpec
from sentry_extract.model.windows import (
    Coverage,
    Crawl,
    Slicer,
    Window,
    format_datetime,
    read_from,
    whole_second,
)
from sentry_extract.source.client import RequestCounter, SentryClient

Rows = list[dict[str, Any]]

# Pages read ahead of the writer: the crawl goes on while a batch is copied into
# PostgreSQL. Bounded in the bytes the pages hold in memory (a part of the memory
# budget) and in pages: pages read but not yet committed are what a killed run reads again.
QUEUED_PAGES = 30


@dataclass(frozen=True)
class SlicedPage:
    """A page of a windowed list, and the crawl's coverage once its rows are stored."""

    rows: Rows
    held_bytes: int  # what the rows hold in memory, about
    coverage: Coverage
    sampled: bool = False  # Sentry answered from part of its data


@dataclass(frozen=True)
class ChildPage:
    parent: ParentRow
    rows: Rows
    capped: bool = False  # the server's row cap ended the list: more rows exist


@dataclass(frozen=True)
class ProjectPage:
    project: ParentRow
    page: SlicedPage


@dataclass(frozen=True)
class ProjectDone:
    project: ParentRow
    error: SourceError | None = None


# Told a range Sentry refused with a 400, the part of it Sentry still keeps (empty when
# none), or None when the refusal is not about the retention.
KeptRange = Callable[[Window], Window | None]


def request_params(
    spec: StreamSpec, window: Window | None, query: str = ""
) -> dict[str, str | int | tuple[str, ...]]:
    params: dict[str, str | int | tuple[str, ...]] = dict(spec.params)
    if spec.page_size_param:
        params[spec.page_size_param] = PAGE_SIZE
    if window is not None:
        # start and end always together: one alone is a 400, none means "last 90 days".
        params["start"] = format_datetime(window.start)
        params["end"] = format_datetime(window.end)
    if "query" in params:  # the stream's own query (transactions'), and the replication's
        joined = joined_query(str(params["query"]), query)
        if joined or not spec.takes_fields:  # issues: empty reads every status
            params["query"] = joined
        else:  # Explore refuses an empty one
            del params["query"]
    return params


def joined_query(own: str, query: str) -> str:
    """Both queries must hold: the replication's in parentheses, so that its `OR` stays
    inside it."""
    if not own or not query:
        return own or query
    return f"{own} ({query})"


def stream_path(spec: StreamSpec, organization: str, project: str = "") -> str:
    return spec.path_for(organization, {"project": project} if project else None)


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
    for page in client.paginate(path, params, counter, rows_key=spec.rows_key):
        yield page.rows


def read_sliced(
    client: SentryClient,
    spec: StreamSpec,
    path: str,
    crawl: Crawl,
    counter: RequestCounter,
    query: str = "",
    raw_values: bool = False,
    kept: KeptRange | None = None,
) -> Iterator[SlicedPage]:
    """Every page of a windowed list, slice by slice, oldest slice first.

    Inside a slice pages come newest first (`start` and `end` frozen for every page, so
    rows arriving meanwhile cannot shift the offsets); each page says what is covered
    once it is stored: the slices before it, and the part of its slice above its oldest
    row. The next slice's length follows the rows this one held. A slice refused for
    starting before Sentry's retention is asked again for what `kept` says is left.
    """
    if spec.order is Order.OLDEST_FIRST:
        yield from read_oldest_first(client, spec, path, crawl, counter, query, kept)
        return
    time_field = spec.update_key or ""
    slicer = Slicer(crawl.coverage.gaps(crawl.window, crawl.lookback), horizon=crawl.horizon)
    progress = crawl.coverage.started_at(crawl.window.start)
    while (piece := slicer.next()) is not None:
        asked = piece
        oldest: datetime | None = None
        rows = 0
        while asked.end > asked.start:
            try:
                params = request_params(spec, asked, query)
                for page in client.paginate(path, params, counter, raw_values, spec.rows_key):
                    rows += len(page.rows)
                    oldest = oldest_moment(page.rows, time_field, oldest)
                    if page.last:
                        covered = progress.add(piece)
                    else:
                        done = read_from(oldest, piece) if oldest is not None else None
                        covered = progress.add(done) if done is not None else progress
                    yield SlicedPage(page.rows, page.held_bytes, covered, page.sampled)
                break
            except BadRequestError:
                narrowed = _kept_part(asked, kept, rows)
                if narrowed is None:
                    raise
                asked = narrowed
        progress = progress.add(piece)
        slicer.record(rows)


def _kept_part(asked: Window, kept: KeptRange | None, rows: int) -> Window | None:
    """After a 400 for `asked`: the part of it Sentry keeps, to ask again (empty: none
    is left); None when the 400 is about something else, or came after rows."""
    narrowed = kept(asked) if kept is not None and not rows else None
    return None if narrowed == asked else narrowed


MIN_QUERY = timedelta(minutes=1)  # a timing-out or sampled query is halved down to this
MAX_HALVINGS = 8  # a range still sampled at 1/256 of its length: samples are kept from then


def read_oldest_first(
    client: SentryClient,
    spec: StreamSpec,
    path: str,
    crawl: Crawl,
    counter: RequestCounter,
    query: str = "",
    kept: KeptRange | None = None,
) -> Iterator[SlicedPage]:
    """A list sorted oldest first (the Explore index), slice by slice.

    Inside a slice, what is stored is covered from the slice's start up to the newest
    row's second. A query that reaches the server's row cap (offset paging stops there)
    goes on with a new query from that second; one that times out, or is answered from
    sampled data, is asked again for half its range (a sample at a minute's range is kept
    and reported). Rows read twice at a boundary are merged by key. A range refused for
    lying before Sentry's retention is asked again for what `kept` says is left."""
    time_field = spec.update_key or ""
    slicer = Slicer(crawl.coverage.gaps(crawl.window, crawl.lookback), horizon=crawl.horizon)
    progress = crawl.coverage.started_at(crawl.window.start)
    keeps_samples = False
    while (piece := slicer.next()) is not None:
        start, end, rows, halvings = piece.start, piece.end, 0, 0
        while start < piece.end:
            read, newest, stopped, halve = 0, None, False, False
            try:
                params = request_params(spec, Window(start, end), query)
                for page in client.paginate(path, params, counter, rows_key=spec.rows_key):
                    if page.sampled and not keeps_samples and end - start > MIN_QUERY:
                        halve = halvings < MAX_HALVINGS  # a smaller range: all the data
                        keeps_samples = not halve  # sampled at any range: halving is no use
                        if halve:
                            break
                    read += len(page.rows)
                    newest = _newest(page.rows, time_field, newest)
                    whole = page.last and not _may_be_capped(spec, read)
                    done = Window(piece.start, end) if whole else None
                    if done is None and newest is not None:
                        reached = whole_second(newest)
                        done = Window(piece.start, reached) if reached > piece.start else None
                    covered = progress.add(done) if done is not None else progress
                    yield SlicedPage(page.rows, page.held_bytes, covered, page.sampled)
            except RangeTooLargeError:  # a query timeout, retried already
                if end - start <= MIN_QUERY:
                    raise
                halve = True
            except BadRequestError:  # a server that refuses offsets past its cap
                if newest is None:
                    narrowed = _kept_part(Window(start, end), kept, read)
                    if narrowed is None:
                        raise
                    start, end = (
                        (narrowed.start, end) if narrowed.end > narrowed.start else (end, piece.end)
                    )
                    continue
                stopped = True
            if halve:
                start = whole_second(newest) if newest is not None else start
                end = start + (end - start) / 2
                halvings += 1
                continue
            rows += read
            halvings = 0
            if (stopped or _may_be_capped(spec, read)) and newest is not None:
                resume = whole_second(newest)
                if resume <= start:
                    raise SourceError(
                        f"{path}: more than {read:,} rows in the second from "
                        f"{format_datetime(start)}; they cannot be paged",
                        url=path,
                    )
                start = resume  # the rows of that second are read again, merged by key
                continue
            start, end = end, piece.end
        progress = progress.add(piece)
        slicer.record(rows)


def _may_be_capped(spec: StreamSpec, read: int) -> bool:
    """A query that returned half its server's row cap or more may have been cut at the
    cap (servers differ on where): the crawl asks again from its newest second."""
    return spec.row_cap is not None and read >= spec.row_cap // 2


def _newest(rows: Rows, field: str, newest: datetime | None) -> datetime | None:
    for row in rows:
        moment = _moment(row.get(field))
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def oldest_moment(rows: Rows, field: str, oldest: datetime | None) -> datetime | None:
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


def read_project_pages(
    client: SentryClient,
    spec: StreamSpec,
    organization: str,
    project: ParentRow,
    crawl: Crawl,
    counter: RequestCounter,
    kept: KeptRange | None = None,
) -> Iterator[SlicedPage]:
    """One project's windowed list (events), in slices; rows get the project's columns.
    With `raw_values`, row values are undecoded JSON (`msgspec.Raw`) for the typer."""
    path = spec.path_for(organization, project.path_values)
    pages = read_sliced(client, spec, path, crawl, counter, raw_values=spec.raw_values, kept=kept)
    for page in pages:
        add_parent_columns(spec, project, page.rows)
        yield page


def add_parent_columns(spec: StreamSpec, parent: ParentRow, rows: Rows) -> None:
    """The parent's values a child row lacks (an event's project, a deploy's release)."""
    for column, name in spec.parent_columns:
        value: Any = parent.values.get(name)
        if spec.raw_values:
            value = msgspec.Raw(msgspec.json.encode(value))
        for row in rows:
            row.setdefault(column, value)


def list_parents(
    client: SentryClient, parents: Parents, organization: str, counter: RequestCounter
) -> list[ParentRow]:
    """Every row of the parent stream (projects, releases, monitors), made a parent.
    Parents listed by a window (the issues changed since the last run) are read like
    their own stream instead."""
    listed: list[ParentRow] = []
    for rows in read_organization_stream(client, parents.stream, organization, counter):
        listed.extend(parent for row in rows if (parent := parents.parent_of(row)) is not None)
    return listed


def select_parents(
    parents: Sequence[ParentRow], wanted: Sequence[str] | None
) -> tuple[list[ParentRow], list[str]]:
    """The parents to read (all, or those named by slug or id, as `inputs.projects`
    names projects) and the names that match none."""
    if wanted is None:
        return list(parents), []
    by_slug = {parent.values.get("slug"): parent for parent in parents}
    by_id = {parent.values.get("id"): parent for parent in parents}
    chosen = [by_slug.get(name) or by_id.get(name) for name in wanted]
    missing = [name for name, parent in zip(wanted, chosen, strict=True) if parent is None]
    return [parent for parent in chosen if parent is not None], missing


def read_children(
    client: SentryClient,
    spec: StreamSpec,
    organization: str,
    parent: ParentRow,
    counter: RequestCounter,
    stop_before: datetime | None = None,
) -> Iterator[ChildPage]:
    """One parent's list. A list newest first by `update_key` (check-ins) stops after
    the page that reaches `stop_before`: what is older was read by an earlier run."""
    path = spec.path_for(organization, parent.path_values)
    params = request_params(spec, None)
    if spec.shape is Shape.SINGLE:
        yield one_parent_object(client, spec, path, parent, counter)
        return
    read = 0
    for page in client.paginate(path, params, counter, rows_key=spec.rows_key):
        add_parent_columns(spec, parent, page.rows)
        read += len(page.rows)
        capped = page.last and spec.row_cap is not None and read >= spec.row_cap
        yield ChildPage(parent, page.rows, capped)
        if stop_before is not None and spec.update_key:
            oldest = oldest_moment(page.rows, spec.update_key, None)
            if oldest is not None and oldest < stop_before:
                return


FIRST_SEEN = "first_seen"  # the entry that ends an issue's activity when none was cut


def one_parent_object(
    client: SentryClient, spec: StreamSpec, path: str, parent: ParentRow, counter: RequestCounter
) -> ChildPage:
    """The rows under `rows_key` of one parent's object (an issue's activity). An object
    answered for another id than asked (a merged issue: Sentry serves the issue it went
    into) holds none of the parent's rows. A list as long as the server's cap, without
    the entry that ends a whole list, was cut: its oldest entries are missing."""
    body = client.get(path, request_params(spec, None), counter).body
    if not isinstance(body, dict):
        return ChildPage(parent, [])
    asked = parent.values.get("id")
    if asked is not None and body.get("id") is not None and str(body["id"]) != asked:
        return ChildPage(parent, [])
    listed = body.get(spec.rows_key or "")
    rows = [row for row in listed if isinstance(row, dict)] if isinstance(listed, list) else []
    add_parent_columns(spec, parent, rows)
    whole = any(row.get("type") == FIRST_SEEN for row in rows)
    capped = spec.row_cap is not None and len(rows) >= spec.row_cap and not whole
    return ChildPage(parent, rows, capped)


def read_one(
    client: SentryClient, spec: StreamSpec, organization: str, key: str, counter: RequestCounter
) -> dict[str, Any] | None:
    """One row of an organization's list, by its key (`<list path><key>/`): None when
    Sentry has it no more (404); an answer that is not an object is an empty one."""
    path = f"{stream_path(spec, organization)}{quote(key, safe='')}/"
    try:
        body = client.get(path, {}, counter).body
    except NotFoundError:
        return None
    return body if isinstance(body, dict) else {}


EventsItem = ProjectPage | ProjectDone


class PageQueue:
    """A queue bounded in bytes held and in items; one item always fits in an empty queue.

    A producer waits for room (`wait_for_room`) before it fetches its next page, so the
    pages held by producers waiting to put them stay within the bound too."""

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: deque[tuple[EventsItem | BaseException, int]] = deque()
        self._bytes = 0
        self._condition = threading.Condition()
        self.stopped = False

    def _is_full(self, held_bytes: int) -> bool:
        if not self._items or self.stopped:
            return False
        too_many = len(self._items) >= self.max_items
        return too_many or self._bytes + held_bytes > self.max_bytes

    def wait_for_room(self, held_bytes: int) -> None:
        with self._condition:
            while self._is_full(held_bytes):
                self._condition.wait(0.1)

    def put(self, item: EventsItem | BaseException, held_bytes: int = 0) -> None:
        with self._condition:
            while self._is_full(held_bytes):
                self._condition.wait(0.1)
            if self.stopped:
                return
            self._items.append((item, held_bytes))
            self._bytes += held_bytes
            self._condition.notify_all()

    def get(self, timeout: float) -> EventsItem | BaseException | None:
        with self._condition:
            if not self._items:
                self._condition.wait(timeout)
            if not self._items:
                return None
            item, held_bytes = self._items.popleft()
            self._bytes -= held_bytes
            self._condition.notify_all()
            return item

    def stop(self) -> None:
        with self._condition:
            self.stopped = True
            self._condition.notify_all()


def read_events(
    client: SentryClient,
    spec: StreamSpec,
    organization: str,
    crawls: Mapping[ParentRow, Crawl],
    counter: RequestCounter,
    concurrency: int,
    queued_bytes: int,  # what the pages read ahead may hold in memory
    is_cancelled: Callable[[], bool] = lambda: False,
    kept: KeptRange | None = None,
) -> Iterator[EventsItem]:
    """Pages of every project's events, projects side by side.

    A project that fails (403, 404, retries exhausted) ends with a `ProjectDone`
    carrying the error; the others go on. A 401 stops everything.
    """
    items = PageQueue(queued_bytes, QUEUED_PAGES)

    def crawl(project: ParentRow) -> None:
        try:
            for page in read_project_pages(
                client, spec, organization, project, crawls[project], counter, kept
            ):
                if items.stopped or is_cancelled():
                    return
                items.put(ProjectPage(project, page), page.held_bytes)
                items.wait_for_room(page.held_bytes)  # before the next page is fetched
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


# Explore's org-wide index of error events, which counts them by project in one request.
ERROR_COUNTS = "organizations/{organization}/events/"


def count_events_by_project(
    client: SentryClient, organization: str, window: Window, counter: RequestCounter
) -> dict[str, int] | None:
    """Error events in `window` per project id, asked once of the org-wide Explore
    endpoint (`field=project.id&field=count()`); None when it cannot tell: the endpoint
    refused or is absent (self-hosted, a token's scopes), the answer was sampled or does
    not hold the fields asked for."""
    params: dict[str, str | int | tuple[str, ...]] = {
        "dataset": "errors",
        "field": ("project.id", "count()"),
        "project": "-1",
        "per_page": PAGE_SIZE,
        "start": format_datetime(window.start),
        "end": format_datetime(window.end),
    }
    path = ERROR_COUNTS.format(organization=organization)
    counts: dict[str, int] = {}
    try:
        for page in client.paginate(path, params, counter, rows_key="data"):
            if page.sampled:
                return None
            for row in page.rows:
                project, count = row.get("project.id"), _whole_number(row.get("count()"))
                if project is None or count is None:
                    return None
                counts[str(project)] = counts.get(str(project), 0) + count
    except (PermissionDeniedError, NotFoundError, BadRequestError, ServerError):
        return None
    except ReplayMissError:  # cassettes recorded before events asked for the count
        return None
    return counts


def _whole_number(value: Any) -> int | None:
    """A count as JSON gives it (`37`, `37.0`, `"37"`), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.strip().isdigit():
        return int(value)
    return None
