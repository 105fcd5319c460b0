"""The PostgreSQL target: typed tables, COPY in batches, state in the same transaction.

`object: schema.table` (a bare `table` goes to `public`). Identifiers are always
quoted with `sql.Identifier`; a name that is not a plain identifier is refused.

Every batch is COPYed into a temporary staging table. A flush moves the staged rows
into the load table with `INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO
UPDATE`, so the newest read of a key wins and a key never appears twice.

- full-refresh: loads a new table and swaps it in (drop + rename) in the commit's
  transaction: readers see the old rows or the new rows.
- truncate: stages everything, then TRUNCATE and insert in one transaction, keeping
  the table's definition, grants and indexes.
- incremental / backfill: merges by primary key at every checkpoint, committing the
  rows and the state together (per project for events).
- snapshot: appends the run's rows with `_snapshot_at` (part of the key).

A column whose type changes (a field no schema declares, now text where it was a
number) is widened in place (`ALTER COLUMN ... TYPE`, in the batch's transaction) to
the type `records.widen` chooses, with a warning; values are converted, never dropped.

Each stream holds a session advisory lock: a second run on the same table waits a
little, then stops with a clear message.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from sentry_extract.errors import ConfigError, LockedError, TargetError
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
from sentry_extract.source.streams import ColumnType
from sentry_extract.source.windows import Window
from sentry_extract.state import StateKey, StateStore, StreamState
from sentry_extract.targets.base import Deletions, StreamRequest

STATE_TABLE = "_sentry_extract_state"
NEW_TABLE_SUFFIX = "__sentry_extract_new"
ORDER_COLUMN = "_sentry_extract_order"
DEFAULT_SCHEMA = "public"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")

SQL_TYPES = {
    ColumnType.TEXT: "text",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamptz",
    ColumnType.JSON: "jsonb",
}
COLUMN_TYPES = {sql_type: column_type for column_type, sql_type in SQL_TYPES.items()}
COLUMN_TYPES["timestamp with time zone"] = ColumnType.TIMESTAMP
WIDENING = {  # how stored values become the wider type
    ColumnType.TEXT: "{}::text",
    ColumnType.FLOAT: "{}::double precision",
    ColumnType.JSON: "to_jsonb({})",
}
COPY_SHARE = 32  # the CSV text being copied: a thirty-second of the memory budget, about
REPLACEMENT = "\ufffd"  # PostgreSQL text cannot hold NUL characters


@dataclass(frozen=True)
class TableName:
    schema: str
    table: str

    @property
    def identifier(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))

    def sibling(self, table: str) -> TableName:
        return TableName(self.schema, table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


def parse_table_name(object_name: str) -> TableName:
    """`schema.table` or `table`; raises ConfigError for anything else."""
    parts = object_name.split(".")
    if len(parts) == 1:
        parts = [DEFAULT_SCHEMA, *parts]
    if len(parts) != 2 or not all(IDENTIFIER.match(part) for part in parts):
        raise ConfigError(
            f"'{object_name}' is not a PostgreSQL table name: use schema.table with letters, "
            "digits and underscores (e.g. sentry.{stream_name})"
        )
    table = TableName(*parts)
    if table.table.endswith(NEW_TABLE_SUFFIX) or table.table == STATE_TABLE:
        raise ConfigError(f"'{object_name}' is a name sentry-extract keeps for itself")
    return table


def connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, connect_timeout=10, application_name="sentry-extract")
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"the PostgreSQL URL is not valid: {_first_line(error)}") from None
    except psycopg.OperationalError as error:
        raise TargetError(describe_connection_error(error)) from None


def _first_line(error: psycopg.Error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_connection_error(error: psycopg.Error) -> str:
    """psycopg's message, first line, with what it most likely means."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    lowered = text.lower()
    if "password authentication failed" in lowered or "authentication" in lowered:
        return f"PostgreSQL authentication failed: {text}"
    if "database" in lowered and "does not exist" in lowered:
        return f"PostgreSQL database missing: {text}"
    if any(
        word in lowered
        for word in (
            "refused",
            "could not translate",
            "timeout",
            "no such file",
            "unreachable",
            "timed out",
        )
    ):
        return f"PostgreSQL host unreachable: {text}"
    return f"PostgreSQL: {text}"


