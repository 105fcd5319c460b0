"""What a target offers the pipeline.

A target opens one `StreamWriter` per stream. The writer takes Arrow batches,
is told at checkpoints which state the rows written so far cover, and on `commit`
makes the rows durable first and the state second.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from sentry_extract.model.modes import Mode
from sentry_extract.model.windows import Window
from sentry_extract.records import DELETED_COLUMN
from sentry_extract.state import StateKey, StateStore, StreamState


@dataclass(frozen=True)
class StreamRequest:
    stream: str
    object: str
    mode: Mode
    key_columns: tuple[str, ...]
    base_schema: pa.Schema  # declared columns, present even when no row arrives
    state_key: StateKey
    run_started_at: datetime
    update_key: str | None = None  # the column partition variables come from
    fixed_update_key: bool = False  # a key's update key never changes (events)
    memory_budget: int = 64_000_000  # bytes of rows a writer may hold, about


@dataclass(frozen=True)
class Deletions:
    """Rows Sentry no longer has, stamped at a checkpoint: `keys` get `_deleted_at =
    moment`; `merged_into` maps those merged into another row to that row's key."""

    keys: frozenset[str]
    moment: datetime
    merged_into: Mapping[str, str]

    @classmethod
    def of(
        cls, keys: Collection[str], moment: datetime, merged_into: Mapping[str, str] | None
    ) -> Deletions:
        """What `StreamWriter.mark_deleted` is told, kept for the next commit."""
        return cls(frozenset(keys), moment, dict(merged_into or {}))

    @property
    def chains(self) -> Mapping[str, str]:
        """Every merged key to the key of the row it ended in (A into B into C: C)."""
        ends: dict[str, str] = {}
        for key in self.merged_into:
            end, seen = self.merged_into[key], {key}
            while end in self.merged_into and end not in seen:
                seen.add(end)
                end = self.merged_into[end]
            ends[key] = end
        return ends


class StreamWriter(Protocol):
    def load_state(self) -> StreamState: ...

    def write(self, batch: pa.RecordBatch) -> None: ...

    def checkpoint(self, state: StreamState | None) -> None:
        """The rows written so far are covered by `state` (None: leave state as it is).

        In modes that commit as they go, the rows are committed now and `state` right
        after them (or in the same transaction); otherwise at `commit`."""

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        """Keys of the stored rows not marked deleted, with `column` inside `window`
        (every such row when `window` is None); composite keys joined as `key_values`."""

    def mark_deleted(
        self,
        keys: Collection[str],
        moment: datetime,
        merged_into: Mapping[str, str] | None = None,
    ) -> None:
        """Stamp `_deleted_at = moment` on these keys' rows (where it is null) at the next
        checkpoint or commit, after the rows written so far and before the state.
        `merged_into` maps keys merged into another row to that row's key: it becomes
        their `merged_into_id`, and that of the rows merged into them before."""

    def commit(self) -> int:
        """Make rows durable, then the last checkpoint's state; returns rows in the run."""

    def abort(self) -> None: ...


def checkpoint_bytes(writer: StreamWriter) -> int:
    """Bytes of rows (as their pages count them) that a checkpoint of `writer` should
    carry at least, besides the loader's rows: 0 unless the writer sets
    `checkpoint_bytes`, as one does whose every commit costs more than a few rows (a
    Delta commit adds a data file and a log entry)."""
    value = getattr(writer, "checkpoint_bytes", 0)
    return value if isinstance(value, int) else 0


class Target(Protocol):
    def object_problem(self, object_name: str) -> str | None:
        """Why `object_name` cannot be written here, or None when it can."""

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> StreamWriter:
        """A writer for one stream; `external_state` replaces the target's own state store."""

    def state_store(self, object_name: str) -> StateStore: ...

    def close(self) -> None: ...


def live_rows(
    batch: pa.RecordBatch, keys: pa.Array, column: str | None, window: Window | None
) -> pa.Array | None:
    """Which rows of `batch` are live: a key, no `_deleted_at`, and `column` inside
    `window` when one is given; None when the batch lacks that column (no row is)."""
    keep = pc.is_valid(keys)
    if DELETED_COLUMN in batch.schema.names:
        keep = pc.and_(keep, pc.is_null(batch.column(DELETED_COLUMN)))
    if window is None or column is None:
        return keep
    if column not in batch.schema.names:
        return None
    moments = batch.column(column)
    inside = pc.and_(
        pc.greater_equal(moments, pa.scalar(window.start, moments.type)),
        pc.less(moments, pa.scalar(window.end, moments.type)),
    )
    return pc.and_(keep, pc.fill_null(inside, False))
