"""The PostgreSQL target on a real server: modes across runs, types, atomicity, state, locks."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from sentry_extract.config.replication import Overrides
from sentry_extract.targets.sql import postgres
from sentry_extract.targets.sql.dialect import Staging
from sentry_extract.testing.fake_sentry import FakeSentry, Fault
from sentry_extract.testing.organization import FakeOrganization

from .helpers import (
    RETENTION,
    Clock,
    Workspace,
    assert_every_mode_across_runs,
    change_between_runs,
    change_unknown_field_types,
    database_url,
    give_issues_unknown_fields,
    invoke,
    next_second,
    pg_rows,
    replicate_into,
    sentry_connection,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def replicate(workspace: Workspace, streams: str, mode: str | None = None) -> None:
    replicate_into(workspace, "MY_POSTGRES", streams, mode)


def event_keys(url: str) -> list[tuple[str, str]]:
    return [
        (row[0], row[1]) for row in pg_rows(url, "SELECT project_id, event_id FROM sentry.events")
    ]


def assert_exact(url: str, organization: FakeOrganization, until: datetime) -> None:
    keys = event_keys(url)
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, until)
    }
    issues = {
        row[0]: row
        for row in pg_rows(url, "SELECT id, count, status, last_seen FROM sentry.issues")
    }
    expected = {i["id"]: i for i in organization.visible_issues(RETENTION, until)}
    assert set(issues) == set(expected)
    for issue_id, (_, count, status, last_seen) in issues.items():
        assert count == int(expected[issue_id]["count"])
        assert status == expected[issue_id]["status"]
        assert (
            last_seen.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            == (expected[issue_id]["lastSeen"])
        )


def test_incremental_runs_hold_exactly_the_organization(
    pg_workspace: Workspace, pg_url: str, organization: FakeOrganization
) -> None:
    replicate(pg_workspace, "  issues:\n  events:\n", mode="incremental")
    first = next_second()
    assert pg_workspace.run(started=first).exit_code == 0
    assert_exact(pg_url, organization, first)
    change_between_runs(organization)
    second = next_second() + timedelta(seconds=1)
    assert pg_workspace.run(started=second).exit_code == 0
    assert_exact(pg_url, organization, second)
    third = second + timedelta(seconds=1)
    assert pg_workspace.run(started=third).exit_code == 0
    assert_exact(pg_url, organization, third)
    state = pg_rows(pg_url, "SELECT stream, state FROM sentry._sentry_extract_state ORDER BY 1")
    assert [row[0] for row in state] == ["events", "issues"]
    assert state[1][1]["watermark"] == third.isoformat()
    assert set(state[0][1]["project_watermarks"].values()) == {third.isoformat()}


def test_every_mode_across_runs(
    pg_workspace: Workspace, pg_url: str, organization: FakeOrganization
) -> None:
    assert_every_mode_across_runs(
        pg_workspace, organization, "MY_POSTGRES", lambda query: pg_rows(pg_url, query)
    )


def test_backfill_merges_and_leaves_state(
    pg_workspace: Workspace, pg_url: str, organization: FakeOrganization
) -> None:
    replicate(pg_workspace, "  events:\n", mode="incremental")
    started = next_second()
    pg_workspace.run(started=started)
    state_before = pg_rows(pg_url, "SELECT state FROM sentry._sentry_extract_state")
    start = (started - timedelta(days=30)).strftime("%Y-%m-%d")
    end = (started - timedelta(days=5)).strftime("%Y-%m-%d")
    pg_workspace.replication(
        f"  events:\n    mode: backfill\n    source_options:\n      range: '{start},{end}'\n",
        object_template="sentry.{{stream_name}}",
        target="MY_POSTGRES",
    )
    summary = pg_workspace.run(started=started + timedelta(seconds=2))
    assert summary.exit_code == 0 and summary.results[0].rows > 0
    assert pg_rows(pg_url, "SELECT state FROM sentry._sentry_extract_state") == state_before
    keys = event_keys(pg_url)
    assert len(keys) == len(set(keys)) == len(organization.visible_events(RETENTION, started))


def test_columns_have_real_types_and_a_primary_key(pg_workspace: Workspace, pg_url: str) -> None:
    replicate(pg_workspace, "  '*':\n")
    assert pg_workspace.run().exit_code == 0
    types = {
        (row[0], row[1]): row[2]
        for row in pg_rows(
            pg_url,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'sentry'",
        )
    }
    assert types[("issues", "count")] == "bigint"
    assert types[("issues", "last_seen")] == "timestamp with time zone"
    assert types[("issues", "is_public")] == "boolean"
    assert types[("issues", "project")] == "jsonb"
    assert types[("issues", "project_id")] == "text"
    assert pg_rows(
        pg_url,
        "SELECT count(*) FROM sentry.issues WHERE project_id IS DISTINCT FROM project->>'id'",
    ) == [(0,)]
    assert types[("issues", "id")] == "text"
    assert types[("releases", "id")] == "bigint"
    assert types[("events", "entries")] == "jsonb"
    keys = pg_rows(
        pg_url,
        "SELECT tc.table_name, string_agg(kcu.column_name, ',' ORDER BY "
        "kcu.ordinal_position) FROM information_schema.table_constraints tc JOIN "
        "information_schema.key_column_usage kcu USING (constraint_name, table_schema) "
        "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'sentry' "
        "GROUP BY 1",
    )
    assert dict(keys)["events"] == "project_id,event_id"
    frames = pg_rows(
        pg_url,
        "SELECT count(*) FROM sentry.events WHERE "
        "entries->0->'data'->'values'->0->'stacktrace'->'frames' IS NOT NULL",
    )
    assert frames[0][0] == pg_rows(pg_url, "SELECT count(*) FROM sentry.events")[0][0] > 0


def test_a_new_field_becomes_a_column_and_user_columns_stay(
    pg_workspace: Workspace, pg_url: str, organization: FakeOrganization
) -> None:
    replicate(pg_workspace, "  teams:\n", mode="incremental")
    pg_workspace.run()
    with psycopg.connect(pg_url) as connection:
        connection.execute("ALTER TABLE sentry.teams ADD COLUMN my_note text")
        connection.execute("UPDATE sentry.teams SET my_note = 'keep me'")
    organization.teams[0]["newShinyField"] = {"nested": True}
    assert pg_workspace.run().exit_code == 0
    rows = dict(pg_rows(pg_url, "SELECT id, new_shiny_field FROM sentry.teams"))
    assert rows[organization.teams[0]["id"]] == {"nested": True}
    assert column_types(pg_url, "teams")["new_shiny_field"] == "jsonb"
    assert pg_rows(pg_url, "SELECT DISTINCT my_note FROM sentry.teams") == [("keep me",)]


def column_types(url: str, table: str) -> dict[str, str]:
    return dict(
        pg_rows(
            url,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'sentry' AND table_name = %s",
            table,
        )
    )


def test_unknown_fields_keep_their_types_and_are_widened_when_they_change(
    pg_workspace: Workspace,
    pg_url: str,
    organization: FakeOrganization,
    caplog: pytest.LogCaptureFixture,
) -> None:
    give_issues_unknown_fields(organization)
    replicate(pg_workspace, "  issues:\n", mode="incremental")
    assert pg_workspace.run(started=next_second()).exit_code == 0
    types = column_types(pg_url, "issues")
    assert types["has_logs"] == "boolean" and types["session_count"] == "bigint"
    assert types["crash_free_rate"] == "double precision" and types["seer"] == "jsonb"
    query = "SELECT id, has_logs, session_count, crash_free_rate, seer FROM sentry.issues"
    before = pg_rows(pg_url, query)
    assert all(row[1:] == (False, 0, 0.25, {"a": 1}) for row in before) and before
    assert pg_rows(pg_url, "SELECT count(*) FROM sentry.issues WHERE NOT has_logs") == [
        (len(before),)
    ]

    changed = change_unknown_field_types(organization)
    assert pg_workspace.run(started=next_second() + timedelta(seconds=1)).exit_code == 0
    types = column_types(pg_url, "issues")
    assert types["has_logs"] == "jsonb" and types["session_count"] == "text"
    assert types["crash_free_rate"] == "double precision"
    after = {row[0]: row[1:] for row in pg_rows(pg_url, query)}
    assert len(after) == len(before)
    assert after.pop(changed) == ({"x": 1}, "many", 1.0, {"a": 1})
    assert all(values == (False, "0", 0.25, {"a": 1}) for values in after.values())
    assert "column has_logs changes type from boolean to json" in caplog.text
    assert "column session_count changes type from integer to text" in caplog.text


def test_full_refresh_never_shows_an_empty_or_partial_table(
    pg_workspace: Workspace, pg_url: str, fake: FakeSentry
) -> None:
    replicate(pg_workspace, "  events:\n", mode="full-refresh")
    assert pg_workspace.run().exit_code == 0
    total = pg_rows(pg_url, "SELECT count(*) FROM sentry.events")[0][0]
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(pg_url, autocommit=True) as connection:
            while not stop.is_set():
                seen.append(connection.execute("SELECT count(*) FROM sentry.events").fetchone()[0])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            assert pg_workspace.run(batch_rows=25).exit_code == 0
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 10 and set(seen) == {total}


def test_truncate_keeps_grants_and_indexes(pg_workspace: Workspace, pg_url: str) -> None:
    replicate(pg_workspace, "  projects:\n", mode="truncate")
    pg_workspace.run()
    with psycopg.connect(pg_url) as connection:
        connection.execute("CREATE ROLE sentry_reader_test")
        connection.execute("GRANT SELECT ON sentry.projects TO sentry_reader_test")
        connection.execute("CREATE INDEX projects_by_slug ON sentry.projects (slug)")
    try:
        assert pg_workspace.run().exit_code == 0
        assert pg_rows(
            pg_url,
            "SELECT indexname FROM pg_indexes WHERE tablename = 'projects' "
            "AND indexname = 'projects_by_slug'",
        ) == [("projects_by_slug",)]
        assert pg_rows(
            pg_url, "SELECT has_table_privilege('sentry_reader_test', 'sentry.projects', 'SELECT')"
        ) == [(True,)]
        assert pg_rows(pg_url, "SELECT count(*) FROM sentry.projects") == [(3,)]
    finally:
        with psycopg.connect(pg_url) as connection:
            connection.execute("DROP OWNED BY sentry_reader_test")
            connection.execute("DROP ROLE sentry_reader_test")


def test_a_second_run_on_the_same_table_waits_then_stops(
    pg_workspace: Workspace, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(0.0)  # the lock's: each wait between tries moves it on, and takes no time
    tries: list[float] = []

    def wait(seconds: float) -> None:
        tries.append(clock.moment)
        clock.moment += seconds

    monkeypatch.setattr(postgres, "time", SimpleNamespace(monotonic=clock, sleep=wait))
    replicate(pg_workspace, "  teams:\n")
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('sentry_extract:sentry.teams', 0))"
        )
        summary = pg_workspace.run(lock_wait=1.0)
    assert summary.exit_code == 1
    assert len(tries) >= 2 and clock.moment >= 1.0  # tried again until the second passed
    assert (
        summary.results[0]
        .problems[0]
        .startswith("another sentry-extract run is loading sentry.teams; waited 1s")
    )


@pytest.mark.parametrize(
    "name",
    [
        "sentry.issues; DROP TABLE x",
        "a.b.c",
        'sentry."x"',
        "sentry.",
        "1sentry.issues",
        "sentry.x-y",
    ],
)
def test_hostile_object_names_are_config_errors(
    cli: CliRunner,
    fake: FakeSentry,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    (tmp_path / "r.yaml").write_text(
        f"source: SENTRY\ntarget: MY_POSTGRES\nstreams:\n  teams:\n    object: '{name}'\n"
    )
    result = invoke(cli, "run", "r.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: r.yaml: streams.teams.object: '{name}' is not a PostgreSQL table name"
    )
    assert pg_rows(
        pg_url,
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema')",
    ) == [(0,)]


def test_mixed_case_names_are_quoted_not_folded(pg_workspace: Workspace, pg_url: str) -> None:
    pg_workspace.replication(
        "  teams:\n", object_template="Sentry.Teams_{{stream_name}}", target="MY_POSTGRES"
    )
    assert pg_workspace.run().exit_code == 0
    assert pg_rows(pg_url, 'SELECT count(*) FROM "Sentry"."Teams_teams"') == [(3,)]


@pytest.mark.parametrize(
    "example",
    [
        "reference-sentry-to-postgres.yaml",
        "reference-sync-all-endpoints.yaml",
        "reference-error-monitoring.yaml",
        "reference-organization-overview.yaml",
    ],
)
def test_reference_examples_run_unchanged(
    cli: CliRunner, fake: FakeSentry, pg_url: str, monkeypatch: pytest.MonkeyPatch, example: str
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    result = invoke(cli, "run", str(EXAMPLES / example))
    assert result.exit_code == 0, result.stdout + result.stderr
    schema = (
        "error_monitoring"
        if "error" in example
        else ("sentry_meta" if "overview" in example else "sentry")
    )
    tables = {
        row[0]
        for row in pg_rows(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", schema)
    }
    assert tables >= {"projects"}
    assert pg_rows(pg_url, f"SELECT count(*) FROM {schema}.projects") == [(3,)]


def test_conns_test_postgres(cli: CliRunner, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    ok = invoke(cli, "conns", "test", "MY_POSTGRES")
    assert ok.exit_code == 0 and ok.stdout.startswith("MY_POSTGRES: ok: PostgreSQL 1")
    monkeypatch.setenv("MY_POSTGRES", database_url(pg_url, "no_such_database"))
    missing = invoke(cli, "conns", "test", "MY_POSTGRES")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: PostgreSQL database missing:")
    monkeypatch.setenv("MY_POSTGRES", "postgresql://user:secret-password@127.0.0.1:1/db")
    unreachable = invoke(cli, "conns", "test", "MY_POSTGRES")
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("error: PostgreSQL host unreachable:")
    assert "secret-password" not in unreachable.stderr


def test_state_elsewhere(pg_workspace: Workspace, pg_url: str, tmp_path: Path) -> None:
    replicate(pg_workspace, "  issues:\n", mode="incremental")
    folder = tmp_path / "state"
    assert pg_workspace.run(state_location=str(folder)).exit_code == 0
    files = list(folder.glob("*.json"))
    assert len(files) == 1 and "watermark" in files[0].read_text()
    # With state kept elsewhere, no state table is made beside the data.
    assert pg_rows(pg_url, "SELECT to_regclass('sentry._sentry_extract_state')") == [(None,)]
    assert pg_workspace.run(state_location=pg_url).exit_code == 0
    stored = pg_rows(pg_url, "SELECT stream FROM public._sentry_extract_state")
    assert stored == [("issues",)]


def test_state_show_and_reset_on_postgres(
    cli: CliRunner, fake: FakeSentry, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    example = str(EXAMPLES / "reference-error-monitoring.yaml")
    assert invoke(cli, "run", example).exit_code == 0
    shown = invoke(cli, "state", "show", example)
    assert "table error_monitoring._sentry_extract_state" in shown.stdout
    reset = invoke(cli, "state", "reset", example, "--streams", "events")
    assert reset.stdout.strip() == "events: state cleared"
    assert pg_rows(pg_url, "SELECT stream FROM error_monitoring._sentry_extract_state") == [
        ("issues",)
    ]


def test_a_failing_project_commits_the_others(
    pg_workspace: Workspace, pg_url: str, fake: FakeSentry, organization: FakeOrganization
) -> None:
    replicate(pg_workspace, "  events:\n", mode="incremental")
    fake.inject(Fault("/project-1/events/", 500, body={"detail": "boom"}, times=100))
    summary = pg_workspace.run(overrides=Overrides())
    assert summary.results[0].status == "partial"
    state = pg_rows(pg_url, "SELECT state FROM sentry._sentry_extract_state")[0][0]
    done = set(state["project_watermarks"])
    assert done == {
        organization.project("project-0")["id"],
        organization.project("project-2")["id"],
    }


def test_a_text_column_takes_json_strings_when_it_becomes_json(
    pg_workspace: Workspace, pg_url: str, organization: FakeOrganization
) -> None:
    replicate(pg_workspace, "  teams:\n", mode="incremental")
    for team in organization.teams:
        team["motto"] = "ship it"
    assert pg_workspace.run().exit_code == 0
    assert column_types(pg_url, "teams")["motto"] == "text"
    organization.teams[0]["motto"] = {"text": "ship it", "lang": "en"}
    organization.teams[1]["motto"] = "no, really"
    assert pg_workspace.run().exit_code == 0
    assert column_types(pg_url, "teams")["motto"] == "jsonb"
    mottos = dict(pg_rows(pg_url, "SELECT id, motto FROM sentry.teams"))
    assert mottos[organization.teams[0]["id"]] == {"text": "ship it", "lang": "en"}
    assert mottos[organization.teams[1]["id"]] == "no, really"
    assert mottos[organization.teams[2]["id"]] == "ship it"
    organization.teams[0]["motto"] = "plain again"  # text arriving in a JSON column
    assert pg_workspace.run().exit_code == 0
    mottos = dict(pg_rows(pg_url, "SELECT id, motto FROM sentry.teams"))
    assert mottos[organization.teams[0]["id"]] == "plain again"


def blocking_staging(url: str, lock: int) -> None:
    """A table whose inserts wait for an advisory lock, or fail when `lock` is negative."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE staged (id text, note text)")
        body = (
            "RAISE EXCEPTION 'refused row %', NEW.id"
            if lock < 0
            else f"PERFORM pg_advisory_xact_lock({lock})"
        )
        connection.execute(
            "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body}; RETURN NEW; END $$"
        )
        connection.execute(
            "CREATE TRIGGER hold BEFORE INSERT ON staged FOR EACH ROW EXECUTE FUNCTION hold()"
        )


