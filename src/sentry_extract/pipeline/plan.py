"""The plan of a run (`run --dry-run`): what each stream would ask, from saved state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sentry_extract.config.connections import ConnectionEntry
from sentry_extract.config.replication import Replication
from sentry_extract.pipeline.connect import resolve_source, state_stores
from sentry_extract.pipeline.loader import stream_window
from sentry_extract.source.extract import request_params, stream_path
from sentry_extract.source.streams import Shape
from sentry_extract.source.windows import Window, format_datetime
from sentry_extract.state import StreamState


@dataclass(frozen=True)
class StreamPlan:
    """What a run would do for one stream (`run --dry-run`)."""

    name: str
    mode: str
    object: str
    window: str
    first_request: str


def plan_replication(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
) -> list[StreamPlan]:
    """The plan of a run, from the saved state; no request is sent and nothing written."""
    source = resolve_source(replication, connections)
    plans = []
    for stream, key, store in state_stores(replication, connections, state_location):
        spec = stream.spec
        state = store.load(key) if spec.is_incremental else StreamState()
        started = replication.run_started_at
        window: Window | None = None
        described = "-"
        if spec.shape is Shape.WINDOWED:
            window = stream_window(stream, source, state.watermark, started)
            described = f"{format_datetime(window.start)} to {format_datetime(window.end)}"
        elif spec.shape is Shape.PER_PROJECT:
            window = stream_window(stream, source, None, started)
            saved = len(state.project_watermarks)
            described = (
                f"per project: {saved} from their saved state, others "
                f"{format_datetime(window.start)} to {format_datetime(window.end)}"
            )
        path = stream_path(spec, source.organization, "{project}")
        params = request_params(spec, window, stream.query)
        query = "&".join(f"{name}={value}" for name, value in params.items())
        plans.append(
            StreamPlan(
                stream.name,
                stream.mode,
                stream.object,
                described,
                f"GET /api/0/{path}" + (f"?{query}" if query else ""),
            )
        )
    return plans
