"""Column naming, typing and batches, with property-based tests for odd inputs."""

from __future__ import annotations

import json
import logging
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_extract.model.spec import ColumnType
from sentry_extract.records import (
    SOURCE,
    RecordTyper,
    Selection,
    arrow_field,
    column_type_of,
    conform,
    convert_column,
    decoded,
    decoded_values,
    snake_case,
    unify_schemas,
)
from sentry_extract.source.client import parse_raw_rows
from sentry_extract.source.streams import EVENTS, ISSUES, TEAMS
from sentry_extract.testing.organization import FakeOrganization, public


@pytest.mark.parametrize(
    ("source", "snake"),
    [
        ("lastSeen", "last_seen"),
        ("eventID", "event_id"),
        ("event.type", "event_type"),
        ("dateCreated", "date_created"),
        ("projectID", "project_id"),
        ("userCount", "user_count"),
        ("require2FA", "require2_fa"),
        ("HTTPServer", "http_server"),
        ("id", "id"),
        ("already_snake", "already_snake"),
        ("shortId", "short_id"),
        ("isPublic", "is_public"),
    ],
)
def test_snake_case(source: str, snake: str) -> None:
    assert snake_case(source) == snake


@given(st.text(max_size=40))
def test_snake_case_gives_plain_lower_names_and_is_stable(name: str) -> None:
    once = snake_case(name)
    assert once and all(c.islower() or c.isdigit() or c == "_" for c in once if c.isascii())
    assert snake_case(once) == once


def test_issue_row_is_typed_as_declared() -> None:
    typer = RecordTyper(ISSUES)
    batch = typer.to_batch(
        [
            {
                "id": "42",
                "count": "1234",
                "userCount": 7,
                "isPublic": False,
                "lastSeen": "2026-01-02T03:04:05.678Z",
                "firstSeen": "2026-01-01T00:00:00Z",
                "project": {"id": "1", "slug": "p"},
                "status": "resolved",
            }
        ]
    )
    row = batch.to_pylist()[0]
    assert row["count"] == 1234 and row["user_count"] == 7 and row["is_public"] is False
    assert row["last_seen"] == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert json.loads(row["project"]) == {"id": "1", "slug": "p"}
    assert column_type_of(batch.schema.field("project")) is ColumnType.JSON
    assert column_type_of(batch.schema.field("count")) is ColumnType.INTEGER


def test_issues_carry_a_flat_project_id_beside_the_project() -> None:
    rows = [
        {"id": "1", "project": {"id": "7", "slug": "web", "name": "Web"}},
        {"id": "2", "project": {"id": 8}},
        {"id": "3", "project": None},
        {"id": "4", "project": "not an object"},
    ]
    batch = RecordTyper(ISSUES).to_batch(rows)
    names = batch.schema.names
    assert names[names.index("project") + 1] == "project_id"
    assert column_type_of(batch.schema.field("project_id")) is ColumnType.TEXT
    assert batch.column("project_id").to_pylist() == ["7", "8", None, None]
    source = RecordTyper(ISSUES, SOURCE).to_batch(rows[:1])
    assert source.column("project.id").to_pylist() == ["7"]


def test_values_that_do_not_fit_their_type_become_null() -> None:
    batch = RecordTyper(ISSUES).to_batch(
        [
            {"id": "1", "count": "many", "lastSeen": "not a date", "isPublic": "maybe"},
            {"id": "2", "count": "99999999999999999999999", "lastSeen": 12, "isPublic": "true"},
        ]
    )
    rows = batch.to_pylist()
    assert [r["count"] for r in rows] == [None, None]
    assert [r["last_seen"] for r in rows] == [None, None]
    assert [r["is_public"] for r in rows] == [None, True]


def test_digits_that_are_not_decimal_digits_become_null() -> None:
    # "²".isdigit() holds, but int("²") fails: such a text is no whole number.
    batch = RecordTyper(ISSUES).to_batch([{"id": "1", "count": "²"}, {"id": "2", "count": "²3"}])
    assert batch.column("count").to_pylist() == [None, None]


