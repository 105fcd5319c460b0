"""What the test modules share; the fixtures that build these are in conftest.py.

- connections, time and waiting: `sentry_connection`, `next_second`, `Clock`, `wait_for`;
- a workspace that runs replications in-process, and what its targets hold;
- what a complete extraction holds, and how Sentry changes between two runs;
- PostgreSQL rows, and S3 buckets to look into;
- the command as a process of its own (`Command`): stopped by a signal, or killed (-9)
  once the fake Sentry has answered chosen requests (`kill_when`, `kill_at_moments`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.config.connections import discover_connections
from sentry_extract.config.replication import Overrides, load_replication
from sentry_extract.pipeline import RunSettings, RunSummary, run_replication
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.targets.bucket import BucketAccess
from sentry_extract.targets.s3 import S3Place
from sentry_extract.testing.fake_sentry import (
    DEFAULT_TOKEN,
    FakeSentry,
    RequestRecord,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization

TOKEN = DEFAULT_TOKEN
RETENTION = timedelta(days=90)  # what the fake Sentry keeps by default
PATIENT = RetryPolicy(attempts=12, initial_wait=0.01, max_wait=0.05)  # outlasts injected faults


# --- connections, time and waiting ----------------------------------------------------------


def sentry_connection(base_url: str, token: str = TOKEN, **inputs: Any) -> str:
    values = {"organization": "acme", "base_url": base_url, "rate_limit": 0, **inputs}
    return json.dumps(
        {"type": "api", "spec": "sentry", "secrets": {"auth_token": token}, "inputs": values}
    )


def next_second() -> datetime:
    """A run start just after now (the clock the tests control)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


Moment = TypeVar("Moment", datetime, float)


class Clock(Generic[Moment]):
    """A clock the test moves: the fake organization's and where runs start (a datetime),
    or a monotonic clock (seconds)."""

    def __init__(self, moment: Moment) -> None:
        self.moment = moment

    def __call__(self) -> Moment:
        return self.moment


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Polls `condition` until it holds; the test fails if it does not within `seconds`
    (a bound for a broken build, not a time anything is expected to take)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {seconds:g}s for {what}"
        time.sleep(0.005)


def wait_for_the_next_second() -> None:
    """Until the wall clock is in a later second than now: a run's window ends at its start,
    to the second, so a run started then reads the events made before this call."""
    now = datetime.now(UTC)
    wait_for(lambda: datetime.now(UTC).replace(microsecond=0) > now, "the next second")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- a workspace: replications run in-process --------------------------------------------


@dataclass
class Workspace:
    """A folder with a replication file, an environment and a way to run it; with a
    bucket, the replication writes there (`sentry/{stream_name}`) instead of `out/`."""

    folder: Path
    environ: dict[str, str]
    sleeps: list[float]
    bucket: Bucket | None = None

    def use_bucket(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.environ["AWS_S3"] = bucket.connection()

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(text)
        return path

    def replication(
        self,
        streams: str = "  '*':\n",
        mode: str | None = None,
        object_template: str = "file://{folder}/out/{{stream_name}}",
        target: str = "LOCAL",
    ) -> Path:
        if self.bucket is not None:
            target = "AWS_S3"
            object_template = object_template.replace("file://{folder}/out/", "sentry/")
        defaults = f"  mode: {mode}\n" if mode else ""
        text = (
            f"source: SENTRY\ntarget: {target}\ndefaults:\n{defaults}"
            f"  object: {object_template.format(folder=self.folder)}\n"
            f"streams:\n{streams}"
        )
        return self.write("replication.yaml", text)

    def run(
        self,
        path: Path | None = None,
        overrides: Overrides = Overrides(),
        started: datetime | None = None,
        **settings: Any,
    ) -> RunSummary:
        replication = load_replication(
            path or self.folder / "replication.yaml",
            self.environ,
            started or datetime.now(UTC).replace(microsecond=0),
            overrides,
        )
        chosen: dict[str, Any] = {
            "sleep": self.sleeps.append,
            "retry": RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05),
            **settings,
        }
        run_settings = RunSettings(**chosen)
        return run_replication(replication, discover_connections(self.environ), run_settings)

    def table(self, stream: str) -> pa.Table:
        if self.bucket is not None:
            return self.bucket.table(f"sentry/{stream}")
        return ds.dataset(self.folder / "out" / stream, format="parquet").to_table()


