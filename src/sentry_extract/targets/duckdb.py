"""The DuckDB target: the SQL target (`targets/sql/target.py`) in the DuckDB dialect
(`targets/sql/duckdb.py`), writing one database file."""

from __future__ import annotations

from pathlib import Path

from sentry_extract.targets.sql.duckdb import DuckDBDialect, test_duckdb
from sentry_extract.targets.sql.target import SqlTarget

__all__ = ["DuckDBTarget", "test_duckdb"]


class DuckDBTarget(SqlTarget):
    def __init__(self, path: Path, lock_wait: float = 10.0) -> None:
        super().__init__(DuckDBDialect(path), lock_wait)
