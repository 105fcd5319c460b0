"""What the organization keeps: sentry.io keeps 90 days (30 on its Developer plan), a
self-hosted server what `SENTRY_EVENT_RETENTION_DAYS` says, and no endpoint states it.

So it is learned from Sentry's answers. `stats_v2` refuses (400) a `start` older than
the retention, so whether a start `d` days back is refused tells whether the organization
keeps `d` days; a bisection over 1 to 90 days finds the figure in at most 8 requests, and
a figure saved by an earlier run is confirmed in 2. `inputs.retention_days` replaces all
of it for servers whose answers do not tell.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sentry_extract.errors import AuthenticationError, BadRequestError, SourceError
from sentry_extract.model.windows import (
    ASSUMED_DAYS,
    CLOCK_MARGIN,
    DAY,
    day_ceiling,
    format_datetime,
)
from sentry_extract.source.client import RequestCounter, SentryClient

log = logging.getLogger("sentry_extract")

LONGEST_PROBED = 90  # a longer retention changes nothing the product does

Probe = Callable[[int, RequestCounter], bool | None]


def stats_probe(client: SentryClient, organization: str, now: Callable[[], datetime]) -> Probe:
    """Whether Sentry keeps `days` days: a one-day `stats_v2` request from the first whole
    day after `now - days` (True: answered; False: refused with a 400; None: it cannot
    tell, as the endpoint is forbidden or missing)."""
    path = f"organizations/{organization}/stats_v2/"

    def keeps(days: int, counter: RequestCounter) -> bool | None:
        start = day_ceiling(now() - timedelta(days=days))
        params: dict[str, str | int | tuple[str, ...]] = {
            "field": "sum(quantity)",
            "groupBy": "outcome",
            "interval": "1d",
            "start": format_datetime(start),
            "end": format_datetime(start + DAY),
        }
        try:
            client.get(path, params, counter)
        except BadRequestError:
            return False
        except AuthenticationError:
            raise
        except SourceError:
            return None
        return True

    return keeps


class Retention:
    """The organization's retention as this run knows it, shared by its streams.

    `days` is the configured figure, else the learned one (from a probe, or from a
    stream's saved state), else the 90 days assumed. `learn` probes at most once a run.
    """

    def __init__(
        self,
        configured: int | None,
        probe: Probe | None,
        started_at: datetime,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self.learned: int | None = None
        self.probe = probe
        self.started_at = started_at
        self.clock = clock
        self.began = clock()
        self.probed = False
        self._lock = threading.Lock()

    @property
    def days(self) -> int:
        return self.configured or self.learned or ASSUMED_DAYS

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.days)

    @property
    def origin(self) -> str:
        """Where `days` comes from, for the dry run."""
        if self.configured is not None:
            return "inputs.retention_days"
        return "learned" if self.learned is not None else "assumed"

    @property
    def is_known(self) -> bool:
        return self.configured is not None or self.learned is not None

    def now(self) -> datetime:
        """The run's start plus the time since: Sentry's clock, about."""
        return self.started_at + timedelta(seconds=self.clock() - self.began)

    def oldest_kept(self) -> datetime:
        """The oldest moment Sentry still keeps, a minute on the safe side."""
        return self.now() - self.period + CLOCK_MARGIN

    def remember(self, days: int | None) -> None:
        """A figure an earlier run learned, used until this run learns one itself."""
        with self._lock:
            if days and self.learned is None and not self.probed:
                self.learned = days

    def observe(self, oldest_listed: datetime) -> None:
        """Sentry still lists something last seen at `oldest_listed`: it keeps at least
        that long (a learned figure that is shorter is out of date)."""
        with self._lock:
            if self.configured is not None or self.learned is None:
                return
            held = (self.now() - oldest_listed) / DAY
            if held > self.learned:
                self.learned = min(LONGEST_PROBED, math.ceil(held))
                log.info("Sentry keeps at least %d days", self.learned)

    def learn(self, counter: RequestCounter) -> bool:
        """Ask Sentry (once a run) what it keeps; whether the figure is now known."""
        with self._lock:
            if self.configured is not None:
                return True
            if not self.probed and self.probe is not None:
                self.probed = True
                learned = self._bisect(counter)
                if learned is not None:
                    if learned != self.learned:
                        log.info("Sentry keeps %d days of this organization's data", learned)
                    self.learned = learned
            return self.learned is not None

    def _bisect(self, counter: RequestCounter) -> int | None:
        """The largest number of days Sentry keeps (at most 90), None if it cannot tell."""
        assert self.probe is not None
        hint = self.learned
        if hint is not None and hint < LONGEST_PROBED:  # confirm a saved figure in 2 requests
            kept, beyond = self.probe(hint, counter), self.probe(hint + 1, counter)
            if kept is None or beyond is None:
                return None
            if kept and not beyond:
                return hint
        top = self.probe(LONGEST_PROBED, counter)
        if top is None:
            return None
        if top:
            return LONGEST_PROBED
        low, high = 0, LONGEST_PROBED  # low is kept (0: trivially), high is refused
        while high - low > 1:
            middle = (low + high) // 2
            kept = self.probe(middle, counter)
            if kept is None:
                return None
            low, high = (middle, high) if kept else (low, middle)
        return low or None
