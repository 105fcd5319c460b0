"""Sling's partition variables in a file target's `object`.

`file://out/{stream_name}/{part_year}/{part_month}` writes each row below the folder
its update key's time names (`out/events/2026/11/`); `year={part_year}` makes
Hive-style folders that pyarrow, DuckDB, Spark and Trino read as columns. Rows
without an update key (or streams without one) take the run's start time.
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
        count = len(moments)
        if not self.template:
            return pa.array([""] * count, pa.string())
        if count == 0:
            return pa.array([], pa.string())
        filled = pc.fill_null(moments, pa.scalar(fallback, type=moments.type))
        pieces: list[pa.Array | str] = []
        position = 0
        for match in _VARIABLE.finditer(self.template):
            if match.start() > position:
                pieces.append(self.template[position : match.start()])
            pieces.append(pc.strftime(filled, format=FORMATS[match.group(1)], locale="C"))
            position = match.end()
        if position < len(self.template):
            pieces.append(self.template[position:])
        arrays = [
            piece if isinstance(piece, pa.Array) else pa.array([piece] * count, pa.string())
            for piece in pieces
        ]
        if len(arrays) == 1:
            return arrays[0].cast(pa.string())
        joined: pa.Array = pc.binary_join_element_wise(*arrays, "")
        return joined
