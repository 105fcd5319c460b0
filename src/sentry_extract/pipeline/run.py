"""The run: connections and a replication in, a summary out.

Streams run side by side (each in its own thread) and share one client, so the
client-side rate and in-flight caps hold for the whole run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentry_extract.config.connections import ConnectionEntry, SentryConnection, connection_inputs
from sentry_extract.config.replication import Replication, StreamConfig
from sentry_extract.errors import (
    AuthenticationError,
    RunCancelled,
    SentryExtractError,
    SourceError,
)
from sentry_extract.events import counted, emit
from sentry_extract.pipeline.connect import (
    build_client,
    describe_source_error,
    explain_organization_error,
    external_state_store,
    open_target,
    preflight,
    region_to_follow,
    resolve_source,
    state_key,
)
from sentry_extract.pipeline.loader import Batching, Loader
from sentry_extract.pipeline.results import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    RunSummary,
    StreamResult,
)
from sentry_extract.reading import reader_for
from sentry_extract.reading.base import Scope, Session, saved_state
from sentry_extract.reading.lag import Lag
from sentry_extract.records import RecordTyper
from sentry_extract.source.client import RequestCounter, SentryClient, verification
from sentry_extract.source.retention import Retention, stats_probe
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.targets.base import StreamRequest, Target

if TYPE_CHECKING:
    from sentry_extract.source.cassettes import Recording

log = logging.getLogger("sentry_extract")

BATCH_ROWS = 2_000


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
    streaming: threading.Event = field(default_factory=threading.Event)  # set: streams began


@dataclass(frozen=True)
class RunContext:
    replication: Replication
    source: SentryConnection
    target: Target
    client: SentryClient
    settings: RunSettings
    organization: dict[str, Any] | None  # the preflight's answer, reused by its stream
    preflight: RequestCounter  # its requests, counted in the organizations stream if run
    retention: Retention  # what the organization keeps, as the run knows it
    deadline_passed: Callable[[], bool] = lambda: False  # why a cancelled stream stopped


def run_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    settings: RunSettings | None = None,
) -> RunSummary:
    settings = settings or RunSettings()
    started, started_at = time.monotonic(), datetime.now(UTC)
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
    for note in replication.notes:
        emit(log, logging.WARNING, "replication_note", note)
    deadline = _Deadline(settings)
    recorder = None
    if settings.record_to is not None:
        import httpx

        from sentry_extract.source.cassettes import RecordingTransport

        inner = httpx.HTTPTransport(verify=verification(source.ca_bundle))
        recorder = RecordingTransport(inner, source.auth_token)
        settings = replace(settings, transport=recorder)
    counter = RequestCounter("organizations")
    results: list[StreamResult] = []
    try:
        client = _client(source, settings, deadline)
        with ExitStack() as clients:
            clients.enter_context(client)
            try:
                organization = preflight(client, source, counter)
            except SentryExtractError as error:
                error.requests = counter.requests  # made, though no stream counts them
                raise
            reading = _in_its_region(source, organization)
            if reading is not source:
                client = clients.enter_context(_client(reading, settings, deadline))
            context = RunContext(
                replication,
                reading,
                target,
                client,
                settings,
                organization,
                counter,
                run_retention(reading, client, replication.run_started_at, settings.clock),
                lambda: deadline.passed,
            )
            settings.streaming.set()  # from here on a stop is a cancel that streams see
            workers = max(1, len(replication.streams))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream") as pool:
                futures = [pool.submit(_run_stream, context, s) for s in replication.streams]
                try:
                    results = [future.result() for future in futures]
                except BaseException:  # Ctrl-C with no handler, an orchestrator's stop:
                    settings.cancelled.set()  # the streams stop too, not run on unseen
                    raise
    except RunCancelled:
        if not deadline.passed:  # not ours to explain: a signal says it itself
            raise
        return RunSummary(
            [],
            time.monotonic() - started,
            deadline.describe(streamed=False),
            preflight_requests=counter.requests,
            started_at=started_at,
            ended_at=datetime.now(UTC),
        )
    finally:
        deadline.cancel()
        target.close()
        if recorder is not None and settings.record_to is not None:
            from sentry_extract.source.cassettes import Recording

            recording = Recording(replication.run_started_at, connection_inputs(source))
            recorder.save(settings.record_to, recording)
    fatal = next((result.problems[0] for result in results if result.stopped_run), None)
    counted_by_a_stream = any(stream.spec.preflight for stream in replication.streams)
    if deadline.passed:
        fatal = deadline.describe(streamed=True)
    return RunSummary(
        results,
        time.monotonic() - started,
        fatal,
        preflight_requests=0 if counted_by_a_stream else counter.requests,
        started_at=started_at,
        ended_at=datetime.now(UTC),
    )


def _client(source: SentryConnection, settings: RunSettings, deadline: _Deadline) -> SentryClient:
    return build_client(
        source,
        settings.cancelled,
        retry=settings.retry,
        sleep=settings.sleep,
        clock=settings.clock,
        transport=settings.transport,
        deadline=deadline.moment,
    )


def _in_its_region(
    source: SentryConnection, organization: dict[str, Any] | None
) -> SentryConnection:
    """The source, at the host its organization's details name when the run goes there
    (said once in the log); else the source itself."""
    region = region_to_follow(source, organization)
    if region is None:
        return source
    emit(
        log,
        logging.INFO,
        "region",
        f"organization '{source.organization}' lives at {region} (links.regionUrl): its "
        f"requests go there, not to {source.base_url}",
        organization=source.organization,
        region=region,
    )
    return replace(source, base_url=region)


def _batching(context: RunContext) -> Batching:
    settings = context.settings
    return Batching(
        settings.batch_rows,
        context.source.memory_budget,
        context.source.checkpoint_every.total_seconds(),
        settings.clock,
        settings.cancelled,
    )


def _may_be_behind(result: StreamResult, context: RunContext) -> bool:
    """Whether a stream's lag says anything: not when it failed (the failure is said as it
    is) nor when a signal stopped it; yes when it finished, or the run's deadline cut it."""
    if result.status == STATUS_CANCELLED:
        return context.deadline_passed()
    return result.status != STATUS_FAILED


