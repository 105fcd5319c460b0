"""Rows as the fake Sentry holds and serves them, and its timestamps.

The bottom of the fake: the organization's rows (`organization.py`, `extras.py`), the
state the endpoints read (`fake_state.py`), the endpoints (`fake_http.py`, `fake_more.py`,
`fake_control.py`) and the HTTP server on top (`fake_sentry.py`) all build on it, and it
imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

Row = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def public(row: Row, hidden: Iterable[str] = ()) -> Row:
    """The row as served: internal `_` keys and `hidden` keys removed."""
    drop = set(hidden)
    return {key: value for key, value in row.items() if not key.startswith("_") and key not in drop}