def test_postgres(url: str) -> str:
    with connect(url) as connection:
        version = connection.execute("SHOW server_version").fetchone()
    return f"ok: PostgreSQL {version[0] if version else '?'}"


class PostgresTarget:
    def __init__(self, url: str, lock_wait: float = 10.0) -> None:
        self.url = url
        self.lock_wait = lock_wait

    def object_problem(self, object_name: str) -> str | None:
        try:
            parse_table_name(object_name)
        except ConfigError as error:
            return error.message
        return None

    def state_store(self, object_name: str) -> PostgresStateStore:
        return PostgresStateStore(self.url, parse_table_name(object_name).schema)

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> PostgresStreamWriter:
        return PostgresStreamWriter(self.url, request, self.lock_wait, external_state)

    def close(self) -> None:
        return None


class PostgresStateStore:
    """State rows in `<schema>._sentry_extract_state`, one per stream key."""

    def __init__(self, url: str, schema: str = DEFAULT_SCHEMA) -> None:
        self.url = url
        self.table = TableName(schema, STATE_TABLE)

    def describe(self) -> str:
        return f"table {self.table}"

    def load(self, key: StateKey) -> StreamState:
        with connect(self.url) as connection:
            return load_state(connection, self.table, key)

    def save(self, key: StateKey, state: StreamState) -> None:
        with connect(self.url) as connection:
            ensure_state_table(connection, self.table)
            save_state(connection, self.table, key, state)

    def reset(self, key: StateKey) -> bool:
        with connect(self.url) as connection:
            if not table_exists(connection, self.table):
                return False
            deleted = connection.execute(
                sql.SQL("DELETE FROM {} WHERE state_key = %s").format(self.table.identifier),
                (key.as_text(),),
            )
            return deleted.rowcount > 0


def table_exists(connection: psycopg.Connection[Any], table: TableName) -> bool:
    row = connection.execute(
        "SELECT to_regclass(%s)", (str(table.identifier.as_string(connection)),)
    ).fetchone()
    return bool(row and row[0])


def ensure_schema(connection: psycopg.Connection[Any], schema: str) -> None:
    """CREATE SCHEMA IF NOT EXISTS races with itself: streams take turns (until commit)."""
    connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sentry_extract:ddl:{schema}",)
    )
    connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def ensure_state_table(connection: psycopg.Connection[Any], table: TableName) -> None:
    ensure_schema(connection, table.schema)
    connection.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (state_key text PRIMARY KEY, source text NOT NULL, "
            "organization text NOT NULL, stream text NOT NULL, object text NOT NULL, "
            "state jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(table.identifier)
    )


def load_state(connection: psycopg.Connection[Any], table: TableName, key: StateKey) -> StreamState:
    if not table_exists(connection, table):
        return StreamState()
    row = connection.execute(
        sql.SQL("SELECT state FROM {} WHERE state_key = %s").format(table.identifier),
        (key.as_text(),),
    ).fetchone()
    return StreamState.from_json(row[0]) if row else StreamState()


def save_state(
    connection: psycopg.Connection[Any], table: TableName, key: StateKey, state: StreamState
) -> None:
    connection.execute(
        sql.SQL(
            "INSERT INTO {} (state_key, source, organization, stream, object, state) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (state_key) DO UPDATE SET "
            "state = EXCLUDED.state, updated_at = now()"
        ).format(table.identifier),
        (
            key.as_text(),
            key.source,
            key.organization,
            key.stream,
            key.object,
            msgspec.json.encode(state.to_json()).decode(),
        ),
    )


def column_definitions(schema: pa.Schema) -> list[tuple[str, str]]:
    return [
        (
            field.name,
            SQL_TYPES[column_type_of(field)] if field.name != SNAPSHOT_COLUMN else "timestamptz",
        )
        for field in schema
    ]


