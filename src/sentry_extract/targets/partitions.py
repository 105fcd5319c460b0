"""Sling's partition variables in a file target's `object`.

`file://out/{stream_name}/{part_year}/{part_month}` writes each row below the folder
its update key's time names (`out/events/2026/11/`); `year={part_year}` makes
Hive-style folders that pyarrow, DuckDB, Spark and Trino read as columns. Rows
without an update key (or streams without one) take the run's start time.

A Delta table's partition columns come from the same template (`partition_columns`): each
folder is a column, `year={part_year}` the column `year`, a bare `{part_month}` the
column `part_month`; their values are the folder names, as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

FORMATS = {
    "part_year": "%Y",
    "part_month": "%m",
    "part_year_month": "%Y-%m",
    "part_week": "%V",  # ISO 8601 week of the year, 01 to 53
    "part_day": "%d",
    "part_hour": "%H",
    "part_minute": "%M",
}
PARTITION_VARIABLES = tuple(FORMATS)
_VARIABLE = re.compile(r"\{(part_[a-z_]+)\}")
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TIMESTAMP = pa.timestamp("us", tz="UTC")


def has_partitions(object_name: str) -> bool:
    return bool(_VARIABLE.search(object_name))


@dataclass(frozen=True)
class Layout:
    """A dataset's root, and the template of the folders below it (empty: none)."""

    root: str
    template: str = ""

    @classmethod
    def parse(cls, path: str) -> Layout:
        """Split at the first folder that holds a partition variable."""
        parts = path.split("/")
        first = next((i for i, part in enumerate(parts) if _VARIABLE.search(part)), None)
        if first is None:
            return cls(path)
        return cls("/".join(parts[:first]) or ".", "/".join(parts[first:]))

    def problem(self) -> str | None:
        """What is wrong with the template, or None."""
        for name in _VARIABLE.findall(self.template):
            if name not in FORMATS:
                return f"unknown partition variable '{{{name}}}'; use " + ", ".join(
                    "{" + known + "}" for known in PARTITION_VARIABLES
                )
        if self.template and any(part in ("", ".", "..") for part in self.template.split("/")):
            return "partition folders must be names, not empty, '.' or '..'"
        return None

    def folders(self, moments: pa.Array, fallback: datetime) -> pa.Array:
        """The folder (relative to the root) of each row, from its update key's time."""
        return render(self.template, moments, fallback)

    def partition_columns(self) -> tuple[PartitionColumn, ...]:
        """The columns the template's folders name (see the module's docstring)."""
        folders = self.template.split("/") if self.template else []
        return tuple(PartitionColumn.of(folder) for folder in folders)

    def column_problem(self) -> str | None:
        """Why the template's folders cannot be a table's partition columns, or None."""
        names: set[str] = set()
        for folder in self.template.split("/") if self.template else []:
            column = PartitionColumn.of(folder)
            if not _VARIABLE.search(column.template):
                return (
                    f"partition folder '{folder}' holds no partition variable: each folder "
                    "of a Delta table's partitions is a column, as in "
                    "year={part_year}/month={part_month}"
                )
            if not _COLUMN_NAME.fullmatch(column.name):
                return (
                    f"partition folder '{folder}' does not name its column: write "
                    "name={part_...}, as in year={part_year}/month={part_month}"
                )
            if column.name in names:
                return f"partition column '{column.name}' is named twice"
            names.add(column.name)
        return None


@dataclass(frozen=True)
class PartitionColumn:
    """A table's partition column: its name, and the template of its values."""

    name: str
    template: str  # "{part_year}", "{part_year}-{part_month}", ...

    @classmethod
    def of(cls, folder: str) -> PartitionColumn:
        """`year={part_year}` is the column `year`; a bare `{part_year}` is `part_year`."""
        name, equals, template = folder.partition("=")
        if not equals:
            return cls(folder.removeprefix("{").removesuffix("}"), folder)
        return cls(name, template)

    def values(self, moments: pa.Array, fallback: datetime) -> pa.Array:
        """The column's value for each row, from its update key's time."""
        return render(self.template, moments, fallback)


def update_moments(batch: pa.RecordBatch, column: str | None) -> pa.Array:
    """The times partitions come from: `column`'s values, or nulls when the batch has no
    such time column (each null then takes the fallback: the run's start)."""
    index = batch.schema.get_field_index(column) if column else -1
    if index < 0 or not pa.types.is_timestamp(batch.schema.field(index).type):
        return pa.nulls(batch.num_rows, TIMESTAMP)
    moments: pa.Array = batch.column(index)
    return moments


def render(template: str, moments: pa.Array, fallback: datetime) -> pa.Array:
    """`template` with each variable replaced by the moment's part, one text per row."""
    count = len(moments)
    if not template:
        return pa.array([""] * count, pa.string())
    if count == 0:
        return pa.array([], pa.string())
    filled = pc.fill_null(moments, pa.scalar(fallback, type=moments.type))
    pieces: list[pa.Array | str] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        if match.start() > position:
            pieces.append(template[position : match.start()])
        pieces.append(pc.strftime(filled, format=FORMATS[match.group(1)], locale="C"))
        position = match.end()
    if position < len(template):
        pieces.append(template[position:])
    arrays = [
        piece if isinstance(piece, pa.Array) else pa.array([piece] * count, pa.string())
        for piece in pieces
    ]
    if len(arrays) == 1:
        return arrays[0].cast(pa.string())
    joined: pa.Array = pc.binary_join_element_wise(*arrays, "")
    return joined
