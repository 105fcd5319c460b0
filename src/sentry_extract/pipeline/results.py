"""What a run reports: one result per stream, and the run's summary, filled in as it runs
(`api.RunReport.from_summary` makes the frozen report callers get)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sentry_extract.errors import exit_code

STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"


@dataclass
class StreamResult:
    name: str
    mode: str
    object: str
    rows: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    checkpoints: int = 0  # commits made while the stream was read
    reconciled: bool = False  # compared every stored key with Sentry
    deleted: int = 0  # rows stamped `_deleted_at` by this run
    behind: dict[str, Any] | None = None  # figures, when the stream cannot keep up
    status: str = STATUS_OK
    problems: list[str] = field(default_factory=list)
    stopped_run: bool = False  # its failure (a rejected token) stopped every stream


@dataclass
class RunSummary:
    """A run's outcome. `fatal` names what stopped the whole run, if anything, and
    `stopped_by` is the error (a signal: `Interrupted`) that did, when there was one; the
    exit code follows from both and the streams' (`errors.exit_code`).
    `preflight_requests` are those made before the streams that no stream counts (the
    check of the organization, when `organizations` is not a stream of the run)."""

    results: list[StreamResult]
    seconds: float
    fatal: str | None = None
    stopped_by: BaseException | None = None
    preflight_requests: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.results)

    @property
    def requests(self) -> int:
        return self.preflight_requests + sum(result.requests for result in self.results)

    @property
    def exit_code(self) -> int:
        failed = bool(self.fatal) or any(result.status != STATUS_OK for result in self.results)
        return exit_code(self.stopped_by, incomplete=failed)
