"""The fake Sentry as its endpoints see it, without HTTP: the organization, the
settings, the log of requests, faults to serve, rate-limit windows and held requests.

The endpoints (`fake_http.py`, `fake_more.py`, `fake_control.py`) read and change a
`FakeState`; the server (`fake_sentry.FakeSentry`) is one, served over HTTP.
"""

from __future__ import annotations

import bisect
import operator
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sentry_extract.testing.organization import FakeOrganization
from sentry_extract.testing.rows import Row

FULL_PAGE_CAP = 10
ALL_GROUPS = "all"
DEFAULT_TOKEN = "sntryu_test_0123456789abcdef0123456789abcdef"
ALL_SCOPES = frozenset(
    {"org:read", "project:read", "team:read", "member:read", "event:read", "project:releases"}
)
ORG_TOKEN_SCOPES = frozenset({"org:ci"})


@dataclass(frozen=True)
class RateLimit:
    limit: int  # requests per window
    window: float  # seconds
    concurrent: int


SENTRY_IO_LIMITS = {
    "events": RateLimit(limit=60, window=60.0, concurrent=1),
    "default": RateLimit(limit=40, window=1.0, concurrent=25),
}


@dataclass
class RequestRecord:
    path: str
    params: list[tuple[str, str]]
    status: int
    group: str
    started: float
    started_wall: float = 0.0  # time.time(), the clock of the rate-limit windows
    ended: float = 0.0
    rows: int = 0

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)

    def has_param(self, name: str) -> bool:
        return any(key == name for key, _ in self.params)


@dataclass
class Fault:
    """Answer the next `times` requests whose path contains `path_part` with this."""

    path_part: str
    status: int
    body: Any = None
    times: int = 1
    raw: bytes | None = None  # a body sent as is (e.g. truncated JSON)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultRates:
    """Per-request chances of the failures sentry.io shows now and then."""

    server_error: float = 0.0  # 500, 502 or 503 with a detail
    rate_limited: float = 0.0  # 429 with a bare string body and no Retry-After
    reset: float = 0.0  # the connection closes without an answer
    slow: float = 0.0  # the answer comes `slow_seconds` late
    truncated: float = 0.0  # a 200 whose JSON body is cut short
    query_timeout: float = 0.0  # 400 "Query timeout" (Snuba overloaded)
    slow_seconds: float = 2.0
    seed: int = 1

    def pick(self, roll: float) -> str | None:
        """The fault a roll in [0, 1) falls on, if any."""
        for name in ("server_error", "rate_limited", "reset", "slow", "truncated", "query_timeout"):
            chance = float(getattr(self, name))
            if roll < chance:
                return name
            roll -= chance
        return None


def _event_order(event: Row) -> tuple[str, str]:
    return event["dateCreated"], event["eventID"]


@dataclass(frozen=True)
class _SortedEvents:
    key: tuple[int, int, int]  # the list's identity, its length and the organization's version
    ordered: list[Row]  # oldest first
    moments: list[str]  # their dateCreated, for bisect
    events: list[Row]  # the list as it was then (its head tells what was only added)


@dataclass
class ServerSettings:
    token_scopes: dict[str, frozenset[str]] = field(
        default_factory=lambda: {DEFAULT_TOKEN: ALL_SCOPES}
    )
    rate_limits: dict[str, RateLimit] | None = None  # None: no headers (self-hosted)
    retention: timedelta = timedelta(days=90)
    latency: float = 0.0  # seconds spent on each request
    forbidden_projects: frozenset[str] = frozenset()
    events_page_cap: int = FULL_PAGE_CAP
    faults: FaultRates = field(default_factory=FaultRates)
    explore_partial: bool = False  # Explore answers `meta.dataScanned: partial` (sampled)
    explore_refused: bool = False  # Explore is a 403 (a token or self-hosted without it)
    explore_max_rows: int = 10_000  # Explore's offset paging stops here
    explore_sampled_above: int | None = None  # a query matching more is sampled (half kept)
    explore_cap_refuses: bool = False  # at the cap `next` still says results="true"; a 400 follows
    # The organization lives in another region (sentry.io for an EU organization): its
    # details name this URL as `links.regionUrl`, every other request of it is a 404.
    region_url: str | None = None


class _Window:
    def __init__(self) -> None:
        self.started = 0.0
        self.count = 0
        self.in_flight = 0


