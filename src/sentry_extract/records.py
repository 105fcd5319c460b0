"""From API rows (dicts) to typed Arrow record batches.

Column names are snake_case by default (`lastSeen` -> `last_seen`, `eventID` ->
`event_id`, `event.type` -> `event_type`) or the API's own names with
`column_casing: source`. Known fields get their declared type; a value that
cannot be read as that type becomes null. Fields the API adds later keep their JSON
types: booleans, 64-bit integers, floats, text, and objects and arrays as JSON. When a
field's values disagree (in one batch, across batches or across runs), the column is
widened (`widen`): integers and fractions to float, text with another scalar to text,
anything else to JSON. A value is never dropped because its column's type changed.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from sentry_extract.events import emit
from sentry_extract.model.spec import Column, ColumnType, StreamSpec

log = logging.getLogger("sentry_extract.records")

SNAKE = "snake"
SOURCE = "source"
COLUMN_CASINGS = (SNAKE, SOURCE)

TYPE_METADATA_KEY = b"sentry_extract.type"
SNAPSHOT_COLUMN = "_snapshot_at"
DELETED_COLUMN = "_deleted_at"  # when a row vanished from Sentry; null while it is there
MERGED_COLUMN = "merged_into_id"  # the issue a row was merged into; null while it is its own
KEY_SEPARATOR = "\x1f"

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.TEXT: pa.string(),
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    ColumnType.JSON: pa.string(),
}

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NOT_WORD = re.compile(r"[^0-9a-zA-Z]+")


def snake_case(name: str) -> str:
    """`lastSeen` -> `last_seen`, `eventID` -> `event_id`, `event.type` -> `event_type`."""
    text = _NOT_WORD.sub("_", name)
    text = _ACRONYM_BOUNDARY.sub(r"\1_\2", text)
    text = _WORD_BOUNDARY.sub(r"\1_\2", text)
    text = text.strip("_").lower()
    return re.sub(r"_+", "_", text) or "_"


def column_name(source_name: str, casing: str) -> str:
    return snake_case(source_name) if casing == SNAKE else source_name


def arrow_field(name: str, column_type: ColumnType) -> pa.Field:
    return pa.field(name, ARROW_TYPES[column_type], metadata={TYPE_METADATA_KEY: column_type.value})


def column_type_of(field: pa.Field) -> ColumnType:
    """The declared type stored on an Arrow field (text when none is stored)."""
    metadata = field.metadata or {}
    return ColumnType(metadata.get(TYPE_METADATA_KEY, b"text").decode())


def widen(first: ColumnType, second: ColumnType) -> ColumnType:
    """The narrowest type that holds the values of both: integers and fractions as
    float, text and another scalar as text, anything else (objects, arrays, a boolean
    beside a number) as JSON, which keeps every value's own JSON type."""
    if first is second:
        return first
    if {first, second} == {ColumnType.INTEGER, ColumnType.FLOAT}:
        return ColumnType.FLOAT
    if ColumnType.TEXT in (first, second) and ColumnType.JSON not in (first, second):
        return ColumnType.TEXT
    return ColumnType.JSON


