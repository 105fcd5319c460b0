"""The DuckDB dialect: one database file opened per run, batches staged by mode.

DuckDB lets one process write a file and locks it while it is open: the run opens it
once, each stream works in a cursor of its own (its own transaction) and the streams
take turns at each step. Another process finds the file locked and is refused with
the same message a second PostgreSQL run gets.

Memory stays bounded whatever the run's size. DuckDB may hold the run's memory budget
(`memory_limit`, one thread; twice the budget for a run in one transaction) and spills
the rest to `<file>.tmp` (gone when the run ends); row groups hold ROW_GROUP_ROWS rows.

- A run that appends rows to the table (snapshot) writes each batch as a Parquet file
  in `<file>.staging-*` beside the database, and at its commit one `INSERT ... SELECT
  ... FROM read_parquet(...)` moves them into the table in the transaction that also
  holds the state. What that transaction writes waits within the memory limit, the
  rest spilled to `<file>.tmp` (411 MB of 40,000 large events); DuckDB works on a row
  group (2,048 large events) at a time and failed to pin a block below 128 MB. Fewer
  rows than a row group wait for the commit, which takes them all at once: it gets
  SMALL_MOVE_SHARE times their bytes as its memory limit, put back after it.
- A run that merges by key (incremental, backfill), or replaces the rows (full-refresh
  and truncate: a new table made from the table's definition, swapped in at the
  commit), upserts each batch into the table at once, read by DuckDB from the Arrow
  batch in place, and commits it. (Moving a run's files into a table that already holds
  rows, deleting and inserting, ran out of memory at 4,000 large events; so did one
  transaction of upserts, at 975 MB for 8,000; a truncate whose files were moved in its
  one transaction peaked at 335 to 341 MB for 40,000.) DuckDB joins no small row groups
  at its checkpoints (`max_vacuum_tasks = 0`): each commit's rows stay row groups of
  their own, where joining them rewrote up to 2,048 large events at every checkpoint.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sentry_extract.errors import LockedError, TargetError
from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType
from sentry_extract.records import column_type_of
from sentry_extract.targets.sql.dialect import (
    ORDER_COLUMN,
    Move,
    Session,
    Staging,
    TableName,
    on_conflict,
    quote,
)

SQL_TYPES = {
    ColumnType.TEXT: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
    ColumnType.JSON: "JSON",
}
COLUMN_TYPES = {sql_type: column_type for column_type, sql_type in SQL_TYPES.items()}
COLUMN_TYPES["TIMESTAMP WITH TIME ZONE"] = ColumnType.TIMESTAMP
WIDENING = {  # how stored values become the wider type
    ColumnType.TEXT: "CAST({} AS VARCHAR)",
    ColumnType.FLOAT: "CAST({} AS DOUBLE)",
    ColumnType.JSON: "to_json({})",
}
KEPT = '"temp"."main"."sentry_extract_kept"'
NEWEST = '"temp"."main"."sentry_extract_newest"'
_BATCH_NAMES = itertools.count()
DATABASE = "sentry_extract_database"
# DuckDB's memory_limit, the run's memory budget times this: a run in one transaction
# (snapshot) holds its rows there and spills the rest (at 1.5 times, 40,000
# large events failed to pin a block); a run that commits batch by batch holds little
# more than a batch, and what DuckDB keeps of the table's blocks up to the limit (30 MB
# at 20,000 large events with twice the budget, 9 MB with once).
MEMORY_SHARE = 2
COMMITTING_MEMORY_SHARE = 1
# The rows of one upsert statement, against the run's memory budget: DuckDB copies them
# a few times (its vectors, the table's new rows); a whole batch (a quarter) cost 30 MB
# more at the peak than 2 MB did, for large events.
STATEMENT_SHARE = 1 / 32
# A snapshot's move of fewer rows than a row group, against their bytes: DuckDB writes no
# row group of them before the commit and takes them all at once then (1,600 large
# events, 124 MB, failed to pin a block at a 128 MB limit; 2,000, 156 MB, passed at 192).
SMALL_MOVE_SHARE = 1.5
# DuckDB's smallest row group: an insert writes each full one to the file before its
# commit (with the default, 122,880 rows, a run's rows would wait in memory for it).
ROW_GROUP_ROWS = 2048
STAGING_MARK = ".staging-"  # `<file>.staging-<stream>`: a stream's staged batches


def open_database(path: Path, holder: str, wait: float) -> duckdb.DuckDBPyConnection:
    """The file, its folder made first; LockedError while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            connection = attach(path)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise TargetError(f"DuckDB: cannot open {path}: {_first_line(error)}") from None
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another sentry-extract run is loading {holder}; waited {wait:.0f}s. "
                    "Let it finish, or check for a stuck run"
                ) from None
        except duckdb.Error as error:  # not a database file, a folder, no permission
            raise TargetError(f"DuckDB: cannot open {path}: {_first_line(error)}") from None
        else:
            remove_staging(path)  # what a killed run staged: the file is ours now
            return connection
        time.sleep(0.2)


