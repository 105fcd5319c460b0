"""One SQL target, a dialect each for PostgreSQL and DuckDB.

`target.py` holds the SQL logic, written once; `dialect.py` says what a dialect
provides; `postgres.py` and `duckdb.py` are the two dialects.
"""
