"""Loading one stream: the rows its reader hands over, typed in batches, written to the
target's writer and committed at checkpoints with the state that covers them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sentry_extract.config.replication import StreamConfig
from sentry_extract.errors import RunCancelled
from sentry_extract.events import counted, emit
from sentry_extract.model.windows import Window
from sentry_extract.pipeline.results import STATUS_PARTIAL, StreamResult
from sentry_extract.records import RecordTyper, fill_missing_keys, key_values
from sentry_extract.source.client import RequestCounter
from sentry_extract.state import StreamState
from sentry_extract.targets.base import StreamWriter, checkpoint_bytes

log = logging.getLogger("sentry_extract")


CHECKPOINT_ROWS = 500  # rows between checkpoints, at least: a killed run reads these again


class Checkpoints:
    """When the rows read so far are committed with the state that covers them.

    At least every `every` seconds while rows arrive, and every `CHECKPOINT_ROWS` rows
    or a twentieth of what the stream has committed, whichever is larger: a killed run reads
    again at most that much, and a long backfill does not spend its time committing.
    A writer whose commits cost more than a few rows asks for `least_bytes` of rows in
    each commit, besides (`targets.base.checkpoint_bytes`), as their pages count them
    (or, for pages that do not, their Arrow batches once typed); the seconds still
    bound what a killed run reads again.
    """

    def __init__(self, every: float, clock: Callable[[], float], least_bytes: int = 0) -> None:
        self.every = every
        self.clock = clock
        self.least_bytes = least_bytes
        self.last = clock()
        self.pending_rows = 0
        self.pending_bytes = 0
        self.committed_rows = 0
        self.count = 0

    def add(self, rows: int, held_bytes: int = 0) -> None:
        self.pending_rows += rows
        self.pending_bytes += held_bytes

    def is_due(self) -> bool:
        enough_rows = self.pending_rows >= max(CHECKPOINT_ROWS, self.committed_rows // 20)
        if enough_rows and self.pending_bytes >= self.least_bytes:
            return True
        return self.pending_rows > 0 and self.clock() - self.last >= self.every

    def done(self) -> None:
        self.committed_rows += self.pending_rows
        self.pending_rows = 0
        self.pending_bytes = 0
        self.last = self.clock()
        self.count += 1


class TypedCost:
    """How many bytes of Arrow batch the rows of a stream become, per byte they hold.

    Undecoded JSON becomes its text once (about one to one); decoded rows hold several
    times their typed size. Starts at one to one, then follows the last batch."""

    def __init__(self) -> None:
        self.ratio = 1.0

    def estimate(self, held_bytes: int) -> int:
        return int(held_bytes * self.ratio)

    def observe(self, held_bytes: int, typed_bytes: int) -> None:
        if held_bytes > 0:
            self.ratio = typed_bytes / held_bytes


@dataclass(frozen=True)
class Batching:
    """How a loader cuts batches and checkpoints (from the run's settings and inputs)."""

    rows: int  # rows a batch holds at most
    memory_budget: int  # bytes; a batch's rows and its Arrow batch hold a quarter at most
    checkpoint_every: float  # seconds between checkpoints, at most, while rows arrive
    clock: Callable[[], float]
    cancelled: threading.Event


class Loader:
    """Buffers the rows a reader hands over and gives typed batches to the writer.

    Batches are cut by rows, and by what they hold in memory: the rows read (as their
    pages count them) and, once typed, their Arrow batch, together within a quarter of
    the memory budget. In modes that commit as they go, checkpoints commit the rows read
    so far together with the state they complete. A reader's `Sink`.
    """

    def __init__(
        self,
        stream: StreamConfig,
        writer: StreamWriter,
        typer: RecordTyper,
        counter: RequestCounter,
        result: StreamResult,
        batching: Batching,
    ) -> None:
        self.stream = stream
        self.writer = writer
        self.typer = typer
        self.counter = counter
        self.result = result
        self.batching = batching
        self.buffer: list[dict[str, Any]] = []
        self.buffered_bytes = 0  # what the buffered rows hold in memory
        self.seen: set[str] | None = None  # keys written, while a reader watches them
        self.batch_bytes = max(1, batching.memory_budget // 4)
        self.typed = TypedCost()
        self.read = 0
        self.checkpoints = Checkpoints(
            batching.checkpoint_every, batching.clock, checkpoint_bytes(writer)
        )

    def check_cancelled(self) -> None:
        if self.batching.cancelled.is_set():
            raise RunCancelled(self.stream.name)

    def add(self, rows: list[dict[str, Any]], held_bytes: int = 0) -> None:
        """Buffer a page's rows; a batch that the page would take past its bytes is
        written first, so a batch holds at most one page more than its share."""
        if self.buffer and self._batch_cost(self.buffered_bytes + held_bytes) > self.batch_bytes:
            self._flush()
        self.read += len(rows)
        emit(
            log,
            logging.INFO,
            "page",
            f"{self.stream.name}: {counted(self.read, 'row')} read",
            stream=self.stream.name,
            rows=len(rows),
            total_rows=self.read,
            requests=self.counter.requests,
        )
        self.buffer.extend(rows)
        self.buffered_bytes += held_bytes
        self.checkpoints.add(len(rows), held_bytes)
        if (
            len(self.buffer) >= self.batching.rows
            or self._batch_cost(self.buffered_bytes) >= self.batch_bytes
        ):
            self._flush()

    def _batch_cost(self, held_bytes: int) -> int:
        """Rows holding `held_bytes`, and their Arrow batch once typed."""
        return held_bytes + self.typed.estimate(held_bytes)

    def _flush(self) -> None:
        if self.buffer:
            rows, held_bytes = self.buffer, self.buffered_bytes
            self.buffer, self.buffered_bytes = [], 0
            typed = self.typer.to_batch(rows)
            del rows  # the pages go before the batch is written
            self.typed.observe(held_bytes, typed.nbytes)
            if held_bytes == 0:  # pages that did not count their bytes: the batch's
                self.checkpoints.add(0, typed.nbytes)
            batch, keyless = fill_missing_keys(typed, self.stream.primary_key)
            del typed
            if keyless:
                columns = ", ".join(self.stream.primary_key)
                log.warning(
                    "%s: %d rows came without a value for %s; they are stored with an empty "
                    "key, where rows with the same key replace each other",
                    self.stream.name,
                    keyless,
                    columns,
                )
            if self.seen is not None:
                self.seen.update(key_values(batch, self.stream.primary_key).to_pylist())
            self.writer.write(batch)

    def checkpoint_if_due(self, state: StreamState) -> None:
        if self.stream.mode.commits_as_it_goes and self.checkpoints.is_due():
            self.check_cancelled()
            self._flush()
            self.writer.checkpoint(state if self.stream.mode.keeps_state else None)
            self.checkpoints.done()
            self.result.checkpoints = self.checkpoints.count
            self.result.rows = self.checkpoints.committed_rows  # kept, even if the run stops
            emit(
                log,
                logging.INFO,
                "checkpoint",
                f"{self.stream.name}: checkpoint {self.checkpoints.count}, "
                f"{counted(self.checkpoints.committed_rows, 'row')} committed",
                stream=self.stream.name,
                checkpoints=self.checkpoints.count,
                rows=self.checkpoints.committed_rows,
            )

    def finish(self, state: StreamState | None) -> None:
        """The last rows; the final state where the mode keeps one."""
        self.check_cancelled()  # a stopped run commits nothing it did not finish
        self._flush()
        if state is not None and self.stream.mode.keeps_state:
            self.writer.checkpoint(state)

    def watch_keys(self) -> set[str]:
        self.seen = set()
        return self.seen

    def stored_keys(self, column: str | None, window: Window | None) -> set[str]:
        self._flush()
        return self.writer.live_keys(column, window)

    def mark_deleted(
        self, keys: Collection[str], moment: datetime, merged: Mapping[str, str] | None = None
    ) -> None:
        self._flush()
        self.writer.mark_deleted(keys, moment, merged)

    def problem(self, text: str, partial: bool = False) -> None:
        self.result.problems.append(text)
        if partial:
            self.mark_partial()

    def mark_partial(self) -> None:
        self.result.status = STATUS_PARTIAL

    def reconciled(self, deleted: int) -> None:
        self.result.reconciled = True
        self.result.deleted = deleted
