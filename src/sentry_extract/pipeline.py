"""The run: connections and a replication in, a summary out.

The only module that imports both the source and the targets. Streams run side by
side (each in its own thread) and share one client, so the client-side rate and
in-flight caps hold for the whole run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from sentry_extract.config.connections import (
    ConnectionEntry,
    LocalConnection,
    PostgresConnection,
    SentryConnection,
    connection_inputs,
    find_connection,
    replay_connection,
    resolve_connection,
)
from sentry_extract.config.replication import (
    BACKFILL,
    FULL_REFRESH,
    INCREMENTAL,
    TRUNCATE,
    Replication,
    StreamConfig,
)
from sentry_extract.errors import (
    AuthenticationError,
    ConfigError,
    NetworkError,
    SentryExtractError,
    SourceError,
)
from sentry_extract.events import emit
from sentry_extract.records import RecordTyper
from sentry_extract.source.cassettes import Recording, RecordingTransport
from sentry_extract.source.cassettes import load_replay as load_replay  # for the CLI
from sentry_extract.source.client import ClientSettings, RequestCounter, SentryClient
from sentry_extract.source.extract import (
    Project,
    ProjectDone,
    list_projects,
    read_events,
    read_organization_stream,
    request_params,
    select_projects,
    stream_path,
)
from sentry_extract.source.ratelimit import RequestGate, ServerPacer, TokenBucket
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.source.streams import ORGANIZATIONS, Shape
from sentry_extract.source.windows import (
    Window,
    format_datetime,
    full_window,
    incremental_window,
)
from sentry_extract.state import FileStateStore, StateKey, StateStore, StreamState
from sentry_extract.targets.base import StreamRequest, StreamWriter, Target
from sentry_extract.targets.parquet import ParquetTarget

log = logging.getLogger("sentry_extract")

BATCH_ROWS = 2_000
STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"
STATE_SAVING_MODES = (INCREMENTAL, FULL_REFRESH, TRUNCATE)
REPLACING_MODES = (FULL_REFRESH, TRUNCATE)


class RunCancelled(SentryExtractError):
    """The run was stopped (a 401 elsewhere, or a signal) before this stream finished."""


@dataclass
class StreamResult:
    name: str
    mode: str
    object: str
    rows: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    status: str = STATUS_OK
    problems: list[str] = field(default_factory=list)
    stopped_run: bool = False  # its failure (a rejected token) stopped every stream


@dataclass
class RunSummary:
    results: list[StreamResult]
    seconds: float
    fatal: str | None = None  # what stopped the whole run, if anything

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.results)

    @property
    def requests(self) -> int:
        return sum(result.requests for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "requests": self.requests,
            "fatal": self.fatal,
            "streams": [asdict(result) for result in self.results],
        }

    @property
    def exit_code(self) -> int:
        failed = self.fatal or any(result.status != STATUS_OK for result in self.results)
        return 1 if failed else 0


@dataclass(frozen=True)
class RunSettings:
    """How to run; tests swap the transport, the sleep and the retry policy."""

    batch_rows: int = BATCH_ROWS
    retry: RetryPolicy | None = None  # None: the source connection's retry inputs
    sleep: Callable[[float], None] | None = None  # None: real waits that a cancel ends
    clock: Callable[[], float] = time.monotonic
    transport: Any = None  # an httpx transport; None for real HTTP
    record_to: Path | None = None  # --record: keep every exchange in cassettes there
    replay: Recording | None = None  # --replay: the recording (settings.transport answers)
    cancelled: threading.Event = field(default_factory=threading.Event)
    state_location: str | None = None  # SENTRY_EXTRACT_STATE: a folder or a PostgreSQL URL
    lock_wait: float = 10.0  # seconds to wait for another run's lock on a table
    deadline: float | None = None  # seconds the whole run may take


@dataclass(frozen=True)
class _Context:
    replication: Replication
    source: SentryConnection
    target: Target
    client: SentryClient
    settings: RunSettings
    organization: dict[str, Any] | None  # the preflight's answer, reused by its stream
    preflight: RequestCounter  # its requests, counted in the organizations stream if run


def resolve_source(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    replay: Recording | None = None,
) -> SentryConnection:
    if replay is not None:  # the recorded inputs make the very same requests; no token
        return replay_connection(replication.source, replay.connection_inputs)
    connection = resolve_connection(find_connection(connections, replication.source))
    if not isinstance(connection, SentryConnection):
        raise ConfigError(
            f"source: connection {replication.source} is not a Sentry connection "
            "(it needs type=api spec=sentry)",
            location=replication.path.name,
        )
    return connection


def open_target(
    replication: Replication, connections: Mapping[str, ConnectionEntry], lock_wait: float = 10.0
) -> Target:
    connection = resolve_connection(find_connection(connections, replication.target))
    if isinstance(connection, LocalConnection):
        target: Target = ParquetTarget()
    elif isinstance(connection, PostgresConnection):
        from sentry_extract.targets.postgres import PostgresTarget  # psycopg: only when used

        target = PostgresTarget(connection.url, lock_wait)
    else:
        raise ConfigError(
            f"target: connection {replication.target} is a Sentry source, not a target",
            location=replication.path.name,
        )
    for stream in replication.streams:
        problem = target.object_problem(stream.object)
        if problem:
            raise ConfigError(
                problem, location=f"{replication.path.name}: streams.{stream.name}.object"
            )
    return target


def state_key(replication: Replication, source: SentryConnection, stream: StreamConfig) -> StateKey:
    return StateKey(replication.source.upper(), source.organization, stream.name, stream.object)


def external_state_store(location: str | None, key: StateKey) -> StateStore | None:
    """Where SENTRY_EXTRACT_STATE points: a PostgreSQL URL, or a folder (a file per stream)."""
    if not location:
        return None
    if location.startswith(("postgresql://", "postgres://")):
        from sentry_extract.targets.postgres import PostgresStateStore

        return PostgresStateStore(location)
    digest = hashlib.sha256(key.as_text().encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{key.source}-{key.organization}-{key.stream}")
    return FileStateStore(Path(location).expanduser() / f"{name}-{digest}.json")


def state_stores(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
) -> list[tuple[StreamConfig, StateKey, StateStore]]:
    source = resolve_source(replication, connections)
    target = open_target(replication, connections)
    stores = []
    for stream in replication.streams:
        key = state_key(replication, source, stream)
        store = external_state_store(state_location, key) or target.state_store(stream.object)
        stores.append((stream, key, store))
    return stores


def build_client(source: SentryConnection, settings: RunSettings) -> SentryClient:
    sleep = settings.sleep or _interruptible_sleep(settings.cancelled)
    bucket = TokenBucket(source.rate_limit, burst=1, clock=settings.clock, sleep=sleep)
    retry = settings.retry or RetryPolicy(
        attempts=source.retry_attempts,
        max_total_wait=source.retry_max_wait.total_seconds(),
    )
    seconds = source.timeout.total_seconds()
    return SentryClient(
        ClientSettings(
            base_url=source.base_url,
            token=source.auth_token,
            gate=RequestGate(bucket, source.concurrency),
            pacer=ServerPacer(sleep=sleep),
            retry=retry,
            timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
            verify=_verify(source),
            sleep=sleep,
            transport=settings.transport,
        )
    )


def run_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    settings: RunSettings | None = None,
) -> RunSummary:
    settings = settings or RunSettings()
    started = time.monotonic()
    source = resolve_source(replication, connections, settings.replay)
    target = open_target(replication, connections, settings.lock_wait)
    names = [stream.name for stream in replication.streams]
    emit(
        log,
        logging.INFO,
        "run_start",
        f"run {replication.path.name}: {', '.join(names)} from {replication.source} "
        f"into {replication.target}",
        replication=str(replication.path),
        streams=names,
        source=replication.source,
        target=replication.target,
        run_started_at=replication.run_started_at.isoformat(),
    )
    deadline = _Deadline(settings)
    recorder = None
    if settings.record_to is not None:
        inner = httpx.HTTPTransport(verify=_verify(source))
        recorder = RecordingTransport(inner, source.auth_token)
        settings = replace(settings, transport=recorder)
    try:
        with build_client(source, settings) as client:
            counter = RequestCounter("organizations")
            organization = preflight(client, source, counter)
            context = _Context(replication, source, target, client, settings, organization, counter)
            workers = max(1, len(replication.streams))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream") as pool:
                futures = [pool.submit(_run_stream, context, s) for s in replication.streams]
                results = [future.result() for future in futures]
    finally:
        deadline.cancel()
        target.close()
        if recorder is not None and settings.record_to is not None:
            recording = Recording(replication.run_started_at, connection_inputs(source))
            recorder.save(settings.record_to, recording)
    fatal = next((result.problems[0] for result in results if result.stopped_run), None)
    if not any(stream.spec is ORGANIZATIONS for stream in replication.streams):
        results.append(_preflight_result(counter))
    if deadline.passed:
        fatal = (
            f"the run's deadline ({settings.deadline:g}s) passed; unfinished streams saved nothing"
        )
    summary = RunSummary(results, time.monotonic() - started, fatal)
    emit(
        log,
        logging.INFO,
        "run_end",
        f"run ended: {summary.rows} rows, {summary.requests} requests in "
        f"{summary.seconds:.1f}s, exit code {summary.exit_code}",
        rows=summary.rows,
        requests=summary.requests,
        seconds=round(summary.seconds, 3),
        exit_code=summary.exit_code,
        fatal=fatal,
    )
    return summary


def _preflight_result(counter: RequestCounter) -> StreamResult:
    """The organization read before the streams, shown when no stream accounts for it."""
    return StreamResult("(preflight)", "-", "-", requests=counter.requests, retries=counter.retries)


class _Deadline:
    """Cancels the run when its optional deadline passes."""

    def __init__(self, settings: RunSettings) -> None:
        self.passed = False
        self._timer: threading.Timer | None = None
        if settings.deadline:
            self._timer = threading.Timer(settings.deadline, self._expire, (settings.cancelled,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, cancelled: threading.Event) -> None:
        self.passed = True
        log.warning("the run's deadline passed: stopping")
        cancelled.set()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _verify(source: SentryConnection) -> ssl.SSLContext | bool:
    """TLS certificates are checked: against the named CA bundle, or the system's."""
    if source.ca_bundle:
        return ssl.create_default_context(cafile=source.ca_bundle)
    return True


