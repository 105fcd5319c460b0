"""The one retry policy, built with tenacity.

Retried: `RetriableError` (429, 5xx, query timeouts, truncated bodies, network
errors). A wait the server asked for (`Retry-After`, the rate-limit reset) is
honoured; otherwise exponential backoff with jitter. Attempts are bounded and the
last error is re-raised. A host that cannot be reached at all (refused, unknown name)
can be given fewer attempts (`unreachable_attempts`): the first request of a run says
quickly that `base_url` is wrong, while a network lost later keeps every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from sentry_extract.errors import RetriableError, UnreachableError


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_wait: float = 1.0  # first backoff, doubled each attempt, plus jitter
    max_wait: float = 60.0  # cap of one backoff
    max_server_wait: float = 300.0  # cap of one wait the server asked for
    max_total_wait: float = 600.0  # cap of all the waits for one request
    unreachable_attempts: int | None = None  # attempts when the host cannot be reached


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


class _Unreachable(tenacity.stop.stop_base):
    """Stop after `attempts` when the last one could not reach the host at all."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        return isinstance(error, UnreachableError) and retry_state.attempt_number >= self.attempts


def build_retrying(
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetriableError),
        wait=_wait(policy),
        stop=tenacity.stop_any(
            tenacity.stop_after_attempt(policy.attempts),
            _WaitedEnough(policy.max_total_wait),
            _Unreachable(policy.unreachable_attempts or policy.attempts),
        ),
        sleep=sleep,
        before_sleep=on_retry,
        reraise=True,
    )
