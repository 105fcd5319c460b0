"""The HTTP client's defaults, written once: the client and its retry policy use them, and
so does a Sentry connection whose inputs say nothing (`config.connections`). Nothing is
imported here, so reading a default costs nothing."""

from __future__ import annotations

TIMEOUT = 60.0  # seconds a request may take, connecting included (inputs.timeout)
CONNECT_TIMEOUT = 10.0  # seconds to connect, at most, whatever the timeout
RETRY_ATTEMPTS = 6  # attempts of one request, the first included (inputs.retry_attempts)
RETRY_MAX_TOTAL_WAIT = 600.0  # seconds of waits for one request, in all (inputs.retry_max_wait)
