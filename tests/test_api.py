"""The library call: `sentry_extract.run` reports what it wrote, raises what the command
maps to exit codes, and leaves nothing behind in the process that calls it."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import sentry_extract
from sentry_extract import api
from sentry_extract.errors import (
    AuthenticationError,
    ConfigError,
    SentryExtractError,
    UnreachableError,
    exit_code,
)
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Workspace, invoke, sentry_connection, when_answered


def test_a_run_reports_what_it_wrote(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication("  teams:\n  issues:\n  events:\n")
    report = sentry_extract.run(path, environment=workspace.environ)
    assert report.exit_code == 0 and report.fatal is None
    assert [stream.name for stream in report.streams] == ["teams", "issues", "events"]
    for stream in report.streams:
        assert stream.status == "ok" and stream.error is None
        assert stream.rows == workspace.table(stream.name).num_rows > 0
    assert report.stream("teams").requests == len(fake.requests_to("/teams/"))
    assert report.requests == len(fake.requests)  # the organization's check included
    assert report.rows == sum(stream.rows for stream in report.streams)
    assert report.started_at <= report.ended_at
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.exit_code = 1  # type: ignore[misc]
    with pytest.raises(KeyError):
        report.stream("members")


def test_a_failed_stream_is_its_status_and_error_not_an_exception(
    workspace: Workspace, fake: FakeSentry
) -> None:
    fake.settings.token_scopes[workspace_token(workspace)] = frozenset(
        {"org:read", "project:read", "event:read"}
    )
    path = workspace.replication("  teams:\n  issues:\n")
    report = api.run(path, environment=workspace.environ)
    assert report.exit_code == 1
    teams, issues = report.stream("teams"), report.stream("issues")
    assert teams.status == "failed" and not teams.is_ok
    assert teams.error is not None and "team:read" in teams.error
    assert issues.status == "ok" and issues.rows == workspace.table("issues").num_rows


def workspace_token(workspace: Workspace) -> str:
    return str(yaml.safe_load(workspace.environ["SENTRY"])["secrets"]["auth_token"])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "raised", "code"),
    [
        ("unknown stream", ConfigError, 2),
        ("rejected token", AuthenticationError, 1),
        ("unreachable host", ConfigError, 2),  # explained: check inputs.base_url
    ],
)
def test_errors_are_raised_as_the_command_maps_them(
    workspace: Workspace,
    fake: FakeSentry,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    raised: type[SentryExtractError],
    code: int,
) -> None:
    """The same input stops the library with an error and the command with that error's
    message and the exit code `exit_code` gives it."""
    streams = "  teams:\n  isues:\n" if case == "unknown stream" else "  teams:\n"
    path = workspace.replication(streams)
    if case == "rejected token":
        workspace.environ["SENTRY"] = sentry_connection(fake.base_url, "sntryu_test_revoked")
    if case == "unreachable host":
        workspace.environ["SENTRY"] = sentry_connection(
            f"http://127.0.0.1:{closed_port()}", retry_attempts=1
        )
    with pytest.raises(SentryExtractError) as stopped:
        api.run(path, environment=workspace.environ)
    error = stopped.value
    assert isinstance(error, raised) and exit_code(error) == code
    if case == "unreachable host":
        assert isinstance(error.__cause__, UnreachableError)
    for name, value in workspace.environ.items():
        monkeypatch.setenv(name, value)
    result = invoke(cli, "run", str(path))
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1] == f"error: {error}"


def test_what_the_library_refuses(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication("  teams:\n  issues:\n")
    refused = {
        "a name as text": lambda: api.run(path, streams="teams", environment=workspace.environ),
        "YAML as text": lambda: api.run(path.read_text(), environment=workspace.environ),
        "no time at all": lambda: api.run(path, deadline=0, environment=workspace.environ),
        "both ways": lambda: api.run(
            path, record=workspace.folder / "a", replay=workspace.folder / "b"
        ),
    }
    messages = {}
    for case, call in refused.items():
        with pytest.raises(ConfigError) as stopped:
            call()
        messages[case] = str(stopped.value)
    assert messages == {
        "a name as text": "streams: give a list of names, e.g. ['teams'], not text",
        "YAML as text": "replication: this text is not a file name; to run YAML text, "
        "pass yaml.safe_load(text), or write it to a file",
        "no time at all": "deadline: 0 is no time at all: give e.g. 30 seconds",
        "both ways": "record and replay: choose one",
    }
    assert fake.requests == []


def test_streams_mode_and_a_parsed_document(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication("  teams:\n  issues:\n  events:\n")
    document = yaml.safe_load(path.read_text())
    report = api.run(
        document, streams=["teams"], mode="full-refresh", environment=workspace.environ
    )
    assert [(s.name, s.mode, s.status) for s in report.streams] == [("teams", "full-refresh", "ok")]
    assert fake.requests_to("/issues/") == [] and fake.requests_to("/events/") == []
    assert report.stream("teams").rows == workspace.table("teams").num_rows


def test_describe_lists_streams_and_objects_without_a_request(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication("  teams:\n  issues:\n  org_stats:\n    disabled: true\n")
    described = api.describe(path, environment=workspace.environ)
    assert (described.source, described.target) == ("SENTRY", "LOCAL")
    assert [(s.name, s.mode) for s in described.streams] == [
        ("teams", "full-refresh"),
        ("issues", "incremental"),
    ]
    out = workspace.folder / "out"
    assert [s.object for s in described.streams] == [f"file://{out}/teams", f"file://{out}/issues"]
    assert described.streams[1].primary_key == ("id",)
    assert described.streams[1].update_key == "last_seen"
    named = api.describe(path, streams=["org_stats"], environment=workspace.environ)
    assert [s.name for s in named.streams] == ["org_stats"]  # disabled, but named
    plan = api.plan(path, environment=workspace.environ)
    assert [p.name for p in plan.streams] == ["teams", "issues"]
    assert "/teams/" in plan.streams[0].first_request
    assert fake.requests == []


def test_twice_in_one_process_from_a_thread_leaves_nothing_behind(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    """A thread cannot install a signal handler: the library installs none. Nor a log
    handler, and its stream threads end with it; the second run starts from the first's
    state, nothing else."""
    path = workspace.replication("  issues:\n  events:\n", mode="incremental")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    loggers = logging.getLogger("sentry_extract").handlers[:], logging.getLogger().handlers[:]
    reports: list[api.RunReport] = []
    failures: list[BaseException] = []

    def twice() -> None:
        try:
            reports.append(api.run(path, environment=workspace.environ))
            organization.add_events(5, project_slug="project-1", age=timedelta(minutes=5))
            reports.append(api.run(path, environment=workspace.environ))
        except BaseException as error:
            failures.append(error)

    worker = threading.Thread(target=twice)
    worker.start()
    worker.join()
    assert failures == []
    first, second = reports
    assert first.exit_code == second.exit_code == 0
    assert second.stream("events").rows < first.stream("events").rows
    assert second.stream("events").rows >= 5  # the late ones, and the lookback's
    assert first.started_at < second.started_at
    assert {n: signal.getsignal(n) for n in handlers} == handlers
    assert (logging.getLogger("sentry_extract").handlers, logging.getLogger().handlers) == (
        list(loggers[0]),
        list(loggers[1]),
    )
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("stream")]


def slow_events(tmp_path: Path) -> tuple[FakeOrganization, ServerSettings, dict[str, str]]:
    organization = FakeOrganization("acme", OrganizationSize(events=600))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n"
        f"  object: file://{tmp_path}/out/{{stream_name}}\nstreams:\n  events:\n"
    )
    return organization, ServerSettings(latency=0.05), {"SENTRY_EXTRACT_HOME": str(tmp_path)}


def when_events_are_read(fake: FakeSentry, then: Any) -> threading.Thread:
    """Calls `then` once the fake has answered three requests for events."""

    answered = when_answered(fake, lambda seen: sum("/events/" in r.path for r in seen) >= 3)

    def watch() -> None:
        answered.wait(60)  # a bound for a broken build, not a time anything takes
        then()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_a_control_cancels_a_run_from_another_thread(tmp_path: Path) -> None:
    organization, settings, environment = slow_events(tmp_path)
    with FakeSentry(organization, settings) as fake:
        environment["SENTRY"] = sentry_connection(fake.base_url)
        control = api.RunControl()
        watcher = when_events_are_read(fake, control.cancel)
        report = api.run(tmp_path / "r.yaml", environment=environment, control=control)
        watcher.join()
        pages = len(fake.requests_to("/events/"))
    events = report.stream("events")
    assert control.is_cancelled and control.has_started_streams
    assert events.status == "cancelled" and report.exit_code == 1
    assert events.error is not None and "stopped before it finished" in events.error
    assert pages < 600 // 10 // 2  # stopped, not read to the end (about 50 pages)


def test_ctrl_c_without_a_handler_stops_the_streams_too(tmp_path: Path) -> None:
    """A script that calls `run` installs no SIGINT handler: Ctrl-C raises
    KeyboardInterrupt in its thread, and the streams' threads stop with it instead of
    reading on, unseen, until they are done."""
    organization, settings, environment = slow_events(tmp_path)
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    # Python's own handler, whatever this process inherited (a background job ignores SIGINT)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with FakeSentry(organization, settings) as fake:
            environment["SENTRY"] = sentry_connection(fake.base_url)
            watcher = when_events_are_read(fake, lambda: signal.pthread_kill(main, signal.SIGINT))
            with pytest.raises(KeyboardInterrupt):
                api.run(tmp_path / "r.yaml", environment=environment)
            watcher.join()
            pages = len(fake.requests_to("/events/"))
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("stream")]
    assert pages < 600 // 10 // 2  # the streams stopped too: to the end is about 50 pages


def test_the_package_names_load_the_library_when_used() -> None:
    """`import sentry_extract` stays light: the command sets Arrow's allocator first."""
    script = (
        "import sys, sentry_extract\n"
        "print('pyarrow' in sys.modules)\n"
        "run = sentry_extract.run\n"
        "print('pyarrow' in sys.modules, run.__module__)\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert printed.stdout.split() == ["False", "True", "sentry_extract.api"]
    assert sentry_extract.run is api.run and set(sentry_extract.__all__) >= {"run", "describe"}
    with pytest.raises(AttributeError):
        sentry_extract.nothing  # noqa: B018


def test_a_run_over_libcurl_loads_neither_httpx_nor_ssl(tmp_path: Path) -> None:
    """httpx (and httpcore, h11, `email` and `urllib.request` with it) cost about 40 ms of
    CPU and 6 MB to import: a run without a proxy, a recording or a replay does without
    them. (`ssl` comes with `pyarrow.parquet`.)"""
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  mode: incremental\n"
        "  object: out/{stream_name}\nstreams:\n  issues:\n  events:\n"
    )
    script = (
        "import sys\n"
        "from sentry_extract import api\n"
        "summary = api.run('r.yaml')\n"
        "print(summary.exit_code, sum(stream.rows for stream in summary.streams))\n"
        "print(sorted(name for name in ('httpx', 'httpcore', 'h11', 'email.utils',"
        " 'urllib.request', 'http.client') if name in sys.modules))\n"
    )
    organization = FakeOrganization("acme", OrganizationSize(projects=2, issues=10, events=30))
    with FakeSentry(organization, ServerSettings()) as fake:
        environment = {
            name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")
        }
        environment["SENTRY"] = sentry_connection(fake.base_url)
        environment["SENTRY_EXTRACT_HOME"] = str(tmp_path / "home")
        printed = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env=environment,
        )
    counts, loaded = printed.stdout.splitlines()
    exit_code, rows = map(int, counts.split())
    assert exit_code == 0 and rows > 10
    assert loaded == "[]"


def test_a_broken_connection_is_named_with_where_it_comes_from(
    cli: CliRunner, tmp_path: Path
) -> None:
    """The library reads connections as the command does: `.env.sling` is named."""
    (tmp_path / ".env.sling").write_text(
        "SENTRY='{ type: api, spec: sentry, inputs: { organization: acme } }'\n"
    )
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
        "streams:\n  teams:\n"
    )
    with pytest.raises(ConfigError) as stopped:
        api.run("r.yaml")
    assert str(stopped.value).startswith("connection SENTRY (.env.sling): ")
    result = invoke(cli, "run", "r.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {stopped.value}"
