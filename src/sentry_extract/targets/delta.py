"""Delta Lake tables, written with delta-rs: one table per stream, `target_options.format: delta`.

The object is the table's folder (`file://out/{stream_name}`, a plain path, or a prefix in
the bucket of an s3 connection). Delta keeps a log of commits beside the Parquet files:
every engine that reads Delta sees one commit or the next, never a part of one.

- full-refresh and truncate replace the table in one commit at the end of the run (rows
  are staged on this machine until then); snapshot appends with `_snapshot_at` at the
  end; incremental and backfill merge by primary key at every checkpoint (the last read
  of a key in a batch wins): new keys are appended, rows identical to the stored ones
  dropped, and only the files holding changed rows rewritten (`delta_merge`); a
  checkpoint carries at least CHECKPOINT_BYTES of rows, or `checkpoint_every`'s time;
- the data files are written by `delta_files`, a batch at a time, and committed with
  delta-rs's transaction API (its `write_deltalake` holds every row until its commit);
- each checkpoint is one commit carrying the rows and the stream's state, in the
  commit's metadata (`sentry_extract.state`): data and state never disagree, and a run
  killed at any moment leaves the table at its last commit. `load_state` reads the newest
  commit that has it; `state reset` writes a commit without rows whose state is empty;
- a field Sentry adds becomes a column (old files are not rewritten), in a commit of its
  own before the rows'; a column whose type widens (`records.unify_schemas`) rewrites
  the table once, in one commit;
- `_deleted_at` and `merged_into_id` stamps (`mark_deleted`) ride in the next commit;
- partition variables in the object (`events/year={part_year}/month={part_month}`) make
  one table at the folder above them (`events`), partitioned by a text column per folder
  (`partitions.PartitionColumn`), its values from the update key's time as for Parquet;
- a lock beside the table (`.sentry-extract.lock`, the storage's own) keeps a second run
  out; in a bucket delta-rs commits with S3 conditional writes (no DynamoDB);
- after a stream's last commit of a run, `delta_upkeep.keep_up` compacts the table when
  small files pile up and sets its log checkpoint interval.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field
from deltalake.exceptions import DeltaError

from sentry_extract.errors import StateError, TargetError
from sentry_extract.model.spec import ColumnType
from sentry_extract.model.windows import Window
from sentry_extract.records import (
    DELETED_COLUMN,
    MERGED_COLUMN,
    SNAPSHOT_COLUMN,
    arrow_field,
    column_type_of,
    conform,
    key_values,
    unify_schemas,
)
from sentry_extract.state import StateKey, StateStore, StreamState
from sentry_extract.targets.base import Deletions, StreamRequest, live_rows
from sentry_extract.targets.dataset import older_duplicates
from sentry_extract.targets.delta_files import (
    Bounds,
    FileWriter,
    KeepKeys,
    commit_files,
    groups_within,
    read_groups,
    row_group_extremes,
    stored_files,
)
from sentry_extract.targets.delta_merge import MergeTarget, StoredKeyCache, merge_rows
from sentry_extract.targets.delta_table import (
    TableLocation,
    commit_state,
    error_line,
    table_location,
    write_table,
)
from sentry_extract.targets.delta_upkeep import MaintenanceReport, keep_up, maintain_table
from sentry_extract.targets.partitions import Layout, PartitionColumn, update_moments
from sentry_extract.targets.storage import LocalPlace, Lock, Place, object_location

TIMESTAMP = pa.timestamp("us", tz="UTC")
CHECKPOINT_BYTES = 16 * 1000**2  # of rows as read, at least, in a checkpoint's commit


# --- state in the commits -----------------------------------------------------------------------


class DeltaStateStore:
    """A stream's state, read from the table's commits; saved by a commit without rows."""

    def __init__(self, location: TableLocation) -> None:
        self.location = location

    def describe(self) -> str:
        return f"{self.location.uri} (Delta commit metadata)"

    def load(self, key: StateKey) -> StreamState:
        return self.load_from(self.location.open(), key)

    def load_from(self, table: DeltaTable | None, key: StateKey) -> StreamState:
        """The state of `key` in the commits of `table` (a snapshot the caller holds)."""
        if table is None:
            return StreamState()
        entry = commit_state(table, key.as_text())
        if not isinstance(entry, dict):
            return StreamState()
        try:
            return StreamState.from_json(entry)
        except (TypeError, ValueError):
            raise StateError(f"state for {key.as_text()} in {self.describe()} is damaged") from None

    def save(self, key: StateKey, state: StreamState) -> None:
        self._commit({key.as_text(): state.to_json()})

    def reset(self, key: StateKey) -> bool:
        table = self.location.open()
        if table is None or commit_state(table, key.as_text()) is None:
            return False
        self._commit({key.as_text(): None})
        return True

    def _commit(self, states: Mapping[str, Any]) -> None:
        lock = self.location.storage.lock()  # no run writes the table meanwhile
        try:
            commit_without_rows(self.location, states)
        finally:
            lock.release()


def commit_without_rows(location: TableLocation, states: Mapping[str, Any]) -> None:
    """A commit that only carries `states` (the caller holds the table's lock)."""
    table = location.open()
    if table is None:
        return
    empty = pa.schema(table.schema()).empty_table()
    write_table(location, empty, mode="append", states=states)


# --- the target --------------------------------------------------------------------------------


class DeltaTarget:
    """Delta tables in a place: folders on this machine (the default), or a bucket."""

    def __init__(self, place: Place | None = None) -> None:
        self.place: Place = place or LocalPlace()

    def object_problem(self, object_name: str) -> str | None:
        text, problem = object_location(self.place, object_name)
        if problem is not None:
            return problem
        layout = Layout.parse(text)
        problem = layout.problem() or layout.column_problem()
        if problem is not None:
            return problem
        root = layout.root.rstrip("/") or layout.root
        if root.endswith(".parquet"):
            return "a Delta table is a folder: name a folder, not a .parquet file"
        return self.place.access_problem(root)

    def state_store(self, object_name: str) -> DeltaStateStore:
        return DeltaStateStore(table_location(self.place, object_name))

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> DeltaStreamWriter:
        partitions = Layout.parse(self.place.location(request.object)).partition_columns()
        location = table_location(self.place, request.object)
        return DeltaStreamWriter(request, location, external_state, partitions)

    def maintain(self, object_name: str) -> MaintenanceReport | None:
        return maintain_table(table_location(self.place, object_name))

    def close(self) -> None:
        return None


# --- staging ---------------------------------------------------------------------------------


class Staging:
    """Rows of a run on this machine, in Parquet files, until they are committed; the keys
    of the rows (`key_columns`) are kept as they are staged, so a checkpoint does not read
    them back from the files."""

    def __init__(
        self, folder: Path, base_schema: pa.Schema, key_columns: tuple[str, ...] = ()
    ) -> None:
        self.folder = folder
        self.base_schema = base_schema
        self.key_columns = key_columns
        self.staged_keys: list[pa.Array] = []
        self.parts: list[Path] = []
        self.schemas: list[pa.Schema] = [base_schema]
        self._writer: pq.ParquetWriter | None = None
        self._writer_schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None or batch.schema != self._writer_schema:
            self.close()
            part = self.folder / f"part-{len(self.parts):05d}.staged"
            self._writer = pq.ParquetWriter(part, batch.schema)
            self._writer_schema = batch.schema
            self.parts.append(part)
            self.schemas.append(batch.schema)
        self._writer.write_batch(batch)
        if self.key_columns and all(name in batch.schema.names for name in self.key_columns):
            self.staged_keys.append(key_values(batch, self.key_columns))
        else:
            self.key_columns = ()  # read back from the files instead

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def rows(self) -> pa.Table:
        """Every staged row, in the order read, with the columns of every batch."""
        self.close()
        schema = unify_schemas(self.schemas)
        batches = [conform(batch, schema) for batch in self._batches()]
        return pa.Table.from_batches(batches, schema=schema)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        """The staged rows a row group (a written batch) at a time."""
        for part in self.parts:
            staged = pq.ParquetFile(part)
            for index in range(staged.num_row_groups):
                yield from staged.read_row_group(index).to_batches()

    def column(self, name: str) -> pa.ChunkedArray | None:
        """One column of every staged row; None when a staged file lacks it."""
        self.close()
        chunks = []
        for part in self.parts:
            staged = pq.ParquetFile(part)
            if name not in staged.schema_arrow.names:
                return None
            chunks.append(staged.read(columns=[name]).column(name))
        if not chunks or len({chunk.type for chunk in chunks}) > 1:
            return None
        return pa.chunked_array([piece for chunk in chunks for piece in chunk.chunks])

    def keys(self, key_columns: tuple[str, ...]) -> pa.ChunkedArray:
        """The key of every staged row, in the order read."""
        self.close()
        if key_columns == self.key_columns:
            return pa.chunked_array(self.staged_keys, pa.string())
        return pa.chunked_array(
            [
                key_values(pq.read_table(part, columns=list(key_columns)), key_columns)
                for part in self.parts
            ],
            pa.string(),
        )

    def unique_batches(
        self, key_columns: tuple[str, ...], extra: pa.Schema
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The staged rows a batch at a time, one per key (the last read), with the
        columns of every batch and those of `extra`: the run's rows never all in memory."""
        self.close()
        schema = unify_schemas([*self.schemas, extra])
        dropped = pa.array(sorted(older_duplicates(self.keys(key_columns))), pa.int64())

        def read() -> Iterator[pa.RecordBatch]:
            offset = 0
            for batch in self._batches():
                positions = pa.array(range(offset, offset + batch.num_rows), pa.int64())
                offset += batch.num_rows
                yield conform(
                    without_dropped(batch, pc.is_in(positions, value_set=dropped)), schema
                )

        return schema, read()

    def clear(self) -> None:
        self.close()
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts = []
        self.schemas = [self.base_schema]
        self.staged_keys = []


# --- the writer --------------------------------------------------------------------------------


class DeltaStreamWriter:
    # Each checkpoint is a commit: a data file per partition it touches (which compaction
    # joins later), a log entry, the table's snapshot brought up to date; in a bucket,
    # requests for each. With commits of 500 regular events and more, a backfill of
    # 40,000 made 48 of them and cost 1.4 to 1.5 times a full refresh's CPU; so a
    # checkpoint carries at least this many bytes of rows as read (about 2,500 such events:
    # 16 commits), and the loader's `checkpoint_every` still bounds what a killed run reads
    # again.
    checkpoint_bytes = CHECKPOINT_BYTES

    def __init__(
        self,
        request: StreamRequest,
        location: TableLocation,
        external_state: StateStore | None = None,
        partitions: tuple[PartitionColumn, ...] = (),
    ) -> None:
        self.request = request
        self.location = location
        self.external = external_state
        self.partitions = partitions
        self._table: DeltaTable | None = None  # the run's snapshot, kept up to date
        self._check_partition_names(request.base_schema)
        storage = location.storage
        storage.prepare()
        self._lock: Lock | None = storage.lock()
        try:
            self._check_partitioning()
            storage.remove_leftovers()
            self.scratch = storage.scratch()
        except BaseException:
            self._cleanup()
            raise
        self.staging = Staging(
            self.scratch, _staged_schema(request, partitions), request.key_columns
        )
        self.rows = 0
        self.pending_state: StreamState | None = None
        self.pending_deletions: Deletions | None = None
        self.stored_keys = StoredKeyCache()  # keys of the files read, across checkpoints

    @property
    def partition_by(self) -> list[str]:
        return [column.name for column in self.partitions]

    # --- StreamWriter ---------------------------------------------------------------------

    def load_state(self) -> StreamState:
        """The state in the table's commits, read from the run's snapshot (the table is
        not loaded again for it), or from the external store."""
        if self.external is not None:
            return self.external.load(self.request.state_key)
        return DeltaStateStore(self.location).load_from(
            self._current_table(), self.request.state_key
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.request.mode.appends:
            moment = pa.scalar(self.request.run_started_at, type=TIMESTAMP)
            column = pa.array([moment.value] * batch.num_rows, type=TIMESTAMP)
            batch = batch.append_column(pa.field(SNAPSHOT_COLUMN, TIMESTAMP), column)
        batch = self._with_partitions(batch)
        try:
            self.staging.write(batch)
        except (OSError, pa.ArrowException) as error:
            raise TargetError(f"cannot stage rows in {self.scratch}: {error}") from None
        self.rows += batch.num_rows

    def checkpoint(self, state: StreamState | None) -> None:
        """Modes that merge by key commit the rows so far with `state`, in one commit;
        others keep `state` for the commit at the end of the run."""
        if not self.request.mode.commits_as_it_goes:
            self.pending_state = state
            return
        self._commit_staged(state)

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        table = self._current_table()
        if table is None:
            return set()
        keys = self.request.key_columns
        return live_keys(self.location, table, keys, column, window, self.stored_keys)

    def mark_deleted(
        self,
        keys: Collection[str],
        moment: datetime,
        merged_into: Mapping[str, str] | None = None,
    ) -> None:
        self.pending_deletions = Deletions.of(keys, moment, merged_into)

    def commit(self) -> int:
        """The run's last commit, then compaction and checkpoints when due."""
        try:
            self._commit_staged(self.pending_state)
            keep_up(self.location, self.scratch, self.request.update_key, self._current_table())
        finally:
            self._cleanup()
        return self.rows

    def abort(self) -> None:
        self._cleanup()

    # --- partitions ------------------------------------------------------------------------

    def _check_partition_names(self, schema: pa.Schema) -> None:
        for column in self.partitions:
            if column.name in schema.names:
                raise TargetError(
                    f"partition column '{column.name}' of {self.location.uri} is also a "
                    f"column of {self.request.stream}: name the partition folder "
                    f"otherwise, as in part_{column.name}={column.template}"
                )

    def _check_partitioning(self) -> None:
        """A table is merged or appended to only with the partition columns it has; a
        full refresh or truncate may change them (its overwrite replaces the table)."""
        table = self._current_table()
        if table is None or self.request.mode.replaces_rows:
            return
        stored = list(table.metadata().partition_columns)
        if stored != self.partition_by:
            raise TargetError(
                f"Delta table {self.location.uri} is partitioned by {_names(stored)}, but "
                f"the object names {_names(self.partition_by)}: name the same partition "
                "folders, or run the stream once with mode full-refresh to rewrite the table"
            )

    def _with_partitions(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with its partition columns, from the update key's time (or the
        run's start, for rows without one)."""
        if not self.partitions:
            return batch
        self._check_partition_names(batch.schema)
        moments = update_moments(batch, self.request.update_key)
        for column in self.partitions:
            values = column.values(moments, self.request.run_started_at)
            batch = batch.append_column(pa.field(column.name, pa.string()), values)
        return batch

    # --- commits ---------------------------------------------------------------------------

    def _commit_staged(self, state: StreamState | None) -> None:
        """The staged rows, the pending stamps and `state` into the table, in one commit."""
        mode = self.request.mode
        deletions, self.pending_deletions = self.pending_deletions, None
        if not self.staging.parts and not mode.replaces_rows and deletions is None:
            if state is not None:
                self._save_state(state)
            return
        states = {self.request.state_key.as_text(): state.to_json()} if state else None
        try:
            if mode.replaces_rows:
                self._replace(deletions, states)
            elif mode.merges_by_key:
                self._merge(self._current_table(), deletions, states)
            else:
                self._append(self._current_table(), states)
        except (OSError, pa.ArrowException, DeltaError) as error:
            raise TargetError(
                f"cannot write Delta table {self.location.uri}: {error_line(error)}"
            ) from None
        self.staging.clear()
        if self.external is not None and state is not None:
            self.external.save(self.request.state_key, state)

    def _current_table(self) -> DeltaTable | None:
        """The table's newest version: the run's snapshot (loaded when the run opens the
        table, for its partition check, its state and its stored keys), brought up to
        date with the commits made since (reading those alone), instead of loading the
        log again at every question and checkpoint; the run holds the lock, so they are
        few."""
        if self._table is None:
            self._table = self.location.open()
        else:
            self._table.update_incremental()
        return self._table

    def _save_state(self, state: StreamState) -> None:
        """State that moved without new rows: a commit of its own (or the external store)."""
        if self.external is not None:
            self.external.save(self.request.state_key, state)
            return
        states = {self.request.state_key.as_text(): state.to_json()}
        try:
            if self.location.open() is None:
                self._write(self.staging.rows(), mode="append", states=states)
            else:
                commit_without_rows(self.location, states)
        except (OSError, pa.ArrowException, DeltaError) as error:
            raise TargetError(
                f"cannot write Delta table {self.location.uri}: {error_line(error)}"
            ) from None

    def _write(
        self,
        rows: pa.Table | pa.RecordBatchReader,
        mode: str,
        states: Mapping[str, Any] | None,
    ) -> None:
        write_table(self.location, rows, mode, states, self.partition_by)

    def _write_files(
        self,
        table: DeltaTable | None,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        overwrite: bool,
        states: Mapping[str, Any] | None,
        keep_keys: bool = False,
    ) -> None:
        """`batches` into new data files, then one commit that adds them (and, with
        `overwrite`, removes every stored file): memory holds a batch at a time. With
        `keep_keys`, the files' keys go to the stored-key cache once committed."""
        keep = KeepKeys(self.request.key_columns, self.request.update_key) if keep_keys else None
        writer = FileWriter(self.location, self.scratch, schema, self.partition_by, keep_keys=keep)
        writer.write_all(batches)
        added = writer.finish()
        commit_files(
            self.location,
            table,
            schema,
            self.partition_by,
            added,
            overwrite=overwrite,
            states=states,
        )
        self.stored_keys.remember(writer.keyed)

    def _replace(self, deletions: Deletions | None, states: Mapping[str, Any] | None) -> None:
        """The run's rows become the table, streamed from the staged files."""
        keys = self.request.key_columns
        schema, batches = self.staging.unique_batches(keys, _stamp_columns(deletions))
        if deletions is not None and deletions.keys:
            batches = (_stamp_batch(batch, keys, deletions) for batch in batches)
        table = self.location.open()
        if table is not None and list(table.metadata().partition_columns) != self.partition_by:
            # delta-rs commits new partition columns only through its own writer
            reader = pa.RecordBatchReader.from_batches(schema, batches)
            self._write(reader, mode="overwrite", states=states)
            return
        self._write_files(table, schema, batches, overwrite=True, states=states)

    def _merge(
        self,
        table: DeltaTable | None,
        deletions: Deletions | None,
        states: Mapping[str, Any] | None,
    ) -> None:
        """New keys appended, changed rows replaced (their files rewritten without them),
        unchanged rows left alone: one commit (`delta_merge`)."""
        keys = self.request.key_columns
        staged_schema, staged = self.staging.unique_batches(keys, _stamp_columns(deletions))
        if table is None:
            batches = _stamped_batches(staged, keys, deletions)
            self._write_files(None, staged_schema, batches, False, states, keep_keys=True)
            return
        candidates = self._stamp_candidates(table, deletions)
        stored = pa.schema(table.schema())
        schema = unify_schemas([stored, staged_schema, candidates.schema])
        if not _only_adds(stored, schema):
            rows = pa.concat_tables([_conformed(candidates, schema), self._rows(schema)])
            rows = stamped(unique_rows(rows, keys), keys, deletions)
            self._rewrite(table, _conformed(rows, schema), keys, states)
            return
        table = self._add_columns(table, stored, schema)
        every = itertools.chain(candidates.to_batches(), staged)
        batches = _stamped_batches((conform(batch, schema) for batch in every), keys, deletions)
        bounds = self._bounds() if candidates.num_rows == 0 else None
        target = MergeTarget(
            self.location,
            table,
            schema,
            tuple(self.partition_by),
            keys,
            self.scratch,
            bounds,
            self.stored_keys,
            self.request.update_key,
        )
        added, removed, keyed = merge_rows(target, batches)
        commit_files(self.location, table, schema, self.partition_by, added, removed, states=states)
        self.stored_keys.remember(keyed)

    def _bounds(self) -> Bounds | None:
        """The range of the staged rows' update key, when a row's update key never
        changes and every staged row has one: stored files outside it are not read."""
        column = self.request.update_key
        if not self.request.fixed_update_key or column is None:
            return None
        moments = self.staging.column(column)
        if moments is None or len(moments) == 0 or moments.null_count:
            return None
        if not pa.types.is_timestamp(moments.type):
            return None
        extremes = pc.min_max(moments)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if not isinstance(low, datetime) or not isinstance(high, datetime):
            return None
        return Bounds(column, low, high)

    def _stamp_candidates(self, table: DeltaTable, deletions: Deletions | None) -> pa.Table:
        """Stored rows a deletion may stamp, but not those of keys read again."""
        if deletions is None or not deletions.keys:
            return pa.table({})
        keys = self.request.key_columns
        candidates = stamp_candidates(table, keys, deletions)
        staged = self.staging.keys(keys)
        again = pc.fill_null(pc.is_in(key_values(candidates, keys), value_set=staged), False)
        return candidates.filter(pc.invert(again))

    def _rows(self, schema: pa.Schema) -> pa.Table:
        return _conformed(self.staging.rows(), schema)

    def _add_columns(self, table: DeltaTable, stored: pa.Schema, schema: pa.Schema) -> DeltaTable:
        """New columns in a commit of their own, before the rows': a reader may see
        them empty for a moment, never rows without their state."""
        new = [column for column in schema if column.name not in stored.names]
        if not new:
            return table
        table.alter.add_columns([Field.from_arrow(column) for column in new])
        return self._current_table() or table

    def _append(self, table: DeltaTable | None, states: Mapping[str, Any] | None) -> None:
        keys = self.request.key_columns
        staged_schema, batches = self.staging.unique_batches(keys, pa.schema([]))
        if table is None:
            self._write_files(None, staged_schema, batches, overwrite=False, states=states)
            return
        stored = pa.schema(table.schema())
        schema = unify_schemas([stored, staged_schema])
        if not _only_adds(stored, schema):
            rows = unique_rows(self._rows(schema), keys)
            self._rewrite(table, rows, (), states)
            return
        table = self._add_columns(table, stored, schema)
        conformed = (conform(batch, schema) for batch in batches)
        self._write_files(table, schema, conformed, overwrite=False, states=states)

    def _rewrite(
        self,
        table: DeltaTable,
        rows: pa.Table,
        keys: tuple[str, ...],
        states: Mapping[str, Any] | None,
    ) -> None:
        """A column widened: every stored row in the wider type, with `rows` (replacing
        the stored rows of their keys when `keys` are given), in one overwrite."""
        stored = _conformed(table.to_pyarrow_table(), rows.schema)
        if keys and rows.num_rows:
            replaced = pc.is_in(key_values(stored, keys), value_set=key_values(rows, keys))
            stored = stored.filter(pc.invert(pc.fill_null(replaced, False)))
        self._write(pa.concat_tables([stored, rows]), mode="overwrite", states=states)

    def _cleanup(self) -> None:
        scratch = getattr(self, "scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _staged_schema(request: StreamRequest, partitions: tuple[PartitionColumn, ...]) -> pa.Schema:
    """The declared columns, `_snapshot_at` for snapshots, and the partition columns."""
    schema = request.base_schema
    if request.mode.appends and SNAPSHOT_COLUMN not in schema.names:
        schema = schema.append(pa.field(SNAPSHOT_COLUMN, TIMESTAMP))
    for column in partitions:
        schema = schema.append(pa.field(column.name, pa.string()))
    return schema


def without_dropped(batch: pa.RecordBatch, dropped: pa.Array) -> pa.RecordBatch:
    """`batch` without the rows `dropped` marks: the batch itself (no copy) when none."""
    if not pc.any(dropped).as_py():
        return batch
    return batch.filter(pc.invert(dropped))


def _names(columns: list[str]) -> str:
    return f"({', '.join(columns)})" if columns else "no columns"


def _only_adds(stored: pa.Schema, schema: pa.Schema) -> bool:
    """True when `schema` keeps every stored column's type (it may add columns)."""
    for field in stored:
        wider = schema.field(field.name)
        if wider.type != field.type or column_type_of(wider) is not column_type_of(field):
            return False
    return True


def _conformed(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    wanted = unify_schemas([schema, rows.schema])
    batches = [conform(batch, wanted) for batch in rows.to_batches()]
    return pa.Table.from_batches(batches, schema=wanted)


# --- rows ----------------------------------------------------------------------------------------


def unique_rows(rows: pa.Table, key_columns: tuple[str, ...]) -> pa.Table:
    """One row per key, the last read; rows without a key are kept."""
    if rows.num_rows < 2:
        return rows
    keys = key_values(rows, key_columns)
    order = pc.sort_indices(keys)
    ordered = keys.take(order)
    same_as_next = pc.equal(ordered[:-1], ordered[1:])
    dropped = pc.filter(order[:-1], same_as_next)
    if len(dropped) == 0:
        return rows
    keep = pc.invert(
        pc.is_in(pa.array(range(rows.num_rows), pa.uint64()), value_set=dropped.cast(pa.uint64()))
    )
    return rows.filter(keep)


def stamp_candidates(table: DeltaTable, keys: tuple[str, ...], deletions: Deletions) -> pa.Table:
    """Stored rows a deletion may stamp: those of its keys, and those merged into them."""
    dataset = table.to_pyarrow_dataset()
    chains = deletions.chains
    wanted = pa.array(sorted(deletions.keys | set(chains)), pa.string())
    has_merged = MERGED_COLUMN in dataset.schema.names
    found = []
    for batch in dataset.to_batches():
        hit = pc.fill_null(pc.is_in(key_values(batch, keys), value_set=wanted), False)
        if has_merged and chains:
            merged = pc.is_in(batch.column(MERGED_COLUMN), value_set=wanted)
            hit = pc.or_(hit, pc.fill_null(merged, False))
        found.append(batch.filter(hit))
    return pa.Table.from_batches(found, schema=dataset.schema)


def stamped(rows: pa.Table, key_columns: tuple[str, ...], deletions: Deletions | None) -> pa.Table:
    """`_deleted_at` set where it is null on the deleted keys' rows, and `merged_into_id`
    on the merged ones and on rows merged into them before (`Deletions.chains`)."""
    if deletions is None or not deletions.keys:
        return rows
    chains = deletions.chains
    rows = _with_column(rows, DELETED_COLUMN, TIMESTAMP)
    if chains:
        rows = _with_column(rows, MERGED_COLUMN, pa.string())
    return pa.Table.from_batches(
        [_stamp_batch(batch, key_columns, deletions) for batch in rows.to_batches()],
        schema=rows.schema,
    )


def _stamp_batch(
    batch: pa.RecordBatch, key_columns: tuple[str, ...], deletions: Deletions
) -> pa.RecordBatch:
    keys = key_values(batch, key_columns)
    index = batch.schema.get_field_index(DELETED_COLUMN)
    current = batch.column(index)
    value_set = pa.array(sorted(deletions.keys), pa.string())
    hit = pc.fill_null(pc.is_in(keys, value_set=value_set), False)
    stamp = pa.scalar(deletions.moment, TIMESTAMP)
    marked = pc.if_else(pc.and_(hit, pc.is_null(current)), stamp, current)
    batch = batch.set_column(index, batch.schema.field(index), marked)
    chains = deletions.chains
    if not chains:
        return batch
    merged = pa.array(sorted(chains), pa.string())
    survivors = pa.array([chains[key] for key in sorted(chains)], pa.string())
    index = batch.schema.get_field_index(MERGED_COLUMN)
    previous = batch.column(index)
    by_key = pc.take(survivors, pc.index_in(keys, value_set=merged))
    by_previous = pc.take(survivors, pc.index_in(previous, value_set=merged))
    updated = pc.coalesce(by_key, by_previous, previous)
    return batch.set_column(index, batch.schema.field(index), updated)


def _stamped_batches(
    batches: Iterable[pa.RecordBatch], keys: tuple[str, ...], deletions: Deletions | None
) -> Iterator[pa.RecordBatch]:
    """The batches with the deletions' stamps (their columns already in the batches)."""
    for batch in batches:
        if deletions is not None and deletions.keys:
            yield _stamp_batch(batch, keys, deletions)
        else:
            yield batch


def _stamp_columns(deletions: Deletions | None) -> pa.Schema:
    """The columns stamps need: `_deleted_at`, and `merged_into_id` when rows merged."""
    if deletions is None or not deletions.keys:
        return pa.schema([])
    fields = [arrow_field(DELETED_COLUMN, ColumnType.TIMESTAMP)]
    if deletions.chains:
        fields.append(arrow_field(MERGED_COLUMN, ColumnType.TEXT))
    return pa.schema(fields)


def _with_column(rows: pa.Table, name: str, column_type: pa.DataType) -> pa.Table:
    if name in rows.schema.names:
        return rows
    return rows.append_column(pa.field(name, column_type), pa.nulls(rows.num_rows, column_type))


def live_keys(
    location: TableLocation,
    table: DeltaTable,
    key_columns: tuple[str, ...],
    column: str | None,
    window: Window | None,
    cache: StoredKeyCache | None = None,
) -> set[str]:
    """Keys of the rows not marked deleted, with `column` inside `window` when given: only
    the files, and in them the row groups, whose `column` statistics meet the window are
    read (a run's window is the last hours; the table's history is not read for it).
    The keys read, and the row groups' extremes, go to `cache`: the run's checkpoints
    then meet the same row groups without reading them again."""
    names = pa.schema(table.schema()).names
    if window is not None and column is not None and column not in names:
        return set()
    files = stored_files(table, column if window is not None else None)
    bounds = None
    if window is not None and column is not None:
        bounds = Bounds(column, window.start, window.end)
        files = [stored for stored in files if bounds.may_hold(stored)]
    wanted = [*key_columns, DELETED_COLUMN]
    if column is not None and column not in wanted:
        wanted.append(column)
    found: set[str] = set()
    for stored in files:

        def choose(metadata: pq.FileMetaData, path: str = stored.path) -> list[int]:
            extremes = row_group_extremes(metadata, bounds.column if bounds else None)
            if cache is not None:
                cache.note(path, bounds.column if bounds else None, extremes)
            return groups_within(extremes, bounds)

        for index, batch in read_groups(location, stored, wanted, choose):
            if any(name not in batch.schema.names for name in key_columns):
                continue
            keys = key_values(batch, key_columns)
            if cache is not None:
                cache.keep(stored.path, index, keys)
            keep = live_rows(batch, keys, column, window)
            if keep is not None:
                found.update(keys.filter(keep).to_pylist())
    return found
