"""Client-side ceilings and the retry policy, with a fake clock and sleep."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from sentry_extract.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
)
from sentry_extract.source.client import classify_response, retry_after
from sentry_extract.source.ratelimit import TokenBucket
from sentry_extract.source.wire import Answer, Headers
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import Workspace, sentry_connection


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_token_bucket_spaces_requests_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=3, burst=1, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(10):
        bucket.acquire()
        starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == 100.0
    assert all(gap == pytest.approx(1 / 3) for gap in gaps)


def test_rate_zero_lifts_the_cap() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        assert bucket.acquire() == 0.0
    assert clock.now == 100.0


class SharedClock:
    """A run's clock and sleep, shared by its threads as real time is: a wait ends at the
    moment its thread last read the clock plus the seconds, and the clock never goes back.
    `granted` is when the calling thread may go on (after its last read or wait)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()
        self._thread = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._thread.granted = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._thread.granted = self.granted + seconds
            self.now = max(self.now, self._thread.granted)

    @property
    def granted(self) -> float:
        return float(getattr(self._thread, "granted", self.now))


class StartsRecorded(httpx.HTTPTransport):
    """Real HTTP; notes, by the run's clock, when each request was let go."""

    def __init__(self, clock: SharedClock) -> None:
        super().__init__()
        self.clock = clock
        self.starts: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.starts.append(self.clock.granted)
        return super().handle_request(request)


def test_rate_cap_holds_over_real_http(workspace: Workspace, fake: FakeSentry) -> None:
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, rate_limit=20, concurrency=4)
    workspace.replication()
    clock = SharedClock()  # the cap is measured by the run's clock, not by how busy we are
    transport = StartsRecorded(clock)
    assert workspace.run(sleep=clock.sleep, clock=clock, transport=transport).exit_code == 0
    starts = sorted(transport.starts)
    assert len(starts) == len(fake.requests) > 20
    # Never more than burst 1 + rate x elapsed requests in any stretch.
    for index, start in enumerate(starts):
        window = [s for s in starts[index:] if s - start < 1.0]
        assert len(window) <= 21
    assert starts[-1] >= (len(starts) - 1) / 20  # and the run waited for every slot


