"""Merging a checkpoint's rows into a Delta table by key, rewriting only what changes.

A MERGE by delta-rs reads the whole table to find the keys, and rewrites every file that
holds a key it matched, whether the row changed or not. `merge_rows` instead:

1. reads only the key columns of the table's files (`StoredKeys`), and of those only the
   row groups whose update-key statistics meet the rows' times (`Bounds`), unless the
   run read or wrote them before (`StoredKeyCache`);
2. writes the rows whose keys are new into new files (no stored file is touched);
3. reads the stored rows of the keys that come again, and drops the rows that are
   identical to them (a window read twice, an event that did not change);
4. writes the changed rows into new files, and rewrites each file that held one of them
   without those rows.

The caller commits the new files and removes the replaced ones in one commit
(`delta_files.commit_files`): readers see the table before or after, never between.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import AddAction

from sentry_extract.records import conform, key_values
from sentry_extract.targets.delta_files import (
    Bounds,
    Extremes,
    FileWriter,
    KeepKeys,
    KeyedFile,
    StoredFile,
    groups_within,
    read_file,
    read_groups,
    read_rows_of_keys,
    row_group_extremes,
    stored_files,
)
from sentry_extract.targets.delta_table import TableLocation


@dataclass(frozen=True)
class StoredKeys:
    """Every key of the table, and the file (an index into `files`) that holds it."""

    keys: pa.Array
    positions: pa.Array
    files: list[StoredFile]


class StoredKeyCache:
    """The keys of data files read before, by file path and row group: a data file never
    changes, so a run whose checkpoints meet the same files (a backfill reads each
    project's events in turn, over the same span of time) reads each row group's keys
    once. With the row groups' extremes of the bounds' column, kept for each file read,
    a checkpoint whose row groups are all known opens no file. Holds at most CACHED_KEYS
    keys; past that, row groups are read again."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = CACHED_KEYS if limit is None else limit
        self.by_group: dict[tuple[str, int], pa.Array] = {}
        self.extremes: dict[tuple[str, str | None], Extremes] = {}
        self.held = 0
        self.reads = 0  # files whose keys were read from storage

    def remember(self, files: Iterable[KeyedFile]) -> None:
        """The keys of files a commit just added (`FileWriter.keyed`): no later
        checkpoint reads them back from storage."""
        for keyed in files:
            self.note(keyed.path, keyed.column, keyed.extremes)
            for index, keys in enumerate(keyed.keys):
                self.keep(keyed.path, index, keys)

    def note(self, path: str, column: str | None, extremes: Extremes) -> None:
        """The row groups' extremes of `column` in the file at `path`."""
        self.extremes[(path, column)] = extremes
        self.extremes.setdefault((path, None), ((None, None),) * len(extremes))

    def group_keys(self, path: str, index: int) -> pa.Array | None:
        """The keys of a row group, when kept."""
        return self.by_group.get((path, index))

    def keep(self, path: str, index: int, keys: pa.Array) -> None:
        """The keys of one row group (all its rows, in order), read or written."""
        if (path, index) not in self.by_group and self.held + len(keys) <= self.limit:
            self.by_group[(path, index)] = keys
            self.held += len(keys)

    def keys_of(
        self,
        location: TableLocation,
        stored: StoredFile,
        key_columns: tuple[str, ...],
        bounds: Bounds | None = None,
    ) -> pa.Array | None:
        """The keys of the file's row groups that meet `bounds` (all without); None when
        the file lacks a key column."""
        column = bounds.column if bounds is not None else None
        known = self.extremes.get((stored.path, column))
        if known is not None:
            cached = [
                self.by_group.get((stored.path, index)) for index in groups_within(known, bounds)
            ]
            if all(keys is not None for keys in cached):
                return _joined([keys for keys in cached if keys is not None])
        self.reads += 1
        chosen: list[int] = []

        def choose(metadata: pq.FileMetaData) -> list[int]:
            extremes = row_group_extremes(metadata, column)
            self.note(stored.path, column, extremes)
            chosen.extend(groups_within(extremes, bounds))
            return [index for index in chosen if (stored.path, index) not in self.by_group]

        read: dict[int, pa.Array] = {}
        for index, batch in read_groups(location, stored, key_columns, choose):
            if any(name not in batch.schema.names for name in key_columns):
                return None
            read[index] = keys = key_values(batch, key_columns)
            self.keep(stored.path, index, keys)
        return _joined(
            [
                read[index] if index in read else self.by_group[(stored.path, index)]
                for index in chosen
            ]
        )


def _joined(arrays: list[pa.Array]) -> pa.Array:
    return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())


CACHED_KEYS = 500_000  # about 20 MB of event keys at most


