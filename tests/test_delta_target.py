"""Delta tables (`target_options.format: delta`) in a local folder and in a bucket, read
back with delta-rs as any reader would."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from sentry_extract.errors import ConfigError
from sentry_extract.model.modes import Mode
from sentry_extract.pipeline import loader
from sentry_extract.state import StateKey
from sentry_extract.targets.delta import DeltaStreamWriter
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    S3_KEY_ID,
    S3_SECRET,
    Bucket,
    Command,
    Workspace,
    change_between_runs,
    change_unknown_field_types,
    command_environment,
    give_issues_unknown_fields,
    invoke,
    keys,
    kill_at_moments,
    sentry_connection,
    wait_for_the_next_second,
    watch_runs_for_duplicates,
)

RETENTION = timedelta(days=90)
PLACES = ["local", "s3"]


@pytest.fixture(scope="module")
def s3_process() -> Iterator[str]:
    """moto's server in a process of its own: delta-rs holds the GIL in some calls (the
    commit history), which an S3 server in a thread of this process would wait for."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def place(request: pytest.FixtureRequest, workspace: Workspace) -> Workspace:
    """The workspace, writing to `out/` (local) or to a fresh bucket (s3)."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_process")
        created = Bucket(endpoint, f"test-{uuid.uuid4().hex[:12]}")
        created.client().create_bucket(Bucket=created.name)
        workspace.use_bucket(created)
    return workspace


def delta_replication(
    workspace: Workspace, streams: str, mode: str | None = None, partitions: str = ""
) -> Path:
    """Delta tables of `streams` in `out/` (or the bucket's `sentry/`), with `partitions`
    (partition folders, as `year={part_year}`) below each table's folder."""
    target, folder = "LOCAL", f"file://{workspace.folder}/out/{{stream_name}}"
    if workspace.bucket is not None:
        target, folder = "AWS_S3", "sentry/{stream_name}"
    folder += f"/{partitions}" if partitions else ""
    defaults = f"  mode: {mode}\n" if mode else ""
    return workspace.write(
        "replication.yaml",
        f"source: SENTRY\ntarget: {target}\ndefaults:\n{defaults}  object: {folder}\n"
        f"  target_options: {{format: delta}}\nstreams:\n{streams}",
    )


def open_table(workspace: Workspace, stream: str) -> DeltaTable:
    if workspace.bucket is None:
        return DeltaTable(str(workspace.folder / "out" / stream))
    options = {
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_ENDPOINT_URL": workspace.bucket.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    return DeltaTable(f"s3://{workspace.bucket.name}/sentry/{stream}", storage_options=options)


def read(workspace: Workspace, stream: str) -> pa.Table:
    return open_table(workspace, stream).to_pyarrow_table()


def event_keys(organization: FakeOrganization) -> set[tuple[Any, ...]]:
    return {(e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)}


def later(seconds: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


# --- modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_a_second_incremental_run_merges_by_key_exactly(
    place: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(place, "  issues:\n  events:\n", "incremental")
    assert place.run(started=later(1)).exit_code == 0
    change_between_runs(organization)
    assert place.run(started=later(3)).exit_code == 0
    events = keys(read(place, "events"), "project_id", "event_id")
    assert len(events) == len(set(events))
    assert set(events) == event_keys(organization)
    issues = read(place, "issues").column("id").to_pylist()
    assert sorted(issues) == sorted(i["id"] for i in organization.visible_issues(RETENTION))
    history = open_table(place, "events").history(1)[0]
    state = json.loads(history["sentry_extract.state"])
    assert next(iter(state.values()))["project_watermarks"]


def test_rows_read_again_unchanged_leave_the_files_alone(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    """A checkpoint adds files for new keys and rewrites only the files of changed rows:
    a backfill that reads every stored event again, unchanged, touches no file."""
    delta_replication(workspace, "  events:\n", "incremental")
    assert workspace.run(started=later(1)).exit_code == 0
    stored_files = set(open_table(workspace, "events").file_uris())
    rows = read(workspace, "events").sort_by("event_id")
    backfill_everything(workspace)
    assert workspace.run(workspace.folder / "backfill.yaml", started=later(2)).exit_code == 0
    assert set(open_table(workspace, "events").file_uris()) == stored_files
    assert read(workspace, "events").sort_by("event_id").equals(rows)
    organization.add_events(3, project_slug="project-0")
    assert workspace.run(workspace.folder / "backfill.yaml", started=later(3)).exit_code == 0
    assert stored_files < set(open_table(workspace, "events").file_uris())  # only added
    events = keys(read(workspace, "events"), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)


def backfill_everything(workspace: Workspace) -> None:
    """backfill.yaml: a backfill of events over every day Sentry keeps."""
    start = (datetime.now(UTC) - RETENTION).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    workspace.write(
        "backfill.yaml",
        f"source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://{workspace.folder}/out/"
        "{stream_name}\n  target_options: {format: delta}\nstreams:\n  events:\n"
        f"    mode: backfill\n    source_options: {{range: '{start},{end}'}}\n",
    )


@pytest.mark.parametrize("place", PLACES, indirect=True)
@pytest.mark.parametrize("mode", ["full-refresh", "truncate"])
def test_replacing_modes_replace_the_table_in_one_commit(
    place: Workspace, organization: FakeOrganization, mode: str
) -> None:
    delta_replication(place, "  issues:\n", mode)
    assert place.run(started=later(1)).exit_code == 0
    first = open_table(place, "issues").version()
    organization.add_events(2, project_slug="project-0", new_issue=True)
    assert place.run(started=later(3)).exit_code == 0
    table = open_table(place, "issues")
    assert table.version() == first + 1
    ids = table.to_pyarrow_table().column("id").to_pylist()
    assert sorted(ids) == sorted(i["id"] for i in organization.visible_issues(RETENTION))


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_snapshots_append_with_their_moment(place: Workspace) -> None:
    delta_replication(place, "  teams:\n", "snapshot")
    first, second = later(1), later(3)
    assert place.run(started=first).exit_code == 0
    assert place.run(started=second).exit_code == 0
    table = read(place, "teams")
    moments = table.column("_snapshot_at").to_pylist()
    assert set(moments) == {first, second}
    assert moments.count(first) == moments.count(second) == table.num_rows // 2


def test_backfill_merges_without_moving_state(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(workspace, "  events:\n", "incremental")
    assert workspace.run(started=later(1)).exit_code == 0
    version = open_table(workspace, "events").version()
    state = json.loads(open_table(workspace, "events").history(1)[0]["sentry_extract.state"])
    backfill_everything(workspace)
    assert workspace.run(workspace.folder / "backfill.yaml", started=later(3)).exit_code == 0
    table = open_table(workspace, "events")
    assert table.version() > version
    events = keys(table.to_pyarrow_table(), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)
    newest = next(c for c in table.history() if "sentry_extract.state" in c)
    assert json.loads(newest["sentry_extract.state"]) == state


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_a_checkpoint_commits_enough_bytes_of_rows(
    place: Workspace, organization: FakeOrganization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Delta commit adds a data file and a log entry: a checkpoint waits for the
    writer's `checkpoint_bytes` of rows, not the loader's rows alone (here 10)."""
    monkeypatch.setattr(loader, "CHECKPOINT_ROWS", 10)
    delta_replication(place, "  events:\n", "incremental")
    summary = place.run(started=later(1), clock=lambda: 0.0)  # no checkpoint by time
    assert summary.exit_code == 0 and summary.results[0].checkpoints == 0
    table = open_table(place, "events")
    assert table.version() == 0  # the rows and the state: one commit
    events = keys(table.to_pyarrow_table(), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)
    assert json.loads(table.history(1)[0]["sentry_extract.state"])
    monkeypatch.setattr(DeltaStreamWriter, "checkpoint_bytes", 0)  # the rows alone
    other = f"file://{place.folder}/again" if place.bucket is None else "sentry/again"
    delta_replication(place, f"  events:\n    object: {other}\n", "incremental")
    summary = place.run(started=later(2), clock=lambda: 0.0)
    assert summary.exit_code == 0 and summary.results[0].checkpoints > 2


def test_rows_whose_pages_count_no_bytes_reach_a_checkpoint_by_their_batches(
    workspace: Workspace, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fan-out's pages (tag values of each changed issue) do not count their bytes:
    their typed batches do, so such a stream still checkpoints by bytes."""
    monkeypatch.setattr(loader, "CHECKPOINT_ROWS", 1)
    monkeypatch.setattr(DeltaStreamWriter, "checkpoint_bytes", 1)
    fake.organization.set_tag_values(next(iter(fake.organization.issues)), "browser", 900)
    delta_replication(workspace, "  issue_tag_values:\n", "incremental")
    summary = workspace.run(started=later(1), clock=lambda: 0.0, batch_rows=100)
    result = next(r for r in summary.results if r.name == "issue_tag_values")
    assert summary.exit_code == 0 and result.checkpoints > 2, result
    values = keys(read(workspace, "issue_tag_values"), "issue_id", "key", "value")
    assert len(values) == len(set(values)) >= 900


# --- what readers and reruns see -------------------------------------------------------------


def test_a_reader_polling_during_runs_never_sees_a_key_twice(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(workspace, "  events:\n", "incremental")

    def poll() -> pa.Table:
        try:
            return read(workspace, "events")
        except TableNotFoundError:
            return pa.table({"project_id": [], "event_id": []})

    reads, duplicates = watch_runs_for_duplicates(workspace, organization, poll, runs=3)
    assert reads and not duplicates
    events = keys(read(workspace, "events"), "project_id", "event_id")
    assert len(events) == len(set(events)) > 0


def test_kill_at_random_moments_then_rerun(tmp_path: Path) -> None:
    size = OrganizationSize(projects=3, issues=20, events=2000, history_days=60)
    organization = FakeOrganization("acme", size)  # a run of about 3 s, a commit every slice
    chance = random.Random("kill-delta")
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
        "  mode: incremental\n  target_options: {format: delta}\nstreams:\n  events:\n"
    )
    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        connection = sentry_connection(fake.base_url, concurrency=1, checkpoint_every="0")
        command = Command(tmp_path, command_environment(tmp_path, connection))

        def after_each() -> None:
            assert_no_key_twice(tmp_path / "out" / "events")
            organization.add_events(3, project_slug=f"project-{chance.randrange(3)}")

        moments = [chance.randrange(1, 200) for _ in range(2)]  # a whole run asks about 210
        assert kill_at_moments(command, fake, moments, after_each, chance) >= 1
        wait_for_the_next_second()
        finished = command.run()
        assert finished.returncode == 0, finished.stderr
    table = DeltaTable(str(tmp_path / "out" / "events")).to_pyarrow_table()
    events = keys(table, "project_id", "event_id")
    assert len(events) == len(set(events))
    assert set(events) == event_keys(organization)


def assert_no_key_twice(folder: Path) -> None:
    """The table a killed run left, if it made one: readable, each key once."""
    try:
        table = DeltaTable(str(folder)).to_pyarrow_table()
    except TableNotFoundError:
        return
    events = keys(table, "project_id", "event_id")
    assert len(events) == len(set(events))


# --- schema, deletions, locks ----------------------------------------------------------------


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_new_fields_become_columns_and_a_changed_type_widens(
    place: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(place, "  issues:\n", "incremental")
    assert place.run(started=later(1)).exit_code == 0
    give_issues_unknown_fields(organization)
    organization.add_events(1, project_slug="project-0")
    for issue in organization.issues.values():
        issue["lastSeen"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert place.run(started=later(3)).exit_code == 0
    table = read(place, "issues")
    assert {"has_logs", "session_count", "crash_free_rate", "seer"} <= set(table.column_names)
    changed = change_unknown_field_types(organization)
    assert place.run(started=later(5)).exit_code == 0
    rows = {row["id"]: row for row in read(place, "issues").to_pylist()}
    assert len(rows) == read(place, "issues").num_rows
    assert rows[changed]["session_count"] == "many"
    assert any(row["session_count"] == "0" for key, row in rows.items() if key != changed)


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_deleted_and_merged_issues_are_stamped(
    place: Workspace, organization: FakeOrganization
) -> None:
    place.environ["SENTRY"] = sentry_connection(
        json.loads(place.environ["SENTRY"])["inputs"]["base_url"], reconcile_every="0"
    )
    delta_replication(place, "  issues:\n", "incremental")
    assert place.run(started=later(1)).exit_code == 0
    first, second, third, fourth, fifth = (
        i["id"] for i in organization.visible_issues(RETENTION)[:5]
    )
    organization.delete_issue(first)
    organization.merge_issues([second], third)
    moment = later(3)
    assert place.run(started=moment).exit_code == 0
    organization.merge_issues([third], fourth)
    organization.merge_issues([fourth], fifth)
    last = later(5)
    assert place.run(started=last).exit_code == 0
    rows = {row["id"]: row for row in read(place, "issues").to_pylist()}
    assert rows[first]["_deleted_at"] == moment and rows[first]["merged_into_id"] is None
    assert (rows[second]["_deleted_at"], rows[second]["merged_into_id"]) == (moment, fifth)
    for merged in (third, fourth):
        assert (rows[merged]["_deleted_at"], rows[merged]["merged_into_id"]) == (last, fifth)
    live = {key for key, row in rows.items() if row["_deleted_at"] is None}
    assert live == {i["id"] for i in organization.visible_issues(RETENTION)}


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_a_second_writer_is_refused(place: Workspace) -> None:
    delta_replication(place, "  teams:\n")
    assert place.run(started=later(1)).exit_code == 0
    from sentry_extract.config.connections import discover_connections
    from sentry_extract.config.replication import load_replication
    from sentry_extract.pipeline import open_target

    replication = load_replication(place.folder / "replication.yaml", place.environ, later(2))
    target = open_target(replication, discover_connections(place.environ))
    held = target.state_store(replication.streams[0].object)
    lock = held.location.storage.lock()  # type: ignore[attr-defined]
    try:
        summary = place.run(started=later(3))
    finally:
        lock.release()
    assert summary.exit_code == 1
    assert "another sentry-extract run is writing" in summary.results[0].problems[0]


# --- partition variables ----------------------------------------------------------------------

BY_MONTH = "year={part_year}/month={part_month}"


def assert_partitioned_by(table: DeltaTable, moment_column: str | None, fallback: datetime) -> None:
    """Partition columns year and month, each row's from its `moment_column` (or
    `fallback`, the run's start), and each data file in its partition's folder."""
    assert table.metadata().partition_columns == ["year", "month"]
    for row in table.to_pyarrow_table().to_pylist():
        moment = row[moment_column] if moment_column else fallback
        assert (row["year"], row["month"]) == (f"{moment:%Y}", f"{moment:%m}")
    assert table.file_uris()
    assert all(
        re.search(r"/year=\d{4}/month=\d{2}/[^/]+\.parquet$", uri) for uri in table.file_uris()
    )


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_partition_variables_become_the_tables_partition_columns(
    place: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(place, "  issues:\n  events:\n", "incremental", BY_MONTH)
    assert place.run(started=later(1)).exit_code == 0
    events_before = open_table(place, "events").file_uris()
    month = f"{datetime.now(UTC):%Y-%m}"
    moved = next(
        i for i in organization.visible_issues(RETENTION) if not i["lastSeen"].startswith(month)
    )
    organization.add_events(2, project_slug=moved["project"]["slug"], issue_id=moved["id"])
    change_between_runs(organization)
    second = later(3)
    assert place.run(started=second).exit_code == 0
    events = open_table(place, "events")
    assert_partitioned_by(events, "date_created", second)
    stored = keys(events.to_pyarrow_table(), "project_id", "event_id")
    assert len(stored) == len(set(stored)) and set(stored) == event_keys(organization)
    issues = open_table(place, "issues")
    assert_partitioned_by(issues, "last_seen", second)
    rows = {row["id"]: row for row in issues.to_pyarrow_table().to_pylist()}
    assert len(rows) == issues.to_pyarrow_table().num_rows
    assert set(rows) == {i["id"] for i in organization.visible_issues(RETENTION)}
    assert f"{rows[moved['id']]['year']}-{rows[moved['id']]['month']}" == month  # it moved
    # events re-read unchanged leave their files alone: the new ones are only added
    assert set(events_before) < set(events.file_uris())


@pytest.mark.parametrize("place", PLACES, indirect=True)
@pytest.mark.parametrize("mode", ["full-refresh", "truncate", "snapshot"])
def test_every_mode_writes_partitioned_tables(
    place: Workspace, organization: FakeOrganization, mode: str
) -> None:
    delta_replication(place, "  issues:\n  teams:\n", mode, BY_MONTH)
    first, second = later(1), later(3)
    assert place.run(started=first).exit_code == 0
    organization.add_events(2, project_slug="project-0", new_issue=True)
    assert place.run(started=second).exit_code == 0
    issues = open_table(place, "issues")
    assert_partitioned_by(issues, "last_seen", second)
    teams = open_table(place, "teams")
    ids = issues.to_pyarrow_table().column("id").to_pylist()
    team_rows = teams.to_pyarrow_table()
    visible = sorted(i["id"] for i in organization.visible_issues(RETENTION))
    if mode == "snapshot":
        assert sorted(set(ids)) == visible and len(ids) > len(visible)
        assert team_rows.num_rows == 2 * len(organization.teams)
        for row in team_rows.to_pylist():  # no update key: the run's start
            moment = row["_snapshot_at"]
            assert (row["year"], row["month"]) == (f"{moment:%Y}", f"{moment:%m}")
    else:
        assert sorted(ids) == visible
        assert_partitioned_by(teams, None, second)
        assert sorted(team_rows.column("id").to_pylist()) == sorted(
            t["id"] for t in organization.teams
        )


def test_a_partitioned_backfill_merges_without_moving_state(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(workspace, "  events:\n", "incremental", BY_MONTH)
    assert workspace.run(started=later(1)).exit_code == 0
    state = json.loads(open_table(workspace, "events").history(1)[0]["sentry_extract.state"])
    organization.add_events(3, project_slug="project-2", age=timedelta(days=40))
    start = (datetime.now(UTC) - RETENTION).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    workspace.write(
        "backfill.yaml",
        f"source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://{workspace.folder}/out/"
        f"{{stream_name}}/{BY_MONTH}\n  target_options: {{format: delta}}\nstreams:\n"
        f"  events:\n    mode: backfill\n    source_options: {{range: '{start},{end}'}}\n",
    )
    moment = later(3)
    assert workspace.run(workspace.folder / "backfill.yaml", started=moment).exit_code == 0
    table = open_table(workspace, "events")
    assert_partitioned_by(table, "date_created", moment)
    events = keys(table.to_pyarrow_table(), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)
    newest = next(c for c in table.history() if "sentry_extract.state" in c)
    assert json.loads(newest["sentry_extract.state"]) == state


def test_a_table_keeps_its_partition_columns_until_a_full_refresh(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    delta_replication(workspace, "  issues:\n", "incremental", BY_MONTH)
    assert workspace.run(started=later(1)).exit_code == 0
    delta_replication(workspace, "  issues:\n", "incremental", "year={part_year}")
    summary = workspace.run(started=later(3))
    assert summary.exit_code == 1
    uri = workspace.folder / "out" / "issues"
    assert summary.results[0].problems == [
        f"Delta table {uri} is partitioned by (year, month), but the object names (year): "
        "name the same partition folders, or run the stream once with mode full-refresh "
        "to rewrite the table"
    ]
    assert open_table(workspace, "issues").metadata().partition_columns == ["year", "month"]
    delta_replication(workspace, "  issues:\n", "full-refresh", "year={part_year}")
    assert workspace.run(started=later(5)).exit_code == 0
    table = open_table(workspace, "issues")
    assert table.metadata().partition_columns == ["year"]
    ids = table.to_pyarrow_table().column("id").to_pylist()
    assert sorted(ids) == sorted(i["id"] for i in organization.visible_issues(RETENTION))


def test_a_partition_column_may_not_be_a_column_of_the_stream(workspace: Workspace) -> None:
    delta_replication(workspace, "  issues:\n", "incremental", "status={part_year}")
    summary = workspace.run(started=later(1))
    assert summary.exit_code == 1
    assert summary.results[0].problems == [
        f"partition column 'status' of {workspace.folder / 'out' / 'issues'} is also a column "
        "of issues: name the partition folder otherwise, as in part_status={part_year}"
    ]


# --- compaction and log checkpoints ---------------------------------------------------------


class Clock:
    """The fake organization's time, moved by the test."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


HOURLY_RUNS = 40


def test_forty_hourly_runs_leave_each_table_at_most_64_files(tmp_path: Path) -> None:
    """Issues and events merged every hour, and usage appended as a snapshot partitioned
    by month (about four files a run: compaction is what keeps it small)."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    size = OrganizationSize(projects=3, issues=12, events=80)
    organization = FakeOrganization("acme", size, seed=11, clock=clock)
    with FakeSentry(organization, ServerSettings()) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url, checkpoint_every="0"),
        }
        workspace = Workspace(tmp_path, environ, [])
        usage = f"file://{tmp_path}/out/org_stats/{BY_MONTH}"
        streams = f"  issues:\n  events:\n  org_stats:\n    mode: snapshot\n    object: {usage}\n"
        delta_replication(workspace, streams, "incremental")
        for run in range(HOURLY_RUNS):
            organization.add_events(3, project_slug=f"project-{run % 3}")
            organization.add_events(1, project_slug="project-1", age=timedelta(minutes=20))
            if run % 4 == 0:
                organization.add_events(2, project_slug="project-0", new_issue=True)
            clock.moment += timedelta(hours=1)
            summary = workspace.run(started=clock.moment)
            assert summary.exit_code == 0, [r.problems for r in summary.results]
    for stream in ("issues", "events", "org_stats"):
        folder = tmp_path / "out" / stream
        table = DeltaTable(str(folder))
        assert len(table.file_uris()) <= 64, stream
        assert table.metadata().configuration["delta.checkpointInterval"] == "10"
        checkpoints = (folder / "_delta_log").glob("*.checkpoint.parquet")
        assert {path.name[:20] for path in checkpoints} >= {f"{v:020d}" for v in (9, 19, 29)}
    usage_folder = tmp_path / "out" / "org_stats"
    assert len(list(usage_folder.rglob("*.parquet"))) > 64  # written, before compaction
    commits = [path.read_text() for path in (usage_folder / "_delta_log").glob("*.json")]
    compactions = [text for text in commits if '"remove"' in text and '"dataChange":false' in text]
    assert compactions and all('"dataChange":true' not in text for text in compactions)
    snapshots = read_folder(usage_folder)
    moments = set(snapshots.column("_snapshot_at").to_pylist())
    assert len(moments) == HOURLY_RUNS
    rows = keys(snapshots, "_snapshot_at", "interval", "category", "outcome", "reason")
    assert len(rows) == len(set(rows))
    # Sentry's rows at the last run, and rows that left its retention during the runs
    longer = RETENTION + timedelta(hours=HOURLY_RUNS)
    events = keys(read_folder(tmp_path / "out" / "events"), "project_id", "event_id")
    assert len(events) == len(set(events))
    assert (
        event_keys(organization)
        <= set(events)
        <= {(e["projectID"], e["eventID"]) for e in organization.visible_events(longer)}
    )
    issues = read_folder(tmp_path / "out" / "issues").column("id").to_pylist()
    assert len(issues) == len(set(issues))
    visible = {i["id"] for i in organization.visible_issues(RETENTION)}
    assert visible <= set(issues) <= {i["id"] for i in organization.visible_issues(longer)}


def stream_state(workspace: Workspace) -> Any:
    """The first stream's state, as a run reads it."""
    from sentry_extract.config.connections import discover_connections
    from sentry_extract.config.replication import load_replication
    from sentry_extract.pipeline import open_target

    path = workspace.folder / "replication.yaml"
    replication = load_replication(path, workspace.environ, later(2))
    target = open_target(replication, discover_connections(workspace.environ))
    stream = replication.streams[0]
    key = StateKey("SENTRY", "acme", stream.name, stream.object)
    return target.state_store(stream.object).load(key).to_json()


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_the_state_is_found_behind_commits_without_one(
    place: Workspace, organization: FakeOrganization
) -> None:
    """Another tool's OPTIMIZE (a Z-order, which rewrites even one file), a property set
    and a log checkpoint: the newest commits carry no state, and the state of the commit
    before them is still the stream's."""
    delta_replication(place, "  issues:\n", "incremental")
    assert place.run(started=later(1)).exit_code == 0
    state = stream_state(place)
    assert state["watermark"]
    table = open_table(place, "issues")
    table.optimize.z_order(["id"])
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 60 days"})
    table.create_checkpoint()
    newest = open_table(place, "issues").history(2)
    assert [c["operation"] for c in newest] == ["SET TBLPROPERTIES", "OPTIMIZE"]
    assert not any("sentry_extract.state" in commit for commit in newest)
    assert stream_state(place) == state
    change_between_runs(organization)
    assert place.run(started=later(3)).exit_code == 0
    ids = read(place, "issues").column("id").to_pylist()
    assert sorted(ids) == sorted(i["id"] for i in organization.visible_issues(RETENTION))


def test_a_table_made_elsewhere_gets_the_checkpoint_interval(workspace: Workspace) -> None:
    folder = workspace.folder / "out" / "issues"
    write_deltalake(str(folder), pa.table({"id": ["0"]}))
    assert DeltaTable(str(folder)).metadata().configuration == {}
    delta_replication(workspace, "  issues:\n", "incremental")
    assert workspace.run(started=later(1)).exit_code == 0
    table = DeltaTable(str(folder))
    assert table.metadata().configuration == {"delta.checkpointInterval": "10"}
    newest = table.history(1)[0]
    assert newest["operation"] == "SET TBLPROPERTIES" and "sentry_extract.state" in newest
    table.alter.set_table_properties({"delta.checkpointInterval": "50"})  # the owner's choice
    assert workspace.run(started=later(3)).exit_code == 0
    assert DeltaTable(str(folder)).metadata().configuration == {"delta.checkpointInterval": "50"}


# --- the command line ------------------------------------------------------------------------


def run_delta_and_parquet(
    cli: Any, organization: FakeOrganization, folder: Path, runs: int
) -> None:
    """`runs` runs of events (a Delta table) and teams (a Parquet dataset) from the CLI,
    with new events before each but the first."""
    (folder / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
        "  target_options: {format: delta}\nstreams:\n  events:\n  teams:\n"
        "    target_options: {format: parquet}\n"
    )
    for run in range(runs):
        if run:
            organization.add_events(5, project_slug=f"project-{run % 3}")
            wait_for_the_next_second()
        assert invoke(cli, "run", "r.yaml").exit_code == 0


def test_state_show_and_reset_read_and_write_the_commits(
    cli: Any,
    fake: FakeSentry,
    organization: FakeOrganization,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    run_delta_and_parquet(cli, organization, tmp_path, runs=1)
    shown = invoke(cli, "state", "show", "r.yaml")
    assert shown.exit_code == 0
    assert "out/events (Delta commit metadata)" in shown.output.replace("\n", "")
    version = DeltaTable(str(tmp_path / "out" / "events")).version()
    reset = invoke(cli, "state", "reset", "r.yaml", "--streams", "events")
    assert reset.exit_code == 0 and reset.output == "events: state cleared\n"
    assert DeltaTable(str(tmp_path / "out" / "events")).version() == version + 1
    again = invoke(cli, "state", "reset", "r.yaml", "--streams", "events")
    assert again.output == "events: no state\n"


def test_a_format_that_is_not_known_is_refused(workspace: Workspace) -> None:
    workspace.write(
        "replication.yaml",
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
        "streams:\n  teams:\n    target_options: {format: iceberg}\n",
    )
    with pytest.raises(ConfigError) as error:
        workspace.run()
    assert str(error.value) == (
        "replication.yaml: streams.teams.target_options.format: "
        "'iceberg' is not one of parquet, delta"
    )


def test_a_partition_folder_must_name_its_column(workspace: Workspace) -> None:
    workspace.write(
        "replication.yaml",
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n"
        "  object: out/{stream_name}/{part_year}{part_month}\n"
        "  target_options: {format: delta}\nstreams:\n  events:\n",
    )
    with pytest.raises(ConfigError) as error:
        workspace.run()
    assert str(error.value) == (
        "replication.yaml: streams.events.object: partition folder '{part_year}{part_month}' "
        "does not name its column: write name={part_...}, as in "
        "year={part_year}/month={part_month}"
    )


def test_maintain_compacts_vacuums_and_keeps_the_state(
    cli: Any,
    fake: FakeSentry,
    organization: FakeOrganization,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    run_delta_and_parquet(cli, organization, tmp_path, runs=3)
    folder = tmp_path / "out" / "events"
    files_before = len(DeltaTable(str(folder)).file_uris())
    state_before = invoke(cli, "state", "show", "r.yaml").output
    result = invoke(cli, "maintain", "r.yaml")
    assert result.exit_code == 0, result.output
    table = DeltaTable(str(folder))
    assert len(table.file_uris()) < files_before
    assert f"events: version {table.version()}, {len(table.file_uris())} data files" in (
        result.output
    )
    assert "teams: a Parquet dataset, nothing to maintain" in result.output
    assert list((folder / "_delta_log").glob("*.checkpoint.parquet"))
    assert invoke(cli, "state", "show", "r.yaml").output == state_before
    events = keys(table.to_pyarrow_table(), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)
    organization.add_events(4, project_slug="project-1")
    wait_for_the_next_second()
    assert invoke(cli, "run", "r.yaml").exit_code == 0
    events = keys(read_folder(folder), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)


def read_folder(folder: Path) -> pa.Table:
    return DeltaTable(str(folder)).to_pyarrow_table()


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.INCREMENTAL, Mode.SNAPSHOT])
def test_within_a_run_the_last_read_of_a_key_wins(tmp_path: Path, mode: Mode) -> None:
    from sentry_extract.state import StateKey, StreamState
    from sentry_extract.targets.base import StreamRequest
    from sentry_extract.targets.delta import DeltaTarget

    schema = pa.schema([pa.field("id", pa.string()), pa.field("title", pa.string())])
    request = StreamRequest(
        stream="teams",
        object=str(tmp_path / "teams"),
        mode=mode,
        key_columns=("id",),
        base_schema=schema,
        state_key=StateKey("SENTRY", "acme", "teams", "teams"),
        run_started_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    writer = DeltaTarget().open_stream(request)
    writer.write(pa.record_batch({"id": ["1", "2"], "title": ["old", "two"]}, schema=schema))
    writer.write(pa.record_batch({"id": ["1"], "title": ["new"]}, schema=schema))
    writer.checkpoint(StreamState())
    assert writer.commit() == 3
    rows = DeltaTable(str(tmp_path / "teams")).to_pyarrow_table().sort_by("id")
    assert rows.select(["id", "title"]).to_pylist() == [
        {"id": "1", "title": "new"},
        {"id": "2", "title": "two"},
    ]


@pytest.mark.parametrize("place", ["s3"], indirect=True)
def test_maintain_in_a_bucket(place: Workspace, organization: FakeOrganization) -> None:
    from sentry_extract.config.connections import discover_connections
    from sentry_extract.config.replication import load_replication
    from sentry_extract.pipeline import maintain_tables

    path = delta_replication(place, "  events:\n", "incremental")
    for run in range(3):
        organization.add_events(5, project_slug=f"project-{run}")
        assert place.run(started=later(1 + 2 * run)).exit_code == 0
    files_before = len(open_table(place, "events").file_uris())
    replication = load_replication(path, place.environ, later(7))
    [(stream, line)] = maintain_tables(replication, discover_connections(place.environ))
    table = open_table(place, "events")
    assert stream.name == "events" and line.startswith(f"version {table.version()}, 1 data files")
    assert len(table.file_uris()) == 1 < files_before
    events = keys(table.to_pyarrow_table(), "project_id", "event_id")
    assert len(events) == len(set(events)) and set(events) == event_keys(organization)
    assert not [key for key in place.bucket.objects("sentry/events/") if key.endswith(".lock")]
