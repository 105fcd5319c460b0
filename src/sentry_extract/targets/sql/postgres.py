"""The PostgreSQL dialect: COPY of CSV into a temporary table (on a thread of its own,
while the run reads on), an advisory lock."""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sentry_extract.errors import ConfigError, LockedError, TargetError
from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType
from sentry_extract.records import column_type_of
from sentry_extract.targets.sql.dialect import (
    ORDER_COLUMN,
    Move,
    Session,
    Staging,
    TableName,
    quote,
    upsert_statement,
)

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
STAGING = TableName("pg_temp", "sentry_extract_staging")


def connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, connect_timeout=10, application_name="sentry-extract")
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"the PostgreSQL URL is not valid: {_first_line(error)}") from None
    except psycopg.OperationalError as error:
        raise TargetError(describe_connection_error(error)) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_connection_error(error: Exception) -> str:
    """psycopg's message, first line, with what it most likely means."""
    text = _first_line(error)
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


class PostgresSession:
    """One connection. A batch's COPY runs on a thread of its own while the run reads
    on (PostgreSQL parses it on its own core); every other use of the connection waits
    for that COPY first, and raises its error."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self._copier: ThreadPoolExecutor | None = None
        self._copying: Future[None] | None = None

    def _copied(self) -> None:
        """The COPY under way, finished (its error raised here)."""
        copying, self._copying = self._copying, None
        if copying is not None:
            copying.result()

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> None:
        self._copied()
        self.connection.execute(statement, parameters)

    def fetch(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._copied()
        return self.connection.execute(statement, parameters).fetchall()

    def load(self, staging: Staging, batch: pa.RecordBatch, memory_budget: int) -> None:
        """The batch as CSV text, a few rows at a time (the text being copied stays a
        small part of the memory budget), copied while the next batch is read."""
        self._copied()
        if self._copier is None:
            self._copier = ThreadPoolExecutor(1, thread_name_prefix="sentry-extract-copy")
        self._copying = self._copier.submit(self._copy, staging, batch, memory_budget)

    def _copy(self, staging: Staging, batch: pa.RecordBatch, memory_budget: int) -> None:
        statement = (
            f"COPY {staging.name} ({', '.join(map(quote, batch.schema.names))}) "
            "FROM STDIN (FORMAT csv)"
        )
        options = csv_options(batch, max(1, memory_budget // COPY_SHARE))
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            sink = pa.PythonFile(CopySink(copy), mode="w")
            pacsv.write_csv(_without_nul(batch), sink, write_options=options)

    def move_staged(self, staging: Staging, move: Move) -> None:
        self.execute(upsert_statement(staging.name, move))
        self.execute(f"TRUNCATE {staging.name}")

    def commit(self) -> None:
        self._copied()
        self.connection.commit()

    def rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):  # what is rolled back failed or not
            self._copied()
        self.connection.rollback()

    def close(self) -> None:
        try:
            with contextlib.suppress(psycopg.Error):
                self._copied()
        finally:
            if self._copier is not None:
                self._copier.shutdown()
            self.connection.close()


class PostgresDialect:
    name = "PostgreSQL"
    default_schema = "public"
    sql_types: Mapping[ColumnType, str] = SQL_TYPES
    column_types: Mapping[str, ColumnType] = COLUMN_TYPES
    widening: Mapping[ColumnType, str] = WIDENING
    json_parameter = "%s::jsonb"
    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url

    def open_session(self, table: TableName | None, lock_wait: float) -> PostgresSession:
        session = PostgresSession(connect(self.url))
        if table is None:
            return session
        try:
            take_lock(session.connection, table, lock_wait)
        except psycopg.Error as error:
            session.close()
            raise TargetError(f"{table}: {describe_connection_error(error)}") from None
        except BaseException:
            session.close()
            raise
        return session

    def close(self) -> None:
        return None  # each stream closes its own connection

    def exclusive(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def describe_error(self, error: Exception) -> str:
        return describe_connection_error(error)

    def is_dependency_error(self, error: Exception) -> bool:
        return isinstance(error, psycopg.errors.DependentObjectsStillExist)

    def table_exists(self, session: Session, table: TableName) -> bool:
        rows = session.fetch("SELECT to_regclass(%s)", (table.identifier,))
        return bool(rows and rows[0][0])

    def ensure_schema(self, session: Session, schema: str) -> None:
        """CREATE SCHEMA IF NOT EXISTS races with itself: streams take turns (until commit)."""
        session.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"sentry_extract:ddl:{schema}",),
        )
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")

    def create_staging(
        self, session: Session, load_table: TableName, mode: Mode, new_table: bool
    ) -> Staging:
        session.execute(f"DROP TABLE IF EXISTS {STAGING.identifier}")
        session.execute(
            f"CREATE TEMPORARY TABLE {quote(STAGING.table)} (LIKE {load_table.identifier} "
            "INCLUDING DEFAULTS)"
        )
        session.execute(
            f"ALTER TABLE {STAGING.identifier} ADD COLUMN {quote(ORDER_COLUMN)} bigint "
            "GENERATED ALWAYS AS IDENTITY"
        )
        return Staging(STAGING.identifier, in_files=False, flushed_each_batch=False)

    def loads_new_table(self, session: Session, table: TableName, mode: Mode) -> bool:
        """A full refresh; truncate keeps the table (its grants, the views on it)."""
        return mode.replaces_table

    def create_like(self, session: Session, new: TableName, existing: TableName) -> None:
        session.execute(f"CREATE TABLE {new.identifier} (LIKE {existing.identifier} INCLUDING ALL)")

    def swap_in(self, session: Session, new: TableName, table: TableName) -> None:
        session.execute(f"DROP TABLE {table.identifier}")
        session.execute(f"ALTER TABLE {new.identifier} RENAME TO {quote(table.table)}")

    def is_any_of(self, expression: str) -> str:
        return f"{expression} = ANY(%s)"

    def pairs(self) -> str:
        return "unnest(%s::text[], %s::text[]) AS chain(merged, survivor)"


def take_lock(connection: psycopg.Connection[Any], table: TableName, wait: float) -> None:
    """A session advisory lock on the table's name, tried until `wait` seconds pass."""
    key = f"sentry_extract:{table}"
    deadline = time.monotonic() + wait
    while True:
        row = connection.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchone()
        connection.commit()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise LockedError(
                f"another sentry-extract run is loading {table}; waited {wait:.0f}s. "
                "Let it finish, or check for a stuck run"
            )
        time.sleep(0.2)


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
