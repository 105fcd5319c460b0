"""Incremental state: what each stream has durably read, and where it is kept.

State is a typed value read before extraction and saved only after the target has
committed the rows it covers. Files are replaced atomically (write, fsync, rename),
so a crash leaves the old state, never one ahead of the data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sentry_extract.errors import DamagedStateError, StateError
from sentry_extract.files import fsync_folder, write_atomically
from sentry_extract.model.windows import Coverage, Window

log = logging.getLogger("sentry_extract.state")

STATE_VERSION = 1


@dataclass(frozen=True)
class StateKey:
    source: str
    organization: str
    stream: str
    object: str

    def as_text(self) -> str:
        return f"{self.source}/{self.organization}/{self.stream}/{self.object}"


@dataclass(frozen=True)
class StreamState:
    """Where a stream's crawl got to: one coverage (issues), or one per project id
    (events); when the stream was last reconciled with Sentry; and the retention (days)
    Sentry was found to keep, if a run learned it."""

    coverage: Coverage = field(default_factory=Coverage)
    projects: Mapping[str, Coverage] = field(default_factory=dict)
    reconciled_at: datetime | None = None
    retention_days: int | None = None

    @property
    def watermark(self) -> datetime | None:
        return self.coverage.watermark

    @property
    def project_watermarks(self) -> dict[str, datetime]:
        return {
            project: coverage.watermark
            for project, coverage in self.projects.items()
            if coverage.watermark is not None
        }

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "watermark": _text(self.coverage.watermark),
            "project_watermarks": dict(
                sorted(
                    (project, moment.isoformat())
                    for project, moment in self.project_watermarks.items()
                )
            ),
        }
        if self.coverage.ranges:
            document["ranges"] = _ranges_json(self.coverage.ranges)
        ranges = {p: _ranges_json(c.ranges) for p, c in sorted(self.projects.items()) if c.ranges}
        if ranges:
            document["project_ranges"] = ranges
        if self.reconciled_at is not None:
            document["reconciled_at"] = self.reconciled_at.isoformat()
        if self.retention_days is not None:
            document["retention_days"] = self.retention_days
        return document

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamState:
        watermarks = data.get("project_watermarks") or {}
        ranges = data.get("project_ranges") or {}
        projects = {
            str(project): Coverage(_moment(watermarks.get(project)), _ranges(ranges.get(project)))
            for project in {*watermarks, *ranges}
        }
        return cls(
            coverage=Coverage(_moment(data.get("watermark")), _ranges(data.get("ranges"))),
            projects=projects,
            reconciled_at=_moment(data.get("reconciled_at")),
            retention_days=_days(data.get("retention_days")),
        )


def _days(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"retention_days: {value!r}")
    return value


def _text(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _ranges_json(ranges: tuple[Window, ...]) -> list[list[str]]:
    return [[window.start.isoformat(), window.end.isoformat()] for window in ranges]


def _ranges(data: Any) -> tuple[Window, ...]:
    return tuple(
        Window(datetime.fromisoformat(start), datetime.fromisoformat(end))
        for start, end in data or ()
    )


class StateStore(Protocol):
    def load(self, key: StateKey) -> StreamState: ...

    def save(self, key: StateKey, state: StreamState) -> None: ...

    def reset(self, key: StateKey) -> bool: ...

    def describe(self) -> str: ...


class Document(Protocol):
    """Where a state file's bytes live: a local file, or an object beside a dataset."""

    def describe(self) -> str: ...

    def read(self) -> bytes | None:
        """The content, None when there is none; OSError when it cannot be read."""

    def write(self, content: bytes) -> None:
        """Replace the content in one step; OSError when it cannot be written."""

    def remove(self) -> None:
        """Remove the document (nothing happens when it is gone); OSError on failure."""


class LocalDocument:
    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, content: bytes) -> None:
        write_atomically(self.path, content)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_folder(self.path.parent)


class JsonStateStore:
    """One JSON document holding the states of the keys written there."""

    def __init__(self, document: Document) -> None:
        self.document = document

    def describe(self) -> str:
        return self.document.describe()

    def _read(self) -> dict[str, Any]:
        try:
            content = self.document.read()
        except OSError as error:
            raise StateError(
                f"cannot read state file {self.describe()}: {_reason(error)}"
            ) from None
        if content is None:
            return {}
        try:
            document = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DamagedStateError(self.describe()) from None
        streams = document.get("streams") if isinstance(document, dict) else None
        return streams if isinstance(streams, dict) else {}

    def load(self, key: StateKey) -> StreamState:
        entry = self._read().get(key.as_text())
        if not isinstance(entry, dict):
            return StreamState()
        try:
            return StreamState.from_json(entry.get("state") or {})
        except (TypeError, ValueError):
            raise StateError(f"state for {key.as_text()} in {self.describe()} is damaged") from None

    def save(self, key: StateKey, state: StreamState) -> None:
        streams = self._read()
        streams[key.as_text()] = {
            "source": key.source,
            "organization": key.organization,
            "stream": key.stream,
            "object": key.object,
            "state": state.to_json(),
        }
        self._write(streams)

    def reset(self, key: StateKey) -> bool:
        """Forget `key`'s state; a document that is not JSON at all is removed."""
        try:
            streams = self._read()
        except DamagedStateError:
            self._remove()
            return True
        if streams.pop(key.as_text(), None) is None:
            return False
        self._write(streams)
        return True

    def _remove(self) -> None:
        try:
            self.document.remove()
        except OSError as error:
            raise StateError(
                f"cannot remove state file {self.describe()}: {_reason(error)}"
            ) from None
        log.warning("state file %s was not valid JSON: removed", self.describe())

    def _write(self, streams: Mapping[str, Any]) -> None:
        document = {"version": STATE_VERSION, "streams": streams}
        try:
            self.document.write(json.dumps(document, indent=2, sort_keys=True).encode())
        except OSError as error:
            raise StateError(
                f"cannot write state file {self.describe()}: {_reason(error)}"
            ) from None


class FileStateStore(JsonStateStore):
    """A state file on this machine."""

    def __init__(self, path: Path) -> None:
        super().__init__(LocalDocument(path))
        self.path = path


def _reason(error: OSError) -> str:
    """What went wrong, on one line."""
    text = error.strerror or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