def invoke(runner: CliRunner, *arguments: str) -> Any:
    return runner.invoke(app, list(arguments), catch_exceptions=False)


def parquet_files(folder: Path) -> list[Path]:
    """The data files of a dataset folder, as a reader lists them (hidden ones left out)."""
    return sorted(
        path
        for path in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)
    )


def working_files(folder: Path) -> list[Path]:
    """Working files a run leaves only while it runs."""
    return [path for path in folder.rglob("*") if path.name.startswith(".sentry-extract-")]


def keys(table: pa.Table, *columns: str) -> list[tuple[Any, ...]]:
    values = [table.column(column).to_pylist() for column in columns]
    return list(zip(*values, strict=True))


def assert_unique(table: pa.Table, columns: list[str]) -> None:
    """Rows there, and no two with the same `columns` (the three most repeated said)."""
    assert table.num_rows > 0
    counted = table.group_by(columns).aggregate([([], "count_all")])
    if counted.num_rows != table.num_rows:
        repeated = counted.sort_by([("count_all", "descending")]).slice(0, 3).to_pylist()
        raise AssertionError(f"keys {columns} repeated: {repeated}")


def named(*streams: str) -> str:
    """The `streams:` entries of a replication that names these streams."""
    return "".join(f"  {stream}:\n" for stream in streams)


@contextmanager
def served(
    organization: FakeOrganization, settings: ServerSettings
) -> Iterator[tuple[FakeSentry, Workspace]]:
    """A fake Sentry serving this organization, and a workspace of its own to run in."""
    with tempfile.TemporaryDirectory() as folder, FakeSentry(organization, settings) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": f"{folder}/home",
            "SENTRY": sentry_connection(fake.base_url),
        }
        yield fake, Workspace(Path(folder), environ, [])


# --- what a complete extraction holds -----------------------------------------------------


def expected_events(organization: FakeOrganization, until: datetime) -> set[tuple[str, str]]:
    return {(e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, until)}


def assert_events_exact(
    workspace: Workspace, organization: FakeOrganization, until: datetime
) -> None:
    got = keys(workspace.table("events"), "project_id", "event_id")
    assert len(got) == len(set(got)), "duplicate event keys"
    assert set(got) == expected_events(organization, until)


