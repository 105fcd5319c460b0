"""Incremental state: what each stream has durably read, and where it is kept.

State is a typed value read before extraction and saved only after the target has
committed the rows it covers. Files are replaced atomically (write, fsync, rename),
so a crash leaves the old state, never one ahead of the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sentry_extract.errors import StateError
from sentry_extract.files import write_atomically

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
    """`watermark`: start time of the last complete run; events also per project id."""

    watermark: datetime | None = None
    project_watermarks: Mapping[str, datetime] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "project_watermarks": {
                project: moment.isoformat()
                for project, moment in sorted(self.project_watermarks.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamState:
        watermark = data.get("watermark")
        projects = data.get("project_watermarks") or {}
        return cls(
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            project_watermarks={str(k): datetime.fromisoformat(v) for k, v in projects.items()},
        )


class StateStore(Protocol):
    def load(self, key: StateKey) -> StreamState: ...

    def save(self, key: StateKey, state: StreamState) -> None: ...

    def reset(self, key: StateKey) -> bool: ...

    def describe(self) -> str: ...


class FileStateStore:
    """One JSON file holding the states of the keys written there."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise StateError(f"cannot read state file {self.path}: {error.strerror}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise StateError(
                f"state file {self.path} is not valid JSON; remove it (or run "
                "'sentry-extract state reset') to start over"
            ) from None
        streams = document.get("streams") if isinstance(document, dict) else None
        return streams if isinstance(streams, dict) else {}

    def load(self, key: StateKey) -> StreamState:
        entry = self._read().get(key.as_text())
        if not isinstance(entry, dict):
            return StreamState()
        try:
            return StreamState.from_json(entry.get("state") or {})
        except (TypeError, ValueError):
            raise StateError(f"state for {key.as_text()} in {self.path} is damaged") from None

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
        streams = self._read()
        if streams.pop(key.as_text(), None) is None:
            return False
        self._write(streams)
        return True

    def _write(self, streams: Mapping[str, Any]) -> None:
        document = {"version": STATE_VERSION, "streams": streams}
        try:
            write_atomically(self.path, json.dumps(document, indent=2, sort_keys=True).encode())
        except OSError as error:
            raise StateError(f"cannot write state file {self.path}: {error.strerror}") from None
