"""File targets by format: each stream's object is a Parquet dataset or a Delta table
(`target_options.format`), in the same place (folders here, or a bucket)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sentry_extract.state import StateStore
from sentry_extract.targets.base import StreamRequest, StreamWriter, Target

if TYPE_CHECKING:
    from sentry_extract.targets.storage import Place

DELTA = "delta"


class FileTarget:
    """Routes each object to the target of its format; Parquet when none is named."""

    def __init__(self, place: Place | None, formats: Mapping[str, str]) -> None:
        self.place = place
        self.formats = dict(formats)  # object -> format
        # Imported here, when files are the target: a run into a database does not load
        # pyarrow.parquet and the dataset's modules (about 20 ms of its start).
        from sentry_extract.targets.parquet import ParquetTarget

        self.parquet = ParquetTarget(place)
        self._delta: Target | None = None

    def is_delta(self, object_name: str) -> bool:
        return self.formats.get(object_name) == DELTA

    def target_of(self, object_name: str) -> Target:
        if not self.is_delta(object_name):
            return self.parquet
        if self._delta is None:
            from sentry_extract.targets.delta import DeltaTarget  # deltalake: only when used

            self._delta = DeltaTarget(self.place)
        return self._delta

    def object_problem(self, object_name: str) -> str | None:
        return self.target_of(object_name).object_problem(object_name)

    def state_store(self, object_name: str) -> StateStore:
        return self.target_of(object_name).state_store(object_name)

    def open_stream(
        self, request: StreamRequest, external_state: StateStore | None = None
    ) -> StreamWriter:
        return self.target_of(request.object).open_stream(request, external_state)

    def maintain(self, object_name: str) -> str:
        """Compact, vacuum and checkpoint a Delta table; one line saying what it is now."""
        if not self.is_delta(object_name):
            return "a Parquet dataset, nothing to maintain"
        from sentry_extract.targets.delta import DeltaTarget

        target = self.target_of(object_name)
        assert isinstance(target, DeltaTarget)
        report = target.maintain(object_name)
        if report is None:
            return "no Delta table yet, nothing to maintain"
        return (
            f"version {report.version}, {report.files} data files, {report.bytes} bytes "
            f"(was {report.files_before} files; {report.vacuumed} old files vacuumed)"
        )

    def close(self) -> None:
        self.parquet.close()
        if self._delta is not None:
            self._delta.close()
