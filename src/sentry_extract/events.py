"""Structured events, carried by log records.

The library logs what happens (`run_start`, `stream_start`, `page`, `retry`,
`rate_limit_wait`, `stream_end`, `run_end`) with the event's fields attached to the
record; the command line decides how to show them: progress bars on a terminal, plain
lines in a log file, or one JSON object per event for a log collector.
"""

from __future__ import annotations

import logging
from typing import Any

EVENT = "sentry_extract_event"
FIELDS = "sentry_extract_fields"


def emit(
    logger: logging.Logger,
    level: int,
    event: str,
    message: str,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log `message` (already formatted) with `event` and its `fields` attached (and the
    traceback of `exc_info`, if given)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, exc_info=exc_info, extra={EVENT: event, FIELDS: fields})


def event_of(record: logging.LogRecord) -> tuple[str | None, dict[str, Any]]:
    return getattr(record, EVENT, None), dict(getattr(record, FIELDS, {}) or {})


def counted(count: int, noun: str) -> str:
    """`1 request`, `2 requests`, `1,234 rows`: a count for a message."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