def waiting_copies(url: str) -> int:
    rows = pg_rows(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY \"staged\"%%' "
        "AND wait_event_type = 'Lock'",
    )
    return int(rows[0][0])


def test_a_batch_is_copied_while_the_run_reads_on(pg_url: str) -> None:
    """`load` hands the COPY to a thread of its own and returns while PostgreSQL still
    parses it; the next use of the connection waits for it."""
    blocking_staging(pg_url, lock=7)
    batch = pa.record_batch({"id": ["a", "b"], "note": ["x", "y"]})
    staging = Staging('"staged"', in_files=False, flushed_each_batch=False)
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(7)")
        session = postgres.PostgresSession(postgres.connect(pg_url))
        try:
            session.load(staging, batch, memory_budget=1 << 20)  # returns: the COPY waits
            while waiting_copies(pg_url) == 0:  # the module's timeout ends a COPY never sent
                threading.Event().wait(0.01)
            holder.execute("SELECT pg_advisory_unlock(7)")
            assert session.fetch("SELECT id, note FROM staged ORDER BY id") == [
                ("a", "x"),
                ("b", "y"),
            ]
        finally:
            session.close()


def test_a_failed_copy_is_raised_by_the_next_use_of_the_connection(pg_url: str) -> None:
    blocking_staging(pg_url, lock=-1)
    batch = pa.record_batch({"id": ["a"], "note": ["x"]})
    staging = Staging('"staged"', in_files=False, flushed_each_batch=False)
    session = postgres.PostgresSession(postgres.connect(pg_url))
    try:
        session.load(staging, batch, memory_budget=1 << 20)
        with pytest.raises(psycopg.errors.RaiseException, match="refused row a"):
            session.execute("SELECT 1")
        session.rollback()
        session.execute("SELECT 1")  # the connection goes on once the failure is rolled back
    finally:
        session.close()