def assert_issues_exact(
    workspace: Workspace, organization: FakeOrganization, until: datetime
) -> None:
    table = workspace.table("issues")
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate issue ids"
    expected = {i["id"]: i for i in organization.visible_issues(RETENTION, until)}
    assert set(ids) == set(expected)
    for row in table.to_pylist():
        issue = expected[row["id"]]
        assert row["count"] == int(issue["count"])
        assert row["status"] == issue["status"]
        assert (
            row["last_seen"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
            == (issue["lastSeen"])
        )


def assert_complete(workspace: Workspace, organization: FakeOrganization, until: datetime) -> None:
    """Events, issues, projects, teams, members and releases: each one once, all there."""
    events = keys(workspace.table("events"), "project_id", "event_id")
    assert len(events) == len(set(events))
    assert set(events) == expected_events(organization, until)
    issues = workspace.table("issues").column("id").to_pylist()
    assert sorted(issues) == sorted(i["id"] for i in organization.visible_issues(RETENTION, until))
    for stream, rows in (
        ("projects", organization.projects),
        ("teams", organization.teams),
        ("members", organization.members),
        ("releases", organization.releases),
    ):
        assert sorted(workspace.table(stream).column("id").to_pylist()) == sorted(
            row["id"] for row in rows
        )


def change_between_runs(organization: FakeOrganization) -> None:
    """What happens between two runs: new events on an existing issue, a regression of a
    resolved issue, a brand-new issue, and late events with timestamps from the past."""
    resolved = next(
        issue
        for issue in organization.visible_issues(timedelta(days=90))
        if issue["status"] == "resolved"
    )
    organization.add_events(4, project_slug="project-0")
    organization.set_issue_status(resolved["id"], "unresolved")
    organization.add_events(1, project_slug=resolved["project"]["slug"], issue_id=resolved["id"])
    organization.add_events(3, project_slug="project-1", new_issue=True)
    organization.add_events(2, project_slug="project-2", age=timedelta(minutes=30))


UNKNOWN_FIELDS = {"hasLogs": False, "sessionCount": 0, "crashFreeRate": 0.25, "seer": {"a": 1}}


def give_issues_unknown_fields(organization: FakeOrganization) -> None:
    """Fields Sentry may add one day, of each JSON type."""
    with organization.lock:
        for issue in organization.issues.values():
            issue.update(json.loads(json.dumps(UNKNOWN_FIELDS)))


def change_unknown_field_types(organization: FakeOrganization) -> str:
    """One issue's unknown fields change type, and it gets an event (so the next run
    reads it again); returns its id."""
    issue = organization.visible_issues(timedelta(days=90))[0]
    with organization.lock:
        issue.update(hasLogs={"x": 1}, sessionCount="many", crashFreeRate=1)
    organization.add_events(1, project_slug=issue["project"]["slug"], issue_id=issue["id"])
    return str(issue["id"])


def watch_runs_for_duplicates(
    workspace: Workspace,
    organization: FakeOrganization,
    read: Callable[[], pa.Table],
    runs: int,
) -> tuple[list[int], list[int]]:
    """Incremental runs, with new and late events between them, while a reader polls the
    events dataset in a loop (`read`); the rows of each read, and the duplicates seen."""
    stop = threading.Event()
    reads: list[int] = []
    duplicates: list[int] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                table = read()
            except (OSError, pa.ArrowInvalid):
                continue  # nothing yet, or a file went away between listing and reading
            found = keys(table, "project_id", "event_id")
            reads.append(len(found))
            if len(found) != len(set(found)):
                duplicates.append(len(found) - len(set(found)))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        moment = next_second()
        for run in range(runs):
            assert workspace.run(started=moment).exit_code == 0
            organization.add_events(40, project_slug=f"project-{run % 3}")
            organization.add_events(3, project_slug="project-2", age=timedelta(minutes=20))
            moment += timedelta(seconds=3)
    finally:
        stop.set()
        reader.join()
    return reads, duplicates


# --- SQL targets: the same checks for PostgreSQL and DuckDB ------------------------------


def replicate_into(
    workspace: Workspace, target: str, streams: str, mode: str | None = None
) -> None:
    """A replication of `streams` into the SQL connection `target`, as `sentry.{stream}`."""
    workspace.replication(
        streams, mode=mode, object_template="sentry.{{stream_name}}", target=target
    )


def assert_every_mode_across_runs(
    workspace: Workspace,
    organization: FakeOrganization,
    target: str,
    rows: Callable[[str], list[tuple[Any, ...]]],
) -> None:
    """Full refresh and truncate, each run twice with a member replaced and a release
    archived between the runs: the table holds Sentry's rows as they are now. Then two
    snapshots of the teams: each run's rows kept under its own `_snapshot_at`. `rows`
    answers a query on the target's database."""
    for mode in ("full-refresh", "truncate"):
        replicate_into(workspace, target, "  members:\n  releases:\n", mode=mode)
        assert workspace.run().exit_code == 0
        removed = organization.members.pop()
        organization.add_member()
        organization.set_release_status(organization.releases[2]["version"], "archived")
        assert workspace.run().exit_code == 0
        members = {row[0] for row in rows("SELECT id FROM sentry.members")}
        assert members == {m["id"] for m in organization.members}
        assert removed["id"] not in members
        releases = dict(rows("SELECT id, status FROM sentry.releases"))
        assert releases == {r["id"]: r["status"] for r in organization.releases}
    replicate_into(workspace, target, "  teams:\n", mode="snapshot")
    first, second = next_second(), next_second() + timedelta(seconds=5)
    assert workspace.run(started=first).exit_code == 0
    assert workspace.run(started=second).exit_code == 0
    counts = rows("SELECT _snapshot_at, count(*) FROM sentry.teams GROUP BY 1")
    assert {moment.timestamp(): count for moment, count in counts} == {
        first.timestamp(): 3,
        second.timestamp(): 3,
    }


# --- PostgreSQL -----------------------------------------------------------------------------


def database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def pg_rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


# --- S3: buckets on the suite's server --------------------------------------------------------

S3_KEY_ID = "AKIATESTFAKEKEY00001"
S3_SECRET = "test-fake-secret-key-RECOGNISABLE-S3-0123"


@dataclass
class Bucket:
    """A bucket on the test server, and ways to look into it."""

    endpoint: str
    name: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
        )

    def filesystem(self) -> Any:
        import pyarrow.fs as pafs

        host = self.endpoint.removeprefix("http://")
        return pafs.S3FileSystem(
            access_key=S3_KEY_ID,
            secret_key=S3_SECRET,
            endpoint_override=host,
            scheme="http",
            region="us-east-1",
        )

    def connection(self, **values: str) -> str:
        """The connection as an environment variable holds it, written as a person would:
        `{type: s3, bucket: ..., endpoint: http://127.0.0.1:..., region: us-east-1}`."""
        settings = {
            "type": "s3",
            "bucket": self.name,
            "access_key_id": S3_KEY_ID,
            "secret_access_key": S3_SECRET,
            "endpoint": self.endpoint,
            "region": "us-east-1",
            **values,
        }
        return "{" + ", ".join(f"{key}: {value}" for key, value in settings.items()) + "}"

    def table(self, prefix: str, partitioning: str | None = None) -> pa.Table:
        dataset = ds.dataset(
            f"{self.name}/{prefix}",
            format="parquet",
            filesystem=self.filesystem(),
            partitioning=partitioning,
        )
        return dataset.to_table()

    def objects(self, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.name, Key=key)["Body"].read()
        return body