def json_type(value: Any) -> ColumnType | None:
    """The column type a decoded JSON value keeps; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        return ColumnType.INTEGER if INT64_MIN <= value <= INT64_MAX else ColumnType.JSON
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, str):
        return ColumnType.TEXT
    return ColumnType.JSON


def infer_type(values: Iterable[Any]) -> ColumnType | None:
    """The type of a column of decoded JSON values; None when they are all null."""
    found: ColumnType | None = None
    for value in values:
        kind = json_type(value)
        if kind is not None:
            found = kind if found is None else widen(found, kind)
            if found is ColumnType.JSON:
                break  # nothing is wider
    return found


def infer_raw_type(values: Iterable[Any]) -> ColumnType | None:
    """`infer_type` for values that may be undecoded JSON (`msgspec.Raw`): an object or a
    list is JSON from its first byte, never decoded (a deep stack trace's many small
    objects would cost several times their text); only scalars are decoded."""
    found: ColumnType | None = None
    for value in values:
        kind = _raw_kind(value) if type(value) is msgspec.Raw else json_type(value)
        if kind is not None:
            found = kind if found is None else widen(found, kind)
            if found is ColumnType.JSON:
                break  # nothing is wider
    return found


def _raw_kind(value: msgspec.Raw) -> ColumnType | None:
    first = memoryview(value)[:1].tobytes()  # a raw value starts at its first character
    if first in (b"{", b"["):
        return ColumnType.JSON
    return json_type(decoded(value))


def declared_columns(spec: StreamSpec, casing: str) -> dict[str, ColumnType]:
    """Output column name -> type, in declared order."""
    return {column_name(column.source_name, casing): column.type for column in spec.columns}


@dataclass(frozen=True)
class Selection:
    """`select: [a, b]` keeps those (plus the key); `select: [-c]` drops c."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> Selection:
        include = tuple(entry for entry in entries if not entry.startswith("-"))
        exclude = tuple(entry[1:] for entry in entries if entry.startswith("-"))
        return cls(include, exclude)

    def keeps(self, name: str, key_columns: Sequence[str]) -> bool:
        if name in key_columns:
            return True
        if name in self.exclude:
            return False
        return not self.include or name in self.include


