"""A Delta table's data files, written by this tool a batch at a time, and committed with
delta-rs's transaction API.

delta-rs's `write_deltalake` holds every row it is given until its commit (a run of
40,000 large events wanted gigabytes), so the target writes the Parquet files itself:
a batch goes into the open file of its partition as a row group, a file is closed when it
passes FILE_BYTES, and each closed file goes to the table's folder (or bucket) at once.
Only then does one commit (`commit_files`) add the files, remove the files they replace,
and carry the stream's state: readers and reruns see the files only through that commit,
and files of a run killed before it are never part of the table (`maintain` vacuums them).

Each file's `add` action carries Delta statistics (row count, and per column of a plain
type its null count, minimum and maximum), so readers and delta-rs skip files by them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, PostCommitHookProperties, Schema
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from sentry_extract.records import key_values
from sentry_extract.targets.delta_table import (
    CHECKPOINT_INTERVAL,
    TABLE_CONFIGURATION,
    TableLocation,
    commit_properties,
)

FILE_BYTES = 64 * 1024 * 1024  # a data file is closed once it passes this size
STATISTICS_TEXT_LENGTH = 64  # longer text values get no minimum and maximum
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"

PartitionValues = tuple[str | None, ...]


# --- writing files ---------------------------------------------------------------------------


@dataclass
class _Statistics:
    """Delta's per-file statistics, gathered batch by batch."""

    rows: int = 0
    minimums: dict[str, Any] = field(default_factory=dict)
    maximums: dict[str, Any] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for column_field, column in zip(batch.schema, batch.columns, strict=True):
            name = column_field.name
            if name in self.skipped or not _has_statistics(column_field.type):
                continue
            self.nulls[name] = self.nulls.get(name, 0) + column.null_count
            if column.null_count == len(column):
                continue
            extremes = pc.min_max(column)
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if isinstance(high, str) and len(high) > STATISTICS_TEXT_LENGTH:
                self.skipped.add(name)
                self.minimums.pop(name, None)
                self.maximums.pop(name, None)
                continue
            if name not in self.minimums or low < self.minimums[name]:
                self.minimums[name] = low
            if name not in self.maximums or high > self.maximums[name]:
                self.maximums[name] = high

    def as_json(self) -> str:
        nulls = {name: count for name, count in self.nulls.items() if name not in self.skipped}
        return json.dumps(
            {
                "numRecords": self.rows,
                "minValues": _stats(self.minimums),
                "maxValues": _stats(self.maximums),
                "nullCount": nulls,
            }
        )


def _has_statistics(column_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(column_type)
        or pa.types.is_floating(column_type)
        or pa.types.is_timestamp(column_type)
        or pa.types.is_date(column_type)
        or pa.types.is_string(column_type)
        or pa.types.is_large_string(column_type)
    ) and not pa.types.is_unsigned_integer(column_type)


def _stats(values: dict[str, Any]) -> dict[str, Any]:
    """The values as Delta's statistics spell them; a NaN bound is left out."""
    spelled = {name: _stat(value) for name, value in values.items()}
    return {name: value for name, value in spelled.items() if value is not None}


