"""The plan of a run (`run --dry-run`): what each stream would ask, from saved state.

Each stream's reader answers, the same object that reads it in a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from sentry_extract.config.connections import ConnectionEntry
from sentry_extract.config.replication import Replication
from sentry_extract.pipeline.connect import resolve_source, state_stores
from sentry_extract.reading import reader_for
from sentry_extract.reading.base import Scope, saved_state
from sentry_extract.source.retention import Retention

if TYPE_CHECKING:
    from sentry_extract.source.cassettes import Recording


@dataclass(frozen=True)
class StreamPlan:
    """What a run would do for one stream (`run --dry-run`)."""

    name: str
    mode: str
    object: str
    windows: tuple[str, ...]  # what it would read: one line, or one per saved project
    first_request: str


def plan_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
    replay: Recording | None = None,
) -> list[StreamPlan]:
    """The plan of a run, from the saved state; no request is sent and nothing written."""
    source = resolve_source(replication, connections, replay)
    started = replication.run_started_at
    plans = []
    for stream, key, store in state_stores(replication, connections, state_location, replay):
        retention = Retention(source.retention_days, None, started)  # never asked: no probe
        reader = reader_for(Scope.of(stream, source, started, retention))
        planned = reader.plan(saved_state(stream.spec, partial(store.load, key)))
        plans.append(
            StreamPlan(
                stream.name,
                str(stream.mode),
                stream.object,
                planned.windows,
                planned.first_request,
            )
        )
    return plans
