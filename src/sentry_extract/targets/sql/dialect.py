"""What differs between the databases the SQL target writes to.

A dialect opens sessions (one per stream, each with its own transaction), names the
column types, stages a batch, moves staged rows into a table and takes the lock that
keeps a second run off a table. Everything else is the SQL target's, written once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType

STATE_TABLE = "_sentry_extract_state"
NEW_TABLE_SUFFIX = "__sentry_extract_new"
ORDER_COLUMN = "_sentry_extract_order"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def quote(name: str) -> str:
    """A quoted identifier; names are checked against IDENTIFIER before they get here."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableName:
    schema: str
    table: str

    @property
    def identifier(self) -> str:
        return f"{quote(self.schema)}.{quote(self.table)}"

    def sibling(self, table: str) -> TableName:
        return TableName(self.schema, table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Move:
    """Staged rows going into a table: one row per key, the newest read wins."""

    table: str  # the load table's identifier
    columns: tuple[str, ...]  # the columns the run has written
    key_columns: tuple[str, ...]
    kept_columns: tuple[str, ...]  # the table's other columns: a stored row keeps them


@dataclass(frozen=True)
class Staging:
    """Where a stream's batches wait for its load table."""

    name: str  # a temporary table's identifier, a folder's path, or "" (the batch itself)
    in_files: bool  # Parquet files: they take any columns and keep a column's old type
    flushed_each_batch: bool  # each batch goes into the load table as it comes
    is_table: bool = True  # a table: a new column or a wider type is made in it too


def upsert_statement(staging: str, move: Move) -> str:
    """`INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO UPDATE` of the written
    columns from a staging table: a stored row keeps the others."""
    keys = ", ".join(map(quote, move.key_columns))
    listed = ", ".join(map(quote, move.columns))
    return (
        f"INSERT INTO {move.table} ({listed}) SELECT DISTINCT ON ({keys}) "
        f"{listed} FROM {staging} ORDER BY {keys}, {quote(ORDER_COLUMN)} DESC "
        f"{on_conflict(move)}"
    )


def on_conflict(move: Move) -> str:
    """A stored row of a key takes the written columns and keeps the others."""
    updates = [name for name in move.columns if name not in move.key_columns]
    conflict = (
        "DO UPDATE SET " + ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in updates)
        if updates
        else "DO NOTHING"
    )
    return f"ON CONFLICT ({', '.join(map(quote, move.key_columns))}) {conflict}"


class Session(Protocol):
    """One connection's transaction: statements take `%s` placeholders."""

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> None: ...

    def fetch(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def load(self, staging: Staging, batch: pa.RecordBatch, memory_budget: int) -> None:
        """Stage the batch's rows (its order column set)."""

    def move_staged(self, staging: Staging, move: Move) -> None:
        """The staged rows into `move.table`, in the open transaction; staging emptied."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class Dialect(Protocol):
    name: str  # as people write it: PostgreSQL, DuckDB
    default_schema: str
    sql_types: Mapping[ColumnType, str]
    column_types: Mapping[str, ColumnType]  # information_schema's data_type to ours
    widening: Mapping[ColumnType, str]  # how stored values `{}` become the wider type
    json_parameter: str  # a `%s` parameter holding JSON text, as a JSON value
    errors: tuple[type[Exception], ...]  # what the driver raises

    def open_session(self, table: TableName | None, lock_wait: float) -> Session:
        """A session; with `table`, holding the lock that keeps other runs off it
        (LockedError after `lock_wait` seconds)."""

    def close(self) -> None:
        """Let go of what the run held open."""

    def exclusive(self) -> AbstractContextManager[object]:
        """Held around each step of a writer: a database with one writer takes turns."""

    def describe_error(self, error: Exception) -> str: ...

    def is_dependency_error(self, error: Exception) -> bool:
        """The error says other objects (views) depend on a table being dropped."""

    def table_exists(self, session: Session, table: TableName) -> bool: ...

    def ensure_schema(self, session: Session, schema: str) -> None: ...

    def create_staging(
        self, session: Session, load_table: TableName, mode: Mode, new_table: bool
    ) -> Staging:
        """Where `load_table`'s rows are staged (with ORDER_COLUMN) in a run of `mode`;
        `new_table`: the load table is a new table, swapped in at the commit."""

    def loads_new_table(self, session: Session, table: TableName, mode: Mode) -> bool:
        """A run of `mode` into `table` loads a new table, which its commit swaps in."""

    def create_like(self, session: Session, new: TableName, existing: TableName) -> None:
        """A new empty table with `existing`'s columns and primary key."""

    def swap_in(self, session: Session, new: TableName, table: TableName) -> None:
        """`new` takes `table`'s place, in the open transaction."""

    def is_any_of(self, expression: str) -> str:
        """`expression` is one of the `%s` parameter's list of text."""

    def pairs(self) -> str:
        """A table `chain(merged, survivor)` from two `%s` lists of text."""