def test_unknown_fields_keep_stable_names() -> None:
    typer = RecordTyper(TEAMS)
    first = typer.to_batch([{"id": "1", "brandNew": "a"}])
    second = typer.to_batch([{"id": "2", "brandNew": "b", "brand_new": "c"}])
    assert "brand_new" in first.schema.names
    assert second.column("brand_new").to_pylist() == ["b"]
    assert second.column("brand_new_2").to_pylist() == ["c"]


def test_unknown_fields_keep_their_json_types() -> None:
    batch = RecordTyper(ISSUES).to_batch(
        [
            {
                "id": "1",
                "hasLogs": False,
                "sessionCount": 0,
                "crashFreeRate": 0.5,
                "seerFixability": {"score": 0.9},
                "owners": [{"type": "team"}],
                "note": "plain",
                "bigNumber": 2**70,
            },
            {"id": "2", "hasLogs": True, "sessionCount": 12, "crashFreeRate": 1},
        ]
    )
    types = {field.name: column_type_of(field) for field in batch.schema}
    assert (
        types["has_logs"] is ColumnType.BOOLEAN
        and batch.schema.field("has_logs").type == pa.bool_()
    )
    assert types["session_count"] is ColumnType.INTEGER
    assert batch.schema.field("session_count").type == pa.int64()
    assert types["crash_free_rate"] is ColumnType.FLOAT
    assert batch.schema.field("crash_free_rate").type == pa.float64()
    assert types["seer_fixability"] is ColumnType.JSON and types["owners"] is ColumnType.JSON
    assert types["note"] is ColumnType.TEXT
    assert types["big_number"] is ColumnType.JSON  # beyond 64 bits: exact, as JSON
    rows = batch.to_pylist()
    assert [row["has_logs"] for row in rows] == [False, True]
    assert [row["session_count"] for row in rows] == [0, 12]
    assert [row["crash_free_rate"] for row in rows] == [0.5, 1.0]
    assert json.loads(rows[0]["seer_fixability"]) == {"score": 0.9}
    assert rows[0]["big_number"] == str(2**70) and rows[1]["big_number"] is None


@pytest.mark.parametrize(
    ("values", "column_type", "stored"),
    [
        ([1, 2.5], ColumnType.FLOAT, [1.0, 2.5]),
        ([1, "two"], ColumnType.TEXT, ["1", "two"]),
        ([True, "yes"], ColumnType.TEXT, ["true", "yes"]),
        ([True, 1], ColumnType.JSON, ["true", "1"]),
        (["a", {"b": 1}], ColumnType.JSON, ['"a"', '{"b":1}']),
        ([[1], 2.5], ColumnType.JSON, ["[1]", "2.5"]),
    ],
)
def test_an_unknown_field_of_mixed_types_is_widened(
    values: list[Any], column_type: ColumnType, stored: list[Any]
) -> None:
    batch = RecordTyper(TEAMS).to_batch([{"id": str(i), "mixed": v} for i, v in enumerate(values)])
    assert column_type_of(batch.schema.field("mixed")) is column_type
    assert batch.column("mixed").to_pylist() == stored


def test_an_unknown_field_keeps_its_widest_type_across_batches() -> None:
    typer = RecordTyper(TEAMS)
    assert column_type_of(typer.to_batch([{"id": "1", "x": 1}]).schema.field("x")) is (
        ColumnType.INTEGER
    )
    widened = typer.to_batch([{"id": "2", "x": "many"}])
    assert column_type_of(widened.schema.field("x")) is ColumnType.TEXT
    later = typer.to_batch([{"id": "3", "x": 3}, {"id": "4", "x": None}])
    assert column_type_of(later.schema.field("x")) is ColumnType.TEXT
    assert later.column("x").to_pylist() == ["3", None]
    assert typer.to_batch([{"id": "5", "x": None}]).column("x").to_pylist() == [None]