def run_retention(
    source: SentryConnection,
    client: SentryClient,
    started_at: datetime,
    clock: Callable[[], float],
) -> Retention:
    """The retention a run starts with: `inputs.retention_days`, else learned as it goes."""
    retention = Retention(source.retention_days, None, started_at, clock)
    retention.probe = stats_probe(client, source.organization, retention.now)
    return retention


class _Deadline:
    """Cancels the run when its optional deadline passes; `moment` (of `time.monotonic`)
    lets the client bound each request by the time left."""

    def __init__(self, settings: RunSettings) -> None:
        self.seconds = settings.deadline
        self.moment = time.monotonic() + settings.deadline if settings.deadline else None
        self._timer: threading.Timer | None = None
        if settings.deadline:
            self._timer = threading.Timer(settings.deadline, self._expire, (settings.cancelled,))
            self._timer.daemon = True
            self._timer.start()

    @property
    def passed(self) -> bool:
        """By the clock, as the client sees it (the timer may fire a moment later)."""
        return self.moment is not None and time.monotonic() >= self.moment

    def _expire(self, cancelled: threading.Event) -> None:
        log.warning("the run's deadline passed: stopping")
        cancelled.set()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def describe(self, streamed: bool) -> str:
        """The run's fatal message once the deadline has passed."""
        passed = f"the run's deadline ({self.seconds or 0:g}s) passed"
        if not streamed:
            return f"{passed} before any stream began; nothing was written, checkpoints kept"
        return f"{passed}; unfinished streams stopped, their checkpoints kept for the next run"


def _run_stream(context: RunContext, stream: StreamConfig) -> StreamResult:
    result = StreamResult(stream.name, stream.mode, stream.object)
    started = time.monotonic()
    reuses_preflight = stream.spec.preflight and context.organization is not None
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
    loader: Loader | None = None
    lag: Lag | None = None
    try:
        if context.settings.cancelled.is_set():  # stopped before this stream began
            raise RunCancelled(stream.name)
        typer = RecordTyper(stream.spec, stream.column_casing, stream.selection, stream.primary_key)
        request = StreamRequest(
            stream=stream.name,
            object=stream.object,
            mode=stream.mode,
            key_columns=stream.primary_key,
            base_schema=typer.to_batch([]).schema,
            state_key=state_key(context.replication, context.source, stream),
            run_started_at=context.replication.run_started_at,
            update_key=stream.update_key,
            fixed_update_key=stream.spec.fixed_update_key,
            memory_budget=context.source.memory_budget,
        )
        external = external_state_store(context.settings.state_location, request.state_key)
        writer = context.target.open_stream(request, external)
        loader = Loader(stream, writer, typer, counter, result, _batching(context))
        lag = Lag(context.replication.run_started_at, context.settings.clock)
        session = Session(
            context.client,
            counter,
            loader,
            lag,
            context.settings.cancelled.is_set,
            context.organization,
        )
        scope = Scope.of(stream, context.source, request.run_started_at, context.retention)
        try:
            reader_for(scope).read(saved_state(stream.spec, writer.load_state), session)
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
        if result.checkpoints:
            result.problems.append(
                f"stopped before it finished; its {result.checkpoints} checkpoints are kept "
                "and the next run resumes after the last"
            )
        else:
            result.problems.append("stopped before it finished; nothing of this run was saved")
    except SourceError as error:
        result.status = STATUS_FAILED
        if error.status == 404 and not stream.spec.fans_out:
            result.problems.append(str(explain_organization_error(error, context.source)))
        else:
            result.problems.append(describe_source_error(error, stream.name))
    except SentryExtractError as error:
        result.status = STATUS_FAILED
        result.problems.append(str(error))
    finally:
        result.requests = counter.requests
        result.retries = counter.retries
        result.seconds = time.monotonic() - started
    if loader is not None and lag is not None and _may_be_behind(result, context):
        result.behind = lag.behind(loader.read)
    if result.behind is not None:
        figures = {key: value for key, value in result.behind.items() if key != "message"}
        message = f"{stream.name}: {result.behind['message']}"
        emit(log, logging.WARNING, "falling_behind", message, stream=stream.name, **figures)
    emit(
        log,
        logging.INFO,
        "stream_end",
        f"{stream.name}: {result.status}, {counted(result.rows, 'row')}, "
        f"{counted(result.requests, 'request')}, {result.seconds:.1f}s",
        stream=stream.name,
        status=result.status,
        rows=result.rows,
        requests=result.requests,
        retries=result.retries,
        seconds=round(result.seconds, 3),
        problems=result.problems,
    )
    return result
