"""Every mode on Parquet across several runs, with data added, changed and arriving late."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_extract.config.replication import Overrides
from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType
from sentry_extract.records import RecordTyper, column_type_of
from sentry_extract.source.streams import TEAMS
from sentry_extract.state import StateKey
from sentry_extract.targets.base import StreamRequest
from sentry_extract.targets.dataset import older_duplicates
from sentry_extract.targets.parquet import ParquetStreamWriter, ParquetTarget
from sentry_extract.testing.fake_sentry import FakeSentry, Fault
from sentry_extract.testing.organization import FakeOrganization

from .helpers import (
    Workspace,
    assert_events_exact,
    assert_issues_exact,
    change_between_runs,
    change_unknown_field_types,
    give_issues_unknown_fields,
    next_second,
    parquet_files,
    working_files,
)


@pytest.mark.parametrize("workspace", ["local", "s3"], indirect=True)
def test_incremental_runs_hold_exactly_the_organization(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.replication("  issues:\n  events:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    assert_events_exact(workspace, organization, first)
    assert_issues_exact(workspace, organization, first)

    change_between_runs(organization)
    second = next_second() + timedelta(seconds=1)
    summary = workspace.run(started=second)
    assert summary.exit_code == 0
    assert_events_exact(workspace, organization, second)
    assert_issues_exact(workspace, organization, second)

    third = second + timedelta(seconds=1)
    summary = workspace.run(started=third)
    assert summary.exit_code == 0
    assert_events_exact(workspace, organization, third)
    assert_issues_exact(workspace, organization, third)


def test_incremental_windows_start_at_the_previous_run_minus_lookback(
    workspace: Workspace, fake: FakeSentry
) -> None:
    workspace.replication("  issues:\n  events:\n", mode="incremental")
    first = next_second()
    workspace.run(started=first)
    fake.reset_log()
    second = first + timedelta(minutes=10)
    workspace.run(started=second)
    expected_start = (first - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expected_end = second.strftime("%Y-%m-%dT%H:%M:%SZ")
    windowed = fake.requests_to("/issues/") + fake.requests_to("/events/")
    assert windowed
    assert {(r.param("start"), r.param("end")) for r in windowed} == {
        (expected_start, expected_end)
    }


@pytest.mark.parametrize("workspace", ["local", "s3"], indirect=True)
def test_full_refresh_replaces_rows(workspace: Workspace, organization: FakeOrganization) -> None:
    workspace.replication("  members:\n  releases:\n  events:\n", mode="full-refresh")
    assert workspace.run(started=next_second()).exit_code == 0
    removed = organization.members.pop()
    organization.add_member()
    organization.set_release_status(organization.releases[0]["version"], "archived")
    organization.add_events(3, project_slug="project-1")
    started = next_second() + timedelta(seconds=1)
    assert workspace.run(started=started).exit_code == 0
    member_ids = workspace.table("members").column("id").to_pylist()
    assert sorted(member_ids) == sorted(m["id"] for m in organization.members)
    assert removed["id"] not in member_ids
    releases = {r["id"]: r["status"] for r in workspace.table("releases").to_pylist()}
    assert releases == {r["id"]: r["status"] for r in organization.releases}
    assert_events_exact(workspace, organization, started)


@pytest.mark.parametrize("workspace", ["local", "s3"], indirect=True)
def test_truncate_behaves_like_full_refresh(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.replication("  teams:\n", mode="truncate")
    workspace.run()
    workspace.run()
    assert sorted(workspace.table("teams").column("id").to_pylist()) == sorted(
        t["id"] for t in organization.teams
    )


def test_snapshot_appends_each_run_with_its_time(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.replication("  projects:\n", mode="snapshot")
    first, second = next_second(), next_second() + timedelta(seconds=5)
    workspace.run(started=first)
    organization.add_project("project-new")
    workspace.run(started=second)
    table = workspace.table("projects")
    by_snapshot: dict[datetime, list[str]] = {}
    for row in table.to_pylist():
        by_snapshot.setdefault(row["_snapshot_at"], []).append(row["id"])
    assert set(by_snapshot) == {first, second}
    assert len(by_snapshot[first]) == 3 and len(by_snapshot[second]) == 4


def test_backfill_merges_a_range_and_leaves_state_alone(
    workspace: Workspace, organization: FakeOrganization, fake: FakeSentry
) -> None:
    workspace.replication("  events:\n", mode="incremental")
    started = next_second()
    workspace.run(started=started)
    state_file = workspace.folder / "out" / "events" / "_sentry_extract_state.json"
    state_before = state_file.read_text()
    start = (started - timedelta(days=20)).strftime("%Y-%m-%d")
    end = (started - timedelta(days=10)).strftime("%Y-%m-%d")
    workspace.replication(
        f"  events:\n    mode: backfill\n    source_options:\n      range: '{start},{end}'\n"
    )
    fake.reset_log()
    summary = workspace.run(started=started + timedelta(seconds=3))
    assert summary.exit_code == 0 and summary.results[0].rows > 0
    ranges = {(r.param("start"), r.param("end")) for r in fake.requests_to("/events/")}
    # Read in slices, oldest first, that tile the range exactly.
    assert min(low for low, _ in ranges) == f"{start}T00:00:00Z"
    assert max(high for _, high in ranges) == f"{end}T00:00:00Z"
    assert all(f"{start}T00:00:00Z" <= low < high <= f"{end}T00:00:00Z" for low, high in ranges)
    assert state_file.read_text() == state_before
    assert_events_exact(workspace, organization, started)


def test_select_keeps_columns_plus_key_and_excludes(workspace: Workspace) -> None:
    workspace.replication(
        "  issues:\n    select: [title, status]\n  events:\n    select: [-entries, -contexts]\n"
    )
    assert workspace.run().exit_code == 0
    names = workspace.table("issues").column_names
    assert names == ["id", "title", "status", "_deleted_at", "merged_into_id"]
    events = workspace.table("events").column_names
    assert "entries" not in events and "contexts" not in events and "event_id" in events


def test_source_casing_keeps_api_names(workspace: Workspace) -> None:
    workspace.replication(
        "  events:\n    primary_key: [projectID, eventID]\n"
        "    target_options:\n      column_casing: source\n"
    )
    assert workspace.run().exit_code == 0
    names = workspace.table("events").column_names
    assert "event.type" in names and "dateCreated" in names and "eventID" in names


def test_a_field_the_api_adds_later_becomes_a_column(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.replication("  teams:\n", mode="incremental")
    workspace.run()
    organization.teams[0]["newShinyField"] = {"nested": True}
    organization.teams[1]["newShinyField"] = "plain"
    assert workspace.run().exit_code == 0
    rows = {r["id"]: r for r in workspace.table("teams").to_pylist()}
    # an object beside a string: a JSON column, which keeps each value's own type
    assert json.loads(rows[organization.teams[0]["id"]]["new_shiny_field"]) == {"nested": True}
    assert json.loads(rows[organization.teams[1]["id"]]["new_shiny_field"]) == "plain"
    assert rows[organization.teams[2]["id"]]["new_shiny_field"] is None


def test_unknown_fields_keep_their_types_and_are_widened_when_they_change(
    workspace: Workspace, organization: FakeOrganization, caplog: pytest.LogCaptureFixture
) -> None:
    give_issues_unknown_fields(organization)
    workspace.replication("  issues:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    schema = workspace.table("issues").schema
    assert schema.field("has_logs").type == pa.bool_()
    assert schema.field("session_count").type == pa.int64()
    assert schema.field("crash_free_rate").type == pa.float64()
    assert column_type_of(schema.field("seer")) is ColumnType.JSON
    rows = workspace.table("issues").to_pylist()
    assert {(r["has_logs"], r["session_count"], r["crash_free_rate"]) for r in rows} == {
        (False, 0, 0.25)
    }
    assert {r["seer"] for r in rows} == {'{"a":1}'}

    changed = change_unknown_field_types(organization)
    assert workspace.run(started=next_second() + timedelta(seconds=1)).exit_code == 0
    table = workspace.table("issues")
    assert column_type_of(table.schema.field("has_logs")) is ColumnType.JSON
    assert column_type_of(table.schema.field("session_count")) is ColumnType.TEXT
    assert table.schema.field("crash_free_rate").type == pa.float64()
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert len(by_id) == len(rows)
    assert (by_id[changed]["has_logs"], by_id[changed]["session_count"]) == ('{"x":1}', "many")
    assert by_id[changed]["crash_free_rate"] == 1.0
    others = [r for key, r in by_id.items() if key != changed]
    assert {(r["has_logs"], r["session_count"], r["crash_free_rate"]) for r in others} == {
        ("false", "0", 0.25)
    }
    assert "column has_logs changes type from boolean to json" in caplog.text
    assert "column session_count changes type from integer to text" in caplog.text


def test_declared_types(workspace: Workspace) -> None:
    workspace.replication()
    assert workspace.run().exit_code == 0
    issues = workspace.table("issues").schema
    assert str(issues.field("count").type) == "int64"  # arrives as a string
    assert str(issues.field("last_seen").type) == "timestamp[us, tz=UTC]"
    rows = workspace.table("issues").select(["project", "project_id"]).to_pylist()
    assert rows and all(json.loads(r["project"])["id"] == r["project_id"] for r in rows)
    assert str(issues.field("is_public").type) == "bool"
    assert str(workspace.table("releases").schema.field("id").type) == "int64"
    assert str(workspace.table("events").schema.field("event_id").type) == "string"


def test_a_failed_run_leaves_data_and_state_as_they_were(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    workspace.replication("  events:\n", mode="incremental")
    first = next_second()
    workspace.run(started=first)
    folder = workspace.folder / "out" / "events"
    data_before = {path: path.read_bytes() for path in parquet_files(folder)}
    state_before = (folder / "_sentry_extract_state.json").read_text()
    organization.add_events(5, project_slug="project-0")
    fake.inject(Fault("/events/", 500, body={"detail": "boom"}, times=50))
    summary = workspace.run(
        started=first + timedelta(seconds=5), overrides=Overrides(mode="full-refresh")
    )
    assert summary.exit_code == 1
    assert {path: path.read_bytes() for path in parquet_files(folder)} == data_before
    assert (folder / "_sentry_extract_state.json").read_text() == state_before
    assert not working_files(folder)
    fake.faults.clear()
    later = first + timedelta(seconds=10)
    assert workspace.run(started=later).exit_code == 0
    assert_events_exact(workspace, organization, later)


def test_a_crash_between_data_and_state_only_rereads(
    workspace: Workspace, organization: FakeOrganization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentry_extract.targets import storage as storage_module

    workspace.replication("  issues:\n", mode="incremental")
    first = next_second()
    workspace.run(started=first)

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    # The name LocalStorage.write_bytes calls: the state beside the data is written there.
    monkeypatch.setattr(storage_module, "write_atomically", crash)
    organization.add_events(2, project_slug="project-0", new_issue=True)
    second = first + timedelta(seconds=5)
    summary = workspace.run(started=second)
    assert summary.exit_code == 1
    assert "No space left on device" in summary.results[0].problems[0]
    monkeypatch.undo()
    state = json.loads(
        (workspace.folder / "out" / "issues" / "_sentry_extract_state.json").read_text()
    )
    watermark = next(iter(state["streams"].values()))["state"]["watermark"]
    assert datetime.fromisoformat(watermark) == first  # never ahead of the data
    third = first + timedelta(seconds=10)
    assert workspace.run(started=third).exit_code == 0
    assert_issues_exact(workspace, organization, third)


def test_parquet_files_are_readable_by_duckdb(workspace: Workspace) -> None:
    import duckdb

    workspace.replication()
    workspace.run()
    folder = workspace.folder / "out"
    [(count,)] = duckdb.sql(
        f"select count(*) from read_parquet('{folder}/events/**/*.parquet')"
    ).fetchall()
    assert count == workspace.table("events").num_rows > 0
    types = duckdb.sql(
        f"select distinct json_extract_string(entries, '$[0].type') from "
        f"read_parquet('{folder}/events/**/*.parquet')"
    ).fetchall()
    assert types == [("exception",)]
    assert pq.read_table(folder / "events").num_rows == count


def test_overlapping_runs_on_one_dataset_are_refused(workspace: Workspace) -> None:
    from sentry_extract.targets.storage import LocalStorage

    workspace.replication("  teams:\n")
    folder = workspace.folder / "out" / "teams"
    held = LocalStorage(folder).lock()
    try:
        summary = workspace.run()
    finally:
        held.release()
    assert summary.exit_code == 1
    assert "another sentry-extract run" in summary.results[0].problems[0]


def test_an_object_ending_in_parquet_is_one_file(workspace: Workspace) -> None:
    workspace.replication("  teams:\n", object_template="{folder}/single/{{stream_name}}.parquet")
    assert workspace.run().exit_code == 0
    assert workspace.run().exit_code == 0
    path = workspace.folder / "single" / "teams.parquet"
    assert pq.read_table(path).num_rows == 3
    # No working file, nor the lock, is left beside it (teams keep no state).
    assert sorted(p.name for p in path.parent.iterdir()) == ["teams.parquet"]


def teams_writer(folder: Path, mode: str) -> tuple[RecordTyper, ParquetStreamWriter]:
    """A typer and a Parquet writer for teams (key `id`) in `folder`, driven by hand."""
    typer = RecordTyper(TEAMS)
    request = StreamRequest(
        "teams",
        f"file://{folder}/teams",
        Mode(mode),
        ("id",),
        typer.to_batch([]).schema,
        StateKey("S", "o", "teams", "x"),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    return typer, ParquetTarget().open_stream(request)


@pytest.mark.parametrize("mode", ["full-refresh", "incremental", "snapshot"])
def test_the_newest_read_of_a_key_wins_within_a_run(tmp_path: Path, mode: str) -> None:
    typer, writer = teams_writer(tmp_path, mode)
    writer.write(
        typer.to_batch(
            [
                {"id": "1", "name": "old"},
                {"id": "2", "name": "two"},
                {"id": None, "name": "no key a"},
            ]
        )
    )
    writer.write(typer.to_batch([{"id": "1", "name": "new"}, {"id": None, "name": "no key b"}]))
    writer.commit()
    rows = pq.read_table(tmp_path / "teams").to_pylist()
    names = sorted((row["id"] or "", row["name"]) for row in rows)
    assert names == [("", "no key a"), ("", "no key b"), ("1", "new"), ("2", "two")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.sampled_from(["a", "b", "c", "d\x1fe", ""]), max_size=30))
def test_only_older_reads_of_a_repeated_key_are_dropped(keys_read: list[str | None]) -> None:
    last = {key: position for position, key in enumerate(keys_read) if key is not None}
    expected = {p for p, key in enumerate(keys_read) if key is not None and last[key] != p}
    assert older_duplicates(pa.chunked_array([keys_read], type=pa.string())) == expected


@pytest.mark.parametrize(("ids", "writers"), [(["1", "2", "3"], 1), (["1", "2", "1"], 3)])
def test_a_full_refresh_is_rewritten_only_when_a_key_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[str], writers: int
) -> None:
    """Without repeated keys the staged file is renamed into place: one write. With them,
    the rows are sorted out (one more) and written to the dataset (one more)."""
    opened: list[object] = []

    class CountingWriter(pq.ParquetWriter):  # type: ignore[misc]
        def __init__(self, where: object, *arguments: Any, **options: Any) -> None:
            opened.append(where)
            super().__init__(where, *arguments, **options)

    monkeypatch.setattr(pq, "ParquetWriter", CountingWriter)
    typer, writer = teams_writer(tmp_path, "full-refresh")
    writer.write(typer.to_batch([{"id": key, "name": str(n)} for n, key in enumerate(ids)]))
    writer.commit()
    rows = pq.read_table(tmp_path / "teams").to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(set(ids))
    assert len(opened) == writers