def test_an_unknown_field_that_is_only_null_waits_for_a_value() -> None:
    typer = RecordTyper(TEAMS)
    assert "later" not in typer.to_batch([{"id": "1", "later": None}]).schema.names
    batch = typer.to_batch([{"id": "2", "later": 4}])
    assert column_type_of(batch.schema.field("later")) is ColumnType.INTEGER


@pytest.mark.parametrize(
    ("before", "after", "widened", "old_values"),
    [
        (ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.FLOAT, [1.0, None]),
        (ColumnType.INTEGER, ColumnType.TEXT, ColumnType.TEXT, ["1", None]),
        (ColumnType.BOOLEAN, ColumnType.INTEGER, ColumnType.JSON, ["true", None]),
        (ColumnType.TEXT, ColumnType.JSON, ColumnType.JSON, ['"old"', None]),
        (ColumnType.FLOAT, ColumnType.BOOLEAN, ColumnType.JSON, ["0.5", None]),
    ],
)
def test_a_column_whose_type_changes_is_widened_never_nulled(
    before: ColumnType,
    after: ColumnType,
    widened: ColumnType,
    old_values: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    samples = {
        ColumnType.INTEGER: 1,
        ColumnType.FLOAT: 0.5,
        ColumnType.TEXT: "old",
        ColumnType.BOOLEAN: True,
        ColumnType.JSON: {"a": 1},
    }
    old = pa.RecordBatch.from_arrays(
        [pa.array(["1", "2"]), convert_column([samples[before], None], before)],
        schema=pa.schema([arrow_field("id", ColumnType.TEXT), arrow_field("x", before)]),
    )
    new_schema = pa.schema([arrow_field("id", ColumnType.TEXT), arrow_field("x", after)])
    with caplog.at_level(logging.WARNING, logger="sentry_extract"):
        schema = unify_schemas([old.schema, new_schema])
    assert column_type_of(schema.field("x")) is widened
    assert f"column x changes type from {before.value} to {after.value}" in caplog.text
    assert f"stored as {widened.value}" in caplog.text
    assert conform(old, schema).column("x").to_pylist() == old_values


def test_unify_schemas_keeps_a_type_that_does_not_change(caplog: pytest.LogCaptureFixture) -> None:
    first = pa.schema([arrow_field("x", ColumnType.INTEGER)])
    second = pa.schema([arrow_field("x", ColumnType.INTEGER), arrow_field("y", ColumnType.TEXT)])
    with caplog.at_level(logging.WARNING, logger="sentry_extract"):
        assert unify_schemas([first, second]) == second
    assert caplog.text == ""


def test_selection_keeps_the_key() -> None:
    typer = RecordTyper(
        EVENTS, selection=Selection.parse(["title"]), key_columns=("project_id", "event_id")
    )
    assert typer.to_batch([]).schema.names == ["project_id", "event_id", "title"]
    typer = RecordTyper(
        EVENTS,
        selection=Selection.parse(["-entries", "-event_id"]),
        key_columns=("project_id", "event_id"),
    )
    names = typer.to_batch([]).schema.names
    assert "entries" not in names and "event_id" in names


# What JSON can carry: msgspec, like the API, has no NaN or Infinity.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "count",
                    "lastSeen",
                    "isPublic",
                    "project",
                    "title",
                    "userCount",
                    "weird key",
                    "ünïcode",
                    "eventID",
                ]
            )
            | st.text(max_size=8),
            json_values,
            max_size=8,
        ),
        max_size=6,
    )
)
def test_any_record_shape_types_without_crashing_or_inventing_values(
    rows: list[dict[str, Any]],
) -> None:
    batch = RecordTyper(ISSUES).to_batch(rows)
    assert batch.num_rows == len(rows)
    typed = batch.to_pylist()
    for source, row in zip(rows, typed, strict=True):
        title = source.get("title")
        if isinstance(title, str):
            assert row["title"] == title
        elif title is None:
            assert row["title"] is None
        else:
            assert json.loads(row["title"]) == title
        count = source.get("count")
        if row["count"] is not None:
            assert (int(count.strip()) if isinstance(count, str) else count) == row["count"]
        if isinstance(source.get("isPublic"), bool):
            assert row["is_public"] is source["isPublic"]