def request(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, Headers(list((headers or {}).items())), body, "/api/0/x/")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{"detail": "Invalid token"}', AuthenticationError),
        (
            403,
            b'{"detail": "You do not have permission to perform this action."}',
            PermissionDeniedError,
        ),
        (404, b'{"detail": "The requested resource does not exist"}', NotFoundError),
        (400, b'{"detail": "Invalid cursor parameter."}', BadRequestError),
        (400, b'{"detail": "Query timeout. Please try again."}', ServerError),
        (429, b'"You are attempting to use this endpoint too frequently."', RateLimitedError),
        (500, b'{"detail": "Internal Error"}', ServerError),
        (503, b"<html>bad gateway</html>", ServerError),
    ],
)
def test_classification(status: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        classify_response(request(status, body), "h")


def test_429_bare_string_is_the_message() -> None:
    with pytest.raises(RateLimitedError, match="too frequently"):
        classify_response(
            request(429, b'"You are attempting to use this endpoint too frequently."'), "h"
        )


def test_a_remaining_count_that_is_no_decimal_number_is_ignored() -> None:
    headers = {"X-Sentry-Rate-Limit-Remaining": "\u00b2", "X-Sentry-Rate-Limit-Reset": "1012"}
    assert retry_after(request(429, headers=headers), lambda: 1000.0) == 12


def test_retry_after_prefers_the_header_then_the_reset() -> None:
    assert retry_after(request(429, headers={"Retry-After": "7"}), lambda: 0) == 7
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    http_date = format_datetime(moment + timedelta(seconds=30), usegmt=True)
    assert retry_after(
        request(429, headers={"Retry-After": http_date}), lambda: moment.timestamp()
    ) == pytest.approx(30)
    assert (
        retry_after(request(429, headers={"X-Sentry-Rate-Limit-Reset": "1012"}), lambda: 1000.0)
        == 12
    )
    assert retry_after(request(429), lambda: 0) is None


def test_a_concurrency_429_waits_a_moment_not_for_the_reset() -> None:
    headers = {
        "X-Sentry-Rate-Limit-Remaining": "17",
        "X-Sentry-Rate-Limit-Reset": "1050",
        "X-Sentry-Rate-Limit-ConcurrentRemaining": "0",
    }
    assert retry_after(request(429, headers=headers), lambda: 1000.0) == 1.0
    headers["X-Sentry-Rate-Limit-Remaining"] = "0"
    assert retry_after(request(429, headers=headers), lambda: 1000.0) == 50


def test_a_truncated_json_body_is_retried(workspace: Workspace, fake: FakeSentry) -> None:
    from sentry_extract.testing.fake_sentry import Fault

    fake.inject(Fault("/teams/", 200, raw=b'[{"id": "1", "sl', times=1))
    workspace.replication("  teams:\n")
    summary = workspace.run()
    assert summary.exit_code == 0 and summary.results[0].retries == 1
    assert summary.results[0].rows == 3


def test_retries_are_bounded(workspace: Workspace, fake: FakeSentry) -> None:
    from sentry_extract.testing.fake_sentry import Fault

    fake.inject(Fault("/teams/", 502, body={"detail": "bad gateway"}, times=100))
    workspace.replication("  teams:\n")
    summary = workspace.run()
    assert summary.exit_code == 1
    assert len(fake.requests_to("/teams/")) == 4  # the policy's attempts
    assert "502" in summary.results[0].problems[0]


def test_pacing_by_headers_earns_no_429(tmp_path: Path) -> None:
    """sentry.io's shape, scaled down: events 6 per 2 s and 1 in flight; the rest 10/s."""
    from sentry_extract.testing.fake_sentry import RateLimit, ServerSettings
    from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

    limits = {
        "events": RateLimit(limit=6, window=2.0, concurrent=1),
        "default": RateLimit(limit=10, window=1.0, concurrent=2),
    }
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=20, events=150))
    with FakeSentry(organization, ServerSettings(rate_limits=limits, latency=0.01)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url, rate_limit=0, concurrency=3),
        }
        workspace = Workspace(tmp_path, environ, [])
        workspace.replication()
        summary = workspace.run(sleep=time.sleep)
        assert summary.exit_code == 0, [r.problems for r in summary.results]
        statuses = [r.status for r in fake.requests]
        assert 429 not in statuses
        assert fake.max_in_flight["events"] == 1
        events = fake.requests_to("/events/")
    expected = {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(timedelta(days=90))
    }
    assert len(workspace.table("events")) == len(expected)
    # Never more than the window allows: any 2-second stretch holds at most 6 + 6 starts
    # only across a window boundary; within one window, at most 6.
    windows: dict[int, int] = {}
    for record in events:
        windows[int(record.started_wall // 2)] = windows.get(int(record.started_wall // 2), 0) + 1
    assert max(windows.values()) <= 6


def test_a_429_pauses_the_whole_group(tmp_path: Path) -> None:
    from sentry_extract.source.ratelimit import ServerPacer

    clock = FakeClock()
    pacer = ServerPacer(wall_clock=clock, sleep=clock.sleep)
    pacer.observe("events", {"X-Sentry-Rate-Limit-ConcurrentLimit": "2"})
    pacer.pause("events", 30)
    with pacer.slot("events") as waited:
        assert waited == 30
    with pacer.slot("default") as waited:
        assert waited == 0


def test_remaining_zero_waits_for_the_reset() -> None:
    from sentry_extract.source.ratelimit import ServerPacer

    clock = FakeClock()
    pacer = ServerPacer(wall_clock=clock, sleep=clock.sleep)
    with pacer.slot("events"):
        pacer.observe(
            "events",
            {
                "X-Sentry-Rate-Limit-Remaining": "0",
                "X-Sentry-Rate-Limit-Reset": str(clock.now + 12),
                "X-Sentry-Rate-Limit-ConcurrentLimit": "1",
            },
        )
    with pacer.slot("events") as waited:
        assert waited == 12


def test_each_endpoint_is_paced_on_its_own() -> None:
    from sentry_extract.source.ratelimit import ServerPacer, rate_limit_group

    assert rate_limit_group("projects/acme/p1/events/") == rate_limit_group(
        "projects/acme/p2/events/"
    )
    issues, teams = (
        rate_limit_group("organizations/acme/issues/"),
        rate_limit_group("organizations/acme/teams/"),
    )
    assert issues != teams
    clock = FakeClock()
    pacer = ServerPacer(wall_clock=clock, sleep=clock.sleep)
    with pacer.slot(issues):
        pacer.observe(
            issues,
            {
                "X-Sentry-Rate-Limit-Remaining": "0",
                "X-Sentry-Rate-Limit-Reset": str(clock.now + 30),
                "X-Sentry-Rate-Limit-ConcurrentLimit": "2",
            },
        )
    with pacer.slot(teams) as waited:
        assert waited == 0  # the issues window being spent does not hold the teams list
    with pacer.slot(issues) as waited:
        assert waited == 30


def test_a_query_timeout_is_a_range_too_large_and_is_retried() -> None:
    from sentry_extract.errors import RangeTooLargeError, RetriableError

    with pytest.raises(RangeTooLargeError) as timed_out:
        classify_response(request(400, b'{"detail": "Query timeout. Please try again."}'), "h")
    assert isinstance(timed_out.value, RetriableError)
    with pytest.raises(BadRequestError) as refused:
        classify_response(request(400, b'{"detail": "Invalid cursor parameter."}'), "h")
    assert not isinstance(refused.value, RangeTooLargeError)
