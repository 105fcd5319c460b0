"""Parquet datasets that grow: part files, partitions, readers during commits, new fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sentry_extract.targets import dataset
from sentry_extract.testing.fake_sentry import FakeSentry
from sentry_extract.testing.organization import FakeOrganization

from .helpers import (
    RETENTION,
    Workspace,
    assert_events_exact,
    assert_issues_exact,
    keys,
    next_second,
    parquet_files,
    sentry_connection,
    watch_runs_for_duplicates,
)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in parquet_files(folder)}


def test_an_incremental_run_rewrites_only_the_files_it_touches(
    workspace: Workspace, organization: FakeOrganization, small_files: None
) -> None:
    workspace.replication("  events:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    folder = workspace.folder / "out" / "events"
    before = snapshot(folder)
    assert len(before) >= 3  # the backfill made several files
    organization.add_events(5, project_slug="project-1")
    second = first + timedelta(seconds=5)
    assert workspace.run(started=second).exit_code == 0
    after = snapshot(folder)
    changed = [path for path, stat in after.items() if before.get(path) != stat]
    assert 1 <= len(changed) <= 2  # the tail file (and at most one more), not the dataset
    written = sum(after[path][0] for path in changed)
    assert written < 0.5 * sum(size for size, _ in after.values())
    assert_events_exact(workspace, organization, second)


def test_an_incremental_backfill_encodes_its_rows_about_once(
    workspace: Workspace,
    organization: FakeOrganization,
    small_files: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each checkpoint of a backfill moves its staged rows into the dataset as they are,
    and rewrites none of the files before it; small files are compacted once they make a
    whole file together. (Checkpoints used to encode the staged rows twice more, and the
    newest small file took every checkpoint's rows: an incremental backfill cost about
    3x the CPU of a full refresh, most of it writing Parquet.)"""
    from sentry_extract.targets import parquet

    for project in organization.projects:
        for day in range(20):
            organization.add_events(8, project_slug=project["slug"], age=timedelta(days=day))
    encoded: list[int] = []
    real_write_rows = dataset.write_rows

    def write_rows(writer: pq.ParquetWriter, batch: pa.RecordBatch, group_bytes: int) -> None:
        encoded.append(batch.num_rows)
        real_write_rows(writer, batch, group_bytes)

    monkeypatch.setattr(dataset, "write_rows", write_rows)
    monkeypatch.setattr(parquet, "write_rows", write_rows)
    workspace.replication("  events:\n", mode="incremental")
    started = next_second()
    summary = workspace.run(started=started)
    assert summary.exit_code == 0 and summary.results[0].checkpoints >= 10
    stored = workspace.table("events").num_rows
    assert stored > 600
    assert sum(encoded) <= 2 * stored  # staged once, and at most once more when compacted
    assert_events_exact(workspace, organization, started)


