"""Whether a stream keeps up: how far each of its crawls got, against the rows it read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sentry_extract.model.windows import Coverage, Window

MIN_ROWS_FOR_RATES = 100  # fewer rows say nothing about rates


def describe_lag(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds % 60):02d}s"


class Lag:
    """Each crawl's window and how much of it is read (one crawl, or one per project),
    as readers note them; from the run's start and the time the stream took."""

    def __init__(self, started: datetime, clock: Callable[[], float]) -> None:
        self.started = started
        self.clock = clock
        self.began = clock()
        self.crawls: dict[str, tuple[Window, Coverage]] = {}

    def note(self, crawl: str, window: Window, coverage: Coverage) -> None:
        self.crawls[crawl] = (window, coverage)

    def behind(self, rows_read: int) -> dict[str, Any] | None:
        """Figures and advice when the stream cannot keep up, else None: its watermark is
        behind the run's start (the run ended first), or rows arrive in Sentry faster than
        this run read them."""
        if not self.crawls:
            return None
        crawls = list(self.crawls.values())
        lag = max(c.started_at(w.start).lag(self.started) for w, c in crawls).total_seconds()
        covered = sum(coverage.measure(window) for window, coverage in crawls)
        elapsed = max(self.clock() - self.began, 1e-3)
        read = rows_read / elapsed * 60
        arriving = rows_read / covered * 60 if covered > 0 else 0.0
        slower = rows_read >= MIN_ROWS_FOR_RATES and arriving > read
        if lag <= 0 and not slower:
            return None
        advice = (
            "raise the rate limits (inputs.rate_limit, or ask Sentry for more), narrow "
            "inputs.projects, or read a lighter stream (issues instead of events)"
        )
        if not slower:
            advice = "the next run goes on from there; if this repeats, " + advice
        return {
            "lag_seconds": round(lag),
            "rows_per_minute_read": round(read),
            "rows_per_minute_arriving": round(arriving),
            "message": (
                f"falling behind: the watermark is {describe_lag(lag)} behind the run's start; "
                f"read {read:,.0f} rows a minute while about {arriving:,.0f} arrive; {advice}"
            ),
        }