class RecordTyper:
    """Turns lists of API rows into Arrow batches for one stream.

    It remembers the extra columns it has met, so a field keeps one column name and
    its widest type across batches. An extra field whose values are all null so far
    gets no column until a value arrives.
    """

    def __init__(
        self,
        spec: StreamSpec,
        casing: str = SNAKE,
        selection: Selection | None = None,
        key_columns: Sequence[str] = (),
    ) -> None:
        self.casing = casing
        self.selection = selection or Selection()
        self.key_columns = tuple(key_columns)
        self.known: list[tuple[Column, str]] = [
            (column, column_name(column.source_name, casing))
            for column in spec.columns
            if self.selection.keeps(column_name(column.source_name, casing), self.key_columns)
        ]
        self.known_sources = {c.source_name for c in spec.columns if not c.path}
        self.taken_names = {column_name(c.source_name, casing) for c in spec.columns}
        self.extra_names: dict[str, str] = {}
        self.soft_deletes = spec.soft_deletes
        self.merges = spec.merges
        self.extra_types: dict[str, ColumnType] = {}

    def _extra_name(self, source_name: str) -> str:
        name = self.extra_names.get(source_name)
        if name is None:
            base = column_name(source_name, self.casing)
            name, suffix = base, 1
            while name in self.taken_names:
                suffix += 1
                name = f"{base}_{suffix}"
            self.taken_names.add(name)
            self.extra_names[source_name] = name
        return name

    def to_batch(self, rows: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
        fields: list[pa.Field] = []
        arrays: list[pa.Array] = []
        for column, name in self.known:
            if column.path:
                values = [nested_value(row, column.path) for row in rows]
            else:
                values = [row.get(column.source_name) for row in rows]
            fields.append(arrow_field(name, column.type))
            arrays.append(convert_column(values, column.type))
        extra_sources = sorted(set().union(*rows) - self.known_sources) if rows else []
        for source_name in extra_sources:
            name = self._extra_name(source_name)
            if not self.selection.keeps(name, self.key_columns):
                continue
            values = [row.get(source_name) for row in rows]
            column_type = self._extra_type(source_name, infer_raw_type(values))
            if column_type is None:
                continue
            fields.append(arrow_field(name, column_type))
            arrays.append(convert_column(values, column_type))
        if self.soft_deletes:  # a row read is a row Sentry still has
            fields.append(arrow_field(DELETED_COLUMN, ColumnType.TIMESTAMP))
            arrays.append(pa.nulls(len(rows), ARROW_TYPES[ColumnType.TIMESTAMP]))
        if self.merges:  # ... and one that is not merged into another
            fields.append(arrow_field(MERGED_COLUMN, ColumnType.TEXT))
            arrays.append(pa.nulls(len(rows), ARROW_TYPES[ColumnType.TEXT]))
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def _extra_type(self, source_name: str, inferred: ColumnType | None) -> ColumnType | None:
        """The widest type the field has had so far (None: only nulls yet)."""
        known = self.extra_types.get(source_name)
        if inferred is None:
            return known
        chosen = inferred if known is None else widen(known, inferred)
        self.extra_types[source_name] = chosen
        return chosen


def key_values(batch: pa.RecordBatch | pa.Table, key_columns: Sequence[str]) -> pa.Array:
    """The key of each row as text (composite keys joined), null where a part is null."""
    columns = [batch.column(name).cast(pa.string()) for name in key_columns]
    if isinstance(columns[0], pa.ChunkedArray):
        columns = [column.combine_chunks() for column in columns]
    if len(columns) == 1:
        return columns[0]
    joined: pa.Array = pc.binary_join_element_wise(*columns, KEY_SEPARATOR)
    return joined


def fill_missing_keys(
    batch: pa.RecordBatch, key_columns: Sequence[str]
) -> tuple[pa.RecordBatch, int]:
    """`batch` with null text key parts as empty text, and how many rows had one.

    Sentry sends every key it is asked for; an answer of another shape (a proxy, a mock
    server's example) may not. Empty text keeps such rows loadable in PostgreSQL, whose
    primary key refuses nulls, and merges them the same way in both targets."""
    missing = 0
    for name in key_columns:
        index = batch.schema.get_field_index(name)
        if index < 0 or not pa.types.is_string(batch.schema.field(index).type):
            continue
        column = batch.column(index)
        if column.null_count:
            missing = max(missing, column.null_count)
            batch = batch.set_column(index, batch.schema.field(index), pc.fill_null(column, ""))
    return batch, missing


def nested_value(row: Mapping[str, Any], path: Sequence[str]) -> Any:
    """`row[path[0]][path[1]]...`, or None where an object or a key is missing."""
    value: Any = row
    for key in path:
        value = decoded(value)
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def convert_column(values: list[Any], column_type: ColumnType) -> pa.Array:
    """Values (decoded, or undecoded `msgspec.Raw` JSON) as an Arrow array of the type."""
    if column_type is ColumnType.JSON and set(map(type, values)) <= _RAW_OR_NULL:
        return _raw_json_texts(values)  # the JSON text as sent: never decoded, never re-encoded
    return _CONVERTERS[column_type](decoded_values(values))


_RAW_OR_NULL = {msgspec.Raw, type(None)}


def decoded_values(values: list[Any]) -> list[Any]:
    """`decoded` of each value. A column of undecoded JSON (and nulls) is decoded as one
    JSON array, a single call instead of one per value; should one value not decode,
    each is decoded on its own."""
    if not values or not set(map(type, values)) <= _RAW_OR_NULL:
        return [decoded(value) for value in values]
    parts = [_JSON_NULL if value is None else value for value in values]
    try:
        decoded_list: list[Any] = msgspec.json.decode(b"[" + b",".join(parts) + b"]")
    except msgspec.DecodeError:
        return [decoded(value) for value in values]
    return decoded_list


def decoded(value: Any) -> Any:
    """A `msgspec.Raw` value decoded (None if it is not valid for Python); others as given."""
    if type(value) is not msgspec.Raw:
        return value
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:  # a number beyond a float's range
        return None


def _to_json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return msgspec.json.encode(value).decode()
    except TypeError:  # a value JSON has no form for: its text, as the standard library writes
        return json.dumps(value, ensure_ascii=False, default=str)


def _to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _to_json_text(value)


def _to_integer(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.lstrip("+-").isdigit() and len(text) < 21:
            number = int(text)
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        return None
    return number


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _to_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string as an aware UTC datetime; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _convert_texts(values: list[Any]) -> pa.Array:
    if set(map(type, values)) <= _TEXT_OR_NULL:  # the usual case: nothing to convert
        return pa.array(values, type=pa.string())
    return pa.array([_to_text(value) for value in values], type=pa.string())


_TEXT_OR_NULL = {str, type(None)}


def _convert_json(values: list[Any]) -> pa.Array:
    return pa.array([_to_json_text(value) for value in values], type=pa.string())


_JSON_NULL = b"null"


_STRING_LIMIT = 2**31 - 1  # the most bytes an Arrow string array (32-bit offsets) holds


def _raw_json_texts(values: list[msgspec.Raw | None]) -> pa.Array:
    """Undecoded JSON straight into an Arrow string array: one copy, no Python strings.
    A missing value and JSON's `null` are null."""
    # msgspec.Raw has the buffer protocol (len, bytes.join), which its stubs do not say.
    parts = cast(list[bytes], [b"" if value is None else value for value in values])
    ends = list(itertools.accumulate(map(len, parts)))
    large = bool(ends) and ends[-1] > _STRING_LIMIT
    offsets = pa.array([0, *ends], pa.int64() if large else pa.int32()).buffers()[1]
    kind = pa.LargeStringArray if large else pa.StringArray
    data = pa.py_buffer(b"".join(parts))
    texts = kind.from_buffers(len(parts), offsets, data)
    present = pc.not_equal(pc.binary_length(texts), 0)  # a JSON value is never empty
    valid = pc.and_(present, pc.not_equal(texts, _JSON_NULL.decode()))
    texts = kind.from_buffers(len(parts), offsets, data, valid.buffers()[1])
    texts.validate(full=True)  # UTF-8, as the parser checked it
    return texts.cast(pa.string()) if large else texts  # a cast too large fails loudly


def _convert_integers(values: list[Any]) -> pa.Array:
    return pa.array([_to_integer(value) for value in values], type=pa.int64())


def _convert_floats(values: list[Any]) -> pa.Array:
    return pa.array([_to_float(value) for value in values], type=pa.float64())


def _convert_booleans(values: list[Any]) -> pa.Array:
    return pa.array([_to_boolean(value) for value in values], type=pa.bool_())


def _convert_timestamps(values: list[Any]) -> pa.Array:
    target = ARROW_TYPES[ColumnType.TIMESTAMP]
    if all(value is None or isinstance(value, str) for value in values):
        try:
            return pa.array(values, type=pa.string()).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is not a clean ISO 8601 string: read them one by one
    return pa.array([parse_timestamp(value) for value in values], type=target)


_CONVERTERS = {
    ColumnType.TEXT: _convert_texts,
    ColumnType.JSON: _convert_json,
    ColumnType.INTEGER: _convert_integers,
    ColumnType.FLOAT: _convert_floats,
    ColumnType.BOOLEAN: _convert_booleans,
    ColumnType.TIMESTAMP: _convert_timestamps,
}


def unify_schemas(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """All columns of all schemas, first seen first; a column whose type differs is
    widened (`widen`), with a warning."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            present = fields.get(field.name)
            if present is None:
                fields[field.name] = field
                continue
            before, after = column_type_of(present), column_type_of(field)
            wider = widen(before, after)
            if wider is not before:
                warn_widened(field.name, before, after, wider)
                fields[field.name] = arrow_field(field.name, wider)
    return pa.schema(list(fields.values()))


def warn_widened(column: str, before: ColumnType, after: ColumnType, stored_as: ColumnType) -> None:
    emit(
        log,
        logging.WARNING,
        "column_widened",
        f"column {column} changes type from {before.value} to {after.value}: "
        f"stored as {stored_as.value} from now on",
        column=column,
        before=before.value,
        after=after.value,
        stored_as=stored_as.value,
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with exactly `schema`'s columns: missing ones null, the others converted
    to the schema's types (see `convert_array`)."""
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
            continue
        source = batch.schema.field(index)
        array = batch.column(index)
        if array.type != field.type or column_type_of(source) is not column_type_of(field):
            array = convert_array(array, column_type_of(source), field)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def convert_array(array: pa.Array, source: ColumnType, target: pa.Field) -> pa.Array:
    """Values typed as `source` in `target`'s type: a widening keeps every value (an
    integer as float, any scalar as text, any value as JSON); a narrowing nulls what
    does not fit."""
    wanted = column_type_of(target)
    if source is wanted or (source, wanted) == (ColumnType.INTEGER, ColumnType.FLOAT):
        try:
            return array.cast(target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # read value by value below
    if source is ColumnType.JSON and wanted in (ColumnType.TEXT, ColumnType.JSON):
        return array.cast(target.type)  # JSON text is the text, and the JSON
    values = array.to_pylist()
    if source is ColumnType.TIMESTAMP:
        values = [None if value is None else value.isoformat() for value in values]
    return convert_column(values, wanted)
