"""The one retry policy, built with tenacity.

Retried: `RetriableError` (429, 5xx, query timeouts, truncated bodies, network
errors). A wait the server asked for (`Retry-After`, the rate-limit reset) is
honoured; otherwise exponential backoff with jitter. Attempts are bounded in number
and in time (the waits counted, and the clock), and the last error is re-raised. A host
that cannot be reached at all (refused, unknown name) or that does not answer in time
can be given fewer attempts (`unreachable_attempts`, `silent_attempts`): the first
request of a run says quickly that `base_url` is wrong, while a network lost later keeps
every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from sentry_extract.errors import RetriableError, TimedOutError, UnreachableError
from sentry_extract.source import defaults

Result = TypeVar("Result")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = defaults.RETRY_ATTEMPTS
    initial_wait: float = 1.0  # first backoff, doubled each attempt, plus jitter
    max_wait: float = 60.0  # cap of one backoff
    max_server_wait: float = 300.0  # cap of one wait the server asked for
    max_total_wait: float = defaults.RETRY_MAX_TOTAL_WAIT  # cap of all the waits for one request
    max_total_time: float | None = None  # cap of one request's attempts and waits, clocked
    unreachable_attempts: int | None = None  # attempts when the host cannot be reached
    silent_attempts: int | None = None  # attempts when the host does not answer in time


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential_jitter(
        multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
    )

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, int | float) and asked >= 0:
            return min(float(asked), policy.max_server_wait)
        return float(backoff(state))

    return wait


class _WaitedEnough(tenacity.stop.stop_base):
    """Stop once the waits so far reach the total allowed (counted, not clocked, so an
    injected sleep counts the same)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.idle_for >= self.limit


class _GivesUpOn(tenacity.stop.stop_base):
    """Stop after `attempts` when the last one failed with `error_type`."""

    def __init__(self, error_type: type[Exception], attempts: int) -> None:
        self.error_type = error_type
        self.attempts = attempts

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        return isinstance(error, self.error_type) and retry_state.attempt_number >= self.attempts


def _stops(policy: RetryPolicy) -> list[tenacity.stop.stop_base]:
    stops: list[tenacity.stop.stop_base] = [
        tenacity.stop_after_attempt(policy.attempts),
        _WaitedEnough(policy.max_total_wait),
        _GivesUpOn(UnreachableError, policy.unreachable_attempts or policy.attempts),
        _GivesUpOn(TimedOutError, policy.silent_attempts or policy.attempts),
    ]
    if policy.max_total_time is not None:  # no wait that would end past it
        stops.append(tenacity.stop_before_delay(policy.max_total_time))
    return stops


def build_retrying(
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetriableError),
        wait=_wait(policy),
        stop=tenacity.stop_any(*_stops(policy)),
        sleep=sleep,
        before_sleep=on_retry,
        reraise=True,
    )


def call_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], Result],
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> Result:
    """`attempt()`, retried as `build_retrying` says.

    The first attempt runs on its own, as nearly every one succeeds: tenacity's retry
    state and statistics cost a request about 50 us of CPU, 5% of a run's. When it fails,
    tenacity takes over with that failure as its first attempt, clocked from when it
    began: the waits, the stops and the error raised are the same as if tenacity had made
    it."""
    started = time.monotonic()
    try:
        return attempt()
    except RetriableError as error:
        failed: list[RetriableError] = [error]

    def again() -> Result:
        if failed:
            raise failed.pop()
        return attempt()

    def clocked_from_the_first(state: tenacity.RetryCallState) -> None:
        if state.attempt_number == 1:
            state.start_time = started

    retrying = build_retrying(policy, sleep, on_retry).copy(before=clocked_from_the_first)
    return retrying(again)
