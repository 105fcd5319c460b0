"""Pacing shared by every stream of a run.

Client-side ceilings: a token bucket caps the rate of request starts (default 3/s,
burst 1) and a semaphore caps the requests in flight (default 2). Below them, the
server's rate-limit headers pace each endpoint. Clocks and sleep are injectable.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sentry_extract.events import emit
from sentry_extract.source.catalog import STREAMS

log = logging.getLogger("sentry_extract.http")

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class TokenBucket:
    """At most `rate` request starts per second, `burst` at once. Rate 0 lifts the cap."""

    def __init__(
        self, rate: float, burst: int = 1, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
            self._tokens -= 1.0  # a negative balance is a reservation for a later slot
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
        return wait


class RequestGate:
    """The in-flight cap, then the rate cap, around each request."""

    def __init__(self, bucket: TokenBucket, concurrency: int) -> None:
        self.bucket = bucket
        self.concurrency = max(1, concurrency)  # requests in flight at once, at most
        self._slots = threading.BoundedSemaphore(self.concurrency)

    @contextmanager
    def slot(self) -> Iterator[float]:
        with self._slots:
            yield self.bucket.acquire()


ISSUE_GROUP = "issue"


@functools.cache
def _endpoints() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Each stream's path as a pattern, named after its stream (every parent's requests
    share it). An issue's details are one endpoint, whoever asks (reconcile, activity)."""
    patterns = [(re.compile(r"^organizations/[^/]+/issues/[^/]+$"), ISSUE_GROUP)]
    for spec in STREAMS:
        template = re.escape(spec.path.strip("/")).replace(r"\{", "{").replace(r"\}", "}")
        pattern = re.sub(r"\{[a-z]+\}", "[^/]+", template)
        patterns.append((re.compile(f"^{pattern}$"), spec.name))
    return tuple(patterns)


def rate_limit_group(path: str) -> str:
    """Sentry limits each endpoint on its own: one group per endpoint. Every project's
    events list is one endpoint (the lowest limit of all), whatever the project; every
    release's deploys, every monitor's check-ins... likewise."""
    bare = path.strip("/")
    for pattern, group in _endpoints():
        if pattern.match(bare):
            return group
    return path


class _Group:
    def __init__(self) -> None:
        self.in_flight = 0
        self.concurrent_limit: int | None = 1  # 1 until the server tells us its limit
        self.budget: int | None = None  # requests left in the window, None when unknown
        self.blocked_until = 0.0  # wall-clock seconds


class ServerPacer:
    """Paces each rate-limit group by the server's `X-Sentry-Rate-Limit-*` headers.

    Never more requests in flight than the group's concurrent limit; when the window's
    remaining requests reach 0, wait for its reset instead of earning a 429; after a
    429 the whole group pauses. Without headers (self-hosted) only the client-side
    ceiling applies.
    """

    def __init__(self, wall_clock: Clock = time.time, sleep: Sleep = time.sleep) -> None:
        self.wall_clock = wall_clock
        self.sleep = sleep
        self._groups: dict[str, _Group] = {}
        self._condition = threading.Condition()

    def _group(self, name: str) -> _Group:
        return self._groups.setdefault(name, _Group())

    @contextmanager
    def slot(self, name: str) -> Iterator[float]:
        waited = self._enter(name)
        try:
            yield waited
        finally:
            with self._condition:
                self._group(name).in_flight -= 1
                self._condition.notify_all()

    def _enter(self, name: str) -> float:
        waited = 0.0
        honoured = 0.0  # the pause already slept for (an injected sleep may not move clocks)
        with self._condition:
            group = self._group(name)
            while True:
                target = group.blocked_until
                pause = target - self.wall_clock()
                if pause > 0 and target > honoured:
                    emit(
                        log,
                        logging.INFO,
                        "rate_limit_wait",
                        f"waiting {pause:.1f}s for the rate limit of {name}",
                        group=name,
                        seconds=round(pause, 3),
                    )
                    self._condition.release()
                    try:
                        self.sleep(pause)
                    finally:
                        self._condition.acquire()
                    waited += pause
                    honoured = target
                    continue
                if group.budget is not None and group.budget <= 0:
                    group.budget = None  # the window has reset: the next answer tells
                limit = group.concurrent_limit
                if limit is not None and group.in_flight >= limit:
                    self._condition.wait(timeout=1.0)
                    continue
                group.in_flight += 1
                if group.budget is not None:
                    group.budget -= 1
                return waited

    def observe(self, name: str, headers: Mapping[str, str]) -> None:
        """Learn the group's limits from a response's headers."""
        limit = _integer(headers.get("X-Sentry-Rate-Limit-ConcurrentLimit"))
        remaining = _integer(headers.get("X-Sentry-Rate-Limit-Remaining"))
        reset = _number(headers.get("X-Sentry-Rate-Limit-Reset"))
        with self._condition:
            group = self._group(name)
            if limit is None and remaining is None:
                group.concurrent_limit = None  # no headers: the client-side caps rule
            if limit is not None:
                group.concurrent_limit = max(1, limit)
            if remaining is not None:
                # Requests still in flight were counted by the server or will be.
                group.budget = max(0, remaining - max(0, group.in_flight - 1))
                if group.budget <= 0 and reset is not None:
                    group.blocked_until = max(group.blocked_until, reset)
            self._condition.notify_all()

    def pause(self, name: str, seconds: float) -> None:
        """Hold every request of the group for `seconds` (after a 429)."""
        emit(
            log,
            logging.INFO,
            "rate_limit_wait",
            f"rate limited: {name} waits {seconds:.1f}s",
            group=name,
            seconds=round(seconds, 3),
        )
        with self._condition:
            group = self._group(name)
            group.blocked_until = max(group.blocked_until, self.wall_clock() + seconds)


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
