"""Keeping Delta tables small: automatic compaction after a run, and `maintain`.

Every commit adds files: a snapshot or an incremental checkpoint whose rows are new adds
a file per partition it touches (and a checkpoint rewrites each file that held a changed
row, without it: `delta_merge`). Left alone, snapshots and first runs of many checkpoints leave
hundreds of small files, and every commit a log entry. After a stream's last commit of
a run (its lock still held), `keep_up`:

- compacts the table (`compact_small_files`: small files joined into files of up to
  64 MiB, a row group at a time, in one commit without data change) when it holds
  COMPACT_AFTER_FILES or more small files (under SMALL_FILE_BYTES) beyond one per
  partition. It joins only enough of them to leave COMPACTED_TO_FILES, choosing in each
  partition the neighbours (in the update key's order) that hold the fewest bytes
  (`files_to_join`): the 500-row files of a backfill's first checkpoints, or the last
  hours' files, rather than every small file of the table again. After a run a table
  holds fewer than COMPACT_AFTER_FILES small files plus one per partition;
- gives a table made without one the tool's `delta.checkpointInterval` (see
  `delta_table.TABLE_CONFIGURATION`): delta-rs then writes a log checkpoint every ten
  commits by itself (and removes commit files older than the log's retention, 30 days).

Compaction and property commits carry every stream state of the table in their metadata,
as the run's commits do, so the newest commit always holds the state; and the state
reader reads further back while the commits it read name no state of the stream
(`delta_table.commit_state`), so one without state hides nothing. Files that compaction
replaced stay for readers of older versions until `maintain` vacuums them (after Delta's
7 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from sentry_extract.errors import TargetError
from sentry_extract.records import conform
from sentry_extract.targets.delta_files import (
    FileWriter,
    StoredFile,
    commit_files,
    read_file,
    stored_files,
)
from sentry_extract.targets.delta_table import (
    TABLE_CONFIGURATION,
    TableLocation,
    commit_properties,
    commit_states,
    error_line,
)

SMALL_FILE_BYTES = 16 * 1024 * 1024
COMPACT_AFTER_FILES = 32  # small files beyond one per partition
COMPACTED_TO_FILES = COMPACT_AFTER_FILES // 2  # what a compaction leaves of them, at most
RETENTION_HOURS = 168  # Delta's default: files a reader may still need are kept a week


def excess_small_files(table: DeltaTable) -> int:
    """Small files beyond the first small file of each partition: what compaction joins."""
    actions = pa.table(table.get_add_actions(flatten=True))
    sizes = actions.column("size_bytes").to_pylist()
    names = [name for name in actions.column_names if name.startswith("partition.")]
    partitions = list(zip(*(actions.column(name).to_pylist() for name in names), strict=True))
    if not names:
        partitions = [()] * len(sizes)
    small = [
        partition
        for partition, size in zip(partitions, sizes, strict=True)
        if (size or 0) < SMALL_FILE_BYTES
    ]
    return len(small) - len(set(small))


def has_configuration(table: DeltaTable) -> bool:
    """True when the table sets the properties the tool sets (to any value: one an
    owner chose stays)."""
    configuration = table.metadata().configuration
    return all(name in configuration for name in TABLE_CONFIGURATION)


def keep_up(
    location: TableLocation,
    scratch: Path,
    order_column: str | None = None,
    table: DeltaTable | None = None,
) -> bool:
    """Compact the table and set its checkpoint interval when due (the caller holds the
    table's lock); True when it compacted. Small files are joined in the order of their
    `order_column` statistics (the update key), so a compacted file covers a short span
    of it and a checkpoint's merge can skip it (`delta_files.Bounds`). `table` is the
    caller's snapshot of the newest version, when it holds one (the log is not loaded
    again)."""
    table = table or location.open()
    if table is None:
        return False
    compact = excess_small_files(table) >= COMPACT_AFTER_FILES
    configure = not has_configuration(table)
    if not (compact or configure):
        return False
    properties = commit_properties(commit_states(table))
    try:
        if configure:
            table.alter.set_table_properties(
                dict(TABLE_CONFIGURATION), commit_properties=properties
            )
        if compact:
            compact_small_files(location, location.open() or table, scratch, order_column)
    except (DeltaError, OSError, pa.ArrowException) as error:
        raise TargetError(
            f"cannot compact Delta table {location.uri}: {error_line(error)}"
        ) from None
    return compact


def compact_small_files(
    location: TableLocation, table: DeltaTable, scratch: Path, order_column: str | None = None
) -> None:
    """The small files `files_to_join` picks, joined into files of up to
    `delta_files.FILE_BYTES`, a row group at a time (delta-rs's OPTIMIZE holds a whole
    file's rows), in the order of their smallest `order_column`; one commit, without
    data change, carrying every stream state."""
    joined = [
        stored for group in files_to_join(stored_files(table, order_column)) for stored in group
    ]
    if not joined:
        return
    schema = pa.schema(table.schema())
    partition_by = list(table.metadata().partition_columns)
    writer = FileWriter(location, scratch, schema, partition_by, data_change=False)
    for stored in joined:
        writer.write_all(conform(batch, schema) for batch in read_file(location, stored))
    states = commit_states(table)
    commit_files(
        location,
        table,
        schema,
        partition_by,
        writer.finish(),
        joined,
        states=states,
        data_change=False,
    )


def files_to_join(files: list[StoredFile]) -> list[list[StoredFile]]:
    """Runs of neighbouring small files (in `_order_of`) to join, one run per partition,
    so that at most COMPACTED_TO_FILES small files beyond one per partition remain: the
    partitions with the most small files first, and in each the run of the fewest bytes.
    A joined run covers a short span of the update key, so a merge can still skip it."""
    by_partition: dict[tuple[tuple[str, str | None], ...], list[StoredFile]] = {}
    for stored in sorted(files, key=_order_of):
        if stored.size < SMALL_FILE_BYTES:
            by_partition.setdefault(tuple(sorted(stored.partition.items())), []).append(stored)
    excess = sum(len(small) - 1 for small in by_partition.values())
    needed = excess - COMPACTED_TO_FILES  # files fewer wanted
    runs: list[list[StoredFile]] = []
    for small in sorted(by_partition.values(), key=len, reverse=True):
        length = min(len(small), needed + 1)
        if length < 2:
            break
        runs.append(_lightest_run(small, length))
        needed -= length - 1
    return runs


def _lightest_run(files: list[StoredFile], length: int) -> list[StoredFile]:
    """The `length` neighbouring files of `files` that hold the fewest bytes."""
    total = sum(stored.size for stored in files[:length])
    best, start = total, 0
    for first in range(1, len(files) - length + 1):
        total += files[first + length - 1].size - files[first - 1].size
        if total < best:
            best, start = total, first
    return files[start : start + length]


def _order_of(stored: StoredFile) -> tuple[bool, str]:
    """Files with statistics first, by their smallest value (as text: ISO times sort)."""
    low = stored.low
    text = low.isoformat() if isinstance(low, datetime) else str(low)
    return (low is None, text)


@dataclass(frozen=True)
class MaintenanceReport:
    version: int
    files: int
    bytes: int
    files_before: int
    vacuumed: int  # files deleted, no longer part of any version kept


def maintain_table(location: TableLocation) -> MaintenanceReport | None:
    """Compact small files, vacuum what no version within Delta's retention reads, and
    write a checkpoint; the stream states ride in the maintenance commits. None when
    the table has no commit yet."""
    lock = location.storage.lock()
    try:
        table = location.open()
        if table is None:
            return None
        files_before = len(table.file_uris())
        properties = commit_properties(commit_states(table))
        try:
            table.optimize.compact(commit_properties=properties)
            vacuumed = table.vacuum(
                retention_hours=RETENTION_HOURS,
                dry_run=False,
                enforce_retention_duration=True,
                commit_properties=properties,
            )
            table.create_checkpoint()
        except (DeltaError, OSError) as error:
            raise TargetError(
                f"cannot maintain Delta table {location.uri}: {error_line(error)}"
            ) from None
        table = location.open()
        assert table is not None
        actions = pa.table(table.get_add_actions(flatten=True))
        size = sum(value or 0 for value in actions.column("size_bytes").to_pylist())
        return MaintenanceReport(
            table.version(), actions.num_rows, size, files_before, len(vacuumed)
        )
    finally:
        lock.release()
