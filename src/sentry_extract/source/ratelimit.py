"""Client-side ceilings shared by every stream of a run.

A token bucket caps the rate of request starts (default 3/s, burst 1) and a
semaphore caps the requests in flight (default 2). Clock and sleep are injectable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
        self._slots = threading.BoundedSemaphore(max(1, concurrency))

    @contextmanager
    def slot(self) -> Iterator[float]:
        with self._slots:
            yield self.bucket.acquire()
