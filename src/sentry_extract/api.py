"""The library call: what `sentry-extract run` does, from Python.

    import sentry_extract

    report = sentry_extract.run("replication.yaml", streams=["issues", "events"])
    for stream in report.streams:
        print(stream.name, stream.status, stream.rows, stream.requests, stream.error)
    if report.exit_code:
        ...  # 1: a stream failed or skipped something (each stream's `error` says what)

`run` reads the replication and its connections as the command does, runs the streams
and returns a `RunReport`: frozen, one `StreamReport` per stream. An error that stops the
run before it can report (a replication or connection to fix, a token rejected while the
organization is checked, a host that never answers) is raised, one of `errors.py`;
`errors.exit_code(error)` is the code the command would exit with. Once streams ran, a
problem is a stream's status and `error`, not an exception.

`describe` lists a replication's streams (names, target objects, modes) without a
request; `plan` says what a run would ask, from the saved state (`run --dry-run`).

What the library leaves to its caller: logging (it logs on the `sentry_extract` logger
and installs no handler), signals (it installs none, so it runs in any thread; stop a run
with a `RunControl`), and the summary's `run_end` log event (the command's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentry_extract import pipeline
from sentry_extract.config import connections as conns
from sentry_extract.config.replication import (
    Overrides,
    Replication,
    load_replication,
    parse_replication,
)
from sentry_extract.errors import ConfigError
from sentry_extract.pipeline.results import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PARTIAL,
)

if TYPE_CHECKING:
    from sentry_extract.source.cassettes import Recording, ReplayTransport

STATE_VARIABLE = "SENTRY_EXTRACT_STATE"  # where state is kept, when not beside the data

ReplicationSource = str | os.PathLike[str] | Mapping[str, Any]
"""A replication: the path of its YAML file, or the YAML document already parsed (a
mapping with `source`, `target`, `streams`...). Text is not taken for YAML: a string is
a path, so a file name is never parsed as a document by mistake."""


@dataclass(frozen=True)
class StreamReport:
    """How one stream ended. `status`: ok, partial (rows committed, something skipped:
    `problems` says what), failed, or cancelled (stopped; its checkpoints are kept)."""

    name: str
    mode: str
    object: str
    rows: int
    requests: int
    retries: int
    seconds: float
    checkpoints: int  # commits made while the stream was read
    reconciled: bool  # compared every stored key with Sentry
    deleted: int  # rows stamped `_deleted_at` by this run
    behind: Mapping[str, Any] | None  # figures, when the stream cannot keep up
    status: str
    problems: tuple[str, ...]
    stopped_run: bool  # its failure (a rejected token) stopped every stream

    @property
    def is_ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def error(self) -> str | None:
        """What went wrong, on one line (its problems); None when the stream is ok."""
        if self.is_ok:
            return None
        return "; ".join(self.problems) or self.status

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["behind"] = dict(self.behind) if self.behind is not None else None
        document["problems"] = list(self.problems)
        return document


@dataclass(frozen=True)
class RunReport:
    """How a run ended. `exit_code` is the command's: 0 every stream ok, 1 a stream failed
    or skipped something or `fatal` stopped the run (a rejected token, the deadline), 2 bad
    input, 130/143 a signal. `preflight_requests`: the organization's check before the
    streams, when no stream counts it."""

    streams: tuple[StreamReport, ...]
    started_at: datetime
    ended_at: datetime
    seconds: float
    exit_code: int
    fatal: str | None = None
    preflight_requests: int = 0

    @property
    def rows(self) -> int:
        return sum(stream.rows for stream in self.streams)

    @property
    def requests(self) -> int:
        return self.preflight_requests + sum(stream.requests for stream in self.streams)

    def stream(self, name: str) -> StreamReport:
        """The report of the stream `name` (KeyError when it did not run)."""
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)

    @classmethod
    def from_summary(cls, summary: pipeline.RunSummary) -> RunReport:
        """The frozen report of the pipeline's summary."""
        ended_at = summary.ended_at or datetime.now(UTC)
        return cls(
            streams=tuple(
                StreamReport(
                    name=result.name,
                    mode=str(result.mode),
                    object=result.object,
                    rows=result.rows,
                    requests=result.requests,
                    retries=result.retries,
                    seconds=result.seconds,
                    checkpoints=result.checkpoints,
                    reconciled=result.reconciled,
                    deleted=result.deleted,
                    behind=dict(result.behind) if result.behind is not None else None,
                    status=result.status,
                    problems=tuple(result.problems),
                    stopped_run=result.stopped_run,
                )
                for result in summary.results
            ),
            started_at=summary.started_at or ended_at,
            ended_at=ended_at,
            seconds=summary.seconds,
            exit_code=summary.exit_code,
            fatal=summary.fatal,
            preflight_requests=summary.preflight_requests,
        )

    def to_json(self) -> dict[str, Any]:
        """What `run --summary-json` writes."""
        return {
            "exit_code": self.exit_code,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "requests": self.requests,
            "fatal": self.fatal,
            "streams": [stream.to_json() for stream in self.streams],
        }


