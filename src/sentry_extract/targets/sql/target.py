"""The SQL target: typed tables, staged batches, state in the same transaction.

`object: schema.table` (a bare `table` goes to the dialect's default schema).
Identifiers are always quoted; a name that is not a plain identifier is refused.

Every batch is staged, where the dialect says for the mode (PostgreSQL: a temporary
table; DuckDB: Parquet files, or the batch itself for a mode that merges by key or
loads a new table). A flush, at each checkpoint and at the commit, moves the staged
rows into the load table in the open transaction, so that the newest read of a key wins
and a key never appears twice. Where the staging says so (DuckDB), each batch is
flushed and committed as it comes: the run commits as it goes anyway, or loads a new
table that no reader sees before the swap.

- full-refresh: loads a new table and swaps it in (drop + rename) in the commit's
  transaction: readers see the old rows or the new rows.
- truncate: TRUNCATE and the inserts in one transaction (the table emptied before its
  first rows), keeping the table's definition, grants and indexes. Where the dialect
  says so (DuckDB, which has no grants), it loads a new table made from the table's
  definition and swaps it in, as a full refresh does.
- incremental / backfill: merges by primary key at every checkpoint, committing the
  rows and the state together (per project for events).
- snapshot: appends the run's rows with `_snapshot_at` (part of the key); where the
  dialect says so (DuckDB, into a table without rows), as a new table swapped in.

A column whose type changes (a field no schema declares, now text where it was a
number) is widened in place (`ALTER COLUMN ... TYPE`, in the batch's transaction) to
the type `records.widen` chooses, with a warning; values are converted, never dropped.

Each stream holds a lock: a second run on the same table waits a little, then stops
with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import msgspec
import pyarrow as pa

from sentry_extract.errors import ConfigError, TargetError
from sentry_extract.model.spec import ColumnType
from sentry_extract.model.windows import Window
from sentry_extract.records import (
    DELETED_COLUMN,
    MERGED_COLUMN,
    SNAPSHOT_COLUMN,
    arrow_field,
    column_type_of,
    conform,
    warn_widened,
    widen,
)
from sentry_extract.state import StateKey, StateStore, StreamState
from sentry_extract.targets.base import Deletions, StreamRequest
from sentry_extract.targets.sql.dialect import (
    IDENTIFIER,
    NEW_TABLE_SUFFIX,
    STATE_TABLE,
    Dialect,
    Move,
    Session,
    TableName,
    quote,
)


def parse_table_name(object_name: str, dialect: Dialect) -> TableName:
    """`schema.table` or `table`; raises ConfigError for anything else."""
    parts = object_name.split(".")
    if len(parts) == 1:
        parts = [dialect.default_schema, *parts]
    if len(parts) != 2 or not all(IDENTIFIER.match(part) for part in parts):
        raise ConfigError(
            f"'{object_name}' is not a {dialect.name} table name: use schema.table with "
            "letters, digits and underscores (e.g. sentry.{stream_name})"
        )
    table = TableName(*parts)
    if table.table.endswith(NEW_TABLE_SUFFIX) or table.table == STATE_TABLE:
        raise ConfigError(f"'{object_name}' is a name sentry-extract keeps for itself")
    return table


class SqlTarget:
    def __init__(self, dialect: Dialect, lock_wait: float = 10.0) -> None:
        self.dialect = dialect
        self.lock_wait = lock_wait

    def object_problem(self, object_name: str) -> str | None:
        try:
            parse_table_name(object_name, self.dialect)
        except ConfigError as error:
            return error.message
        return None

    def state_store(self, object_name: str) -> SqlStateStore:
        return SqlStateStore(self.dialect, parse_table_name(object_name, self.dialect).schema)

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> SqlStreamWriter:
        return SqlStreamWriter(self.dialect, request, self.lock_wait, external_state)

    def close(self) -> None:
        self.dialect.close()


class SqlStateStore:
    """State rows in `<schema>._sentry_extract_state`, one per stream key."""

    def __init__(self, dialect: Dialect, schema: str | None = None) -> None:
        self.dialect = dialect
        self.table = TableName(schema or dialect.default_schema, STATE_TABLE)

    def describe(self) -> str:
        return f"table {self.table}"

    def _session(self) -> Session:
        return self.dialect.open_session(None, 0.0)

    def load(self, key: StateKey) -> StreamState:
        session = self._session()
        try:
            return load_state(self.dialect, session, self.table, key)
        finally:
            session.close()

    def save(self, key: StateKey, state: StreamState) -> None:
        session = self._session()
        try:
            ensure_state_table(self.dialect, session, self.table)
            save_state(self.dialect, session, self.table, key, state)
            session.commit()
        finally:
            session.close()

    def reset(self, key: StateKey) -> bool:
        session = self._session()
        try:
            if not self.dialect.table_exists(session, self.table):
                return False
            statement = "WHERE state_key = %s"
            found = session.fetch(
                f"SELECT count(*) FROM {self.table.identifier} {statement}", (key.as_text(),)
            )
            session.execute(f"DELETE FROM {self.table.identifier} {statement}", (key.as_text(),))
            session.commit()
            return bool(found and found[0][0])
        finally:
            session.close()


def ensure_state_table(dialect: Dialect, session: Session, table: TableName) -> None:
    dialect.ensure_schema(session, table.schema)
    types = dialect.sql_types
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {table.identifier} (state_key {types[ColumnType.TEXT]} "
        f"PRIMARY KEY, source {types[ColumnType.TEXT]} NOT NULL, organization "
        f"{types[ColumnType.TEXT]} NOT NULL, stream {types[ColumnType.TEXT]} NOT NULL, "
        f"object {types[ColumnType.TEXT]} NOT NULL, state {types[ColumnType.JSON]} NOT NULL, "
        f"updated_at {types[ColumnType.TIMESTAMP]} NOT NULL DEFAULT now())"
    )


def load_state(dialect: Dialect, session: Session, table: TableName, key: StateKey) -> StreamState:
    if not dialect.table_exists(session, table):
        return StreamState()
    rows = session.fetch(
        f"SELECT state FROM {table.identifier} WHERE state_key = %s", (key.as_text(),)
    )
    if not rows:
        return StreamState()
    stored = rows[0][0]
    return StreamState.from_json(json.loads(stored) if isinstance(stored, str) else stored)


def save_state(
    dialect: Dialect, session: Session, table: TableName, key: StateKey, state: StreamState
) -> None:
    session.execute(
        f"INSERT INTO {table.identifier} (state_key, source, organization, stream, object, "
        f"state) VALUES (%s, %s, %s, %s, %s, {dialect.json_parameter}) ON CONFLICT "
        "(state_key) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
        (
            key.as_text(),
            key.source,
            key.organization,
            key.stream,
            key.object,
            msgspec.json.encode(state.to_json()).decode(),
        ),
    )


def column_definitions(dialect: Dialect, schema: pa.Schema) -> list[tuple[str, str]]:
    return [
        (
            field.name,
            dialect.sql_types[
                column_type_of(field) if field.name != SNAPSHOT_COLUMN else ColumnType.TIMESTAMP
            ],
        )
        for field in schema
    ]


def column_types(
    dialect: Dialect, session: Session, table: TableName
) -> dict[str, ColumnType | None]:
    """Each column's type; None for a type we never create (a column of the user's)."""
    rows = session.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (table.schema, table.table),
    )
    return {row[0]: dialect.column_types.get(row[1]) for row in rows}


def add_columns(session: Session, table: str, definitions: list[tuple[str, str]]) -> None:
    for name, sql_type in definitions:
        session.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(name)} {sql_type}")


class SqlStreamWriter:
    def __init__(
        self,
        dialect: Dialect,
        request: StreamRequest,
        lock_wait: float,
        external_state: StateStore | None = None,
    ) -> None:
        self.dialect = dialect
        self.request = request
        self.target = parse_table_name(request.object, dialect)
        self.state_table = self.target.sibling(STATE_TABLE)
        self.external_state = external_state
        self.snapshot = request.mode.appends
        self.key_columns = (*request.key_columns, *((SNAPSHOT_COLUMN,) if self.snapshot else ()))
        self.rows = 0
        self.pending_state: StreamState | None = None
        self.pending_deletions: Deletions | None = None
        self.written_columns: set[str] = set()
        self.truncated = False
        self.swaps = False  # a new table is loaded, and swapped in at the commit
        self.session = dialect.open_session(self.target, lock_wait)
        with dialect.exclusive():  # a failed set-up ends before another stream's starts
            try:
                self._prepare()
            except dialect.errors as error:
                self.session.close()
                raise self._error(error) from None
            except BaseException:
                self.session.close()
                raise

    def _error(self, error: Exception) -> TargetError:
        return TargetError(f"{self.target}: {self.dialect.describe_error(error)}")

    # --- set-up ------------------------------------------------------------------------

    def _prepare(self) -> None:
        session = self.session
        base = self.request.base_schema
        if self.snapshot:
            base = base.append(pa.field(SNAPSHOT_COLUMN, pa.timestamp("us", tz="UTC")))
        self.dialect.ensure_schema(session, self.target.schema)
        if self.external_state is None:
            ensure_state_table(self.dialect, session, self.state_table)
        if not self.dialect.table_exists(session, self.target):
            self._create_table(self.target, base)
        self._add_missing_columns(self.target, base)
        session.commit()  # the table exists from here on, whatever happens to the run
        self.load_table = self.target
        self.swaps = self.dialect.loads_new_table(session, self.target, self.request.mode)
        if self.swaps:
            self.load_table = self.target.sibling(self.target.table[:40] + NEW_TABLE_SUFFIX)
            session.execute(f"DROP TABLE IF EXISTS {self.load_table.identifier}")
            self.dialect.create_like(session, self.load_table, self.target)
        self.staging = self.dialect.create_staging(
            session, self.load_table, self.request.mode, self.swaps
        )
        self.columns = column_types(self.dialect, session, self.load_table)

    def _create_table(self, table: TableName, schema: pa.Schema) -> None:
        definitions = [
            f"{quote(name)} {sql_type}"
            for name, sql_type in column_definitions(self.dialect, schema)
        ]
        definitions.append(f"PRIMARY KEY ({', '.join(map(quote, self.key_columns))})")
        self.session.execute(f"CREATE TABLE {table.identifier} ({', '.join(definitions)})")

    def _add_missing_columns(self, table: TableName, schema: pa.Schema) -> None:
        """A field the API added becomes a column; no column is ever dropped."""
        present = column_types(self.dialect, self.session, table)
        missing = [
            definition
            for definition in column_definitions(self.dialect, schema)
            if definition[0] not in present
        ]
        add_columns(self.session, table.identifier, missing)

    # --- StreamWriter --------------------------------------------------------------------

    def load_state(self) -> StreamState:
        if self.external_state is not None:
            return self.external_state.load(self.request.state_key)
        try:
            with self.dialect.exclusive():
                state = load_state(
                    self.dialect, self.session, self.state_table, self.request.state_key
                )
                self.session.commit()
        except self.dialect.errors as error:
            raise self._error(error) from None
        return state

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.snapshot:
            moment = pa.scalar(self.request.run_started_at, type=pa.timestamp("us", tz="UTC"))
            column = pa.array([moment.value] * batch.num_rows, type=moment.type)
            batch = batch.append_column(pa.field(SNAPSHOT_COLUMN, moment.type), column)
        try:
            with self.dialect.exclusive():
                self._add_new_columns(batch.schema)
                self.session.load(
                    self.staging, self._in_stored_types(batch), self.request.memory_budget
                )
        except self.dialect.errors as error:
            raise self._error(error) from None
        self.written_columns.update(batch.schema.names)
        self.rows += batch.num_rows
        if self.staging.flushed_each_batch:
            try:
                with self.dialect.exclusive():
                    self._flush()
                    if self.swaps or self.request.mode.merges_by_key:
                        self.session.commit()
            except self.dialect.errors as error:
                raise self._error(error) from None

    def _add_new_columns(self, schema: pa.Schema) -> None:
        new_columns = [name for name in schema.names if name not in self.columns]
        if not new_columns:
            return
        extra = pa.schema([schema.field(name) for name in new_columns])
        definitions = column_definitions(self.dialect, extra)
        # Not the live table when a new one is loaded: that would lock out its readers.
        add_columns(self.session, self.load_table.identifier, definitions)
        if self.staging.is_table:  # files and batches take any columns
            add_columns(self.session, self.staging.name, definitions)
        self.columns.update({field.name: column_type_of(field) for field in extra})

    def checkpoint(self, state: StreamState | None) -> None:
        self.pending_state = state
        if self.request.mode.merges_by_key:
            with self.dialect.exclusive():
                self._commit_work()

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        condition = "TRUE"
        if DELETED_COLUMN in self.columns:  # streams whose rows never vanish have none
            condition = f"{quote(DELETED_COLUMN)} IS NULL"
        parameters: list[Any] = []
        if window is not None and column is not None:
            condition += f" AND {quote(column)} >= %s AND {quote(column)} < %s"
            parameters = [window.start, window.end]
        statement = (
            f"SELECT {self._key_expression()} FROM {self.load_table.identifier} WHERE {condition}"
        )
        try:
            with self.dialect.exclusive():
                rows = self.session.fetch(statement, parameters)
        except self.dialect.errors as error:
            self.session.rollback()
            raise self._error(error) from None
        return {row[0] for row in rows if row[0] is not None}

    def mark_deleted(
        self,
        keys: Collection[str],
        moment: datetime,
        merged_into: Mapping[str, str] | None = None,
    ) -> None:
        self.pending_deletions = Deletions.of(keys, moment, merged_into)

    def _key_expression(self) -> str:
        """The key as text, composite keys joined like `records.key_values`."""
        text = self.dialect.sql_types[ColumnType.TEXT]
        return " || chr(31) || ".join(f"CAST({quote(name)} AS {text})" for name in self.key_columns)

    def _apply_deletions(self) -> None:
        deletions, self.pending_deletions = self.pending_deletions, None
        if not deletions or not deletions.keys:
            return
        deleted = quote(DELETED_COLUMN)
        self.session.execute(
            f"UPDATE {self.load_table.identifier} SET {deleted} = %s WHERE {deleted} IS NULL "
            f"AND {self.dialect.is_any_of(self._key_expression())}",
            (deletions.moment, sorted(deletions.keys)),
        )
        chains = deletions.chains
        if not chains:
            return
        # Rows merged away now, and rows merged into them before, name the survivor.
        table, merged = self.load_table.identifier, quote(MERGED_COLUMN)
        self.session.execute(
            f"UPDATE {table} SET {merged} = chain.survivor FROM {self.dialect.pairs()} "
            f"WHERE {self._key_expression()} = chain.merged OR {table}.{merged} = chain.merged",
            (list(chains), list(chains.values())),
        )

    def commit(self) -> int:
        try:
            with self.dialect.exclusive():
                self._replace_rows()
                self._commit_work()
        except self.dialect.errors as error:
            if self.request.mode.replaces_table and self.dialect.is_dependency_error(error):
                raise TargetError(
                    f"{self.target}: full-refresh replaces the table, and other objects (views) "
                    "depend on it; use mode truncate to keep them"
                ) from None
            raise self._error(error) from None
        finally:
            self.session.close()
        return self.rows

    def _replace_rows(self) -> None:
        if self.swaps:
            self._flush()
            self.dialect.swap_in(self.session, self.load_table, self.target)
            self.load_table = self.target
        elif self.request.mode.replaces_rows:
            self._truncate()

    def _truncate(self) -> None:
        """The table emptied once, in the run's transaction, before its first rows."""
        if not self.truncated:
            self.truncated = True
            self.session.execute(f"TRUNCATE {self.target.identifier}")

    def abort(self) -> None:
        """The open transaction rolled back; a new table that batches were committed
        into is dropped (a run killed before this drops it at its start)."""
        try:
            with self.dialect.exclusive():
                self.session.rollback()
                if self.staging.flushed_each_batch and self.load_table != self.target:
                    self.session.execute(f"DROP TABLE IF EXISTS {self.load_table.identifier}")
                    self.session.commit()
        except self.dialect.errors:
            pass
        finally:
            self.session.close()

    # --- loading -------------------------------------------------------------------------

    def _in_stored_types(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch in its columns' types, widening a column whose type changed."""
        fields = []
        converted = False
        for field in batch.schema:
            stored = self.columns.get(field.name)
            arriving = column_type_of(field)
            if field.name == SNAPSHOT_COLUMN or stored is None or stored is arriving:
                fields.append(field)
                continue
            wider = widen(stored, arriving)
            if wider is not stored:
                warn_widened(field.name, stored, arriving, wider)
                if self.staging.in_files:  # staged files keep the narrower type
                    self._flush()
                self._change_type(self.load_table.identifier, field.name, wider)
                if self.staging.is_table:
                    self._change_type(self.staging.name, field.name, wider)
                self.columns[field.name] = wider
            fields.append(arrow_field(field.name, wider))
            converted = True
        return conform(batch, pa.schema(fields)) if converted else batch

    def _change_type(self, table: str, column: str, column_type: ColumnType) -> None:
        name = quote(column)
        self.session.execute(
            f"ALTER TABLE {table} ALTER COLUMN {name} TYPE "
            f"{self.dialect.sql_types[column_type]} USING "
            f"{self.dialect.widening[column_type].format(name)}"
        )

    def _flush(self) -> None:
        """Staged rows into the load table: one row per key, the last read wins."""
        if not self.written_columns:
            return
        if self.request.mode.replaces_rows and not self.swaps:
            self._truncate()
        columns = tuple(sorted(self.written_columns))
        kept = tuple(name for name in self.columns if name not in self.written_columns)
        move = Move(self.load_table.identifier, columns, self.key_columns, kept)
        self.session.move_staged(self.staging, move)

    def _commit_work(self) -> None:
        """Rows and the state that covers them, in one transaction."""
        try:
            self._flush()
            self._apply_deletions()
            if self.pending_state is not None and self.external_state is None:
                save_state(
                    self.dialect,
                    self.session,
                    self.state_table,
                    self.request.state_key,
                    self.pending_state,
                )
            self.session.commit()
        except self.dialect.errors as error:
            raise self._error(error) from None
        if self.pending_state is not None and self.external_state is not None:
            self.external_state.save(self.request.state_key, self.pending_state)