def _stat(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN has no place in JSON
        return None
    return value


@dataclass
class _OpenFile:
    path: str
    local: Path
    writer: pq.ParquetWriter
    partition: PartitionValues
    statistics: _Statistics = field(default_factory=_Statistics)
    keys: list[pa.Array] | None = field(default_factory=list)  # of each row group


@dataclass(frozen=True)
class KeyedFile:
    """The keys of a file this run wrote, by row group, and the row groups' extremes of
    a column: what a later checkpoint would otherwise read back from storage."""

    path: str
    column: str | None
    extremes: Extremes
    keys: tuple[pa.Array, ...]


@dataclass(frozen=True)
class KeepKeys:
    """What a writer keeps of the files it writes (`FileWriter.keyed`)."""

    key_columns: tuple[str, ...]
    column: str | None  # whose row-group extremes are kept


class FileWriter:
    """Rows into new data files of a table, a file per partition at a time, each closed
    and sent to the table's storage once it passes FILE_BYTES; `finish` gives the files'
    `add` actions, for one commit."""

    def __init__(
        self,
        location: TableLocation,
        scratch: Path,
        schema: pa.Schema,
        partition_by: Sequence[str] = (),
        data_change: bool = True,
        keep_keys: KeepKeys | None = None,
    ) -> None:
        self.location = location
        self.keep_keys = keep_keys  # the written rows' keys, kept by row group
        self.keyed: list[KeyedFile] = []
        self.data_change = data_change  # False: the rows were in the table already
        self.scratch = scratch
        self.schema = schema
        self.partition_by = tuple(partition_by)
        self.file_schema = pa.schema(
            [column for column in schema if column.name not in self.partition_by]
        )
        self.open_files: dict[PartitionValues, _OpenFile] = {}
        self.added: list[AddAction] = []
        self.run_id = uuid.uuid4().hex

    def write(self, batch: pa.RecordBatch) -> None:
        """`batch`, whose columns are the writer's schema's, into its partitions' files."""
        if batch.num_rows == 0:
            return
        if not self.partition_by:
            self._write_part((), batch)
            return
        columns = [batch.column(name) for name in self.partition_by]
        joined = pc.binary_join_element_wise(
            *[pc.fill_null(column, "\x00") for column in columns], "\x01"
        )
        values = pc.unique(joined).to_pylist()
        for value in values:
            part = batch if len(values) == 1 else batch.filter(pc.equal(joined, value))
            partition = tuple(column[0].as_py() for column in _columns(part, self.partition_by))
            self._write_part(partition, part)

    def write_all(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.write(batch)

    def finish(self) -> list[AddAction]:
        for partition in list(self.open_files):
            self._close(partition)
        return self.added

    def _write_part(self, partition: PartitionValues, batch: pa.RecordBatch) -> None:
        data = batch.select(self.file_schema.names)
        opened = self.open_files.get(partition) or self._open(partition)
        opened.writer.write_batch(data)
        opened.statistics.add(data)
        keep = self.keep_keys
        if keep is not None and opened.keys is not None:
            if all(name in batch.schema.names for name in keep.key_columns):
                opened.keys.append(key_values(batch, keep.key_columns))
            else:
                opened.keys = None
        if opened.local.stat().st_size >= FILE_BYTES:
            self._close(partition)

    def _open(self, partition: PartitionValues) -> _OpenFile:
        folders = "".join(
            f"{quote(name, safe='')}={quote(value if value is not None else NULL_PARTITION)}/"
            for name, value in zip(self.partition_by, partition, strict=True)
        )
        name = (
            f"part-{len(self.added) + len(self.open_files):05d}-{self.run_id}.c000.snappy.parquet"
        )
        local = self.scratch / f"data-{uuid.uuid4().hex}.parquet"
        writer = pq.ParquetWriter(local, self.file_schema, compression="snappy")
        opened = _OpenFile(f"{folders}{name}", local, writer, partition)
        self.open_files[partition] = opened
        return opened

    def _close(self, partition: PartitionValues) -> None:
        opened = self.open_files.pop(partition)
        opened.writer.close()
        size = opened.local.stat().st_size
        self._keep_keys(opened)
        self.location.storage.upload(opened.local, opened.path)
        values = dict(zip(self.partition_by, partition, strict=True))
        self.added.append(
            AddAction(
                opened.path,
                size,
                values,
                int(time.time() * 1000),
                self.data_change,
                opened.statistics.as_json(),
            )
        )

    def _keep_keys(self, opened: _OpenFile) -> None:
        """The file's keys by row group, when each write made one row group."""
        if self.keep_keys is None or opened.keys is None:
            return
        metadata = pq.ParquetFile(opened.local).metadata
        if metadata.num_row_groups != len(opened.keys):
            return
        column = self.keep_keys.column
        extremes = row_group_extremes(metadata, column)
        self.keyed.append(KeyedFile(opened.path, column, extremes, tuple(opened.keys)))


def _columns(batch: pa.RecordBatch, names: Sequence[str]) -> list[pa.Array]:
    return [batch.column(name) for name in names]


# --- reading files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    """A data file of the table's current version."""

    path: str  # as in the log, relative to the table (URL-encoded)
    size: int
    partition: Mapping[str, str | None]
    low: Any = None  # the statistics of one column (`stored_files(table, column)`)
    high: Any = None

    def storage_path(self) -> str:
        return unquote(self.path)


def stored_files(table: DeltaTable, column: str | None = None) -> list[StoredFile]:
    """The table's files, with the minimum and maximum of `column` where known."""
    actions = pa.table(table.get_add_actions(flatten=True))
    names = [name for name in actions.column_names if name.startswith("partition.")]
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    values = [actions.column(name).to_pylist() for name in names]
    lows = _statistic(actions, f"min.{column}", len(paths))
    highs = _statistic(actions, f"max.{column}", len(paths))
    files = []
    for index, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        partition = {
            name.removeprefix("partition."): _partition_text(column[index])
            for name, column in zip(names, values, strict=True)
        }
        files.append(StoredFile(path, int(size or 0), partition, lows[index], highs[index]))
    return files


def _statistic(actions: pa.Table, name: str, count: int) -> list[Any]:
    if name not in actions.column_names:
        return [None] * count
    return list(actions.column(name).to_pylist())


def _partition_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Bounds:
    """The range of a column whose value a row keeps for ever (an event's time) over
    the rows asked for: a file, or a row group of a file, whose rows all fall outside it
    holds none of them."""

    column: str
    low: datetime
    high: datetime

    def may_hold(self, stored: StoredFile) -> bool:
        return self.meets(stored.low, stored.high)

    def meets(self, low: Any, high: Any) -> bool:
        """True unless `low` and `high` (statistics, None when unknown) lie outside."""
        low, high = _moment(low), _moment(high)
        if low is None or high is None:
            return True  # no statistics: read it
        return not (high + STATISTICS_SLACK < self.low or low - STATISTICS_SLACK > self.high)


STATISTICS_SLACK = timedelta(milliseconds=1)  # statistics may keep milliseconds only


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Extremes = tuple[tuple[Any, Any], ...]  # a column's minimum and maximum in each row group


def row_group_extremes(metadata: pq.FileMetaData, column: str | None) -> Extremes:
    """The minimum and maximum of `column` in each row group ((None, None) unknown)."""
    return tuple(_extremes(metadata, index, column) for index in range(metadata.num_row_groups))


def groups_within(extremes: Extremes, bounds: Bounds | None) -> list[int]:
    """The row groups whose extremes meet `bounds` (every group without bounds, and a
    group without statistics): a file compacted from a whole backfill spans months,
    each of its row groups (a checkpoint's batch) hours or days."""
    return [
        index
        for index, (low, high) in enumerate(extremes)
        if bounds is None or bounds.meets(low, high)
    ]


def _extremes(metadata: pq.FileMetaData, index: int, column: str | None) -> tuple[Any, Any]:
    group = metadata.row_group(index)
    for position in range(group.num_columns if column is not None else 0):
        chunk = group.column(position)
        if chunk.path_in_schema != column:
            continue
        statistics = chunk.statistics
        if statistics is None or not statistics.has_min_max:
            return None, None
        return statistics.min, statistics.max
    return None, None


def open_parquet(source: pa.NativeFile) -> pq.ParquetFile:
    """A data file for reading: a read fetches the column chunks it asks for of a row
    group in as few requests as their places allow (`pre_buffer`, pyarrow's default,
    said here since a request per column chunk is a round trip each in a bucket)."""
    return pq.ParquetFile(source, pre_buffer=True)


def read_file(
    location: TableLocation,
    stored: StoredFile,
    columns: Sequence[str] | None = None,
    bounds: Bounds | None = None,
) -> Iterable[pa.RecordBatch]:
    """The file's rows a row group at a time, with its partition columns; with `bounds`,
    only the row groups whose statistics meet them."""

    def within(metadata: pq.FileMetaData) -> list[int]:
        return groups_within(
            row_group_extremes(metadata, bounds.column if bounds else None), bounds
        )

    for _, batch in read_groups(location, stored, columns, within):
        yield batch


def read_groups(
    location: TableLocation,
    stored: StoredFile,
    columns: Sequence[str] | None,
    choose: Callable[[pq.FileMetaData], Sequence[int]],
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The row groups `choose` picks from the file's metadata, each as one batch with the
    file's partition columns, and its index."""
    with location.storage.open_input(stored.storage_path()) as source:
        parquet = open_parquet(source)
        present = parquet.schema_arrow.names
        wanted = None if columns is None else [name for name in columns if name in present]
        for index in choose(parquet.metadata):
            batch = _one_batch(parquet.read_row_group(index, columns=wanted))
            yield index, _with_partition(batch, stored, columns)


def read_rows_of_keys(
    location: TableLocation,
    stored: StoredFile,
    key_columns: Sequence[str],
    wanted: pa.Array,
    bounds: Bounds | None = None,
    known_keys: Callable[[int], pa.Array | None] | None = None,
) -> Iterable[pa.RecordBatch]:
    """The file's rows whose keys are in `wanted`, with its partition columns: a row
    group is read whole only when its keys (`known_keys` of its index when it knows
    them, else its key columns) hold one of them; with `bounds`, only the row groups
    whose statistics meet them are looked at."""
    with location.storage.open_input(stored.storage_path()) as source:
        parquet = open_parquet(source)
        extremes = row_group_extremes(parquet.metadata, bounds.column if bounds else None)
        for index in groups_within(extremes, bounds):
            keys = known_keys(index) if known_keys is not None else None
            if keys is None:
                read = parquet.read_row_group(index, columns=list(key_columns))
                keys = key_values(read, key_columns)
            hit = pc.fill_null(pc.is_in(keys, value_set=wanted), False)
            if not pc.any(hit).as_py():
                continue
            batch = _one_batch(parquet.read_row_group(index)).filter(hit)
            yield _with_partition(batch, stored, None)


def _with_partition(
    batch: pa.RecordBatch, stored: StoredFile, columns: Sequence[str] | None
) -> pa.RecordBatch:
    for name, value in stored.partition.items():
        if columns is None or name in columns:
            values = pa.array([value] * batch.num_rows, pa.string())
            batch = batch.append_column(pa.field(name, pa.string()), values)
    return batch


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    combined = table.combine_chunks()
    batches = combined.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return batches[0]


# --- commits -----------------------------------------------------------------------------------


def commit_files(
    location: TableLocation,
    table: DeltaTable | None,
    schema: pa.Schema,
    partition_by: Sequence[str],
    added: list[AddAction],
    removed: Sequence[StoredFile] = (),
    overwrite: bool = False,
    states: Mapping[str, Any] | None = None,
    data_change: bool = True,
) -> None:
    """One commit: `added` files in, `removed` files (or, with `overwrite`, every file)
    out, `states` in its metadata; a new table is made with the tool's configuration.
    Without `data_change` the commit only moves rows between files (compaction)."""
    delta_schema = Schema.from_arrow(schema)
    properties = commit_properties(states)
    if table is None:
        create_table_with_add_actions(
            location.uri,
            delta_schema,
            added,
            mode="error",
            partition_by=list(partition_by) or None,
            configuration=TABLE_CONFIGURATION,
            storage_options=location.storage_options,
            commit_properties=properties,
        )
        return
    if overwrite:
        table.create_write_transaction(
            list(added),
            "overwrite",
            delta_schema,
            list(partition_by) or None,
            commit_properties=properties,
            post_commithook_properties=_post_commit(table),
        )
        return
    hooks = _post_commit(table)
    moment = int(time.time() * 1000)
    removals = [
        RemoveAction(stored.path, data_change, moment, stored.size, dict(stored.partition))
        for stored in removed
    ]
    table.create_write_transaction(
        [*added, *removals],
        "append",
        delta_schema,
        list(partition_by) or None,
        commit_properties=properties,
        post_commithook_properties=hooks,
    )


def _post_commit(table: DeltaTable) -> PostCommitHookProperties:
    """delta-rs lists the whole log after a commit to remove expired commit files; only
    the commits that write a log checkpoint (one in CHECKPOINT_INTERVAL) do it here: the
    files it may remove are older than the newest checkpoint, and in a bucket the
    listing is a request that grows with the log, at every checkpoint of a run."""
    writes_checkpoint = (table.version() + 2) % CHECKPOINT_INTERVAL == 0
    return PostCommitHookProperties(cleanup_expired_logs=None if writes_checkpoint else False)
