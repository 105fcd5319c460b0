"""The Parquet target: one dataset per stream, replaced atomically on every commit.

`object: file://out/{stream_name}` (or a plain path) is a folder holding
`data.parquet`; a path ending in `.parquet` is that file. Rows are staged in
hidden files as they arrive, then merged into a new data file that is renamed over
the old one: readers see the old rows or the new rows, never a partial file.
State lives beside the data (`_sentry_extract_state.json`, which pyarrow and DuckDB
readers skip), written after the data.

Modes: full-refresh and truncate replace the rows; incremental and backfill merge
by primary key (the newest read wins); snapshot appends with `_snapshot_at`.
Every mode keeps one row per key within a run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sentry_extract.errors import ConfigError, LockedError, TargetError
from sentry_extract.files import fsync_folder
from sentry_extract.records import SNAPSHOT_COLUMN, conform, unify_schemas
from sentry_extract.state import FileStateStore, StateStore, StreamState
from sentry_extract.targets.base import StreamRequest

DATA_FILE = "data.parquet"
STATE_FILE = "_sentry_extract_state.json"
KEY_SEPARATOR = "\x1f"
READ_BATCH_ROWS = 2_000  # full-payload events: about 10 MB a batch



@dataclass(frozen=True)
class DatasetPaths:
    folder: Path
    data: Path
    state: Path
    lock: Path
    prefix: str  # for hidden working files beside the data

    @classmethod
    def of(cls, object_name: str) -> DatasetPaths:
        path = Path(object_name.removeprefix("file://")).expanduser()
        if path.suffix == ".parquet":
            name = path.name
            return cls(
                path.parent,
                path,
                path.parent / f"_{name}.state.json",
                path.parent / f".{name}.lock",
                f".{name}",
            )
        return cls(path, path / DATA_FILE, path / STATE_FILE, path / ".sentry-extract.lock", "")


class ParquetTarget:
    def object_problem(self, object_name: str) -> str | None:
        text = object_name.removeprefix("file://")
        if "://" in text:
            return f"'{object_name}' is not a file path: use file://path or a plain path"
        if not text.strip():
            return "the object is an empty path"
        folder = DatasetPaths.of(object_name).folder
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"cannot write under {existing}: it is a file, not a folder"
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot write under {existing}: permission denied"
        return None

    def state_store(self, object_name: str) -> FileStateStore:
        return FileStateStore(DatasetPaths.of(object_name).state)

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> ParquetStreamWriter:
        return ParquetStreamWriter(request, external_state)

    def close(self) -> None:
        return None


class ParquetStreamWriter:
    def __init__(self, request: StreamRequest, external_state: StateStore | None = None) -> None:
        self.request = request
        self.paths = DatasetPaths.of(request.object)
        self.store: StateStore = external_state or FileStateStore(self.paths.state)
        try:
            self.paths.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot create output folder {self.paths.folder}: {error.strerror}"
            ) from None
        if not os.access(self.paths.folder, os.W_OK):
            raise ConfigError(f"output folder {self.paths.folder} is not writable")
        self._lock = _take_lock(self.paths.lock)
        self._remove_leftovers()
        run_id = uuid.uuid4().hex[:12]
        self.staging = self.paths.folder / f"{self.paths.prefix}.staging-{run_id}"
        self.staging.mkdir()
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._writer_schema: pa.Schema | None = None
        self.schemas: list[pa.Schema] = [self._with_snapshot(request.base_schema)]
        self.rows = 0
        self.pending_state: StreamState | None = None

    # --- StreamWriter --------------------------------------------------------------

    def load_state(self) -> StreamState:
        return self.store.load(self.request.state_key)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.request.mode.appends:
            moment = pa.scalar(self.request.run_started_at, type=pa.timestamp("us", tz="UTC"))
            column = pa.array([moment.value] * batch.num_rows, type=moment.type)
            batch = batch.append_column(pa.field(SNAPSHOT_COLUMN, moment.type), column)
        if self._writer is None or batch.schema != self._writer_schema:
            self._start_part(batch.schema)
        assert self._writer is not None
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def checkpoint(self, state: StreamState | None) -> None:
        self.pending_state = state

    def commit(self) -> int:
        try:
            self._close_part()
            self._replace_data()
            if self.pending_state is not None:
                self.store.save(self.request.state_key, self.pending_state)
        finally:
            self._cleanup()
        return self.rows

    def abort(self) -> None:
        try:
            self._close_part()
        finally:
            self._cleanup()

    # --- staging -------------------------------------------------------------------

    def _with_snapshot(self, schema: pa.Schema) -> pa.Schema:
        if self.request.mode.appends and SNAPSHOT_COLUMN not in schema.names:
            return schema.append(pa.field(SNAPSHOT_COLUMN, pa.timestamp("us", tz="UTC")))
        return schema

    def _start_part(self, schema: pa.Schema) -> None:
        self._close_part()
        part = self.staging / f"part-{len(self.parts):05d}.parquet"
        self._writer = pq.ParquetWriter(part, schema)
        self._writer_schema = schema
        self.parts.append(part)
        self.schemas.append(schema)

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _staged_batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        for part in self.parts:
            # One thread: Arrow's per-thread arenas would each keep a batch's worth of memory.
            yield from pq.ParquetFile(part).iter_batches(
                batch_size=READ_BATCH_ROWS, columns=columns, use_threads=False
            )

    # --- the new data file -----------------------------------------------------------

    def _replace_data(self) -> None:
        existing = self.paths.data if self.paths.data.exists() else None
        keeps_old_rows = not self.request.mode.replaces_rows and existing
        schemas = list(self.schemas)
        if keeps_old_rows and existing is not None:
            schemas.insert(0, _read_schema(existing))
        schema = unify_schemas(schemas)
        keys = self._staged_keys()
        dropped = _older_duplicates(keys)
        staged_as_is = len(self.parts) == 1 and self.schemas[1].equals(schema, check_metadata=True)
        if staged_as_is and not keeps_old_rows and not dropped:
            self._publish(self.parts[0])  # the staged file is already the new data
            return
        temporary = self.paths.folder / f"{self.paths.prefix}.data-{uuid.uuid4().hex[:12]}.tmp"
        try:
            with pq.ParquetWriter(temporary, schema) as writer:
                if keeps_old_rows and existing is not None:
                    replaced = pc.unique(keys).drop_null()
                    old_batches = pq.ParquetFile(existing).iter_batches(
                        batch_size=READ_BATCH_ROWS, use_threads=False
                    )
                    for batch in old_batches:
                        batch = conform(batch, schema)
                        if self.request.mode.merges_by_key and len(replaced):
                            batch = batch.filter(
                                pc.invert(pc.is_in(self._keys(batch), value_set=replaced))
                            )
                        writer.write_batch(batch)
                position = 0
                for batch in self._staged_batches():
                    end = position + batch.num_rows
                    batch = conform(batch, schema)
                    if any(position <= index < end for index in dropped):
                        batch = batch.filter(
                            pa.array([i not in dropped for i in range(position, end)])
                        )
                    position = end
                    writer.write_batch(batch)
            self._publish(temporary)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _publish(self, path: Path) -> None:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(path, self.paths.data)
        fsync_folder(self.paths.folder)

    def _staged_keys(self) -> pa.ChunkedArray:
        """The key of every staged row, in order (null for rows without one)."""
        names = list(self.request.key_columns)
        keys = [self._keys(batch) for batch in self._staged_batches(columns=names)]
        return pa.chunked_array(keys, type=pa.string())  # chunks: no copy into one array

    def _keys(self, batch: pa.RecordBatch) -> pa.Array:
        columns = [
            batch.column(batch.schema.get_field_index(name)).cast(pa.string())
            for name in self.request.key_columns
        ]
        if len(columns) == 1:
            return columns[0]
        return pc.binary_join_element_wise(*columns, KEY_SEPARATOR)

    # --- housekeeping ----------------------------------------------------------------

    def _remove_leftovers(self) -> None:
        """Working files of a run that was killed (we hold the lock: nobody else writes)."""
        prefix = self.paths.prefix
        for path in self.paths.folder.glob(f"{prefix}.staging-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.paths.folder.glob(f"{prefix}.data-*.tmp"):
            path.unlink(missing_ok=True)

    def _cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _older_duplicates(keys: pa.Array | pa.ChunkedArray) -> set[int]:
    """Positions of rows whose key comes again later: the newest read of a key wins.

    A stable sort puts equal keys side by side, oldest first; each one but the last is
    dropped. Keyless rows (null) never equal anything. Sorting needs a third of the
    memory that counting keys in a hash table does, and only the drops reach Python.
    """
    order = pc.sort_indices(keys)
    ordered = keys.take(order)
    same_as_next = pc.equal(ordered[:-1], ordered[1:])
    return set(pc.filter(order[:-1], same_as_next).to_pylist())


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise TargetError(f"cannot read existing data {path}: {error}") from None


def _take_lock(path: Path) -> IO[bytes] | None:
    handle = open(path, "ab")  # noqa: SIM115 - held until commit or abort
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LockedError(
            f"another sentry-extract run is writing {path.parent}; try again when it ends"
        ) from None
    return handle
