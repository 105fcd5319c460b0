"""The PostgreSQL target: the SQL target (`targets/sql/target.py`) in the PostgreSQL
dialect (`targets/sql/postgres.py`)."""

from __future__ import annotations

from sentry_extract.targets.sql.dialect import TableName
from sentry_extract.targets.sql.postgres import PostgresDialect, test_postgres
from sentry_extract.targets.sql.target import SqlStateStore, SqlTarget

__all__ = ["PostgresStateStore", "PostgresTarget", "TableName", "test_postgres"]


class PostgresTarget(SqlTarget):
    def __init__(self, url: str, lock_wait: float = 10.0) -> None:
        super().__init__(PostgresDialect(url), lock_wait)


class PostgresStateStore(SqlStateStore):
    def __init__(self, url: str, schema: str = "public") -> None:
        super().__init__(PostgresDialect(url), schema)
