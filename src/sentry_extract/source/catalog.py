"""Every stream by name: the seven of Sling's connector, then the further ones."""

from __future__ import annotations

from sentry_extract.model.spec import StreamSpec
from sentry_extract.source.code_streams import CODE_STREAMS
from sentry_extract.source.explore_streams import EXPLORE_STREAMS
from sentry_extract.source.further_streams import FURTHER_STREAMS
from sentry_extract.source.streams import SLING_STREAMS

STREAMS: tuple[StreamSpec, ...] = (
    *SLING_STREAMS,
    *FURTHER_STREAMS,
    *EXPLORE_STREAMS,
    *CODE_STREAMS,
)
# What `'*'` selects: the seven of Sling's connector (see README, "All streams").
WILDCARD_NAMES: tuple[str, ...] = tuple(spec.name for spec in STREAMS if not spec.named_only)
STREAM_NAMES: tuple[str, ...] = tuple(spec.name for spec in STREAMS)
STREAMS_BY_NAME: dict[str, StreamSpec] = {spec.name: spec for spec in STREAMS}
