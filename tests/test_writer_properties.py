"""Random record shapes through both writers: never an unexpected crash, never a wrong row.

Nulls where values are expected, unexpected types, huge strings, unicode (NUL included)
and fields nobody declared. Parquet must read back exactly the typed rows, PostgreSQL the
same values as Parquet; and a table states, value by value, what each target stores.
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

from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType
from sentry_extract.records import RecordTyper, column_type_of
from sentry_extract.source.streams import TEAMS
from sentry_extract.state import StateKey, StreamState
from sentry_extract.targets.base import StreamRequest, Target
from sentry_extract.targets.parquet import ParquetTarget
from sentry_extract.targets.postgres import PostgresTarget

KEY = ("id",)
TEXT_WITHOUT_NUL = st.characters(codec="utf-8", exclude_characters="\x00")


def json_values(texts: st.SearchStrategy[str], keys: st.SearchStrategy[str]) -> Any:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | texts
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=6,
    )


values = json_values(
    st.text(max_size=30)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=5).map(lambda t: t + "\x00"),
    st.text(max_size=4),
)
values_without_nul = json_values(
    st.text(alphabet=TEXT_WITHOUT_NUL, max_size=30), st.text(alphabet=TEXT_WITHOUT_NUL, max_size=4)
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
records_without_nul = st.lists(
    st.dictionaries(field_names, values_without_nul, max_size=6), min_size=1, max_size=8
)
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


def load_typed(
    target: Target, object_name: str, rows: list[dict[str, Any]], keep_ids: bool = False
) -> pa.RecordBatch:
    """The rows (given ids unless they have them) typed as teams, written and committed;
    returns the typed batch."""
    rows = rows if keep_ids else with_ids(rows)
    typer = RecordTyper(TEAMS)
    batch = typer.to_batch(rows)
    writer = target.open_stream(request(object_name, typer))
    writer.write(batch)
    writer.checkpoint(StreamState())
    assert writer.commit() == len(rows)
    return batch


def parquet_rows(folder: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pq.read_table(folder).to_pylist()}


def postgres_rows(url: str, table: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as connection:
        cursor = connection.execute(f'SELECT * FROM props."{table}"')
        names = [column.name for column in cursor.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {row["id"]: row for row in rows}


def exact_json(value: Any, from_text: bool) -> Any:
    """A JSON value with its numbers as Decimal, so 1e30 and 10**30 compare exactly."""
    if value is None:
        return None
    text = value if from_text else json.dumps(value)
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# (field sent, value sent, what Parquet stores, what PostgreSQL gives back)
STATED = [
    ("name", "plain", "plain", "plain"),
    ("name", "a NUL\x00inside", "a NUL\x00inside", "a NUL\ufffdinside"),
    ("name", 12, "12", "12"),
    ("name", {"a": [1, None]}, '{"a":[1,null]}', '{"a":[1,null]}'),
    ("memberCount", "42", 42, 42),
    ("memberCount", 2.0, 2, 2),
    ("memberCount", 2.5, None, None),
    ("memberCount", 2**70, None, None),
    ("memberCount", True, None, None),
    ("isMember", "TRUE", True, True),
    ("isMember", 1, None, None),
    (
        "dateCreated",
        "2026-01-02T03:04:05.678+02:00",
        datetime(2026, 1, 2, 1, 4, 5, 678000, tzinfo=UTC),
        datetime(2026, 1, 2, 1, 4, 5, 678000, tzinfo=UTC),
    ),
    ("dateCreated", "yesterday", None, None),
    ("flags", {"n": 1.5, "s": "ü"}, '{"n":1.5,"s":"ü"}', {"n": 1.5, "s": "ü"}),
    ("flags", "text", '"text"', "text"),
    ("flags", 2**70, "1180591620717411303424", 2**70),
    ("flags", "\x00", '"\\u0000"', "\ufffd"),
    ("unknownBoolean", False, False, False),
    ("unknownInteger", -(2**63), -(2**63), -(2**63)),
    ("unknownFraction", 0.1, 0.1, 0.1),
    ("unknownText", "\u2028", "\u2028", "\u2028"),
    ("unknownList", [1, "a"], '[1,"a"]', [1, "a"]),
    ("unknownObject", {"k": {}}, '{"k":{}}', {"k": {}}),
]
STATED_COLUMNS = {
    "name": "name",
    "memberCount": "member_count",
    "isMember": "is_member",
    "dateCreated": "date_created",
    "flags": "flags",
    "unknownBoolean": "unknown_boolean",
    "unknownInteger": "unknown_integer",
    "unknownFraction": "unknown_fraction",
    "unknownText": "unknown_text",
    "unknownList": "unknown_list",
    "unknownObject": "unknown_object",
}


def test_both_targets_store_the_stated_values(tmp_path: Path, pg_url: str) -> None:
    rows = [{"id": f"stated-{i}", field: value} for i, (field, value, _, _) in enumerate(STATED)]
    load_typed(ParquetTarget(), f"file://{tmp_path / 'stated'}", rows, keep_ids=True)
    load_typed(PostgresTarget(pg_url), "props.stated", rows, keep_ids=True)
    in_parquet = parquet_rows(tmp_path / "stated")
    in_postgres = postgres_rows(pg_url, "stated")
    for i, (field, value, parquet, postgres) in enumerate(STATED):
        column = STATED_COLUMNS[field]
        assert in_parquet[f"stated-{i}"][column] == parquet, (field, value)
        assert in_postgres[f"stated-{i}"][column] == postgres, (field, value)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records)
def test_parquet_stores_exactly_the_typed_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    folder = tmp_path / uuid.uuid4().hex
    batch = load_typed(ParquetTarget(), f"file://{folder}", rows)
    stored = parquet_rows(folder)
    for expected in batch.to_pylist():
        assert stored[expected["id"]] == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records_without_nul)
def test_postgres_stores_what_parquet_stores(
    tmp_path: Path, pg_url: str, rows: list[dict[str, Any]]
) -> None:
    """NUL, which PostgreSQL cannot hold, is in the stated values above."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    rows = with_ids(rows)
    batch = load_typed(PostgresTarget(pg_url), f"props.{table}", rows, keep_ids=True)
    load_typed(ParquetTarget(), f"file://{tmp_path / table}", rows, keep_ids=True)
    in_parquet = parquet_rows(tmp_path / table)
    in_postgres = postgres_rows(pg_url, table)
    assert in_postgres.keys() == in_parquet.keys()
    types = {field.name: column_type_of(field) for field in batch.schema}
    for key, expected in in_parquet.items():
        got = in_postgres[key]
        for name, value in expected.items():
            if types[name] is ColumnType.JSON:
                assert exact_json(got[name], False) == exact_json(value, True), name
            else:
                assert got[name] == value, name