def _interruptible_sleep(cancelled: threading.Event) -> Callable[[float], None]:
    """Waits that end early when the run is cancelled (deadline, signal, 401)."""

    def sleep(seconds: float) -> None:
        cancelled.wait(seconds)

    return sleep


def preflight(
    client: SentryClient, source: SentryConnection, counter: RequestCounter
) -> dict[str, Any] | None:
    """Read the organization once before any stream: a wrong host or slug is bad input.

    None when the token may not read it (403): an org token can still read releases.
    """
    path = f"organizations/{source.organization}/"
    try:
        body = client.get(path, {}, counter).body
    except NetworkError as error:
        raise ConfigError(f"{error.message}: check inputs.base_url ({source.base_url})") from None
    except SourceError as error:
        if error.status == 404:
            raise ConfigError(explain_organization_error(error, source).message) from None
        if error.status == 403:
            return None
        raise
    return body if isinstance(body, dict) else None


def _run_stream(context: _Context, stream: StreamConfig) -> StreamResult:
    result = StreamResult(stream.name, stream.mode, stream.object)
    started = time.monotonic()
    reuses_preflight = stream.spec is ORGANIZATIONS and context.organization is not None
    counter = context.preflight if reuses_preflight else RequestCounter(stream.name)
    emit(
        log,
        logging.INFO,
        "stream_start",
        f"{stream.name}: starting ({stream.mode} into {stream.object})",
        stream=stream.name,
        mode=stream.mode,
        object=stream.object,
    )
    try:
        typer = RecordTyper(stream.spec, stream.column_casing, stream.selection, stream.primary_key)
        request = StreamRequest(
            stream=stream.name,
            object=stream.object,
            mode=stream.mode,
            key_columns=stream.primary_key,
            base_schema=typer.to_batch([]).schema,
            state_key=state_key(context.replication, context.source, stream),
            run_started_at=context.replication.run_started_at,
        )
        external = external_state_store(context.settings.state_location, request.state_key)
        writer = context.target.open_stream(request, external)
        try:
            loader = _Loader(context, stream, writer, typer, counter, result)
            if stream.spec.shape is Shape.PER_PROJECT:
                loader.load_events()
            else:
                loader.load_organization_stream()
            loader.check_cancelled()  # a stopped run commits nothing it did not finish
            result.rows = writer.commit()
        except BaseException:
            writer.abort()
            raise
    except AuthenticationError as error:
        context.settings.cancelled.set()
        result.status = STATUS_FAILED
        result.stopped_run = True
        result.problems.insert(0, error.message)
    except RunCancelled:
        result.status = STATUS_CANCELLED
        result.problems.append("stopped before it finished; nothing of this run was saved")
    except SourceError as error:
        result.status = STATUS_FAILED
        if error.status == 404 and stream.spec.shape is not Shape.PER_PROJECT:
            error = explain_organization_error(error, context.source)
        result.problems.append(describe_source_error(error, stream.name))
    except SentryExtractError as error:
        result.status = STATUS_FAILED
        result.problems.append(str(error))
    finally:
        result.requests = counter.requests
        result.retries = counter.retries
        result.seconds = time.monotonic() - started
    emit(
        log,
        logging.INFO,
        "stream_end",
        f"{stream.name}: {result.status}, {result.rows} rows, {result.requests} requests, "
        f"{result.seconds:.1f}s",
        stream=stream.name,
        status=result.status,
        rows=result.rows,
        requests=result.requests,
        retries=result.retries,
        seconds=round(result.seconds, 3),
        problems=result.problems,
    )
    return result


