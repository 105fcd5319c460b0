"""Random record shapes through both writers: never an unexpected crash, never a wrong row.

Nulls where values are expected, unexpected types, huge strings, unicode (NUL included)
and fields nobody declared: what is stored must read back as what the typing said.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentry_extract.modes import Mode
from sentry_extract.records import RecordTyper, column_type_of
from sentry_extract.source.streams import TEAMS, ColumnType
from sentry_extract.state import StateKey, StreamState
from sentry_extract.targets.base import StreamRequest, Target
from sentry_extract.targets.parquet import ParquetTarget
from sentry_extract.targets.postgres import PostgresTarget

KEY = ("id",)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=5).map(lambda t: t + "\x00")
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
field_names = st.sampled_from(
    [
        "slug",
        "name",
        "dateCreated",
        "memberCount",
        "isMember",
        "flags",
        "avatar",
        "surprise",
        "new.Field",
        "ünï",
    ]
)
records = st.lists(st.dictionaries(field_names, values, max_size=6), min_size=1, max_size=8)
counter = itertools.count()


def with_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "id": f"{next(counter)}"} for row in rows]


def request(object_name: str, typer: RecordTyper, mode: str = "incremental") -> StreamRequest:
    return StreamRequest(
        stream="teams",
        object=object_name,
        mode=Mode(mode),
        key_columns=KEY,
        base_schema=typer.to_batch([]).schema,
        state_key=StateKey("SENTRY", "acme", "teams", object_name),
        run_started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def load_typed(target: Target, object_name: str, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """The rows (given ids) typed as teams, written and committed; returns the typed batch."""
    rows = with_ids(rows)
    typer = RecordTyper(TEAMS)
    batch = typer.to_batch(rows)
    writer = target.open_stream(request(object_name, typer))
    writer.write(batch)
    writer.checkpoint(StreamState())
    assert writer.commit() == len(rows)
    return batch


def stored_form(value: Any, column_type: ColumnType) -> Any:
    """What PostgreSQL gives back for a typed value: jsonb parsed, NUL as U+FFFD."""
    if value is None:
        return None
    if column_type is ColumnType.JSON:  # numbers compared exactly, as jsonb keeps them
        return json.loads(
            value.replace("\\u0000", "\\ufffd"), parse_float=Decimal, parse_int=Decimal
        )
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    return value


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records)
def test_parquet_stores_exactly_the_typed_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    folder = tmp_path / uuid.uuid4().hex
    batch = load_typed(ParquetTarget(), f"file://{folder}", rows)
    stored = {row["id"]: row for row in pq.read_table(folder).to_pylist()}
    for expected in batch.to_pylist():
        assert stored[expected["id"]] == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records)
def test_postgres_stores_exactly_the_typed_rows(pg_url: str, rows: list[dict[str, Any]]) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    batch = load_typed(PostgresTarget(pg_url), f"props.{table}", rows)
    with psycopg.connect(pg_url) as connection:
        cursor = connection.execute(f'SELECT * FROM props."{table}"')
        names = [column.name for column in cursor.description or []]
        stored = {
            row[names.index("id")]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()
        }
    types = {field.name: column_type_of(field) for field in batch.schema}
    for expected in batch.to_pylist():
        got = stored[expected["id"]]
        for name, value in expected.items():
            if types[name] is ColumnType.JSON and got[name] is not None:
                got[name] = json.loads(
                    json.dumps(got[name]), parse_float=Decimal, parse_int=Decimal
                )
            assert got[name] == stored_form(value, types[name]), name
