"""What a run reports: one result per stream, and the run's summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    results: list[StreamResult]
    seconds: float
    fatal: str | None = None  # what stopped the whole run, if anything

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.results)

    @property
    def requests(self) -> int:
        return sum(result.requests for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "requests": self.requests,
            "fatal": self.fatal,
            "streams": [asdict(result) for result in self.results],
        }

    @property
    def exit_code(self) -> int:
        failed = self.fatal or any(result.status != STATUS_OK for result in self.results)
        return 1 if failed else 0