def s3_place(
    bucket: Bucket,
    lease_seconds: float = 60.0,
    clock: Callable[[], datetime] | None = None,
) -> S3Place:
    """The bucket as the S3 target sees it; `clock` tells the time locks are aged by."""
    connection = BucketAccess(
        "AWS_S3", bucket.name, S3_KEY_ID, S3_SECRET, endpoint=bucket.endpoint, region="us-east-1"
    )
    return S3Place(connection, lease_seconds, clock=clock)


# --- the command as a process of its own --------------------------------------------------


def command_environment(folder: Path, sentry: str, **connections: str) -> dict[str, str]:
    """This process's environment, with the command's home in `folder`, the SENTRY
    connection given, and any other connections (MY_POSTGRES=..., AWS_S3=...)."""
    return {
        **os.environ,
        "SENTRY_EXTRACT_HOME": str(folder / "home"),
        "SENTRY": sentry,
        **connections,
    }


@dataclass(frozen=True)
class Command:
    """`sentry-extract ARGUMENTS` run in `folder` with `environment`, as cron runs it: a
    process of its own, with real signals."""

    folder: Path
    environment: dict[str, str]
    arguments: tuple[str, ...] = ("run", "r.yaml")

    def start(self, *extra: str, output: bool = True) -> subprocess.Popen[str]:
        """Started; its output piped (text) to read with `communicate`, or dropped."""
        where = subprocess.PIPE if output else subprocess.DEVNULL
        return subprocess.Popen(
            [sys.executable, "-m", "sentry_extract", *self.arguments, *extra],
            cwd=self.folder,
            env=self.environment,
            stdout=where,
            stderr=where,
            text=True,
        )

    def run(self, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run to its end; its output captured."""
        return subprocess.run(
            [sys.executable, "-m", "sentry_extract", *self.arguments, *extra],
            cwd=self.folder,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def signal_when(
    process: subprocess.Popen[str], condition: Callable[[], bool], number: signal.Signals
) -> None:
    """Sends the signal once `condition` holds (the process still running then)."""
    wait_for(lambda: condition() or process.poll() is not None, "the moment to send a signal")
    assert process.poll() is None, "the run ended before the moment to stop it"
    process.send_signal(number)


def when_answered(
    fake: FakeSentry, enough: Callable[[list[RequestRecord]], bool]
) -> threading.Event:
    """An event set once the requests the fake answers from now on are `enough`."""
    answered = threading.Event()
    seen: list[RequestRecord] = []
    counting = threading.Lock()

    def count(record: RequestRecord) -> None:
        with counting:
            seen.append(record)
            if enough(seen):
                answered.set()

    fake.on_request = count
    return answered


def kill_when(
    command: Command, fake: FakeSentry, answered: threading.Event, chance: random.Random
) -> bool:
    """Starts the command and kills it (SIGKILL) once `answered` is set, and a random part
    of a page's work later: cut between requests, writing files, committing. True when
    it was still running then (not ended by itself)."""
    process = command.start(output=False)
    try:
        while not answered.wait(0.01) and process.poll() is None:
            pass
        time.sleep(chance.uniform(0, 0.1))
        return process.poll() is None
    finally:
        fake.on_request = None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def kill_at_moments(
    command: Command,
    fake: FakeSentry,
    moments: Iterable[int],
    after_each: Callable[[], None],
    chance: random.Random,
) -> int:
    """Runs the command once for each moment, killed once the fake has answered that many
    of its requests (`kill_when`); `after_each` looks at what each kill left and changes
    Sentry. Returns how many runs were cut (not already ended)."""
    cut = 0
    for moment in moments:
        answered = when_answered(fake, lambda seen, moment=moment: len(seen) >= moment)
        cut += kill_when(command, fake, answered, chance)
        after_each()
    return cut


def stored_events(target: str, folder: Path, url: str) -> list[tuple[str, str]]:
    """Event keys a run left in PostgreSQL (target MY_POSTGRES) or in `out/events`."""
    if target == "MY_POSTGRES":
        if not pg_rows(url, "SELECT to_regclass('sentry.events')")[0][0]:
            return []
        return [
            (r[0], r[1]) for r in pg_rows(url, "SELECT project_id, event_id FROM sentry.events")
        ]
    data = folder / "out" / "events"
    if not parquet_files(data):
        return []
    table = ds.dataset(data, format="parquet").to_table(columns=["project_id", "event_id"])
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def saved_watermarks(target: str, folder: Path, url: str) -> dict[str, Any]:
    """The events' state a run left: each project's watermark."""
    if target == "MY_POSTGRES":
        if not pg_rows(url, "SELECT to_regclass('sentry._sentry_extract_state')")[0][0]:
            return {}
        rows = pg_rows(
            url, "SELECT state FROM sentry._sentry_extract_state WHERE stream = 'events'"
        )
        return dict(rows[0][0]["project_watermarks"]) if rows else {}
    state = folder / "out" / "events" / "_sentry_extract_state.json"
    if not state.exists():
        return {}
    entry = next(iter(json.loads(state.read_text())["streams"].values()))
    return dict(entry["state"]["project_watermarks"])


def assert_state_not_ahead(
    target: str, folder: Path, url: str, organization: FakeOrganization
) -> None:
    """Every project the state calls done has all of its events stored."""
    stored = stored_events(target, folder, url)
    assert len(stored) == len(set(stored)), "a key stored twice"
    assert_done_projects_stored(stored, saved_watermarks(target, folder, url), organization)


def assert_done_projects_stored(
    stored: list[tuple[str, str]], watermarks: dict[str, Any], organization: FakeOrganization
) -> None:
    """Every project a state's watermark calls done up to a moment has all of its events
    from before that moment among the `stored` (project, event) keys."""
    for project_id, watermark in watermarks.items():
        until = datetime.fromisoformat(watermark)
        expected = {
            (e["projectID"], e["eventID"])
            for e in organization.visible_events(RETENTION, until)
            if e["projectID"] == project_id
        }
        assert expected <= set(stored), f"state says project {project_id} is done; rows missing"
