"""The command line. Parses arguments, calls the pipeline, turns our errors into a
one-line message and an exit code (`errors.exit_code` decides it):

    0    every stream complete
    1    a stream failed or skipped something (the summary says which and why)
    2    bad input: a connection, replication file or option to fix
    130  interrupted (Ctrl-C); 143 terminated (SIGTERM)
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from sentry_extract import __version__, api, pipeline
from sentry_extract.config import connections as conns
from sentry_extract.config.replication import Overrides, Replication, load_replication
from sentry_extract.config.values import parse_duration
from sentry_extract.errors import ConfigError, Interrupted, SentryExtractError, exit_code
from sentry_extract.events import counted, emit
from sentry_extract.files import write_atomically
from sentry_extract.model.modes import MODE_NAMES, Mode
from sentry_extract.model.spec import StreamSpec
from sentry_extract.records import SNAKE, column_name, declared_columns
from sentry_extract.reporting import JSON, LOG_FORMATS, TEXT, Reporting, reporting
from sentry_extract.source.catalog import STREAMS

PLAN_WIDTH = 100  # `run --dry-run` fits a terminal this wide

log = logging.getLogger("sentry_extract")


class _NamedArgument(TyperArgument):
    """An argument whose help shows its name (NAME, KEY=VALUE...), not a Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Unnamed:
    """A parameter type whose help shows nothing, where Typer would show `<path>`."""

    def get_metavar(self, param: Any, ctx: Any) -> str:
        return ""


def _unnamed(kind: Any) -> Any:
    shown = copy.copy(kind)
    shown.__class__ = type(f"Unnamed{type(kind).__name__}", (_Unnamed, type(kind)), {})
    return shown


def _name_values(command: TyperCommand | TyperGroup, ctx: Any) -> None:
    """Help names values as their metavars say (DURATION, FILE), never as Typer's Python
    types (`<str>`, `<list[str]>`, `<bool>` on flags that take no value)."""
    help_option = command.get_help_option(ctx)
    for parameter in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(parameter, TyperArgument):
            parameter.__class__ = _NamedArgument
            parameter.type = _unnamed(parameter.type)
        elif isinstance(parameter, TyperOption) and parameter.is_flag:
            parameter.metavar = ""


