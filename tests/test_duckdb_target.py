"""The DuckDB target on a real file: modes across runs, new columns, deletions, the file
lock, state committed with the rows."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from sentry_extract.config.connections import discover_connections
from sentry_extract.config.replication import load_replication
from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType
from sentry_extract.pipeline import state_stores
from sentry_extract.records import arrow_field
from sentry_extract.state import StateKey
from sentry_extract.targets.base import StreamRequest
from sentry_extract.targets.duckdb import DuckDBTarget
from sentry_extract.targets.sql import duckdb as duckdb_dialect
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    RETENTION,
    Command,
    Workspace,
    change_between_runs,
    change_unknown_field_types,
    command_environment,
    give_issues_unknown_fields,
    invoke,
    kill_at_moments,
    next_second,
    sentry_connection,
    wait_for_the_next_second,
)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "warehouse.duckdb"


@pytest.fixture
def duck_workspace(workspace: Workspace, database: Path) -> Workspace:
    workspace.environ["MY_DUCKDB"] = f'{{"type": "duckdb", "instance": "{database}"}}'
    return workspace


def replicate(workspace: Workspace, streams: str, mode: str | None = None) -> None:
    workspace.replication(
        streams, mode=mode, object_template="sentry.{{stream_name}}", target="MY_DUCKDB"
    )


def rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(query).fetchall()


def assert_events_exact(
    database: Path, organization: FakeOrganization, until: datetime | None = None
) -> None:
    """The events table holds every event Sentry keeps, each once."""
    keys = rows(database, "SELECT project_id, event_id FROM sentry.events")
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, until)
    }


def assert_exact(database: Path, organization: FakeOrganization, until: datetime) -> None:
    assert_events_exact(database, organization, until)
    issues = dict(rows(database, "SELECT id, count FROM sentry.issues"))
    expected = {i["id"]: int(i["count"]) for i in organization.visible_issues(RETENTION, until)}
    assert issues == expected


def read_now(target: DuckDBTarget, query: str) -> list[tuple[Any, ...]]:
    """What a reader of the database sees now, beside a writer that is still running."""
    reader = target.dialect.open_session(None, 0.0)
    try:
        return reader.fetch(query)
    finally:
        reader.close()


def test_incremental_runs_hold_exactly_the_organization(
    duck_workspace: Workspace, database: Path, organization: FakeOrganization
) -> None:
    replicate(duck_workspace, "  issues:\n  events:\n", mode="incremental")
    first = next_second()
    summary = duck_workspace.run(started=first)
    assert summary.exit_code == 0, [result.problems for result in summary.results]
    assert_exact(database, organization, first)
    change_between_runs(organization)
    second = next_second() + timedelta(seconds=1)
    assert duck_workspace.run(started=second).exit_code == 0
    assert_exact(database, organization, second)
    state = rows(database, "SELECT stream, state FROM sentry._sentry_extract_state ORDER BY 1")
    assert [row[0] for row in state] == ["events", "issues"]
    assert second.isoformat() in state[1][1]
    types = dict(
        rows(
            database,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'sentry' AND table_name = 'issues'",
        )
    )
    assert types["count"] == "BIGINT" and types["project"] == "JSON"
    assert types["last_seen"] == "TIMESTAMP WITH TIME ZONE" and types["is_public"] == "BOOLEAN"


def test_every_mode_across_runs(
    duck_workspace: Workspace, database: Path, organization: FakeOrganization
) -> None:
    for mode in ("full-refresh", "truncate"):
        replicate(duck_workspace, "  members:\n  releases:\n", mode=mode)
        assert duck_workspace.run().exit_code == 0
        removed = organization.members.pop()
        organization.add_member()
        organization.set_release_status(organization.releases[2]["version"], "archived")
        assert duck_workspace.run().exit_code == 0
        members = {row[0] for row in rows(database, "SELECT id FROM sentry.members")}
        assert members == {m["id"] for m in organization.members}
        assert removed["id"] not in members
        releases = dict(rows(database, "SELECT id, status FROM sentry.releases"))
        assert releases == {r["id"]: r["status"] for r in organization.releases}
    replicate(duck_workspace, "  teams:\n", mode="snapshot")
    first, second = next_second(), next_second() + timedelta(seconds=5)
    assert duck_workspace.run(started=first).exit_code == 0
    assert duck_workspace.run(started=second).exit_code == 0
    counts = dict(rows(database, "SELECT _snapshot_at, count(*) FROM sentry.teams GROUP BY 1"))
    assert sorted(counts.values()) == [3, 3] and {m.timestamp() for m in counts} == {
        first.timestamp(),
        second.timestamp(),
    }


def test_backfill_merges_and_leaves_state(
    duck_workspace: Workspace, database: Path, organization: FakeOrganization
) -> None:
    replicate(duck_workspace, "  events:\n", mode="incremental")
    started = next_second()
    assert duck_workspace.run(started=started).exit_code == 0
    state_before = rows(database, "SELECT state FROM sentry._sentry_extract_state")
    start = (started - timedelta(days=30)).strftime("%Y-%m-%d")
    end = (started - timedelta(days=5)).strftime("%Y-%m-%d")
    duck_workspace.replication(
        f"  events:\n    mode: backfill\n    source_options:\n      range: '{start},{end}'\n",
        object_template="sentry.{{stream_name}}",
        target="MY_DUCKDB",
    )
    summary = duck_workspace.run(started=started + timedelta(seconds=2))
    assert summary.exit_code == 0 and summary.results[0].rows > 0
    assert rows(database, "SELECT state FROM sentry._sentry_extract_state") == state_before
    keys = rows(database, "SELECT project_id, event_id FROM sentry.events")
    assert len(keys) == len(set(keys)) == len(organization.visible_events(RETENTION, started))


def test_a_new_field_becomes_a_column(
    duck_workspace: Workspace, database: Path, organization: FakeOrganization
) -> None:
    replicate(duck_workspace, "  teams:\n", mode="incremental")
    assert duck_workspace.run().exit_code == 0
    organization.teams[0]["newShinyField"] = {"nested": True}
    assert duck_workspace.run().exit_code == 0
    stored = dict(rows(database, "SELECT id, new_shiny_field FROM sentry.teams"))
    assert stored[organization.teams[0]["id"]] == '{"nested":true}'
    assert sum(value is None for value in stored.values()) == len(stored) - 1


def test_unknown_fields_are_widened_when_they_change(
    duck_workspace: Workspace, database: Path, organization: FakeOrganization
) -> None:
    give_issues_unknown_fields(organization)
    replicate(duck_workspace, "  issues:\n", mode="incremental")
    assert duck_workspace.run(started=next_second()).exit_code == 0
    changed = change_unknown_field_types(organization)
    assert duck_workspace.run(started=next_second() + timedelta(seconds=1)).exit_code == 0
    query = "SELECT id, has_logs, session_count, crash_free_rate FROM sentry.issues"
    stored = {row[0]: row[1:] for row in rows(database, query)}
    assert stored.pop(changed) == ('{"x":1}', "many", 1.0)
    assert set(stored.values()) == {("false", "0", 0.25)}


def test_deleted_and_merged_issues_are_reconciled(
    workspace: Workspace, fake: FakeSentry, database: Path, organization: FakeOrganization
) -> None:
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, reconcile_every="0")
    workspace.environ["MY_DUCKDB"] = f'{{"type": "duckdb", "instance": "{database}"}}'
    replicate(workspace, "  issues:\n", mode="incremental")
    assert workspace.run().exit_code == 0
    issues = organization.visible_issues(RETENTION)
    deleted, merged, survivor = issues[0]["id"], issues[1]["id"], issues[2]["id"]
    organization.delete_issue(deleted)
    organization.merge_issues([merged], survivor)
    assert workspace.run(started=next_second()).exit_code == 0
    stored = {
        row[0]: row[1:]
        for row in rows(database, "SELECT id, _deleted_at, merged_into_id FROM sentry.issues")
    }
    assert stored[deleted][0] is not None
    assert stored[merged][0] is not None and stored[merged][1] == survivor
    assert stored[survivor][0] is None
    live = [key for key, values in stored.items() if values[0] is None]
    assert len(live) == len(issues) - 2


def test_a_second_process_is_refused(
    duck_workspace: Workspace, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replicate(duck_workspace, "  teams:\n  members:\n")
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the wait for the lock, on a clock of the test's
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(
        duckdb_dialect, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=sleep)
    )
    database.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; held = duckdb.connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        summary = duck_workspace.run(lock_wait=1.0)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert summary.exit_code == 1
    assert sum(slept) == pytest.approx(1.0, abs=0.25)  # one wait, not one per stream
    problems = {result.name: result.problems[0] for result in summary.results}
    for stream, problem in problems.items():
        assert problem.startswith(f"another sentry-extract run is loading sentry.{stream}; ")
    assert any("; waited 1s." in problem for problem in problems.values())


def test_killed_runs_then_a_rerun_are_exact(tmp_path: Path, database: Path) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=20, events=300))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: MY_DUCKDB\ndefaults:\n  object: sentry.{stream_name}\n"
        "  mode: incremental\nstreams:\n  issues:\n  events:\n"
    )
    chance = random.Random("kill-duckdb")
    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        connection = sentry_connection(fake.base_url, concurrency=1, checkpoint_every="0s")
        duckdb_connection = f'{{"type": "duckdb", "instance": "{database}"}}'
        environment = command_environment(tmp_path, connection, MY_DUCKDB=duckdb_connection)
        command = Command(tmp_path, environment)

        def after_each() -> None:
            organization.add_events(3, project_slug="project-1")

        moments = [chance.randrange(1, 35) for _ in range(2)]  # a whole run asks about 35
        assert kill_at_moments(command, fake, moments, after_each, chance) >= 1
        wait_for_the_next_second()  # the last run reads the events added after the last kill
        finished = command.run()
        assert finished.returncode == 0, finished.stderr
    assert_events_exact(database, organization)


def test_conns_set_test_and_list(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "folder"
    saved = invoke(cli, "conns", "set", "MY_DUCKDB", "type=duckdb", f"instance={folder}/s.duckdb")
    assert saved.exit_code == 0, saved.stderr
    tested = invoke(cli, "conns", "test", "MY_DUCKDB")
    assert tested.exit_code == 0, tested.stderr
    assert tested.stdout.strip() == f"MY_DUCKDB: ok: DuckDB file {folder}/s.duckdb"
    assert (folder / "s.duckdb").exists()
    listed = invoke(cli, "conns", "list")
    assert "MY_DUCKDB" in listed.stdout and "duckdb" in listed.stdout
    missing = invoke(cli, "conns", "set", "OTHER", "type=duckdb")
    assert missing.exit_code == 2
    assert "instance is required" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_state_read_then_a_run_in_the_same_process(
    duck_workspace: Workspace, database: Path
) -> None:
    """A dry run or `state show` lets the file go once read, even while its stores live."""
    replicate(duck_workspace, "  issues:\n", mode="incremental")
    assert duck_workspace.run().exit_code == 0
    replication = load_replication(
        duck_workspace.folder / "replication.yaml", duck_workspace.environ, next_second()
    )
    stores = state_stores(replication, discover_connections(duck_workspace.environ))
    assert [store.load(key).coverage.watermark is not None for _, key, store in stores] == [True]
    summary = duck_workspace.run()
    assert summary.exit_code == 0, [result.problems for result in summary.results]
    issues = rows(database, "SELECT id FROM sentry.issues")
    assert issues and len(issues) == len(set(issues))


def test_maintain_says_a_duckdb_table_has_nothing_to_maintain(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setenv("MY_DUCKDB", f'{{"type": "duckdb", "instance": "{tmp_path}/w.duckdb"}}')
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: MY_DUCKDB\ndefaults:\n  object: sentry.{stream_name}\n"
        "streams:\n  issues:\n  teams:\n"
    )
    result = invoke(cli, "maintain", "r.yaml")
    assert result.exit_code == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert lines == [
        "issues: a DuckDB table, nothing to maintain",
        "teams: a DuckDB table, nothing to maintain",
    ]


def test_batches_wait_where_no_reader_sees_them(tmp_path: Path) -> None:
    """A full refresh commits its batches into its new table as they come: readers of
    the table see the old rows until the swap, an aborted run leaves no new table
    behind, and the newest read of a key wins across batches. Truncate empties the
    table once."""
    schema = pa.schema([pa.field("id", pa.string()), pa.field("title", pa.string())])
    target = DuckDBTarget(tmp_path / "w.duckdb")

    def open_writer(mode: Mode) -> Any:
        key = StateKey("SENTRY", "acme", "teams", "sentry.teams")
        started = datetime(2026, 1, 2, tzinfo=UTC)
        return target.open_stream(
            StreamRequest("teams", "sentry.teams", mode, ("id",), schema, key, started)
        )

    def batch(*pairs: tuple[str, str]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist([{"id": i, "title": t} for i, t in pairs], schema)

    def stored() -> set[tuple[Any, ...]]:
        reader = target.dialect.open_session(None, 0.0)
        try:
            found = set(reader.fetch("SELECT id, title FROM sentry.teams"))
            tables = reader.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sentry'"
            )
            reader.commit()
        finally:
            reader.close()
        assert {name for (name,) in tables} == {"teams", "_sentry_extract_state"}
        return found

    try:
        first = open_writer(Mode.FULL_REFRESH)
        first.write(batch(("1", "old"), ("2", "two")))
        first.commit()
        aborted = open_writer(Mode.FULL_REFRESH)
        aborted.write(batch(("3", "three")))
        aborted.abort()
        assert stored() == {("1", "old"), ("2", "two")}
        second = open_writer(Mode.FULL_REFRESH)
        second.write(batch(("1", "new"), ("4", "four")))
        second.write(batch(("1", "newest")))
        assert set(read_now(target, "SELECT id, title FROM sentry.teams")) == {
            ("1", "old"),
            ("2", "two"),
        }
        second.commit()
        assert stored() == {("1", "newest"), ("4", "four")}
        truncating = open_writer(Mode.TRUNCATE)
        truncating.write(batch(("5", "five")))
        truncating.write(batch(("6", "six")))
        truncating.commit()
        assert stored() == {("5", "five"), ("6", "six")}
    finally:
        target.close()


def test_a_run_that_merges_by_key_commits_each_batch(tmp_path: Path) -> None:
    """Incremental puts each batch into the table and commits it (moving staged files
    into a table that holds rows ran out of memory): another reader sees a batch once
    it is written, nothing is staged beside the file, a stored row keeps the columns a
    run did not write, and a type widened between two batches holds both values."""
    schema = pa.schema([pa.field("id", pa.string()), pa.field("title", pa.string())])
    database = tmp_path / "w.duckdb"
    target = DuckDBTarget(database)

    def open_writer() -> Any:
        key = StateKey("SENTRY", "acme", "teams", "sentry.teams")
        started = datetime(2026, 1, 2, tzinfo=UTC)
        return target.open_stream(
            StreamRequest("teams", "sentry.teams", Mode.INCREMENTAL, ("id",), schema, key, started)
        )

    def titles() -> set[tuple[Any, ...]]:
        return set(read_now(target, "SELECT id, title FROM sentry.teams"))

    try:
        first = open_writer()
        first.write(pa.RecordBatch.from_pylist([{"id": "1", "title": "a", "note": "five"}]))
        first.checkpoint(None)
        first.commit()
        second = open_writer()
        second.write(pa.RecordBatch.from_pylist([{"id": "1", "title": "b"}], schema))
        sized = schema.append(arrow_field("size", ColumnType.INTEGER))
        second.write(pa.RecordBatch.from_pylist([{"id": "2", "title": "c", "size": 7}], sized))
        assert titles() == {("1", "b"), ("2", "c")}
        assert not list(database.parent.glob("w.duckdb.staging-*"))
        second.write(pa.RecordBatch.from_pylist([{"id": "3", "title": "d", "size": "large"}]))
        second.checkpoint(None)
        second.commit()
    finally:
        target.close()
    assert sorted(rows(database, "SELECT id, title, note, size FROM sentry.teams")) == [
        ("1", "b", "five", None),
        ("2", "c", None, "7"),
        ("3", "d", None, "large"),
    ]


@pytest.mark.parametrize("mode", [Mode.TRUNCATE, Mode.SNAPSHOT])
def test_a_replacing_or_appending_run_shows_nothing_until_its_commit(
    tmp_path: Path, mode: Mode
) -> None:
    """A snapshot onto stored rows stages its batches as Parquet files beside the
    database and moves them at the commit; a truncate, and a snapshot into a table
    without rows, commit each batch into a new table that the commit swaps in. Either
    way readers see none of the run before its commit, the newest read of a key wins, a
    type widened between two batches holds both values, and nothing staged is left
    beside the file, nor the new table."""
    schema = pa.schema([pa.field("id", pa.string()), pa.field("title", pa.string())])
    database = tmp_path / "w.duckdb"
    target = DuckDBTarget(database)
    key = StateKey("SENTRY", "acme", "teams", "sentry.teams")

    def open_writer(started: datetime) -> Any:
        return target.open_stream(
            StreamRequest("teams", "sentry.teams", mode, ("id",), schema, key, started)
        )

    def stored() -> list[tuple[Any, ...]]:
        return sorted(read_now(target, "SELECT id, title, CAST(size AS VARCHAR) FROM sentry.teams"))

    sized = schema.append(arrow_field("size", ColumnType.INTEGER))
    try:
        first = open_writer(datetime(2026, 1, 2, tzinfo=UTC))
        first.write(pa.RecordBatch.from_pylist([{"id": "9", "title": "z", "size": 1}], sized))
        assert read_now(target, "SELECT count(*) FROM sentry.teams__sentry_extract_new") == [(1,)]
        assert read_now(target, "SELECT count(*) FROM sentry.teams") == [(0,)]
        first.commit()
        second = open_writer(datetime(2026, 1, 3, tzinfo=UTC))
        second.write(pa.RecordBatch.from_pylist([{"id": "1", "title": "a", "size": 7}], sized))
        second.write(pa.RecordBatch.from_pylist([{"id": "1", "title": "b", "size": 8}], sized))
        if mode.appends:  # onto the first run's rows
            assert list(database.parent.glob("w.duckdb.staging-*/*.parquet"))
        else:  # committed where no reader of the table looks
            query = "SELECT id, title FROM sentry.teams__sentry_extract_new ORDER BY id"
            assert read_now(target, query) == [("1", "b")]
            assert not list(database.parent.glob("w.duckdb.staging-*"))
        assert stored() == [("9", "z", "1")]
        second.write(pa.RecordBatch.from_pylist([{"id": "2", "title": "c", "size": "large"}]))
        second.commit()
        found = stored()
    finally:
        target.close()
    expected = [("1", "b", "8"), ("2", "c", "large")]
    if mode.appends:  # the first run's rows stay, under their own `_snapshot_at`
        expected = [*expected, ("9", "z", "1")]
    assert found == expected
    assert not list(database.parent.glob("w.duckdb.staging-*"))
    tables = rows(database, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    assert tables == [("_sentry_extract_state",), ("teams",)]


def test_truncate_keeps_the_tables_definition_indexes_comments_and_views(
    tmp_path: Path,
) -> None:
    """Truncate swaps a new table in, made from the table's own definition: defaults,
    NOT NULL and CHECK constraints, comments, and indexes the user made stay, and a
    view on the table reads the new rows."""
    schema = pa.schema([pa.field("id", pa.string()), pa.field("title", pa.string())])
    database = tmp_path / "w.duckdb"
    key = StateKey("SENTRY", "acme", "teams", "sentry.teams")

    def run(titles: dict[str, str]) -> None:
        target = DuckDBTarget(database)
        try:
            writer = target.open_stream(
                StreamRequest(
                    "teams", "sentry.teams", Mode.TRUNCATE, ("id",), schema, key, datetime.now(UTC)
                )
            )
            batch = [{"id": id_, "title": title} for id_, title in titles.items()]
            writer.write(pa.RecordBatch.from_pylist(batch, schema))
            writer.commit()
        finally:
            target.close()

    run({"1": "a", "2": "b"})
    with duckdb.connect(str(database)) as connection:
        connection.execute("ALTER TABLE sentry.teams ADD COLUMN team_size BIGINT DEFAULT 5")
        connection.execute("ALTER TABLE sentry.teams ALTER COLUMN title SET NOT NULL")
        connection.execute("CREATE INDEX teams_by_title ON sentry.teams (title)")
        connection.execute("COMMENT ON TABLE sentry.teams IS 'teams of acme'")
        connection.execute("COMMENT ON COLUMN sentry.teams.title IS 'shown name'")
        connection.execute("CREATE VIEW sentry.team_titles AS SELECT id, title FROM sentry.teams")
    run({"2": "c", "3": "d"})
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT * FROM sentry.team_titles ORDER BY id").fetchall() == [
            ("2", "c"),
            ("3", "d"),
        ]
        sizes = connection.execute("SELECT team_size FROM sentry.teams").fetchall()
        assert sizes == [(5,), (5,)]
        described = connection.execute(
            "SELECT column_name, is_nullable, comment FROM duckdb_columns() "
            "WHERE table_name = 'teams' AND column_name = 'title'"
        ).fetchall()
        assert described == [("title", False, "shown name")]
        table = connection.execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'teams'"
        ).fetchall()
        assert table == [("teams of acme",)]
        indexes = connection.execute(
            "SELECT index_name, table_name FROM duckdb_indexes() WHERE schema_name = 'sentry'"
        ).fetchall()
        assert indexes == [("teams_by_title", "teams")]
        tables = connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'sentry' ORDER BY 1"
        ).fetchall()
        assert tables == [("_sentry_extract_state",), ("teams",)]


@pytest.mark.parametrize("mode", ["truncate", "full-refresh"])
def test_a_killed_replacing_run_leaves_the_last_whole_run(
    tmp_path: Path, database: Path, mode: str
) -> None:
    """A run that replaces the rows is one transaction: killed at any moment, it leaves
    the previous run's rows (and no rows of its own) and, once the next run opens the
    file, no staged files."""
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=20, events=300))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: MY_DUCKDB\ndefaults:\n  object: sentry.{stream_name}\n"
        f"  mode: {mode}\nstreams:\n  events:\n"
    )
    chance = random.Random(f"kill-duckdb-{mode}")
    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        connection = sentry_connection(fake.base_url, concurrency=1, checkpoint_every="0s")
        duckdb_connection = f'{{"type": "duckdb", "instance": "{database}"}}'
        environment = command_environment(tmp_path, connection, MY_DUCKDB=duckdb_connection)
        command = Command(tmp_path, environment)
        assert command.run().returncode == 0
        whole = set(rows(database, "SELECT project_id, event_id FROM sentry.events"))
        assert whole == {
            (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)
        }

        def after_each() -> None:
            stored = rows(database, "SELECT project_id, event_id FROM sentry.events")
            assert len(stored) == len(whole) and set(stored) == whole
            tables = rows(database, "SELECT table_name FROM information_schema.tables")
            others = {name for (name,) in tables} - {"events", "_sentry_extract_state"}
            # a full refresh's new table exists from its start, empty until its commit
            assert others <= {"events__sentry_extract_new"}
            for name in others:
                assert rows(database, f"SELECT count(*) FROM sentry.{name}") == [(0,)]

        moments = [chance.randrange(5, 30) for _ in range(2)]
        assert kill_at_moments(command, fake, moments, after_each, chance) >= 1
        organization.add_events(3, project_slug="project-1")
        wait_for_the_next_second()
        finished = command.run()
        assert finished.returncode == 0, finished.stderr
    assert_events_exact(database, organization)
    assert not list(database.parent.glob("warehouse.duckdb.staging-*"))


def test_killed_snapshots_leave_the_stored_ones_whole(tmp_path: Path, database: Path) -> None:
    """A first snapshot commits its batches into a new table, a later one stages files:
    killed at any moment, either leaves the snapshots stored before it whole (none, then
    one), and once a run ends each snapshot holds every event once, and nothing of the
    killed runs is left."""
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=20, events=300))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: MY_DUCKDB\ndefaults:\n  object: sentry.{stream_name}\n"
        "  mode: snapshot\nstreams:\n  events:\n"
    )
    chance = random.Random("kill-duckdb-snapshot")
    expected = {(e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)}
    snapshots: list[int] = []

    def after_each() -> None:
        if not database.exists():
            return
        counts = rows(database, "SELECT count(*) FROM sentry.events GROUP BY _snapshot_at")
        assert sorted(count for (count,) in counts) == snapshots
        tables = rows(database, "SELECT table_name FROM information_schema.tables")
        assert {name for (name,) in tables} - {"events", "_sentry_extract_state"} <= {
            "events__sentry_extract_new"
        }

    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        connection = sentry_connection(fake.base_url, concurrency=1)
        duckdb_connection = f'{{"type": "duckdb", "instance": "{database}"}}'
        environment = command_environment(tmp_path, connection, MY_DUCKDB=duckdb_connection)
        command = Command(tmp_path, environment)
        for _ in range(2):
            moments = [chance.randrange(5, 30) for _ in range(2)]
            assert kill_at_moments(command, fake, moments, after_each, chance) >= 1
            wait_for_the_next_second()
            assert command.run().returncode == 0
            snapshots.append(len(expected))
            after_each()
    by_snapshot: dict[Any, set[tuple[str, str]]] = {}
    for moment, project, event in rows(
        database, "SELECT _snapshot_at, project_id, event_id FROM sentry.events"
    ):
        by_snapshot.setdefault(moment, set()).add((project, event))
    assert list(by_snapshot.values()) == [expected, expected]
    tables = rows(database, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    assert tables == [("_sentry_extract_state",), ("events",)]
    assert not list(database.parent.glob(f"{database.name}.staging-*"))