def describe_source_error(error: SourceError, stream: str) -> str:
    if error.status == 403:
        return (
            f"{error.message} (403): the token probably lacks the scope "
            f"{REQUIRED_SCOPES.get(stream, 'org:read')}"
        )
    return error.message


REQUIRED_SCOPES = {
    "organizations": "org:read",
    "projects": "project:read",
    "teams": "team:read",
    "members": "member:read",
    "releases": "project:releases (or project:read)",
    "issues": "event:read",
    "events": "event:read",
}


class _Loader:
    """Reads one stream's pages and hands typed batches to its writer."""

    def __init__(
        self,
        context: _Context,
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
        if spec.shape is Shape.WINDOWED and self.stream.mode in STATE_SAVING_MODES:
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
            if self.stream.mode in STATE_SAVING_MODES:
                self.writer.checkpoint(StreamState(project_watermarks=dict(done)))
        self._flush()
        if self.result.problems:
            if self.stream.mode in REPLACING_MODES:
                raise SourceError(f"nothing replaced: {self.stream.mode} needs every project")
            self.result.status = STATUS_PARTIAL

    def _project_problem(self, project: Project, error: SourceError) -> str:
        reason = error.message
        if error.status in (403, 404):
            reason = f"{error.message} ({error.status})"
        return f"project '{project.slug}' skipped: {reason}"


def test_connection(connection: SentryConnection | LocalConnection | PostgresConnection) -> str:
    """One line saying the connection works; raises our errors when it does not."""
    if isinstance(connection, LocalConnection):
        return "ok (files on this machine)"
    if isinstance(connection, PostgresConnection):
        from sentry_extract.targets.postgres import test_postgres

        return test_postgres(connection.url)
    settings = RunSettings(retry=RetryPolicy(attempts=3, initial_wait=0.5, max_wait=5.0))
    with build_client(connection, settings) as client:
        counter = RequestCounter()
        path = f"organizations/{connection.organization}/"
        try:
            body = client.get(path, {}, counter).body
        except SourceError as error:
            raise explain_organization_error(error, connection) from None
    name = body.get("name", connection.organization) if isinstance(body, dict) else "?"
    return f"ok: organization '{name}' ({connection.organization}) at {connection.base_url}"


def explain_organization_error(error: SourceError, connection: SentryConnection) -> SourceError:
    """The organization request failed: say what to fix."""
    if error.status == 404:
        error.message = (
            f"organization '{connection.organization}' not found at {connection.base_url}: "
            "wrong slug, or an organization in another region (EU organizations live on "
            "https://de.sentry.io)"
        )
    elif error.status == 403:
        error.message = (
            f"the token may not read organization '{connection.organization}' "
            "(403): it needs the org:read scope"
        )
    error.args = (error.message,)
    return error


def stream_window(
    stream: StreamConfig, source: SentryConnection, watermark: datetime | None, started: datetime
) -> Window:
    """The time range a windowed stream asks for: by mode, from the saved watermark."""
    if stream.mode == BACKFILL and stream.backfill_range is not None:
        return stream.backfill_range
    if stream.mode == INCREMENTAL:
        return incremental_window(watermark, source.anchor_date, started, source.lookback)
    return full_window(source.anchor_date, started)


@dataclass(frozen=True)
class StreamPlan:
    """What a run would do for one stream (`run --dry-run`)."""

    name: str
    mode: str
    object: str
    window: str
    first_request: str


def plan_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
) -> list[StreamPlan]:
    """The plan of a run, from the saved state; no request is sent and nothing written."""
    source = resolve_source(replication, connections)
    plans = []
    for stream, key, store in state_stores(replication, connections, state_location):
        spec = stream.spec
        state = store.load(key) if spec.is_incremental else StreamState()
        started = replication.run_started_at
        window: Window | None = None
        described = "-"
        if spec.shape is Shape.WINDOWED:
            window = stream_window(stream, source, state.watermark, started)
            described = f"{format_datetime(window.start)} to {format_datetime(window.end)}"
        elif spec.shape is Shape.PER_PROJECT:
            window = stream_window(stream, source, None, started)
            saved = len(state.project_watermarks)
            described = (
                f"per project: {saved} from their saved state, others "
                f"{format_datetime(window.start)} to {format_datetime(window.end)}"
            )
        path = stream_path(spec, source.organization, "{project}")
        params = request_params(spec, window, stream.query)
        query = "&".join(f"{name}={value}" for name, value in params.items())
        plans.append(
            StreamPlan(
                stream.name,
                stream.mode,
                stream.object,
                described,
                f"GET /api/0/{path}" + (f"?{query}" if query else ""),
            )
        )
    return plans