class _Command(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _name_values(self, ctx)
        super().format_help(ctx, formatter)


class _Group(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _name_values(self, ctx)
        super().format_help(ctx, formatter)


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="sentry-extract",
    help="Extract Sentry data into Parquet or PostgreSQL, incrementally.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP_OPTIONS,
    cls=_Group,
)
conns_app = typer.Typer(
    help="Set, list, test and discover connections.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    cls=_Group,
)
state_app = typer.Typer(
    help="Show or clear the incremental state of a replication.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    cls=_Group,
)
app.add_typer(conns_app, name="conns")
app.add_typer(state_app, name="state")


def _console(stderr: bool = False) -> Console:
    """Tables fit the terminal; when piped (cron, CI) lines are never wrapped."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 400
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


output = _console()
errors = _console(stderr=True)

DebugOption = Annotated[
    bool, typer.Option("--debug", help="Log every request (never a secret) and show tracebacks.")
]
NameArgument = Annotated[str, typer.Argument(help="Connection name.", metavar="NAME")]
ReplicationArgument = Annotated[
    Path, typer.Argument(help="The replication YAML file.", metavar="REPLICATION")
]
StreamsOption = Annotated[
    str | None,
    typer.Option("--streams", help="Only these streams, comma-separated.", metavar="NAMES"),
]


def _fail(message: str, code: int) -> NoReturn:
    errors.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def _errors_translated(debug: bool, log_format: str = TEXT) -> Iterator[Reporting]:
    """Our exceptions become one line and an exit code; tracebacks only with --debug.

    Log records go where `log_format` says while the block runs (see `reporting`).
    """
    try:
        with reporting(log_format, debug) as shown:
            yield shown
    except typer.Exit:
        raise
    except (Interrupted, KeyboardInterrupt) as interruption:
        errors.print("interrupted: committed rows and state are kept", markup=False)
        raise typer.Exit(exit_code(interruption)) from None
    except SentryExtractError as error:
        if debug:
            raise
        _fail(str(error), exit_code(error))


def _environment() -> dict[str, str]:
    return conns.environment_with_dotenv(os.environ, Path.cwd())


def _connections() -> dict[str, conns.ConnectionEntry]:
    environment = _environment()
    from_dotenv = environment.keys() - os.environ.keys()
    return conns.discover_connections(environment, from_dotenv)


def _sentry_connection(name: str) -> conns.SentryConnection:
    connection = conns.resolve_connection(conns.find_connection(_connections(), name))
    if not isinstance(connection, conns.SentryConnection):
        raise ConfigError(
            f"connection {name.upper()} is not a Sentry connection (type=api spec=sentry)"
        )
    return connection


# --- conns -----------------------------------------------------------------------------


@conns_app.command("set", cls=_Command)
def conns_set(
    name: Annotated[
        str, typer.Argument(help="Connection name (stored upper-cased).", metavar="NAME")
    ],
    values: Annotated[
        list[str],
        typer.Argument(
            help="key=value pairs, e.g. type=api spec=sentry "
            "secrets='{ auth_token: ... }' inputs='{ organization: my-org }'.",
            metavar="KEY=VALUE...",
        ),
    ],
    debug: DebugOption = False,
) -> None:
    """Store a connection in env.yaml (file mode 0600)."""
    with _errors_translated(debug):
        path = conns.set_connection(_environment(), name, conns.parse_assignments(values))
        output.print(f"connection {name.upper()} saved in {path}", markup=False)


@conns_app.command("unset", cls=_Command)
def conns_unset(
    name: NameArgument,
    debug: DebugOption = False,
) -> None:
    """Remove a connection from env.yaml."""
    with _errors_translated(debug):
        if not conns.unset_connection(_environment(), name):
            raise ConfigError(
                f"connection {name.upper()} is not in {conns.env_file_path(_environment())}"
            )
        output.print(f"connection {name.upper()} removed", markup=False)


@conns_app.command("list", cls=_Command)
def conns_list(debug: DebugOption = False) -> None:
    """List connections: name, type and where each comes from. Never prints a secret."""
    with _errors_translated(debug):
        table = Table("name", "type", "source", box=None, pad_edge=False)
        for name, entry in sorted(_connections().items()):
            kind = entry.type if not entry.problem else f"unreadable: {entry.problem}"
            spec = entry.values.get("spec")
            table.add_row(name, f"{kind}/{spec}" if spec else kind, entry.origin)
        output.print(table)


@conns_app.command("test", cls=_Command)
def conns_test(
    name: NameArgument,
    debug: DebugOption = False,
) -> None:
    """Check a connection: authenticate and read the organization."""
    with _errors_translated(debug):
        connection = conns.resolve_connection(conns.find_connection(_connections(), name))
        output.print(f"{name.upper()}: {pipeline.test_connection(connection)}", markup=False)


@conns_app.command("discover", cls=_Command)
def conns_discover(
    name: NameArgument,
    columns: Annotated[
        bool, typer.Option("--columns", help="Also list each stream's columns and types.")
    ] = False,
    output_format: Annotated[
        str,
        typer.Option("--output", "-o", help="table, or json for machines.", metavar="table|json"),
    ] = "table",
    debug: DebugOption = False,
) -> None:
    """List every stream: parent, default mode, keys, scope, whether '*' selects it."""
    with _errors_translated(debug):
        if output_format not in ("table", "json"):
            raise ConfigError(f"--output: '{output_format}' is not one of table, json")
        _sentry_connection(name)
        endpoints = [_endpoint(spec, columns) for spec in STREAMS]
        if output_format == "json":
            output.print_json(json.dumps(endpoints))
            return
        table = Table(
            "endpoint", "parent", "mode", "scope", "selected by", box=None, pad_edge=False
        )
        for endpoint in endpoints:
            table.add_row(
                endpoint["endpoint"],
                endpoint["parent"],
                endpoint["mode"],
                endpoint["scope"],
                "name only" if endpoint["named_only"] else "'*' or name",
            )
        output.print(table)
        if not columns:
            output.print("keys and columns: add --columns", markup=False)
        for endpoint in endpoints if columns else []:
            update_key = endpoint["update_key"] or "none"
            keys = f"primary key {', '.join(endpoint['primary_key'])}; update key {update_key}"
            output.print(f"\n{endpoint['endpoint']}: {keys}", markup=False)
            for column in endpoint["columns"]:
                output.print(f"  {column['name']:<32} {column['type']}", markup=False)


def _endpoint(spec: StreamSpec, with_columns: bool) -> dict[str, Any]:
    described: dict[str, Any] = {
        "endpoint": spec.name,
        "description": spec.description,
        "request": f"GET /api/0/{spec.path}",
        "operation_id": spec.operation,
        "parent": spec.parent.value,
        "mode": str(Mode.INCREMENTAL if spec.is_incremental else Mode.FULL_REFRESH),
        "incremental": spec.is_incremental,
        "primary_key": [column_name(key, SNAKE) for key in spec.primary_key],
        "update_key": column_name(spec.update_key, SNAKE) if spec.update_key else None,
        "scope": spec.scope,
        "named_only": spec.named_only,
    }
    if with_columns:
        described["columns"] = [
            {"name": name, "type": column_type.value}
            for name, column_type in declared_columns(spec, SNAKE).items()
        ]
    return described


# --- run -------------------------------------------------------------------------------


def _load(path: Path, streams: str | None, mode: str | None) -> Replication:
    """The replication, for the commands that read its state or tables."""
    run_started_at = datetime.now(UTC).replace(microsecond=0)
    return load_replication(path, _environment(), run_started_at, Overrides(_names(streams), mode))


class _Signals:
    """SIGINT and SIGTERM. Once streams run, the first cancels the run: it then ends as
    any run does, summary and all. Before (nothing is written yet), and at a second
    signal, the run leaves at once."""

    def __init__(self, control: api.RunControl) -> None:
        self.control = control
        self.received: int | None = None

    @property
    def fatal(self) -> str:
        name = "SIGTERM" if self.received == signal.SIGTERM else "SIGINT (Ctrl-C)"
        return f"interrupted by {name}; committed rows and state are kept"

    def _handle(self, number: int, frame: FrameType | None) -> None:
        first = self.received is None
        self.received = self.received or number
        self.control.cancel()
        if not first or not self.control.has_started_streams:
            raise Interrupted(self.received)

    @contextmanager
    def installed(self) -> Iterator[_Signals]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {number: signal.signal(number, self._handle) for number in handled}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


@dataclass(frozen=True)
class _RunOptions:
    """`run`'s options once checked, the same way for a run and a dry run."""

    deadline: float | None
    record: Path | None
    replay: Path | None


def _check_options(
    log_format: str, deadline: str | None, record: Path | None, replay: Path | None
) -> _RunOptions:
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format: '{log_format}' is not one of {', '.join(LOG_FORMATS)}")
    if record is not None and replay is not None:
        raise ConfigError("--record and --replay: choose one")
    return _RunOptions(_deadline_seconds(deadline), record, replay)


def _deadline_seconds(text: str | None) -> float | None:
    """`--deadline` with its unit: a bare number (minutes? seconds?) is refused, as is 0."""
    if text is not None and re.fullmatch(r"\s*\d+(\.\d+)?\s*", text):
        number = text.strip()
        raise ConfigError(
            f"--deadline: '{number}' has no unit: write {number}s, {number}m or {number}h"
        )
    seconds = _seconds(text, "--deadline")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--deadline: '{text}' is no time at all: give e.g. 30s, 50m or 2h")
    return seconds


@app.command("run", cls=_Command)
def run(
    replication: ReplicationArgument,
    streams: StreamsOption = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help=f"Override every stream's mode: {', '.join(MODE_NAMES)}.",
            metavar="MODE",
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="End the run this long after it starts, with a unit (30s, 50m, 2h; a bare "
            "number is refused), even mid-request: streams still running stop, their "
            "checkpoints are kept for the next run, and the run exits 1.",
            metavar="DURATION",
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            help="Write every HTTP exchange to cassettes in this folder "
            "(vcrpy format; the token is never written).",
            file_okay=False,
            metavar="FOLDER",
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            help="Run offline from the cassettes in this folder: no token and no network needed.",
            file_okay=False,
            metavar="FOLDER",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="text (progress bars on a terminal, plain lines "
            "elsewhere) or json (one JSON object per event, on stderr).",
            metavar="text|json",
        ),
    ] = TEXT,
    summary_json: Annotated[
        Path | None,
        typer.Option(
            "--summary-json",
            help="Also write the run's summary to this file, as JSON.",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No summary table on stdout: only warnings, each stream's problems and the "
            "error line, on stderr (with --log-format json stdout stays empty anyway).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (streams, modes, objects, windows "
            "from the saved state, first requests) and write nothing.",
        ),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Run a replication: read the streams from Sentry and write them to the target."""
    if dry_run:
        with _errors_translated(debug, log_format if log_format in LOG_FORMATS else TEXT):
            options = _check_options(log_format, deadline, record, replay)
            plans = api.plan(
                replication,
                streams=_names(streams),
                mode=mode,
                replay=options.replay,
            )
            _print_plan(plans.streams, plans.notes)
        return
    began, began_at = time.monotonic(), datetime.now(UTC)
    control = api.RunControl()
    json_log = log_format == JSON
    with _Signals(control).installed() as signals:
        with reporting(log_format if log_format in LOG_FORMATS else TEXT, debug) as shown:
            raised: Exception | None = None
            try:
                options = _check_options(log_format, deadline, record, replay)
                report = api.run(
                    replication,
                    streams=_names(streams),
                    mode=mode,
                    deadline=options.deadline,
                    record=options.record,
                    replay=options.replay,
                    control=control,
                )
            except (Interrupted, KeyboardInterrupt):  # a second signal, or one before ours
                report = _stopped(began, began_at, None)
                signals.received = signals.received or signal.SIGINT
            except Exception as error:
                report, raised = _failed(error, began, began_at), error
            if signals.received is not None:
                interruption = Interrupted(signals.received)
                report = replace(report, fatal=signals.fatal, exit_code=exit_code(interruption))
            shown.finish()  # progress bars end before the summary prints
            _report_end(report)
        if summary_json is not None:
            write_atomically(summary_json, json.dumps(report.to_json(), indent=2).encode())
        if not json_log:  # a JSON log's `run_end` event holds the summary: no other output
            _print_summary(report, quiet, interrupted=signals.received is not None)
    if raised is not None and debug:
        raise raised
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _names(streams: str | None) -> tuple[str, ...]:
    """`--streams issues,events` as names."""
    return tuple(name.strip() for name in (streams or "").split(",") if name.strip())


def _stopped(began: float, began_at: datetime, error: BaseException | None) -> api.RunReport:
    """The report of a run that stopped before it could make one."""
    return api.RunReport(
        streams=(),
        started_at=began_at,
        ended_at=datetime.now(UTC),
        seconds=time.monotonic() - began,
        exit_code=exit_code(error),
    )


def _failed(error: Exception, began: float, began_at: datetime) -> api.RunReport:
    """The report of a run that an error stopped before it could make one."""
    report = _stopped(began, began_at, error)
    if isinstance(error, SentryExtractError):
        return replace(report, fatal=str(error), preflight_requests=error.requests)
    fatal = f"unexpected error: {type(error).__name__}: {error}"
    emit(log, logging.ERROR, "crash", f"{fatal} (a bug: please report it)", exc_info=error)
    return replace(report, fatal=fatal)


def _report_end(report: api.RunReport) -> None:
    """The run's last event, whatever ended it (`run_end`): the summary, streams and all."""
    text = (
        f"run ended: {counted(report.rows, 'row')}, {counted(report.requests, 'request')} "
        f"in {report.seconds:.1f}s, exit code {report.exit_code}"
    )
    emit(
        log,
        logging.ERROR if report.fatal else logging.INFO,
        "run_end",
        f"{text}: {report.fatal}" if report.fatal else text,
        **report.to_json(),
    )


def _print_plan(plans: Sequence[pipeline.StreamPlan], notes: Sequence[str] = ()) -> None:
    """Each stream in a few lines that fit a terminal of 100 columns."""
    for note in notes:
        output.print(f"note: {note}", markup=False)
    for plan in plans:
        output.print(f"{plan.name}  {plan.mode}  into {plan.object}", markup=False)
        for label, lines in (("window", plan.windows), ("request", _wrapped(plan.first_request))):
            for number, line in enumerate(lines):
                output.print(f"  {label if number == 0 else '':<8} {line}", markup=False)
    output.print("dry run: nothing was requested or written", markup=False)


def _wrapped(request: str, width: int = PLAN_WIDTH - 11) -> list[str]:
    """A request cut before `?` or `&` into lines of at most `width` characters."""
    lines = [""]
    for piece in re.split(r"(?=[?&])", request):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return lines


def _seconds(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError as error:
        raise ConfigError(f"{option}: {error}") from None


def _print_summary(report: api.RunReport, quiet: bool, interrupted: bool) -> None:
    """The table when streams ran (an interrupted run included) and each problem, on
    stdout (`--quiet`: the problems alone, on stderr); what stopped the run, on stderr."""
    if quiet:
        for result in report.streams:
            for problem in result.problems:
                errors.print(f"{result.name}: {problem}", markup=False)
    elif report.streams:
        table = Table(
            "stream",
            "mode",
            "rows",
            "requests",
            "retries",
            "seconds",
            "status",
            box=None,
            pad_edge=False,
        )
        for result in report.streams:
            table.add_row(
                result.name,
                result.mode,
                f"{result.rows:,}",
                str(result.requests),
                str(result.retries),
                f"{result.seconds:.1f}",
                result.status,
            )
        output.print(table)
        for result in report.streams:
            for problem in result.problems:
                output.print(f"{result.name}: {problem}", markup=False)
        checks = report.preflight_requests
        before = f" ({checks} to check the organization first)" if checks else ""
        output.print(
            f"{counted(report.rows, 'row')}, {counted(report.requests, 'request')}{before} "
            f"in {report.seconds:.1f}s",
            markup=False,
        )
    if interrupted:
        errors.print("interrupted: committed rows and state are kept", markup=False)
    elif report.fatal and report.streams:
        errors.print(f"error: {report.fatal}; the run was stopped", markup=False)
    elif report.fatal:
        errors.print(f"error: {report.fatal}", markup=False)


# --- state -----------------------------------------------------------------------------


@state_app.command("show", cls=_Command)
def state_show(
    replication: ReplicationArgument,
    debug: DebugOption = False,
) -> None:
    """Show the saved state of each stream of a replication."""
    with _errors_translated(debug):
        loaded = _load(replication, None, None)
        table = Table(
            "stream", "object", "watermark", "projects", "kept in", box=None, pad_edge=False
        )
        location = _environment().get(api.STATE_VARIABLE)
        for stream, key, store in pipeline.state_stores(loaded, _connections(), location):
            state = store.load(key)
            watermark = state.watermark.isoformat() if state.watermark else "-"
            projects = str(len(state.project_watermarks)) if state.project_watermarks else "-"
            table.add_row(stream.name, stream.object, watermark, projects, store.describe())
        output.print(table)


@state_app.command("reset", cls=_Command)
def state_reset(
    replication: ReplicationArgument,
    streams: StreamsOption = None,
    debug: DebugOption = False,
) -> None:
    """Clear saved state, so the next run reads from the anchor date again."""
    with _errors_translated(debug):
        loaded = _load(replication, streams, None)
        location = _environment().get(api.STATE_VARIABLE)
        for stream, key, store in pipeline.state_stores(loaded, _connections(), location):
            cleared = store.reset(key)
            output.print(
                f"{stream.name}: {'state cleared' if cleared else 'no state'}", markup=False
            )


@app.command("maintain", cls=_Command)
def maintain(
    replication: ReplicationArgument,
    streams: StreamsOption = None,
    debug: DebugOption = False,
) -> None:
    """Compact, vacuum (7 days) and checkpoint the Delta tables of a replication."""
    with _errors_translated(debug):
        loaded = _load(replication, streams, None)
        for stream, line in pipeline.maintain_tables(loaded, _connections()):
            output.print(f"{stream.name}: {line}", markup=False)


# --- fake ------------------------------------------------------------------------------

FAKE_TOKEN = "sntryu_test_0123456789abcdef0123456789abcdef"  # the fake's own, not a secret


@app.command("fake", cls=_Command)
def fake(
    port: Annotated[
        int, typer.Option(help="Port to serve on (0: any free one).", metavar="PORT")
    ] = 8000,
    host: Annotated[str, typer.Option(help="Address to serve on.", metavar="HOST")] = "127.0.0.1",
    organization: Annotated[str, typer.Option(help="Its slug.", metavar="SLUG")] = "acme",
    projects: Annotated[int, typer.Option(help="Projects to generate.", metavar="N")] = 3,
    issues: Annotated[int, typer.Option(help="Issues to generate.", metavar="N")] = 40,
    events: Annotated[int, typer.Option(help="Events to generate.", metavar="N")] = 400,
    latency: Annotated[
        float, typer.Option(help="Seconds spent on each request.", metavar="SECONDS")
    ] = 0.0,
    sentry_io_limits: Annotated[
        bool,
        typer.Option(
            "--sentry-io-limits",
            help="Enforce sentry.io-like rate limits (events: 60/min, 1 in flight).",
        ),
    ] = False,
    token: Annotated[str, typer.Option(help="The token it accepts.", metavar="TOKEN")] = FAKE_TOKEN,
    history_days: Annotated[
        int, typer.Option(help="Events spread over this many days.", metavar="DAYS")
    ] = 120,
    frames: Annotated[int, typer.Option(help="Stack frames per event.", metavar="N")] = 12,
    frame_context_lines: Annotated[
        int,
        typer.Option(help="Source lines either side of a frame's line (0: compact).", metavar="N"),
    ] = 0,
    frame_vars: Annotated[int, typer.Option(help="Local variables per frame.", metavar="N")] = 2,
    events_page_cap: Annotated[
        int, typer.Option(help="Rows per full-payload events page (sentry.io: 10).", metavar="N")
    ] = 10,
    retention_days: Annotated[
        int,
        typer.Option(help="Days it keeps (sentry.io: 90, its Developer plan: 30).", metavar="DAYS"),
    ] = 90,
    tls_cert: Annotated[
        str | None, typer.Option(help="Serve HTTPS with this certificate (PEM).", metavar="FILE")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(help="The certificate's private key (PEM).", metavar="FILE")
    ] = None,
) -> None:
    """Serve a fake Sentry to practise on: a generated organization, until Ctrl-C."""
    from sentry_extract.testing.fake_sentry import FakeOptions, serve  # only this command

    options = FakeOptions(
        port=port,
        host=host,
        organization=organization,
        projects=projects,
        issues=issues,
        events=events,
        latency=latency,
        sentry_io_limits=sentry_io_limits,
        token=token,
        history_days=history_days,
        frames=frames,
        frame_context_lines=frame_context_lines,
        frame_vars=frame_vars,
        events_page_cap=events_page_cap,
        retention_days=retention_days,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    raise typer.Exit(serve(options))


def _version(value: bool) -> None:
    if value:
        output.print(f"sentry-extract {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Extract Sentry data into Parquet or PostgreSQL, incrementally."""


def main() -> None:
    app()