class FakeState:
    """What the fake Sentry holds and counts; `base_url` is where it is served."""

    def __init__(
        self, organization: FakeOrganization | None = None, settings: ServerSettings | None = None
    ) -> None:
        self.organization = organization or FakeOrganization()
        self.settings = settings or ServerSettings()
        self.base_url = ""  # where it is served, once the server (`FakeSentry`) binds
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self.on_request: Callable[[RequestRecord], None] | None = None
        self.injected: dict[str, int] = {}  # faults served, by kind
        self.hold_after: int | None = None  # answer this many requests, hold the next ones
        self.released = threading.Event()
        self._sorted: dict[str, _SortedEvents] = {}
        self._random = random.Random(self.settings.faults.seed)
        self.max_in_flight: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def sorted_events(self, project_id: str) -> tuple[list[Row], list[str]]:
        """A project's events oldest first, with their timestamps; kept until they change.
        Events only added since (the list is the same, its head unchanged) are each put
        in their place; a project without new events keeps its order: sorting 50,000
        events again took the fake 100 ms a project, which a benchmark's run waited for
        after 100 new events (scenario 5)."""
        events = self.organization.events[project_id]
        key = (id(events), len(events), self.organization.version)
        cached = self._sorted.get(project_id)
        if cached is not None and cached.key == key:
            return cached.ordered, cached.moments
        seen = cached.events if cached is not None and cached.key[0] == id(events) else []
        unchanged_head = len(events) >= len(seen) and all(map(operator.is_, seen, events))
        if cached is not None and seen and unchanged_head:  # each added one put in its place
            ordered, moments = cached.ordered, cached.moments
            if len(events) > len(seen):
                ordered, moments = ordered[:], moments[:]
            for event in events[len(seen) :]:
                place = bisect.bisect_right(ordered, _event_order(event), key=_event_order)
                ordered.insert(place, event)
                moments.insert(place, event["dateCreated"])
            self._sorted[project_id] = _SortedEvents(key, ordered, moments, events[:])
            return ordered, moments
        ordered = sorted(events, key=_event_order)
        cached = _SortedEvents(key, ordered, [event["dateCreated"] for event in ordered], events[:])
        self._sorted[project_id] = cached
        return cached.ordered, cached.moments

    def log_request(self, record: RequestRecord) -> bool:
        """Keep the request in the log; True when it is to be held (see `hold`)."""
        with self._lock:
            self.requests.append(record)
            return self.hold_after is not None and len(self.requests) > self.hold_after

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def requests_to(self, path_part: str) -> list[RequestRecord]:
        with self._lock:
            return [record for record in self.requests if path_part in record.path]

    def stats(self) -> dict[str, Any]:
        """What it received: requests by endpoint and status, and the most in flight."""
        with self._lock:
            by_group: dict[str, dict[str, int]] = {}
            for record in self.requests:
                statuses = by_group.setdefault(record.group, {})
                statuses[str(record.status)] = statuses.get(str(record.status), 0) + 1
            return {
                "requests": len(self.requests),
                "by_endpoint": by_group,
                "max_in_flight": dict(self.max_in_flight),
                "rows": sum(record.rows for record in self.requests),
            }

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight.clear()

    def hold(self, after: int) -> None:
        """Answer `after` more requests (counted from the last reset), then hold the next
        ones unanswered until `release`: a benchmark kills its client at a known point."""
        with self._lock:
            self.released.clear()
            self.hold_after = after

    def release(self) -> None:
        with self._lock:
            self.hold_after = None
            self.released.set()

    def add_events_to(self, count: int, slugs: list[str] | None = None) -> int:
        """`count` events created now, spread evenly over these projects (default all).
        Every project's events are sorted again before it returns, so that the next reader
        does not wait for it (a third of a second per 50,000 events)."""
        organization = self.organization
        with organization.lock:
            chosen = slugs or [project["slug"] for project in organization.projects]
            for index, slug in enumerate(chosen):
                share = count // len(chosen) + (1 if index < count % len(chosen) else 0)
                if share:
                    organization.add_events(share, project_slug=slug)
            for project in organization.projects:  # any change makes every project stale
                self.sorted_events(project["id"])
        return count

    def event_keys(self) -> list[tuple[str, str]]:
        """(project id, event id) of every event a complete extraction holds."""
        events = self.organization.visible_events(self.settings.retention)
        return [(event["projectID"], event["eventID"]) for event in events]

    # --- rate limits ----------------------------------------------------------------------

    def admit(self, group: str) -> tuple[dict[str, str], str | None]:
        """Count the request against its group; the headers, and a 429 text if over."""
        limits = self.settings.rate_limits
        with self._lock:
            for counted in (group, ALL_GROUPS):
                self._in_flight[counted] = self._in_flight.get(counted, 0) + 1
                self.max_in_flight[counted] = max(
                    self.max_in_flight.get(counted, 0), self._in_flight[counted]
                )
            in_flight = self._in_flight[group]
            if limits is None:
                return {}, None
            limit = limits.get(group) or limits["default"]
            window = self._windows.setdefault(group, _Window())
            now = time.time()
            if now - window.started >= limit.window:
                window.started, window.count = now - (now % limit.window), 0
            window.count += 1
            reset = window.started + limit.window
            headers = {
                "X-Sentry-Rate-Limit-Limit": str(limit.limit),
                "X-Sentry-Rate-Limit-Remaining": str(max(0, limit.limit - window.count)),
                "X-Sentry-Rate-Limit-Reset": str(
                    int(reset) if reset == int(reset) else int(reset) + 1
                ),
                "X-Sentry-Rate-Limit-ConcurrentLimit": str(limit.concurrent),
                "X-Sentry-Rate-Limit-ConcurrentRemaining": str(
                    max(0, limit.concurrent - in_flight)
                ),
            }
            if window.count > limit.limit:
                return headers, (
                    f"You are attempting to use this endpoint too frequently. "
                    f"Limit is {limit.limit} requests in {int(limit.window)} seconds"
                )
            if in_flight > limit.concurrent:
                return headers, (
                    "You are attempting to go above the allowed concurrency for "
                    f"this endpoint. Concurrency limit is {limit.concurrent}"
                )
            return headers, None

    def leave(self, group: str) -> None:
        """A request of this group is answered: it no longer counts as in flight."""
        with self._lock:
            self._in_flight[group] -= 1
            self._in_flight[ALL_GROUPS] -= 1

    def roll_fault(self) -> str | None:
        with self._lock:
            kind = self.settings.faults.pick(self._random.random())
            if kind is not None:
                self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path_part in path and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None
