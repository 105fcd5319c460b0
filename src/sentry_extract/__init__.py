"""sentry-extract: Sentry organizations, projects, teams, members, releases, issues and
events into Parquet, Delta tables, DuckDB or PostgreSQL, incrementally.

From Python (the library call under `sentry-extract run`; see `sentry_extract.api`):

    import sentry_extract

    report = sentry_extract.run("replication.yaml", streams=["issues"])
    print(report.exit_code, [(s.name, s.status, s.rows) for s in report.streams])

The names below load `sentry_extract.api` when first used, not on `import sentry_extract`:
the command (`python -m sentry_extract`) sets how Arrow allocates before pyarrow loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sentry_extract.api import (
        Plan,
        ReplicationInfo,
        RunControl,
        RunReport,
        StreamInfo,
        StreamReport,
        describe,
        plan,
        run,
    )

__all__ = [
    "Plan",
    "ReplicationInfo",
    "RunControl",
    "RunReport",
    "StreamInfo",
    "StreamReport",
    "__version__",
    "describe",
    "plan",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sentry_extract import api

        return getattr(api, name)
    raise AttributeError(f"module 'sentry_extract' has no attribute '{name}'")