def test_small_files_of_frequent_runs_are_compacted(
    workspace: Workspace,
    organization: FakeOrganization,
    small_files: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that adds a few rows makes a small file; once a folder's small files make a
    whole file together (or are many), they become one file."""
    monkeypatch.setattr(dataset, "FILE_BYTES", 200_000)  # a file of a few events is small
    workspace.replication("  events:\n", mode="incremental")
    folder = workspace.folder / "out" / "events"
    started = next_second()
    assert workspace.run(started=started).exit_code == 0
    before = set(parquet_files(folder))
    for _ in range(10):
        organization.add_events(3, project_slug="project-0")
        started += timedelta(seconds=5)
        assert workspace.run(started=started).exit_code == 0
    files = parquet_files(folder)
    small = [path for path in files if path.stat().st_size < dataset.FILE_BYTES // 2]
    assert len(set(files) - before) < 10  # ten runs, and fewer new files
    assert len(small) <= dataset.SMALL_FILES * 2
    assert_events_exact(workspace, organization, started)


def test_a_reader_polling_during_runs_never_sees_a_key_twice(
    workspace: Workspace, organization: FakeOrganization, small_files: None
) -> None:
    workspace.replication("  events:\n", mode="incremental")
    folder = workspace.folder / "out" / "events"
    folder.mkdir(parents=True)

    def read() -> pa.Table:
        return ds.dataset(folder, format="parquet").to_table(columns=["project_id", "event_id"])

    reads, duplicates = watch_runs_for_duplicates(workspace, organization, read, runs=4)
    assert len(reads) > 10 and max(reads) > 0
    assert duplicates == []


def test_partition_variables_place_rows_by_their_update_key(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.replication(
        "  issues:\n  events:\n",
        mode="incremental",
        object_template="file://{folder}/out/{{stream_name}}/year={{part_year}}/{{part_month}}",
    )
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    events = workspace.folder / "out" / "events"
    files = parquet_files(events)
    assert len({path.parent for path in files}) > 1
    for path in files:
        year, month = path.parent.parent.name, path.parent.name
        moments = pq.read_table(path, columns=["date_created"]).column(0).to_pylist()
        assert {(f"year={m.year}", f"{m.month:02d}") for m in moments} == {(year, month)}
    # An issue last seen months ago gets a new event: it moves to this month's folder.
    issues = workspace.folder / "out" / "issues"
    old = min(organization.visible_issues(RETENTION), key=lambda issue: issue["lastSeen"])
    organization.add_events(1, project_slug=old["project"]["slug"], issue_id=old["id"])
    second = first + timedelta(seconds=5)
    assert workspace.run(started=second).exit_code == 0
    homes = [
        path
        for path in parquet_files(issues)
        if old["id"] in pq.read_table(path, columns=["id"]).column(0).to_pylist()
    ]
    now = datetime.now(UTC)
    assert [path.parent.name for path in homes] == [f"{now.month:02d}"]
    table = ds.dataset(issues, format="parquet", partitioning="hive").to_table()
    assert "year" in table.column_names  # Hive folders read as a column
    assert_issues_exact(workspace, organization, second)
    assert_events_exact(workspace, organization, second)


def test_a_field_that_appears_later_is_in_every_file(
    workspace: Workspace, organization: FakeOrganization, small_files: None
) -> None:
    workspace.replication("  events:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    for event in organization.add_events(3, project_slug="project-0"):
        event["brandNewField"] = "x"  # Sentry starts sending a new field
    second = first + timedelta(seconds=5)
    assert workspace.run(started=second).exit_code == 0
    folder = workspace.folder / "out" / "events"
    assert len(parquet_files(folder)) > 2
    for path in parquet_files(folder):
        assert "brand_new_field" in pq.read_schema(path).names
    assert "brand_new_field" in pq.read_table(folder).column_names  # schema of one file


def test_a_full_refresh_killed_while_swapping_files_is_finished_by_the_next_run(
    workspace: Workspace,
    organization: FakeOrganization,
    small_files: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sentry_extract.targets import storage

    workspace.replication(
        "  events:\n",
        mode="full-refresh",
        object_template="file://{folder}/out/{{stream_name}}/{{part_year_month}}",
    )
    assert workspace.run(started=next_second()).exit_code == 0
    organization.add_events(30, project_slug="project-0")
    moves: list[str] = []
    real_move = storage.LocalStorage.move

    def crash_after_one(self: storage.LocalStorage, source: str, target: str) -> None:
        if moves:
            raise KeyboardInterrupt  # killed in the middle of the swap
        moves.append(target)
        real_move(self, source, target)

    monkeypatch.setattr(storage.LocalStorage, "move", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        workspace.run(started=next_second() + timedelta(seconds=2))
    monkeypatch.undo()
    folder = workspace.folder / "out" / "events"
    assert (folder / dataset.JOURNAL).exists()
    stored = keys(workspace.table("events"), "project_id", "event_id")
    assert len(stored) == len(set(stored))  # old files went first: never a key twice
    later = next_second() + timedelta(seconds=4)
    assert workspace.run(started=later).exit_code == 0
    assert not (folder / dataset.JOURNAL).exists()
    assert_events_exact(workspace, organization, later)


def test_files_from_before_part_files_are_read_and_merged(
    workspace: Workspace, organization: FakeOrganization, fake: FakeSentry
) -> None:
    """A dataset written as one data.parquet keeps working: it is one part file among others."""
    workspace.replication("  events:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    folder = workspace.folder / "out" / "events"
    [only] = parquet_files(folder)
    only.rename(folder / "data.parquet")
    organization.add_events(4, project_slug="project-0")
    second = first + timedelta(seconds=5)
    assert workspace.run(started=second).exit_code == 0
    assert_events_exact(workspace, organization, second)


def test_rows_read_again_unchanged_rewrite_no_file(
    workspace: Workspace, organization: FakeOrganization, fake: FakeSentry, small_files: None
) -> None:
    """A long lookback reads many stored events again (the whole lookback of the project
    that has news; the others are not asked): files that hold them stay as they are; only
    the file taking the new events is written."""
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, lookback="60d")
    workspace.replication("  events:\n", mode="incremental")
    first = next_second()
    assert workspace.run(started=first).exit_code == 0
    folder = workspace.folder / "out" / "events"
    before = snapshot(folder)
    organization.add_events(3, project_slug="project-0")
    second = first + timedelta(seconds=5)
    summary = workspace.run(started=second)
    assert summary.exit_code == 0 and summary.results[0].rows > 30  # 60 days read again
    after = snapshot(folder)
    changed = [path for path, stat in after.items() if before.get(path) != stat]
    assert len(changed) == 1
    assert_events_exact(workspace, organization, second)