@dataclass(frozen=True)
class StreamInfo:
    """A stream of a replication as it would run: where its rows go, and how."""

    name: str
    object: str  # the target object, placeholders filled: sentry.issues, file://out/issues
    mode: str
    primary_key: tuple[str, ...]
    update_key: str | None
    format: str  # file targets: parquet or delta
    description: str


@dataclass(frozen=True)
class ReplicationInfo:
    """A replication's connections (by name) and the streams it runs; `notes`: what the
    file asks that does not apply (a run logs each as a warning)."""

    source: str
    target: str
    streams: tuple[StreamInfo, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What a run would do (`run --dry-run`): a `StreamPlan` per stream (its windows from
    the saved state, its first request), and the replication's `notes`."""

    streams: tuple[pipeline.StreamPlan, ...]
    notes: tuple[str, ...] = ()


class RunControl:
    """Stops a run from elsewhere: another thread, a signal handler, an orchestrator.

    `cancel()` asks every stream to stop at its next request or wait (one in flight is
    not cut); the run then ends as any run does, and `run` returns its report, those
    streams `cancelled` with their checkpoints kept (exit code 1). Cancelled before the
    streams begin (while the organization is checked), `run` raises `RunCancelled`:
    nothing was written. A control serves one run.
    """

    def __init__(self) -> None:
        self.cancelled = threading.Event()  # the run's own: set by `cancel`, and by a 401
        self.streaming = threading.Event()  # set by the run once streams begin

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    @property
    def has_started_streams(self) -> bool:
        """Whether streams began: before, nothing is written yet."""
        return self.streaming.is_set()


def run(
    replication: ReplicationSource,
    *,
    streams: Sequence[str] | None = None,
    mode: str | None = None,
    deadline: timedelta | float | None = None,
    record: str | os.PathLike[str] | None = None,
    replay: str | os.PathLike[str] | None = None,
    environment: Mapping[str, str] | None = None,
    control: RunControl | None = None,
) -> RunReport:
    """Run a replication: read its streams from Sentry and write them to the target.

    - `streams`: only these (as `--streams`); a stream the file disables runs when named.
    - `mode`: every stream's mode (`full-refresh`, `incremental`, `truncate`, `snapshot`,
      `backfill`), as `--mode`.
    - `deadline`: end the run this long after it starts (a timedelta, or seconds), as
      `--deadline`: streams still running stop and keep their checkpoints.
    - `record` / `replay`: a folder of cassettes to write every exchange to, or to answer
      from offline (no token, no network), as `--record` / `--replay`.
    - `environment`: where connections and `${VARIABLES}` are looked up; None: the
      process's environment plus `.env.sling` of the working folder, as the command does.
      `SENTRY_EXTRACT_STATE` in it keeps the state elsewhere, as for the command.
    - `control`: a `RunControl`, to cancel the run from another thread.

    Raises `ConfigError` for input to fix (exit code 2), and the error that stopped the
    run when it stopped before the streams (`errors.exit_code` maps each to its code).
    Each call stands alone: two calls share nothing but the files and tables they write,
    and the target's lock keeps two runs of one object apart.
    """
    environ = _environment(environment)
    if record is not None and replay is not None:
        raise ConfigError("record and replay: choose one")
    seconds = _deadline_seconds(deadline)
    transport, recording = _replay(replay)
    started = recording.run_started_at if recording is not None else None
    loaded = _load(replication, streams, mode, environ, started)
    record_to = Path(record) if record is not None else None
    if record_to is not None:
        record_to.mkdir(parents=True, exist_ok=True)
    control = control or RunControl()
    settings = pipeline.RunSettings(
        state_location=environ.get(STATE_VARIABLE),
        deadline=seconds,
        record_to=record_to,
        replay=recording,
        transport=transport,
        sleep=_no_wait if recording is not None else None,
        cancelled=control.cancelled,
        streaming=control.streaming,
    )
    summary = pipeline.run_replication(loaded, _connections(environ, environment), settings)
    return RunReport.from_summary(summary)


def describe(
    replication: ReplicationSource,
    *,
    streams: Sequence[str] | None = None,
    mode: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> ReplicationInfo:
    """The streams a run would run (as `run` takes `streams` and `mode`), each with its
    target object and mode; nothing is requested and no connection is opened.

    Objects are rendered now: one holding `{run_timestamp}` names this moment's."""
    loaded = _load(replication, streams, mode, _environment(environment))
    return ReplicationInfo(
        loaded.source,
        loaded.target,
        tuple(
            StreamInfo(
                name=stream.name,
                object=stream.object,
                mode=str(stream.mode),
                primary_key=stream.primary_key,
                update_key=stream.update_key,
                format=stream.format,
                description=stream.spec.description,
            )
            for stream in loaded.streams
        ),
        loaded.notes,
    )


def _replay(
    replay: str | os.PathLike[str] | None,
) -> tuple[ReplayTransport | None, Recording | None]:
    """The recording to replay, if any (cassettes, and httpx with them, load only then)."""
    if replay is None:
        return None, None
    from sentry_extract.source.cassettes import load_replay

    return load_replay(Path(replay))


def plan(
    replication: ReplicationSource,
    *,
    streams: Sequence[str] | None = None,
    mode: str | None = None,
    replay: str | os.PathLike[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Plan:
    """What a run would do, stream by stream (`run --dry-run`): the windows it would read
    from the saved state, and its first request. Nothing is requested or written."""
    environ = _environment(environment)
    recording = _replay(replay)[1]
    started = recording.run_started_at if recording is not None else None
    loaded = _load(replication, streams, mode, environ, started)
    connections = _connections(environ, environment)
    location = environ.get(STATE_VARIABLE)
    plans = pipeline.plan_replication(loaded, connections, location, recording)
    return Plan(tuple(plans), loaded.notes)


def _environment(environment: Mapping[str, str] | None) -> dict[str, str]:
    if environment is not None:
        return dict(environment)
    return conns.environment_with_dotenv(os.environ, Path.cwd())


def _connections(
    environ: Mapping[str, str], given: Mapping[str, str] | None
) -> dict[str, conns.ConnectionEntry]:
    """The connections of the environment; those of `.env.sling` are named as such."""
    from_dotenv = environ.keys() - os.environ.keys() if given is None else set()
    return conns.discover_connections(environ, from_dotenv)


def _load(
    replication: ReplicationSource,
    streams: Sequence[str] | None,
    mode: str | None,
    environ: Mapping[str, str],
    started: datetime | None = None,
) -> Replication:
    if isinstance(streams, str):  # one name is a sequence of letters: never meant
        raise ConfigError(f"streams: give a list of names, e.g. ['{streams}'], not text")
    overrides = Overrides(tuple(streams or ()), mode)
    run_started_at = started or datetime.now(UTC).replace(microsecond=0)
    if isinstance(replication, Mapping):
        label = "replication"
        return parse_replication(
            dict(replication), label, Path(label), environ, run_started_at, overrides
        )
    if isinstance(replication, str) and "\n" in replication:
        raise ConfigError(
            "replication: this text is not a file name; to run YAML text, pass "
            "yaml.safe_load(text), or write it to a file"
        )
    return load_replication(Path(replication), environ, run_started_at, overrides)


def _deadline_seconds(deadline: timedelta | float | None) -> float | None:
    if deadline is None:
        return None
    seconds = deadline.total_seconds() if isinstance(deadline, timedelta) else float(deadline)
    if seconds <= 0:
        raise ConfigError(f"deadline: {deadline!r} is no time at all: give e.g. 30 seconds")
    return seconds


def _no_wait(seconds: float) -> None:
    """A replay has nothing to wait for: the recording already waited."""


__all__ = [
    "STATUS_CANCELLED",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_PARTIAL",
    "Plan",
    "ReplicationInfo",
    "ReplicationSource",
    "RunControl",
    "RunReport",
    "StreamInfo",
    "StreamReport",
    "describe",
    "plan",
    "run",
]
