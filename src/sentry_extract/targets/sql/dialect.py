"""What differs between the databases the SQL target writes to.

A dialect opens sessions (one per stream, each with its own transaction), names the
column types, loads a batch into a staging table and takes the lock that keeps a
second run off a table. Everything else is the SQL target's, written once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

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


class Session(Protocol):
    """One connection's transaction: statements take `%s` placeholders."""

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> None: ...

    def fetch(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def load(self, staging: str, batch: pa.RecordBatch, memory_budget: int) -> None:
        """Append the batch's rows to the staging table (its order column set)."""

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
    flushes_each_batch: bool  # staged rows go into the load table at each batch

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

    def create_staging(self, session: Session, load_table: TableName) -> str:
        """A temporary table like `load_table` plus ORDER_COLUMN; its identifier."""

    def create_like(self, session: Session, new: TableName, existing: TableName) -> None:
        """A new empty table with `existing`'s columns and primary key."""

    def is_any_of(self, expression: str) -> str:
        """`expression` is one of the `%s` parameter's list of text."""

    def pairs(self) -> str:
        """A table `chain(merged, survivor)` from two `%s` lists of text."""