def stored_keys(
    location: TableLocation,
    table: DeltaTable,
    key_columns: tuple[str, ...],
    bounds: Bounds | None = None,
    cache: StoredKeyCache | None = None,
) -> StoredKeys:
    """Keys of the files that may hold rows within `bounds` (all files without), read
    once per file when a `cache` is given."""
    files = stored_files(table, bounds.column if bounds else None)
    if bounds is not None:
        files = [stored for stored in files if bounds.may_hold(stored)]
    cache = cache if cache is not None else StoredKeyCache(limit=0)
    keys: list[pa.Array] = []
    positions: list[pa.Array] = []
    for index, stored in enumerate(files):
        found = cache.keys_of(location, stored, key_columns, bounds)
        if found is None or len(found) == 0:
            continue
        keys.append(found)
        positions.append(pa.array([index] * len(found), pa.int32()))
    return StoredKeys(
        pa.concat_arrays(keys) if keys else pa.array([], pa.string()),
        pa.concat_arrays(positions) if positions else pa.array([], pa.int32()),
        files,
    )


@dataclass(frozen=True)
class MergeTarget:
    """Where merged rows go: the table, its schema (the rows' columns) and partitions."""

    location: TableLocation
    table: DeltaTable
    schema: pa.Schema
    partition_by: tuple[str, ...]
    key_columns: tuple[str, ...]
    scratch: Path
    bounds: Bounds | None = None
    cache: StoredKeyCache | None = None
    order_column: str | None = None  # whose row-group extremes the cache keeps


def merge_rows(
    target: MergeTarget, batches: Iterable[pa.RecordBatch]
) -> tuple[list[AddAction], list[StoredFile], list[KeyedFile]]:
    """The files to add and the files to remove for `batches` (one row per key, with the
    target's schema) to replace the stored rows of their keys, and the added files' keys
    (for the cache, once committed)."""
    stored = stored_keys(
        target.location, target.table, target.key_columns, target.bounds, target.cache
    )
    keep = KeepKeys(target.key_columns, target.order_column) if target.cache else None
    writer = FileWriter(
        target.location, target.scratch, target.schema, target.partition_by, keep_keys=keep
    )
    matched: list[pa.RecordBatch] = []
    matched_files: list[pa.Array] = []
    for batch in batches:
        keys = key_values(batch, target.key_columns)
        found = pc.index_in(keys, value_set=stored.keys)
        if found.null_count == len(found):  # every key new: the batch as it is, no copy
            writer.write(batch)
            continue
        is_new = pc.is_null(found)
        writer.write(batch.filter(is_new))
        is_matched = pc.invert(is_new)
        if pc.any(is_matched).as_py():
            matched.append(batch.filter(is_matched))
            matched_files.append(pc.take(stored.positions, found.filter(is_matched)))
    if not matched:
        return writer.finish(), [], writer.keyed
    rows = pa.Table.from_batches(matched, schema=target.schema)
    files = pa.chunked_array(matched_files, pa.int32())
    changed = changed_keys(target, stored.files, rows, files)
    keys = key_values(rows, target.key_columns)
    writer.write_all(rows.filter(pc.is_in(keys, value_set=changed)).to_batches())
    rewritten = sorted(set(files.filter(pc.is_in(keys, value_set=changed)).to_pylist()))
    for index in rewritten:
        for batch in read_file(target.location, stored.files[index]):
            batch = conform(batch, target.schema)
            kept = pc.invert(pc.is_in(key_values(batch, target.key_columns), value_set=changed))
            writer.write(batch.filter(pc.fill_null(kept, True)))
    added = writer.finish()
    return added, [stored.files[index] for index in rewritten], writer.keyed


def changed_keys(
    target: MergeTarget, files: Sequence[StoredFile], rows: pa.Table, positions: pa.ChunkedArray
) -> pa.Array:
    """Keys of `rows` whose stored row (in the file at the row's position) differs."""
    changed: list[str] = []
    for index in sorted(set(positions.to_pylist())):
        mine = rows.filter(pc.equal(positions, index))
        wanted = key_values(mine, target.key_columns)
        incoming = dict(zip(wanted.to_pylist(), mine.to_pylist(), strict=True))
        known = partial(target.cache.group_keys, files[index].path) if target.cache else None
        stored_rows = read_rows_of_keys(
            target.location, files[index], target.key_columns, wanted, target.bounds, known
        )
        for batch in stored_rows:
            found = conform(batch, target.schema)
            for key, row in zip(
                key_values(found, target.key_columns).to_pylist(), found.to_pylist(), strict=True
            ):
                if _same_row(incoming.pop(key, None), row):
                    continue
                changed.append(key)
        changed.extend(incoming)  # keys the file no longer held
    return pa.array(sorted(set(changed)), pa.string())


def _same_row(incoming: dict[str, Any] | None, stored: dict[str, Any]) -> bool:
    return incoming is not None and incoming == stored
