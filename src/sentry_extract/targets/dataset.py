"""A Parquet dataset: a folder of part files that grows without being rewritten.

Layout (see the README): the root holds part files (`part-<time>-<id>.parquet`), in
partition folders when the object names some, plus hidden files readers skip: the
state (`_sentry_extract_state.json`), a journal while files are swapped, and a lock.

The rules that keep readers exact while commits run:
- a key lives in exactly one file. A commit rewrites a file that holds keys it
  replaces under the same name, in one step, with their new rows in it; new keys go
  into a new file (the staged file itself, moved in, when it holds only new keys), and
  a folder's small files are compacted once they make a whole file together (or are
  more than 2 * SMALL_FILES): each row is written about once, then compacted once;
- files that lose a key (a row that moves to another partition) are rewritten before
  the file that gains it, so a reader can miss a moving row for a moment, never see it
  twice. A crash in between leaves state behind, and the rerun reads the row again;
- swaps of many files at once (a full refresh, a compaction) delete the old files
  before the new ones appear, from a journal that a rerun completes;
- every file has the dataset's whole schema: when a field appears, every file is
  rewritten with the new column (null where it was not read), so readers that take
  the schema from one file (pandas, `pyarrow.parquet.read_table`) see every column.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sentry_extract.errors import TargetError
from sentry_extract.model.windows import Window
from sentry_extract.records import (
    DELETED_COLUMN,
    MERGED_COLUMN,
    conform,
    key_values,
    unify_schemas,
)
from sentry_extract.targets.base import Deletions, live_rows
from sentry_extract.targets.partitions import Layout, update_moments
from sentry_extract.targets.storage import Storage, StoredFile

DATA_SUFFIX = ".parquet"
PENDING_SUFFIX = ".pending"  # new files under a hidden name until the journal moves them
JOURNAL = "_sentry_extract_journal.json"
FILE_BYTES = 4_000_000  # compaction writes files of about this size
SMALL_FILES = 8  # files under half FILE_BYTES: more than this may be compacted
MAX_COMPARED = 5_000  # stored keys read again compared with what is stored, at most
Bounds = tuple[Any, Any]  # min and max of a column


@dataclass
class DataFile:
    """A part file, with what its footer says."""

    path: str
    size: int
    schema: pa.Schema
    rows: int
    row_bytes: int  # uncompressed bytes per row, about
    bounds: Bounds | None = None  # min and max of the update key
    key_bounds: tuple[Bounds | None, ...] = ()  # min and max of each key column

    @property
    def folder(self) -> str:
        return self.path.rpartition("/")[0]


@dataclass(frozen=True)
class DatasetOptions:
    key_columns: tuple[str, ...]
    update_column: str | None  # the column partitions (and pruning) come from
    fixed_update_key: bool  # a key's update key never changes (events' date_created)
    read_bytes: int  # about this many bytes of rows in memory at once when reading
    run_started_at: datetime
    single_file: str | None = None  # `object` names one .parquet file


@dataclass
class _Destination:
    """Where some of the staged rows go: an existing file (rewritten) or a new one."""

    folder: str
    existing: DataFile | None = None
    staged: Path | None = None
    writer: pq.ParquetWriter | None = None
    rows: int = 0
    moved_in: bool = False  # takes keys that leave another file
    replaced: list[pa.Array] = field(default_factory=list)


class ParquetDataset:
    def __init__(
        self, storage: Storage, layout: Layout, options: DatasetOptions, scratch: Path
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.options = options
        self.scratch = scratch  # a local folder for working files
        self.recover()
        self._remove_pending()
        self.files = self._read_index()

    # --- the index of files ---------------------------------------------------------

    def _read_index(self) -> dict[str, DataFile]:
        stored = self.storage.list_files(DATA_SUFFIX)
        if self.options.single_file is not None:
            stored = [entry for entry in stored if entry.path == self.options.single_file]
        return {entry.path: self._describe(entry) for entry in stored}

    def _describe(self, entry: StoredFile) -> DataFile:
        try:
            with self.storage.open_input(entry.path) as source:
                metadata = pq.read_metadata(source)
        except (OSError, pa.ArrowInvalid) as error:
            raise TargetError(
                f"cannot read {self.storage.describe(entry.path)}: {error}; move the file away "
                "if it is not part of this dataset"
            ) from None
        schema = metadata.schema.to_arrow_schema()
        described = DataFile(
            entry.path, entry.size, schema, metadata.num_rows, _row_bytes(metadata)
        )
        described.bounds = _bounds(metadata, schema, self.options.update_column)
        described.key_bounds = tuple(
            _bounds(metadata, schema, column) for column in self.options.key_columns
        )
        return described

    def schema(self) -> pa.Schema | None:
        if not self.files:
            return None
        return unify_schemas(data_file.schema for data_file in self.files.values())

    # --- reading -----------------------------------------------------------------------

    def batches(
        self, data_file: DataFile, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        rows = max(1, self.options.read_bytes // data_file.row_bytes)
        with self.storage.open_input(data_file.path) as source:
            # One thread: Arrow's per-thread arenas would each keep a batch's memory.
            reader = pq.ParquetFile(source)
            yield from reader.iter_batches(batch_size=rows, columns=columns, use_threads=False)

    def keys(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        return key_values(batch, self.options.key_columns)

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        """Keys of rows not marked deleted (with `column` inside `window`, if given)."""
        found: set[str] = set()
        prunes = window is not None and column == self.options.update_column
        for data_file in list(self.files.values()):
            if prunes and window and not _may_overlap(data_file.bounds, (window.start, window.end)):
                continue  # its update keys all lie outside the window
            wanted = [*self.options.key_columns]
            has_deleted = DELETED_COLUMN in data_file.schema.names
            has_column = column is not None and column in data_file.schema.names
            wanted += [DELETED_COLUMN] if has_deleted else []
            if column is not None and has_column and column not in wanted:
                wanted.append(column)
            for batch in self.batches(data_file, wanted):
                keys = self.keys(batch)
                keep = live_rows(batch, keys, column, window)
                if keep is not None:
                    found.update(keys.filter(keep).to_pylist())
        return found

    def mark_deleted(self, deletions: Deletions) -> None:
        """Stamp `_deleted_at` on these keys' rows where it is null, and `merged_into_id`
        on the merged ones (and on rows merged into them before); their files are
        rewritten in place (a key stays in its file)."""
        if not deletions.keys:
            return
        value_set = pa.array(sorted(deletions.keys), pa.string())
        chains = deletions.chains
        merged = pa.array(sorted(chains), pa.string())
        survivors = pa.array([chains[key] for key in sorted(chains)], pa.string())
        schema = self.schema()
        if schema is None:
            return
        added = {DELETED_COLUMN: pa.timestamp("us", tz="UTC")}
        if chains:
            added[MERGED_COLUMN] = pa.string()
        for name, column_type in added.items():
            if name not in schema.names:
                schema = schema.append(pa.field(name, column_type))
        stamp = pa.scalar(deletions.moment, pa.timestamp("us", tz="UTC"))
        for data_file in list(self.files.values()):
            names = list(self.options.key_columns)
            if chains and MERGED_COLUMN in data_file.schema.names:
                names.append(MERGED_COLUMN)
            hits = any(
                pc.any(pc.is_in(self.keys(batch), value_set=value_set)).as_py()
                or (
                    MERGED_COLUMN in names
                    and pc.any(pc.is_in(batch.column(MERGED_COLUMN), value_set=merged)).as_py()
                )
                for batch in self.batches(data_file, names)
            )
            if not hits and data_file.schema.equals(schema):
                continue

            def stamped(source: DataFile = data_file) -> Iterator[pa.RecordBatch]:
                for batch in self.batches(source):
                    batch = conform(batch, schema)
                    keys = self.keys(batch)
                    index = batch.schema.get_field_index(DELETED_COLUMN)
                    current = batch.column(index)
                    hit = pc.fill_null(pc.is_in(keys, value_set=value_set), False)
                    newly = pc.and_(hit, pc.is_null(current))
                    marked = pc.if_else(newly, stamp, current)
                    batch = batch.set_column(index, batch.schema.field(index), marked)
                    if chains:
                        batch = _merged_into(batch, keys, merged, survivors)
                    yield batch

            self._write_file(data_file.path, schema, stamped())

    # --- commits -----------------------------------------------------------------------

    def merge(self, staged: Sequence[Path], schema: pa.Schema, by_key: bool) -> None:
        """Staged rows into the dataset: by key (replacing stored rows with the same key)
        or appended. Within the staged rows the last read of a key wins."""
        staged_keys = _chunked(self._staged_keys(staged))
        dropped = older_duplicates(staged_keys)
        unique = pc.unique(staged_keys).drop_null() if by_key else pa.array([], pa.string())
        previous = self.schema()
        schema = unify_schemas([previous, schema] if previous is not None else [schema])
        homes = self._homes(unique, staged) if by_key and len(unique) else {}
        if (
            homes
            and len(homes) <= MAX_COMPARED
            and previous is not None
            and previous.equals(schema)
        ):
            same = self._unchanged(homes, staged, schema, dropped)
            if same:  # read again as they are stored (the lookback's overlap): nothing to write
                for key in same:
                    del homes[key]
                positions = pc.indices_nonzero(
                    pc.is_in(staged_keys, value_set=pa.array(sorted(same), pa.string()))
                )
                dropped |= set(positions.to_pylist())
        rewritten: set[str] = set()
        if not homes and not dropped and self._is_adoptable(staged, schema):
            for part in staged:  # only new keys, as staged: each part becomes a file
                self._add_file(part, "")
            folders = {""}
        else:
            absorb = self.options.single_file is not None  # one file takes every row
            destinations = self._route(staged, schema, dropped, homes, absorb)
            for destination in sorted(destinations.values(), key=lambda d: d.moved_in):
                self._write_destination(destination, schema)
            rewritten = {d.existing.path for d in destinations.values() if d.existing}
            folders = {d.folder for d in destinations.values()}
        if previous is not None and not previous.equals(schema):
            self._widen(schema, rewritten)
        for folder in folders:
            self._compact_if_needed(folder, schema)

    def replace(self, staged: Sequence[Path], schema: pa.Schema) -> None:
        """The staged rows become the dataset's only rows. One file over one file of the
        same folder is a single swap; more are swapped through the journal."""
        staged_keys = _chunked(self._staged_keys(staged))
        dropped = older_duplicates(staged_keys)
        old = list(self.files.values())
        if (
            len(staged) == 1
            and not dropped
            and not self.layout.template
            and pq.read_schema(staged[0]).equals(schema, check_metadata=True)
        ):
            self._adopt(staged[0], old)  # the staged file is already the new data
            return
        destinations = self._route(staged, schema, dropped, {}, absorb=False)
        targets = [d for d in destinations.values() if d.rows]
        if (
            len(old) <= 1
            and len(targets) <= 1
            and (not old or not targets or old[0].folder == targets[0].folder)
        ):
            target = targets[0] if targets else None
            if target is not None:
                name = old[0].path if old else self._new_name(target.folder)
                self._write_file(name, schema, self._destination_batches(target, schema))
            elif old:
                self._write_file(old[0].path, schema, iter(()))
            return
        moves: list[tuple[str, str]] = []
        for target in targets:
            batches = self._destination_batches(target, schema)
            for name in self._write_split(target.folder, schema, batches, hidden=True):
                moves.append((name, _unhidden(name)))
        self._run_journal([data_file.path for data_file in old], moves)

    def _adopt(self, staged: Path, old: list[DataFile]) -> None:
        """A staged file becomes the dataset's only file, without being rewritten: over
        the one file it replaces in one step, else uploaded under a hidden name first
        and swapped in through the journal (so that a rerun can finish the swap)."""
        if self.options.single_file is not None or (len(old) == 1 and old[0].folder == ""):
            name = self.options.single_file or old[0].path
            self._upload(staged, name)
        else:
            pending = self._new_name("", hidden=True)
            self._upload(staged, pending)
            name = _unhidden(pending)
            self._run_journal([data_file.path for data_file in old], [(pending, name)])
        self.files = {name: self._describe(StoredFile(name, self._size(name)))}

    def _is_adoptable(self, staged: Sequence[Path], schema: pa.Schema) -> bool:
        """Staged parts can become files as they are: one folder, the dataset's schema."""
        if self.options.single_file is not None or self.layout.template:
            return False
        return all(pq.read_schema(part).equals(schema, check_metadata=True) for part in staged)

    def _add_file(self, local: Path, folder: str) -> None:
        """A local Parquet file with the dataset's schema becomes a new part file."""
        name = self._new_name(folder)
        self._upload(local, name)
        self.files[name] = self._describe(StoredFile(name, self._size(name)))

    def _upload(self, staged: Path, name: str) -> None:
        try:
            self.storage.upload(staged, name)
        except (OSError, pa.ArrowException) as error:
            raise TargetError(f"cannot write {self.storage.describe(name)}: {error}") from None

    # --- routing ---------------------------------------------------------------------------

    def _staged_keys(self, staged: Sequence[Path]) -> Iterator[pa.Array]:
        for path in staged:
            reader = pq.ParquetFile(path)
            names = list(self.options.key_columns)
            for batch in reader.iter_batches(columns=names, use_threads=False):
                yield self.keys(batch)

    def _homes(self, unique: pa.Array, staged: Sequence[Path]) -> dict[str, DataFile]:
        """The file that holds each staged key already stored."""
        candidates = list(self.files.values())
        span = self._staged_span(staged) if self.options.fixed_update_key else None
        if span is not None:
            candidates = [f for f in candidates if _may_overlap(f.bounds, span)]
        key_spans = [self._staged_bounds(staged, column) for column in self.options.key_columns]
        candidates = [
            f
            for f in candidates
            if all(map(_may_overlap, f.key_bounds or [None] * len(key_spans), key_spans))
        ]
        homes: dict[str, DataFile] = {}
        for data_file in candidates:
            for batch in self.batches(data_file, list(self.options.key_columns)):
                keys = self.keys(batch)
                found = keys.filter(pc.is_in(keys, value_set=unique))
                for key in found.to_pylist():
                    homes[key] = data_file
        return homes

    def _unchanged(
        self,
        homes: dict[str, DataFile],
        staged: Sequence[Path],
        schema: pa.Schema,
        dropped: set[int],
    ) -> set[str]:
        """Stored keys whose staged row (the newest read) equals the stored row."""
        wanted = pa.array(sorted(homes), pa.string())
        incoming: dict[str, dict[str, Any]] = {}
        position = 0
        for path in staged:
            for batch in pq.ParquetFile(path).iter_batches(
                batch_size=self._staged_batch_rows(path), use_threads=False
            ):
                mask = pc.is_in(self.keys(batch), value_set=wanted).to_pylist()
                for offset in range(batch.num_rows):  # the newest read of a key counts
                    if position + offset in dropped:
                        mask[offset] = False
                position += batch.num_rows
                chosen = conform(batch.filter(pa.array(mask, pa.bool_())), schema)
                incoming.update(zip(self.keys(chosen).to_pylist(), chosen.to_pylist(), strict=True))
        same: set[str] = set()
        for data_file in {f.path: f for f in homes.values()}.values():
            for batch in self.batches(data_file):
                chosen = conform(batch.filter(pc.is_in(self.keys(batch), value_set=wanted)), schema)
                for key, stored in zip(
                    self.keys(chosen).to_pylist(), chosen.to_pylist(), strict=True
                ):
                    if incoming.get(key) == stored:
                        same.add(key)
        return same

    def _staged_span(self, staged: Sequence[Path]) -> Bounds | None:
        column = self.options.update_column
        return None if column is None else self._staged_bounds(staged, column)

    def _staged_bounds(self, staged: Sequence[Path], column: str) -> Bounds | None:
        """Min and max of a column over the staged files, from their footers."""
        low: Any = None
        high: Any = None
        for path in staged:
            metadata = pq.read_metadata(path)
            bounds = _bounds(metadata, metadata.schema.to_arrow_schema(), column)
            if bounds is None:
                return None
            try:
                low = bounds[0] if low is None else min(low, bounds[0])
                high = bounds[1] if high is None else max(high, bounds[1])
            except TypeError:  # the column's type changed between staged files
                return None
        return (low, high) if low is not None else None

    def _route(
        self,
        staged: Sequence[Path],
        schema: pa.Schema,
        dropped: set[int],
        homes: dict[str, DataFile],
        absorb: bool = True,
    ) -> dict[str, _Destination]:
        """One pass over the staged rows, writing each to its destination's working file."""
        destinations: dict[str, _Destination] = {}
        tails = self._tails() if absorb else {}
        position = 0
        for path in staged:
            for batch in pq.ParquetFile(path).iter_batches(
                batch_size=self._staged_batch_rows(path), use_threads=False
            ):
                end = position + batch.num_rows
                batch = conform(batch, schema)
                if dropped and any(position <= index < end for index in dropped):
                    batch = batch.filter(pa.array([i not in dropped for i in range(position, end)]))
                position = end
                if batch.num_rows:
                    self._route_batch(batch, schema, homes, tails, destinations)
        for destination in destinations.values():
            if destination.writer is not None:
                destination.writer.close()
                destination.writer = None
        return destinations

    def _route_batch(
        self,
        batch: pa.RecordBatch,
        schema: pa.Schema,
        homes: dict[str, DataFile],
        tails: dict[str, DataFile],
        destinations: dict[str, _Destination],
    ) -> None:
        """New keys go to their folder's tail (or a new file); stored keys to the file that
        holds them, unless their partition changed (then the old file loses them)."""
        folders = self._folders(batch)
        unique_folders = pc.unique(folders).to_pylist()
        by_folder = {
            folder: tails[folder].path if folder in tails else f"new:{folder}"
            for folder in unique_folders
        }
        labels = pc.take(
            pa.array([by_folder[f] for f in unique_folders], pa.string()),
            pc.index_in(folders, value_set=pa.array(unique_folders, pa.string())),
        )
        keys = self.keys(batch) if homes else None
        if keys is not None:
            stored = pc.is_in(keys, value_set=pa.array(list(homes), pa.string()))
            if pc.any(stored).as_py():
                listed = labels.to_pylist()
                for index in pc.indices_nonzero(stored).to_pylist():
                    key, folder = keys[index].as_py(), folders[index].as_py()
                    home = homes[key]
                    if home.folder == folder:
                        listed[index] = home.path
                    else:  # the row moves to another partition: its old file loses it
                        self._destination(listed[index], folder, destinations).moved_in = True
                        loser = self._destination(home.path, home.folder, destinations)
                        loser.replaced.append(pa.array([key], pa.string()))
                labels = pa.array(listed, pa.string())
        for label in pc.unique(labels).to_pylist():
            part = batch.filter(pc.equal(labels, label))
            destination = self._destination(label, part_folder(label, by_folder), destinations)
            if destination.writer is None:
                self.scratch.mkdir(parents=True, exist_ok=True)
                destination.staged = self.scratch / f"route-{uuid.uuid4().hex[:12]}.staged"
                destination.writer = pq.ParquetWriter(destination.staged, schema)
            write_rows(destination.writer, part, self.options.read_bytes)
            destination.rows += part.num_rows
            if destination.existing is not None and homes:
                destination.replaced.append(self.keys(part))

    def _destination(
        self, label: str, folder: str, destinations: dict[str, _Destination]
    ) -> _Destination:
        if label not in destinations:
            destinations[label] = _Destination(folder, self.files.get(label))
        return destinations[label]

    def _folders(self, batch: pa.RecordBatch) -> pa.Array:
        moments = update_moments(batch, self.options.update_column)
        return self.layout.folders(moments, self.options.run_started_at)

    def _tails(self) -> dict[str, DataFile]:
        """Each folder's newest file (a single-file object's one file takes every row)."""
        tails: dict[str, DataFile] = {}
        for data_file in sorted(self.files.values(), key=lambda f: f.path):
            tails[data_file.folder] = data_file
        return tails

    def _staged_batch_rows(self, path: Path) -> int:
        metadata = pq.read_metadata(path)
        return max(1, self.options.read_bytes // _row_bytes(metadata))

    # --- writing ---------------------------------------------------------------------------

    def _write_destination(self, destination: _Destination, schema: pa.Schema) -> None:
        if destination.existing is None:
            if destination.staged is not None:  # routed with the dataset's schema
                self._add_file(destination.staged, destination.folder)
            return
        existing = destination.existing
        replaced = (
            pc.unique(pa.chunked_array(destination.replaced, pa.string()))
            if destination.replaced
            else None
        )

        def rows() -> Iterator[pa.RecordBatch]:
            for batch in self.batches(existing):
                if replaced is not None and len(replaced):
                    batch = batch.filter(pc.invert(pc.is_in(self.keys(batch), value_set=replaced)))
                yield conform(batch, schema)
            yield from self._destination_batches(destination, schema)

        self._write_file(existing.path, schema, rows())

    def _destination_batches(
        self, destination: _Destination, schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        if destination.staged is None:
            return
        reader = pq.ParquetFile(destination.staged)
        rows = self._staged_batch_rows(destination.staged)
        for batch in reader.iter_batches(batch_size=rows, use_threads=False):
            yield conform(batch, schema)

    def _write_split(
        self, folder: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch], hidden: bool
    ) -> list[str]:
        """New files of about FILE_BYTES each (one, for a single-file object)."""
        names: list[str] = []
        pending = next(batches, None)
        while pending is not None:

            def fill(sink: pa.NativeFile, first: pa.RecordBatch = pending) -> None:
                with pq.ParquetWriter(sink, schema) as writer:
                    write_rows(writer, first, self.options.read_bytes)
                    if self.options.single_file is None and sink.tell() >= FILE_BYTES:
                        return
                    for batch in batches:
                        write_rows(writer, batch, self.options.read_bytes)
                        if self.options.single_file is None and sink.tell() >= FILE_BYTES:
                            return

            name = self._new_name(folder, hidden)
            self._write_file_with(name, fill)
            names.append(name)
            pending = next(batches, None)
        return names

    def _write_file(self, name: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
        def fill(sink: pa.NativeFile) -> None:
            with pq.ParquetWriter(sink, schema) as writer:
                wrote = False
                for batch in batches:
                    write_rows(writer, batch, self.options.read_bytes)
                    wrote = True
                if not wrote:
                    writer.write_table(schema.empty_table())

        self._write_file_with(name, fill)
        self.files[name] = self._describe(StoredFile(name, self._size(name)))

    def _write_file_with(self, name: str, fill: Callable[[pa.NativeFile], None]) -> None:
        try:
            self.storage.write(name, fill)
        except (OSError, pa.ArrowException) as error:
            raise TargetError(f"cannot write {self.storage.describe(name)}: {error}") from None

    def _size(self, name: str) -> int:
        size: int = self.storage.size(name)
        return size

    def _new_name(self, folder: str, hidden: bool = False) -> str:
        if self.options.single_file is not None:
            return self.options.single_file
        moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{moment}-{uuid.uuid4().hex[:8]}{DATA_SUFFIX}"
        if hidden:
            name = f".{name}{PENDING_SUFFIX}"
        return f"{folder}/{name}" if folder else name

    # --- schema, compaction, journal ----------------------------------------------------

    def _widen(self, schema: pa.Schema, done: set[str]) -> None:
        """Every file gets the dataset's whole schema (a field appeared)."""
        for data_file in list(self.files.values()):
            if data_file.path in done or data_file.schema.equals(schema):
                continue
            source = data_file
            self._write_file(
                source.path, schema, (conform(b, schema) for b in self.batches(source))
            )

    def _compact_if_needed(self, folder: str, schema: pa.Schema) -> None:
        if self.options.single_file is not None:
            return
        small = sorted(
            (f for f in self.files.values() if f.folder == folder and f.size < FILE_BYTES // 2),
            key=lambda f: f.path,
        )
        if len(small) <= SMALL_FILES or not _worth_compacting(small):
            return
        batches = (conform(batch, schema) for f in small for batch in self.batches(f))
        names = self._write_split(folder, schema, batches, hidden=True)
        self._run_journal([f.path for f in small], [(name, _unhidden(name)) for name in names])

    def _run_journal(self, deletes: list[str], moves: list[tuple[str, str]]) -> None:
        """Delete, then move into place, recorded first so that a rerun finishes it."""
        journal = {"delete": deletes, "move": [list(move) for move in moves]}
        self.storage.write_bytes(JOURNAL, json.dumps(journal).encode())
        self.recover()
        self.files = self._read_index()

    def recover(self) -> None:
        """Finish the swap a killed run left in the journal (deletes, then moves)."""
        content = self.storage.read_bytes(JOURNAL)
        if content is None:
            return
        journal = json.loads(content)
        for path in journal.get("delete", []):
            self.storage.delete(path)
        for source, target in journal.get("move", []):
            self.storage.move(source, target)
        self.storage.delete(JOURNAL)

    def _remove_pending(self) -> None:
        """Hidden new files that never made it into a journal: a run was killed between
        writing them and recording the swap (the journal, if any, was finished first)."""
        for entry in self.storage.list_files(PENDING_SUFFIX, hidden=True):
            self.storage.delete(entry.path)


def write_rows(writer: pq.ParquetWriter, batch: pa.RecordBatch, group_bytes: int) -> None:
    """Row groups of about `group_bytes`: a reader holds a row group's columns at once."""
    row_bytes = max(1, batch.nbytes // max(batch.num_rows, 1))
    writer.write_batch(batch, row_group_size=max(1, group_bytes // row_bytes))


def older_duplicates(keys: pa.ChunkedArray) -> set[int]:
    """Positions of rows whose key comes again later: the newest read of a key wins.

    A stable sort puts equal keys side by side, oldest first; each one but the last is
    dropped. Keyless rows (null) never equal anything. Sorting needs a third of the
    memory that counting keys in a hash table does, and only the drops reach Python.
    """
    if len(keys) < 2:
        return set()
    order = pc.sort_indices(keys)
    ordered = keys.take(order)
    same_as_next = pc.equal(ordered[:-1], ordered[1:])
    return set(pc.filter(order[:-1], same_as_next).to_pylist())


def part_folder(label: str, by_folder: dict[str, str]) -> str:
    """The folder of a destination label (`new:<folder>`, or a file's path)."""
    if label.startswith("new:"):
        return label.removeprefix("new:")
    return label.rpartition("/")[0]


def _worth_compacting(small: Sequence[DataFile]) -> bool:
    """Small files are merged once they make a whole file together, so that what comes
    out is not small and each row is compacted about once (a backfill that checkpoints
    often makes a small file each time); or once there are many, however small (an hourly
    run's few rows)."""
    return sum(f.size for f in small) >= FILE_BYTES or len(small) > SMALL_FILES * 2


def _row_bytes(metadata: pq.FileMetaData) -> int:
    """Uncompressed bytes per row, about (at least 1)."""
    groups = range(metadata.num_row_groups)
    total = sum(int(metadata.row_group(group).total_byte_size) for group in groups)
    return max(1, total // max(int(metadata.num_rows), 1))


def _chunked(arrays: Iterable[pa.Array]) -> pa.ChunkedArray:
    return pa.chunked_array(list(arrays), type=pa.string())


def _bounds(metadata: pq.FileMetaData, schema: pa.Schema, column: str | None) -> Bounds | None:
    """Min and max of a column from the row groups' statistics, None when unknown."""
    if column is None or column not in schema.names or metadata.num_row_groups == 0:
        return None
    index = schema.get_field_index(column)
    low: Any = None
    high: Any = None
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(index).statistics
        if statistics is None or not statistics.has_min_max:
            if metadata.row_group(group).num_rows:
                return None
            continue
        low = statistics.min if low is None else min(low, statistics.min)
        high = statistics.max if high is None else max(high, statistics.max)
    return (low, high) if low is not None else None


def _merged_into(
    batch: pa.RecordBatch, keys: pa.Array, merged: pa.Array, survivors: pa.Array
) -> pa.RecordBatch:
    """`merged_into_id` set to the survivor for rows merged away now, and moved to it for
    rows that went into one of them before."""
    index = batch.schema.get_field_index(MERGED_COLUMN)
    current = batch.column(index)
    by_key = pc.take(survivors, pc.index_in(keys, value_set=merged))
    by_previous = pc.take(survivors, pc.index_in(current, value_set=merged))
    updated = pc.coalesce(by_key, by_previous, current)
    return batch.set_column(index, batch.schema.field(index), updated)


def _may_overlap(bounds: Bounds | None, span: Bounds | None) -> bool:
    """False only when both are known and apart (values of two types may be equal)."""
    if bounds is None or span is None:
        return True
    try:
        return not (bounds[1] < span[0] or bounds[0] > span[1])
    except TypeError:
        return True


def _unhidden(name: str) -> str:
    folder, _, file_name = name.rpartition("/")
    visible = file_name.removeprefix(".").removesuffix(PENDING_SUFFIX)
    return f"{folder}/{visible}" if folder else visible