def remove_staging(path: Path) -> None:
    for folder in path.parent.glob(f"{path.name}{STAGING_MARK}*"):
        shutil.rmtree(folder, ignore_errors=True)


def attach(path: Path) -> duckdb.DuckDBPyConnection:
    """The file under a fixed name: a file called `sentry.duckdb` would otherwise make
    `sentry.issues` ambiguous (catalog or schema)."""
    connection = duckdb.connect()
    try:
        connection.execute(f"SET temp_directory = {_literal(temporary_folder(path))}")
        connection.execute("SET threads = 1")  # a thread's buffers each: one holds the limit
        # No row groups joined at checkpoints: DuckDB 2.0 joins a table's small row groups
        # (its PRIMARY KEY no longer stops it), so each commit's checkpoint rewrote the
        # rows committed before it in the row group, up to 2,048 large events in memory.
        connection.execute("SET max_vacuum_tasks = 0")
        connection.execute(
            f"ATTACH {_literal(str(path))} AS {DATABASE} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        )
    except BaseException:
        connection.close()
        raise
    return connection


def temporary_folder(path: Path) -> str:
    """Where DuckDB spills what its memory limit does not hold: beside the file."""
    return f"{path}.tmp"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def test_duckdb(path: Path) -> str:
    connection = open_database(path, str(path), 0.0)
    try:
        connection.execute("SELECT 1")
    finally:
        connection.close()
    return f"ok: DuckDB file {path}"


def as_json(batch: pa.RecordBatch) -> pa.RecordBatch:
    """JSON columns as Parquet's JSON type, which DuckDB reads as JSON: a cast of their
    text to JSON holds memory for every row of the transaction."""
    arrays = []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if column_type_of(field) is ColumnType.JSON and pa.types.is_string(field.type):
            array = pa.ExtensionArray.from_storage(pa.json_(pa.string()), array)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def newest_of_each_key(batch: pa.RecordBatch, key_columns: Sequence[str]) -> pa.RecordBatch:
    """The batch's rows, only the newest read (the highest ORDER_COLUMN) of a key read
    more than once in it: ON CONFLICT takes a key once a statement."""
    keys = pa.Table.from_batches([batch.select([*key_columns, ORDER_COLUMN])])
    newest = keys.group_by(list(key_columns), use_threads=False).aggregate([(ORDER_COLUMN, "max")])
    if newest.num_rows == batch.num_rows:
        return batch
    kept = pc.is_in(batch.column(ORDER_COLUMN), value_set=newest.column(f"{ORDER_COLUMN}_max"))
    return batch.filter(kept)


class DuckDBSession:
    """A cursor of the run's connection: its own transaction, begun at its first
    statement after a commit; every statement taken in turn with the other streams."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        lock: threading.RLock,
        on_close: Callable[[], None],
        limit_memory: Callable[[duckdb.DuckDBPyConnection, int], None],
        memory_for_commit: Callable[[duckdb.DuckDBPyConnection, int], None],
    ) -> None:
        self.cursor = cursor
        self.lock = lock
        self.on_close = on_close
        self.limit_memory = limit_memory
        self.memory_for_commit = memory_for_commit  # until the commit, then back; 0: back
        self.staged_rows = 0
        self.staged_bytes = 0
        cursor.execute(f"USE {DATABASE}")
        self.in_transaction = False
        self.order = 0
        self.staged: list[Path] = []
        self.staged_columns: set[str] = set()
        self.staging_folders: set[Path] = set()
        self.batch: pa.RecordBatch | None = None  # a merge's batch, until its flush
        self.statement_bytes = 0  # rows of this many bytes an upsert at most

    def _begin(self) -> None:
        if not self.in_transaction:
            self.cursor.execute("BEGIN TRANSACTION")
            self.in_transaction = True

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> None:
        with self.lock:
            self._begin()
            self.cursor.execute(statement.replace("%s", "?"), list(parameters))

    def fetch(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            self._begin()
            return self.cursor.execute(statement.replace("%s", "?"), list(parameters)).fetchall()

    def load(self, staging: Staging, batch: pa.RecordBatch, memory_budget: int) -> None:
        """The batch in the order it was read: a Parquet file of the staging folder, or
        kept for the flush that follows at once."""
        order = pa.array(range(self.order, self.order + batch.num_rows), type=pa.int64())
        self.order += batch.num_rows
        numbered = batch.append_column(ORDER_COLUMN, order)
        share = MEMORY_SHARE if staging.in_files else COMMITTING_MEMORY_SHARE
        with self.lock:
            self.limit_memory(self.cursor, int(share * memory_budget))
        self.statement_bytes = int(memory_budget * STATEMENT_SHARE)
        if staging.in_files:
            self._write_file(Path(staging.name), numbered)
        else:
            self.batch = numbered

    def _write_file(self, folder: Path, batch: pa.RecordBatch) -> None:
        folder.mkdir(exist_ok=True)
        self.staging_folders.add(folder)
        self.staged.append(folder / f"{len(self.staged):08d}.parquet")
        self.staged_columns.update(batch.schema.names)
        self.staged_rows += batch.num_rows
        self.staged_bytes += batch.nbytes
        pq.write_table(pa.Table.from_batches([as_json(batch)]), self.staged[-1])

    def move_staged(self, staging: Staging, move: Move) -> None:
        if staging.in_files:
            self._move_files(move)
        elif self.batch is not None:
            batch, self.batch = self.batch, None
            self._upsert(newest_of_each_key(batch, move.key_columns), move)

    def _upsert(self, batch: pa.RecordBatch, move: Move) -> None:
        """The batch read by DuckDB in place into the table, a few rows a statement
        (what DuckDB copies of them is about STATEMENT_SHARE of the budget): no copy in
        a staging table, nor a sort of it (its keys are distinct already)."""
        name = f"sentry_extract_batch_{next(_BATCH_NAMES)}"
        listed = [
            quote(column) if column in batch.schema.names else f"NULL AS {quote(column)}"
            for column in move.columns
        ]
        rows = max(1, batch.num_rows * self.statement_bytes // max(1, batch.nbytes))
        with self.lock:
            self._begin()
            for start in range(0, batch.num_rows, rows):
                self.cursor.register(name, pa.Table.from_batches([batch.slice(start, rows)]))
                try:
                    self.cursor.execute(
                        f"INSERT INTO {move.table} ({', '.join(map(quote, move.columns))}) "
                        f"SELECT {', '.join(listed)} FROM {quote(name)} {on_conflict(move)}"
                    )
                finally:
                    self.cursor.unregister(name)

    def _move_files(self, move: Move) -> None:
        """The staged files read by DuckDB, streamed into the table: stored rows of the
        keys read are replaced (keeping `move.kept_columns`), the newest read of a key
        wins. No `ON CONFLICT`, and every join built on a small table: DuckDB would hold
        the rows in memory."""
        if not self.staged:
            return
        if self.staged_rows < ROW_GROUP_ROWS:
            with self.lock:
                self.memory_for_commit(self.cursor, int(self.staged_bytes * SMALL_MOVE_SHARE))
        files = ", ".join(_literal(str(path)) for path in self.staged)
        staged = f"read_parquet([{files}], union_by_name = true)"
        keys = ", ".join(map(quote, move.key_columns))
        order = quote(ORDER_COLUMN)
        # Keys read more than once, with their newest read: the others' rows are dropped.
        self.execute(
            f"CREATE OR REPLACE TEMPORARY TABLE {NEWEST} AS SELECT {keys}, max({order}) AS "
            f"{order} FROM {staged} GROUP BY {keys} HAVING count(*) > 1"
        )
        same_key = " AND ".join(
            f"staged.{quote(name)} = newest.{quote(name)}" for name in move.key_columns
        )
        listed = [
            f"staged.{quote(name)}" if name in self.staged_columns else f"NULL AS {quote(name)}"
            for name in move.columns
        ]
        source = (
            f"{staged} AS staged ANTI JOIN {NEWEST} AS newest "
            f"ON {same_key} AND staged.{order} <> newest.{order}"
        )
        read_keys = f"({keys}) IN (SELECT {keys} FROM {staged})"
        columns = move.columns
        if move.kept_columns:
            kept = ", ".join(map(quote, move.kept_columns))
            self.execute(
                f"CREATE OR REPLACE TEMPORARY TABLE {KEPT} AS "
                f"SELECT {keys}, {kept} FROM {move.table} WHERE {read_keys}"
            )
            same_kept = " AND ".join(
                f"staged.{quote(name)} = kept.{quote(name)}" for name in move.key_columns
            )
            source += f" LEFT JOIN {KEPT} AS kept ON {same_kept}"
            listed += [f"kept.{quote(name)}" for name in move.kept_columns]
            columns = (*move.columns, *move.kept_columns)
        self.execute(f"DELETE FROM {move.table} WHERE {read_keys}")
        self.execute(
            f"INSERT INTO {move.table} ({', '.join(map(quote, columns))}) "
            f"SELECT {', '.join(listed)} FROM {source}"
        )
        self.execute(f"DROP TABLE {NEWEST}")
        if move.kept_columns:
            self.execute(f"DROP TABLE {KEPT}")
        for path in self.staged:
            path.unlink()
        self.staged = []
        self.staged_columns = set()
        self.staged_rows = 0
        self.staged_bytes = 0

    def commit(self) -> None:
        with self.lock:
            if self.in_transaction:
                self.in_transaction = False
                try:
                    self.cursor.execute("COMMIT")
                finally:
                    self.memory_for_commit(self.cursor, 0)

    def rollback(self) -> None:
        with self.lock:
            self.batch = None
            if self.in_transaction:
                self.in_transaction = False
                try:
                    self.cursor.execute("ROLLBACK")
                finally:
                    self.memory_for_commit(self.cursor, 0)

    def close(self) -> None:
        with self.lock:
            with suppress(duckdb.Error):
                self.rollback()
            self.cursor.close()
            for folder in self.staging_folders:
                shutil.rmtree(folder, ignore_errors=True)
            self.on_close()


class DuckDBDialect:
    name = "DuckDB"
    default_schema = "main"
    sql_types: Mapping[ColumnType, str] = SQL_TYPES
    column_types: Mapping[str, ColumnType] = COLUMN_TYPES
    widening: Mapping[ColumnType, str] = WIDENING
    json_parameter = "CAST(%s AS JSON)"
    errors: tuple[type[Exception], ...] = (duckdb.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.connection: duckdb.DuckDBPyConnection | None = None
        self.found_locked = False
        self.held_for_run = False  # a stream writes: kept open until the run ends
        self.sessions = 0
        self.memory_limit = 0
        self.raised_for_commit = False

    def open_session(self, table: TableName | None, lock_wait: float) -> DuckDBSession:
        with self.lock:
            if self.connection is None:
                holder = str(table) if table is not None else str(self.path)
                wait = 0.0 if self.found_locked else lock_wait  # the run waited once already
                try:
                    self.connection = open_database(self.path, holder, wait)
                except LockedError:
                    self.found_locked = True
                    raise
            self.held_for_run = self.held_for_run or table is not None
            self.sessions += 1
            return DuckDBSession(
                self.connection.cursor(),
                self.lock,
                self._session_closed,
                self._limit_memory,
                self._memory_for_commit,
            )

    def _limit_memory(self, cursor: duckdb.DuckDBPyConnection, limit: int) -> None:
        """DuckDB's memory limit, the largest a stream asks for (the default is most of
        the machine's memory, which a run of large events would take)."""
        if limit > self.memory_limit:
            self.memory_limit = limit
            cursor.execute(f"SET memory_limit = '{limit // 1_000_000}MB'")

    def _memory_for_commit(self, cursor: duckdb.DuckDBPyConnection, limit: int) -> None:
        """DuckDB's memory limit raised to `limit` for a commit; with 0, put back to the
        largest a stream asks for (once it was raised)."""
        if limit > self.memory_limit:
            self.raised_for_commit = True
            cursor.execute(f"SET memory_limit = '{limit // 1_000_000}MB'")
        elif limit == 0 and self.raised_for_commit:
            self.raised_for_commit = False
            cursor.execute(f"SET memory_limit = '{self.memory_limit // 1_000_000}MB'")

    def _session_closed(self) -> None:
        """Opened only to read or reset state (a dry run, `state show`): let the file go,
        so a run in the same process can open it."""
        with self.lock:
            self.sessions -= 1
            if self.sessions == 0 and not self.held_for_run:
                self.close()

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
                self.memory_limit = 0

    def exclusive(self) -> AbstractContextManager[object]:
        return self.lock

    def describe_error(self, error: Exception) -> str:
        return f"DuckDB: {_first_line(error)}"

    def is_dependency_error(self, error: Exception) -> bool:
        return isinstance(error, duckdb.DependencyException)

    def table_exists(self, session: Session, table: TableName) -> bool:
        rows = session.fetch(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = %s",
            (table.schema, table.table),
        )
        return bool(rows and rows[0][0])

    def ensure_schema(self, session: Session, schema: str) -> None:
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")

    def loads_new_table(self, session: Session, table: TableName, mode: Mode) -> bool:
        """Full refresh, truncate, and a snapshot into a table without rows: the rows of
        one transaction wait in DuckDB's memory (a row group, 2,048 large events, at a
        time: 335 to 341 MB for 40,000 of them), where a new table takes each batch's
        commit. DuckDB has no grants, and its views find the table by name."""
        if mode.appends:
            return not session.fetch(f"SELECT 1 FROM {table.identifier} LIMIT 1")
        return mode.replaces_rows

    def create_staging(
        self, session: Session, load_table: TableName, mode: Mode, new_table: bool
    ) -> Staging:
        """A run that merges by key, or loads a new table, upserts each batch as it
        comes, read in place by DuckDB (moving files into a table that holds rows ran
        out of memory at its commit); a snapshot into a table that holds rows stages
        Parquet files in a folder beside the file, made at the first batch and gone with
        the session, and moves them once, at the commit."""
        if not (mode.merges_by_key or new_table):
            folder = f"{self.path}{STAGING_MARK}{load_table.schema}.{load_table.table}"
            return Staging(folder, in_files=True, flushed_each_batch=False, is_table=False)
        return Staging("", in_files=False, flushed_each_batch=True, is_table=False)

    def create_like(self, session: Session, new: TableName, existing: TableName) -> None:
        """`existing`'s own definition (columns, defaults, constraints, key) under the new
        name, and its comments; its indexes are made again by `swap_in`."""
        found = session.fetch(
            "SELECT sql, comment FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = %s AND table_name = %s",
            (existing.schema, existing.table),
        )
        definition, comment = found[0]
        # `CREATE TABLE name(...)`: a checked name holds no parenthesis, so the first ends it
        session.execute(f"CREATE TABLE {new.identifier}{definition[definition.index('(') :]}")
        if comment is not None:
            session.execute(f"COMMENT ON TABLE {new.identifier} IS {_literal(comment)}")
        for column, column_comment in session.fetch(
            "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = "
            "current_database() AND schema_name = %s AND table_name = %s AND comment IS NOT NULL",
            (existing.schema, existing.table),
        ):
            session.execute(
                f"COMMENT ON COLUMN {new.identifier}.{quote(column)} IS {_literal(column_comment)}"
            )

    def swap_in(self, session: Session, new: TableName, table: TableName) -> None:
        """The table dropped and `new` renamed to its name; the table's indexes (named
        within the schema, so gone with it first) made again on `new`."""
        indexes = session.fetch(
            "SELECT sql FROM duckdb_indexes() WHERE database_name = current_database() "
            "AND schema_name = %s AND table_name = %s AND sql IS NOT NULL",
            (table.schema, table.table),
        )
        session.execute(f"DROP TABLE {table.identifier}")
        session.execute(f"ALTER TABLE {new.identifier} RENAME TO {quote(table.table)}")
        for (statement,) in indexes:
            session.execute(statement)

    def is_any_of(self, expression: str) -> str:
        return f"list_contains(CAST(%s AS VARCHAR[]), {expression})"

    def pairs(self) -> str:
        return (
            "(SELECT unnest(CAST(%s AS VARCHAR[])) AS merged, "
            "unnest(CAST(%s AS VARCHAR[])) AS survivor) AS chain"
        )
