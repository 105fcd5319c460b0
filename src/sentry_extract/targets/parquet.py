"""The Parquet target: one dataset per stream, a folder of part files (see `dataset`).

`object: file://out/{stream_name}` (or a plain path) is a folder, and with a target of
type s3 `sentry/{stream_name}` or `s3://bucket/prefix/{stream_name}` is a prefix in a
bucket: the same datasets through the `Place` and `Storage` seam. Partition variables
(`{part_year}/{part_month}`, ...) put rows in folders below it; a path ending in
`.parquet` is that one file. Rows are staged in a local working folder as they
arrive. Checkpoints (modes that merge by key) and the final commit move them into the
dataset, then save the state: a crash leaves the state behind the data, never ahead.
State lives beside the data (`_sentry_extract_state.json`, which readers skip).

Modes: full-refresh and truncate replace the rows at the end of the run; incremental
and backfill merge by primary key (the newest read wins) at every checkpoint; snapshot
appends with `_snapshot_at` at the end. Every mode keeps one row per key within a run.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sentry_extract.errors import TargetError
from sentry_extract.model.windows import Window
from sentry_extract.records import SNAPSHOT_COLUMN, unify_schemas
from sentry_extract.state import JsonStateStore, StateStore, StreamState
from sentry_extract.targets.base import Deletions, StreamRequest
from sentry_extract.targets.dataset import DatasetOptions, ParquetDataset, write_rows
from sentry_extract.targets.partitions import Layout
from sentry_extract.targets.storage import LocalPlace, Lock, Place, StoredDocument, object_location

STATE_FILE = "_sentry_extract_state.json"
LOCK_FILE = ".sentry-extract.lock"


@dataclass(frozen=True)
class DatasetPaths:
    """Where a stream's dataset, state and lock live, from its `object`."""

    root: str  # a local folder, or `bucket/prefix`
    layout: Layout
    state_name: str  # relative to the root
    lock_name: str
    single_file: str | None  # the file's name when `object` names one .parquet file

    @classmethod
    def of(cls, location: str) -> DatasetPaths:
        """`location` is the object without its scheme (see `Place.location`)."""
        layout = Layout.parse(location)
        root = layout.root.rstrip("/") or layout.root
        if not layout.template and root.endswith(".parquet"):
            parent, _, name = root.rpartition("/")
            parent = parent or "."
            return cls(parent, Layout(parent), f"_{name}.state.json", f".{name}.lock", name)
        return cls(root, Layout(root, layout.template), STATE_FILE, LOCK_FILE, None)


class ParquetTarget:
    """Parquet datasets in a place: folders on this machine (the default), or a bucket."""

    def __init__(self, place: Place | None = None) -> None:
        self.place: Place = place or LocalPlace()

    def object_problem(self, object_name: str) -> str | None:
        text, problem = object_location(self.place, object_name)
        if problem is not None:
            return problem
        layout = Layout.parse(text)
        problem = layout.problem()
        if problem is not None:
            return problem
        if layout.template and text.endswith(".parquet"):
            return "a single .parquet file cannot have partition folders: name a folder"
        return self.place.access_problem(DatasetPaths.of(text).root)

    def state_store(self, object_name: str) -> JsonStateStore:
        paths = DatasetPaths.of(self.place.location(object_name))
        storage = self.place.storage(paths.root, paths.lock_name)
        return JsonStateStore(StoredDocument(storage, paths.state_name))

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> ParquetStreamWriter:
        return ParquetStreamWriter(request, external_state, self.place)

    def close(self) -> None:
        return None


class ParquetStreamWriter:
    def __init__(
        self,
        request: StreamRequest,
        external_state: StateStore | None = None,
        place: Place | None = None,
    ) -> None:
        self.request = request
        place = place or LocalPlace()
        self.paths = DatasetPaths.of(place.location(request.object))
        self.storage = place.storage(self.paths.root, self.paths.lock_name)
        self.store: StateStore = external_state or JsonStateStore(
            StoredDocument(self.storage, self.paths.state_name)
        )
        self.storage.prepare()
        self._lock: Lock | None = self.storage.lock()
        try:
            self.storage.remove_leftovers()
            self.scratch = self.storage.scratch()
            self.dataset = ParquetDataset(
                self.storage,
                self.paths.layout,
                DatasetOptions(
                    key_columns=request.key_columns,
                    update_column=request.update_key,
                    fixed_update_key=request.fixed_update_key,
                    read_bytes=max(1, request.memory_budget // 8),
                    run_started_at=request.run_started_at,
                    single_file=self.paths.single_file,
                ),
                self.scratch,
            )
        except BaseException:
            self._cleanup()
            raise
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._writer_schema: pa.Schema | None = None
        self.base_schema = self._with_snapshot(request.base_schema)
        self.schemas: list[pa.Schema] = [self.base_schema]
        self.rows = 0
        self.pending_state: StreamState | None = None
        self.pending_deletions: Deletions | None = None

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
        try:
            if self._writer is None or batch.schema != self._writer_schema:
                self._start_part(batch.schema)
            assert self._writer is not None
            write_rows(self._writer, batch, self.dataset.options.read_bytes)
        except (OSError, pa.ArrowException) as error:
            raise TargetError(f"cannot stage rows in {self.scratch}: {error}") from None
        self.rows += batch.num_rows

    def checkpoint(self, state: StreamState | None) -> None:
        """Modes that merge by key commit the rows so far, then `state`; others keep
        `state` for the commit at the end of the run."""
        if not self.request.mode.commits_as_it_goes:
            self.pending_state = state
            return
        self._move_staged()
        if state is not None:
            self.store.save(self.request.state_key, state)

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        return self.dataset.live_keys(column, window)

    def mark_deleted(
        self,
        keys: Collection[str],
        moment: datetime,
        merged_into: Mapping[str, str] | None = None,
    ) -> None:
        self.pending_deletions = Deletions.of(keys, moment, merged_into)

    def commit(self) -> int:
        try:
            self._move_staged()
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
        part = self.scratch / f"part-{len(self.parts):05d}.staged"
        self._writer = pq.ParquetWriter(part, schema)
        self._writer_schema = schema
        self.parts.append(part)
        self.schemas.append(schema)

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _move_staged(self) -> None:
        """The staged rows into the dataset, as the mode says."""
        self._close_part()
        mode = self.request.mode
        deletions, self.pending_deletions = self.pending_deletions, None
        if not self.parts and not mode.replaces_rows and deletions is None:
            return
        schema = unify_schemas(self.schemas)
        try:
            if mode.replaces_rows:
                self.dataset.replace(self.parts, schema)
            elif self.parts:
                self.dataset.merge(self.parts, schema, by_key=mode.merges_by_key)
            if deletions is not None:
                self.dataset.mark_deleted(deletions)
        except (OSError, pa.ArrowException) as error:
            raise TargetError(f"cannot write {self.storage.describe()}: {error}") from None
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts = []
        self.schemas = [self.base_schema]

    # --- housekeeping ----------------------------------------------------------------

    def _cleanup(self) -> None:
        scratch = getattr(self, "scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