def test_huge_strings_survive() -> None:
    text = "x" * 2_000_000
    batch = RecordTyper(ISSUES).to_batch([{"id": "1", "title": text}])
    assert batch.column("title")[0].as_py() == text
    assert isinstance(batch, pa.RecordBatch)


def _raw_rows(rows: list[dict[str, Any]]) -> Any:
    return parse_raw_rows(json.dumps(rows, ensure_ascii=False).encode())


def _same_values(raw: pa.RecordBatch, plain: pa.RecordBatch) -> None:
    """Equal column by column; JSON text is compared as JSON (the raw keeps the spacing)."""
    assert raw.schema == plain.schema
    for field in plain.schema:
        left, right = raw.column(field.name).to_pylist(), plain.column(field.name).to_pylist()
        if column_type_of(field) is ColumnType.JSON:
            left = [None if text is None else json.loads(text) for text in left]
            right = [None if text is None else json.loads(text) for text in right]
        assert left == right, field.name


def test_a_full_event_page_types_the_same_undecoded_as_decoded() -> None:
    organization = FakeOrganization()
    events = [public(event) for event in organization.visible_events(timedelta(days=90))[:50]]
    events[0]["size"] = 123456789012345678901234567890  # beyond 64 bits: null, not a float
    events[1]["message"] = "ünïcode \u2028 and a NUL \x00"
    events[2]["brandNew"] = {"nested": [1, 2.5, None]}
    events[3]["size"] = 2.0
    raw = RecordTyper(EVENTS).to_batch(_raw_rows(events))
    plain = RecordTyper(EVENTS).to_batch(events)
    _same_values(raw, plain)
    assert raw.num_rows == 50
    assert raw.column("size")[0].as_py() is None and raw.column("size")[3].as_py() == 2


def test_undecoded_values_out_of_range_or_null_become_null() -> None:
    rows = parse_raw_rows(b'[{"eventID": "a", "size": 1e999, "user": null, "tags": [1e999]}]')
    typed = RecordTyper(EVENTS).to_batch(rows).to_pylist()[0]
    assert typed["size"] is None and typed["user"] is None
    assert typed["tags"] == "[1e999]"  # JSON text as sent; PostgreSQL's jsonb reads it


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=8), st.booleans())
def test_a_column_decoded_at_once_is_each_value_decoded(values: list[Any], odd: bool) -> None:
    column = [
        None if value is None else msgspec.Raw(json.dumps(value).encode()) for value in values
    ]
    if odd:  # one value that does not decode: each is decoded on its own
        column.append(msgspec.Raw(b"1e999"))
    assert decoded_values(column) == [decoded(value) for value in column]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(["eventID", "size", "dateCreated", "tags", "message", "odd"])
            | st.text(max_size=6),
            json_values,
            max_size=6,
        ),
        max_size=5,
    )
)
def test_any_rows_type_the_same_undecoded_as_decoded(rows: list[dict[str, Any]]) -> None:
    _same_values(RecordTyper(EVENTS).to_batch(_raw_rows(rows)), RecordTyper(EVENTS).to_batch(rows))


def test_an_unknown_deep_field_stays_undecoded() -> None:
    """Many small objects (scrubbing notes on a deep stack trace's variables) decoded in
    Python cost about 15 times their text: an unknown object is typed from its first byte
    and kept as the JSON text sent."""

    notes = {
        str(frame): {"vars": {f"v{n}": {"": {"rem": [["@password", "s", 0, 8]]}} for n in range(6)}}
        for frame in range(300)
    }
    text = msgspec.json.encode({"frames": notes})
    rows = [
        {"eventID": f"{n:032x}", "projectID": "1", "_meta": msgspec.Raw(text)} for n in range(100)
    ]
    typer = RecordTyper(EVENTS)
    tracemalloc.start()
    try:
        batch = typer.to_batch(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch.schema.field("meta").type == pa.string()
    assert batch.column("meta")[0].as_py() == text.decode()
    assert peak < 3 * len(text) * len(rows), peak / (len(text) * len(rows))