class PostgresStreamWriter:
    def __init__(
        self,
        url: str,
        request: StreamRequest,
        lock_wait: float,
        external_state: StateStore | None = None,
    ) -> None:
        self.request = request
        self.target = parse_table_name(request.object)
        self.state_table = self.target.sibling(STATE_TABLE)
        self.external_state = external_state
        self.snapshot = request.mode.appends
        self.key_columns = (*request.key_columns, *((SNAPSHOT_COLUMN,) if self.snapshot else ()))
        self.rows = 0
        self.pending_state: StreamState | None = None
        self.pending_deletions: Deletions | None = None
        self.written_columns: set[str] = set()
        self.connection = connect(url)
        try:
            self._take_lock(lock_wait)
            self._prepare()
        except psycopg.Error as error:
            self.connection.close()
            raise TargetError(f"{self.target}: {describe_connection_error(error)}") from None
        except BaseException:
            self.connection.close()
            raise

    # --- set-up ------------------------------------------------------------------------

    def _take_lock(self, wait: float) -> None:
        key = f"sentry_extract:{self.target}"
        deadline = time.monotonic() + wait
        while True:
            row = self.connection.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
            ).fetchone()
            self.connection.commit()
            if row and row[0]:
                return
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another sentry-extract run is loading {self.target}; waited {wait:.0f}s. "
                    "Let it finish, or check for a stuck run"
                )
            time.sleep(0.2)

    def _prepare(self) -> None:
        connection = self.connection
        base = self.request.base_schema
        if self.snapshot:
            base = base.append(pa.field(SNAPSHOT_COLUMN, pa.timestamp("us", tz="UTC")))
        ensure_schema(connection, self.target.schema)
        if self.external_state is None:
            ensure_state_table(connection, self.state_table)
        if not table_exists(connection, self.target):
            self._create_table(self.target, base)
        self._add_missing_columns(self.target, base)
        connection.commit()  # the table exists from here on, whatever happens to the run
        self.load_table = self.target
        if self.request.mode.replaces_table:
            self.load_table = self.target.sibling(self.target.table[:40] + NEW_TABLE_SUFFIX)
            connection.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(self.load_table.identifier)
            )
            connection.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    self.load_table.identifier, self.target.identifier
                )
            )
        self.staging = TableName("pg_temp", "sentry_extract_staging")
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.staging.identifier))
        connection.execute(
            sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(self.staging.table), self.load_table.identifier
            )
        )
        connection.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint GENERATED ALWAYS AS IDENTITY").format(
                self.staging.identifier, sql.Identifier(ORDER_COLUMN)
            )
        )
        self.columns = self._column_types(self.load_table)

    def _create_table(self, table: TableName, schema: pa.Schema) -> None:
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type))
            for name, sql_type in column_definitions(schema)
        ]
        definitions.append(
            sql.SQL("PRIMARY KEY ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, self.key_columns))
            )
        )
        self.connection.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                table.identifier, sql.SQL(", ").join(definitions)
            )
        )

    def _column_types(self, table: TableName) -> dict[str, ColumnType | None]:
        """Each column's type; None for a type we never create (a column of the user's)."""
        rows = self.connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (table.schema, table.table),
        ).fetchall()
        return {row[0]: COLUMN_TYPES.get(row[1]) for row in rows}

    def _add_missing_columns(self, table: TableName, schema: pa.Schema) -> None:
        """A field the API added becomes a column; no column is ever dropped."""
        present = self._column_types(table)
        for name, sql_type in column_definitions(schema):
            if name not in present:
                self.connection.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        table.identifier, sql.Identifier(name), sql.SQL(sql_type)
                    )
                )

    # --- StreamWriter --------------------------------------------------------------------

    def load_state(self) -> StreamState:
        if self.external_state is not None:
            return self.external_state.load(self.request.state_key)
        try:
            state = load_state(self.connection, self.state_table, self.request.state_key)
            self.connection.commit()
        except psycopg.Error as error:
            raise TargetError(f"{self.target}: {describe_connection_error(error)}") from None
        return state

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.snapshot:
            moment = pa.scalar(self.request.run_started_at, type=pa.timestamp("us", tz="UTC"))
            column = pa.array([moment.value] * batch.num_rows, type=moment.type)
            batch = batch.append_column(pa.field(SNAPSHOT_COLUMN, moment.type), column)
        try:
            new_columns = [name for name in batch.schema.names if name not in self.columns]
            if new_columns:
                extra = pa.schema([batch.schema.field(name) for name in new_columns])
                # Not the live table during a full-refresh: that would lock out its readers.
                for table in {self.load_table, self.staging}:
                    self._add_missing_columns(table, extra)
                self.columns.update({field.name: column_type_of(field) for field in extra})
            self._copy(self._in_stored_types(batch))
        except psycopg.Error as error:
            raise TargetError(f"{self.target}: {describe_connection_error(error)}") from None
        self.written_columns.update(batch.schema.names)
        self.rows += batch.num_rows

    def checkpoint(self, state: StreamState | None) -> None:
        self.pending_state = state
        if self.request.mode.merges_by_key:
            self._commit_work()

    def live_keys(self, column: str | None, window: Window | None) -> set[str]:
        key = self._key_expression()
        condition: sql.Composable = sql.SQL("TRUE")
        if DELETED_COLUMN in self.columns:  # streams whose rows never vanish have none
            condition = sql.SQL("{} IS NULL").format(sql.Identifier(DELETED_COLUMN))
        params: list[Any] = []
        if window is not None and column is not None:
            condition = sql.SQL("{} AND {} >= %s AND {} < %s").format(
                condition, sql.Identifier(column), sql.Identifier(column)
            )
            params = [window.start, window.end]
        try:
            rows = self.connection.execute(
                sql.SQL("SELECT {} FROM {} WHERE {}").format(
                    key, self.load_table.identifier, condition
                ),
                params,
            ).fetchall()
        except psycopg.Error as error:
            self.connection.rollback()
            raise TargetError(f"{self.target}: {describe_connection_error(error)}") from None
        return {row[0] for row in rows if row[0] is not None}

    def mark_deleted(
        self,
        keys: Collection[str],
        moment: datetime,
        merged_into: Mapping[str, str] | None = None,
    ) -> None:
        self.pending_deletions = Deletions(frozenset(keys), moment, dict(merged_into or {}))

    def _key_expression(self) -> sql.Composable:
        """The key as text, composite keys joined like `records.key_values`."""
        parts = [sql.SQL("{}::text").format(sql.Identifier(name)) for name in self.key_columns]
        return sql.SQL(" || chr(31) || ").join(parts)

    def _apply_deletions(self) -> None:
        deletions, self.pending_deletions = self.pending_deletions, None
        if not deletions or not deletions.keys:
            return
        self.connection.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE {} IS NULL AND {} = ANY(%s)").format(
                self.load_table.identifier,
                sql.Identifier(DELETED_COLUMN),
                sql.Identifier(DELETED_COLUMN),
                self._key_expression(),
            ),
            (deletions.moment, sorted(deletions.keys)),
        )
        chains = deletions.chains
        if not chains:
            return
        # Rows merged away now, and rows merged into them before, name the survivor.
        self.connection.execute(
            sql.SQL(
                "UPDATE {table} SET {merged} = chain.survivor "
                "FROM unnest(%s::text[], %s::text[]) AS chain(merged, survivor) "
                "WHERE {key} = chain.merged OR {table}.{merged} = chain.merged"
            ).format(
                table=self.load_table.identifier,
                merged=sql.Identifier(MERGED_COLUMN),
                key=self._key_expression(),
            ),
            (list(chains), list(chains.values())),
        )

    def commit(self) -> int:
        try:
            if self.request.mode.replaces_table:
                self._flush()
                self.connection.execute(sql.SQL("DROP TABLE {}").format(self.target.identifier))
                self.connection.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        self.load_table.identifier, sql.Identifier(self.target.table)
                    )
                )
                self.load_table = self.target
            elif self.request.mode.replaces_rows:
                self.connection.execute(sql.SQL("TRUNCATE {}").format(self.target.identifier))
            self._commit_work()
        except psycopg.errors.DependentObjectsStillExist:
            raise TargetError(
                f"{self.target}: full-refresh replaces the table, and other objects (views) "
                "depend on it; use mode truncate to keep them"
            ) from None
        finally:
            self.connection.close()
        return self.rows

    def abort(self) -> None:
        try:
            self.connection.rollback()
        except psycopg.Error:
            pass
        finally:
            self.connection.close()

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
                for table in {self.load_table, self.staging}:
                    self._change_type(table, field.name, wider)
                self.columns[field.name] = wider
            fields.append(arrow_field(field.name, wider))
            converted = True
        return conform(batch, pa.schema(fields)) if converted else batch

    def _change_type(self, table: TableName, column: str, column_type: ColumnType) -> None:
        name = sql.Identifier(column)
        self.connection.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}").format(
                table.identifier,
                name,
                sql.SQL(SQL_TYPES[column_type]),
                sql.SQL(WIDENING[column_type]).format(name),
            )
        )

    def _copy(self, batch: pa.RecordBatch) -> None:
        """The batch as CSV text, a few rows at a time: the text being copied stays a
        small part of the memory budget, whatever the batch holds."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            self.staging.identifier, sql.SQL(", ").join(map(sql.Identifier, batch.schema.names))
        )
        options = csv_options(batch, max(1, self.request.memory_budget // COPY_SHARE))
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            sink = pa.PythonFile(CopySink(copy), mode="w")
            pacsv.write_csv(_without_nul(batch), sink, write_options=options)

    def _flush(self) -> None:
        """Staged rows into the load table: one row per key, the last read wins."""
        if not self.written_columns:
            return
        columns = sorted(self.written_columns)
        keys = [sql.Identifier(name) for name in self.key_columns]
        updates = [name for name in columns if name not in self.key_columns]
        conflict = (
            sql.SQL("DO NOTHING")
            if not updates
            else sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in updates
                )
            )
        )
        self.connection.execute(
            sql.SQL(
                "INSERT INTO {target} ({columns}) SELECT DISTINCT ON ({keys}) {columns} "
                "FROM {staging} ORDER BY {keys}, {order} DESC ON CONFLICT ({keys}) {conflict}"
            ).format(
                target=self.load_table.identifier,
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                keys=sql.SQL(", ").join(keys),
                staging=self.staging.identifier,
                order=sql.Identifier(ORDER_COLUMN),
                conflict=conflict,
            )
        )
        self.connection.execute(sql.SQL("TRUNCATE {}").format(self.staging.identifier))

    def _commit_work(self) -> None:
        """Rows and the state that covers them, in one transaction."""
        try:
            self._flush()
            self._apply_deletions()
            if self.pending_state is not None and self.external_state is None:
                save_state(
                    self.connection, self.state_table, self.request.state_key, self.pending_state
                )
            self.connection.commit()
        except psycopg.Error as error:
            raise TargetError(f"{self.target}: {describe_connection_error(error)}") from None
        if self.pending_state is not None and self.external_state is not None:
            self.external_state.save(self.request.state_key, self.pending_state)


class CopySink(io.RawIOBase):
    """A file Arrow's CSV writer writes into: each piece of text goes to the COPY."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self.copy = copy

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.copy.write(data)
        return len(data)


def csv_options(batch: pa.RecordBatch, text_bytes: int) -> pacsv.WriteOptions:
    """CSV without a header, converted a piece of about `text_bytes` at a time."""
    row_bytes = max(1, batch.nbytes // max(batch.num_rows, 1))
    return pacsv.WriteOptions(
        include_header=False,
        quoting_style="needed",
        batch_size=max(1, text_bytes // row_bytes),
    )


def _without_nul(batch: pa.RecordBatch) -> pa.RecordBatch:
    """PostgreSQL text and jsonb cannot hold NUL: it becomes U+FFFD."""
    arrays = []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_string(field.type):
            pattern = "\\u0000" if column_type_of(field) is ColumnType.JSON else "\x00"
            replacement = "\\ufffd" if column_type_of(field) is ColumnType.JSON else REPLACEMENT
            if _may_hold(array, pattern):
                array = pc.replace_substring(array, pattern, replacement)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _may_hold(array: pa.Array, text: str) -> bool:
    """A byte scan of the array's data in place, far quicker than a replace that copies
    it all.

    A slice's buffer is its parent's, so a match may lie outside it: then it only costs
    the replace."""
    data = array.buffers()[2]
    return data is not None and re.search(re.escape(text.encode()), memoryview(data)) is not None
