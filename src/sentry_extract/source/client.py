"""The HTTP client: the shared request gate, the retry policy and pagination, over
libcurl's kept-alive connections (`wire`).

Every response is classified once (`classify_response`); pages are followed by
their `next` cursor, sent with our own URL and parameters, until the server says
`results="false"`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import tenacity

from sentry_extract.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectError,
    NetworkError,
    NotFoundError,
    PaginationError,
    PermissionDeniedError,
    RangeTooLargeError,
    RateLimitedError,
    RunCancelled,
    ServerError,
    SourceError,
    TimedOutError,
    TimeoutException,
    TransportError,
    UnreachableError,
    UntrustedCertificateError,
)
from sentry_extract.events import emit
from sentry_extract.model.spec import Params
from sentry_extract.source import defaults
from sentry_extract.source.pagination import next_cursor
from sentry_extract.source.ratelimit import RequestGate, ServerPacer, rate_limit_group
from sentry_extract.source.retry import RetryPolicy, call_with_retries
from sentry_extract.source.wire import (
    Answer,
    CurlSender,
    HttpxSender,
    Sender,
    Timeouts,
    encoded_path,
    query_string,
)

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger("sentry_extract.http")

CONCURRENCY_WAIT = 1.0  # seconds, after a 429 for too many requests in flight
KNOWN_PATHS = 4096  # request paths whose encoded form the client keeps
DEADLINE_MARGIN = 0.1  # seconds a request outlives the deadline, so the deadline is seen first


@dataclass(frozen=True)
class RequestTimeout:
    """Seconds a request may take (`read`: the whole exchange through libcurl, between
    bytes through httpx), and to connect."""

    read: float | None
    connect: float | None

    def as_dict(self) -> dict[str, float | None]:
        """httpx's phases, as its transports read them."""
        return {"connect": self.connect, "read": self.read, "write": self.read, "pool": self.read}


def request_timeout(seconds: float = defaults.TIMEOUT) -> RequestTimeout:
    """The timeout of each phase of a request; connecting takes no more than 10 seconds."""
    return RequestTimeout(seconds, connect=min(seconds, defaults.CONNECT_TIMEOUT))


@dataclass(frozen=True)
class Cancellation:
    """What ends requests early: the run's cancel (a signal, the deadline, a 401), and the
    deadline's moment (of `time.monotonic`), which bounds every wait on the network, so a
    request in flight is abandoned when the deadline passes."""

    event: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None

    def is_set(self) -> bool:
        left = self.seconds_left()
        return self.event.is_set() or (left is not None and left <= 0)

    def seconds_left(self) -> float | None:
        """Seconds until the deadline; None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


@dataclass
class RequestCounter:
    """Requests and retries of one stream; shared by its threads."""

    name: str = ""  # the stream counted
    requests: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries


@dataclass(frozen=True)
class ClientSettings:
    base_url: str
    token: str = field(repr=False)
    gate: RequestGate
    pacer: ServerPacer = field(default_factory=ServerPacer)
    retry: RetryPolicy = RetryPolicy()
    timeout: RequestTimeout = field(default_factory=request_timeout)
    ca_bundle: str | None = None  # certificates a TLS server is checked against
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], float] = time.time
    transport: httpx.BaseTransport | None = None
    cancellation: Cancellation = field(default_factory=Cancellation)


@dataclass(frozen=True)
class Page:
    body: Any
    cursor: str | None  # the next cursor, None on the last page
    held_bytes: int = 0  # what the parsed body holds in memory, about (`held_bytes`)


@dataclass(frozen=True)
class ListPage:
    """One page of a list: its rows, and what they hold in memory (for budgets counted
    in bytes)."""

    rows: list[dict[str, Any]]
    held_bytes: int
    last: bool  # no page follows
    sampled: bool = False  # the answer says it scanned part of the data (`dataScanned`)


class SentryClient:
    """GETs on Sentry's API.

    Requests go through libcurl (`wire.CurlSender`), one connection kept per request in
    flight, not through `httpx.Client` nor httpx's transport: their URL objects, headers,
    state machines and responses cost many times libcurl's CPU a request (`make bench`),
    and a read-only API client of one host uses none of it. What httpx
    would read from the environment is kept: `SSL_CERT_FILE`, and `HTTPS_PROXY`/
    `NO_PROXY`, whose proxy is reached through httpx's transport, as is a transport given
    in the settings (tests, recordings).
    """

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.host = urlsplit(settings.base_url).netloc
        self._api = f"{settings.base_url}/api/0/"
        self._headers = {
            "Authorization": f"Bearer {settings.token}",
            "Accept": "application/json",
            "User-Agent": "sentry-extract",
        }
        self._paths: dict[str, tuple[str, str]] = {}  # API path -> encoded, and as said
        self._pairs: dict[tuple[str, str], str] = {}  # a parameter and its value -> encoded
        proxy = environment_proxy(settings.base_url)
        self._sender: Sender
        if settings.transport is None and proxy is None:
            self._sender = CurlSender(
                settings.base_url, self._headers, settings.ca_bundle, settings.gate.concurrency
            )
        else:
            import httpx

            transport = settings.transport or httpx.HTTPTransport(
                verify=verification(settings.ca_bundle), proxy=proxy, trust_env=True
            )
            self._sender = HttpxSender(transport, settings.base_url, self._headers)

    def close(self) -> None:
        self._sender.close()

    def __enter__(self) -> SentryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(
        self,
        path: str,
        params: Params,
        counter: RequestCounter,
        raw_values: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Page:
        """One request, retried by the policy (`retry`, else the client's); raises our
        errors only. `timeout` shortens the client's timeouts for this request.

        With `raw_values`, a list of objects keeps each top-level value as undecoded JSON
        (`msgspec.Raw`): see `parse_raw_rows`.
        """

        def count_retry(state: tenacity.RetryCallState) -> None:
            counter.add(retries=1)
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            wait = state.upcoming_sleep
            emit(
                log,
                logging.WARNING,
                "retry",
                f"retrying in {_seconds(wait)}: {_short(error)} ({path})",
                stream=counter.name,
                path=path,
                attempt=state.attempt_number,
                wait=wait,
                reason=_short(error),
            )

        policy = retry or self.settings.retry
        return call_with_retries(
            policy,
            lambda: self._get_once(path, params, counter, raw_values, timeout),
            self.settings.sleep,
            count_retry,
        )

    def _get_once(
        self,
        path: str,
        params: Params,
        counter: RequestCounter,
        raw_values: bool,
        timeout: float | None,
    ) -> Page:
        group = rate_limit_group(path)
        pacer = self.settings.pacer
        with pacer.slot(group), self.settings.gate.slot():
            self._check_cancelled(path)
            counter.add(requests=1)
            response = self._send(path, params, timeout)
            pacer.observe(group, response.headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GET %s %s -> %s", path, query_text(params), response.status_code)
        try:
            classify_response(response, self.host, self.settings.wall_clock)
        except RateLimitedError as error:
            if error.retry_after:
                pacer.pause(group, error.retry_after)  # the whole group waits, not one request
            raise
        try:
            body = (parse_raw_rows if raw_values else parse_json)(response.content)
        except ValueError:
            raise ServerError(
                f"{self.host} sent a body that is not complete JSON",
                url=path,
                status=response.status_code,
            ) from None
        link = response.headers.get("link")
        return Page(body, next_cursor(link), held_bytes(response.content, body))

    def _check_cancelled(self, path: str) -> None:
        if self.settings.cancellation.is_set():
            raise RunCancelled(f"the run was stopped; {path} was not requested")

    def _timeouts(self, timeout: float | None) -> Timeouts:
        """The client's timeouts, shortened to `timeout` and to the time left before the
        deadline: a request that would outlive the deadline is abandoned at it."""
        left = self.settings.cancellation.seconds_left()
        bounds = [timeout, None if left is None else left + DEADLINE_MARGIN]
        bound = min((seconds for seconds in bounds if seconds is not None), default=None)
        if bound is None:
            return self.settings.timeout.as_dict()
        return {
            phase: bound if seconds is None else min(seconds, bound)
            for phase, seconds in self.settings.timeout.as_dict().items()
        }

    def _target(self, path: str, params: Params) -> tuple[str, str]:
        """The request target (path and query, encoded as httpx encodes them) and the
        URL path as httpx reads it back. Paths repeat (a project's pages): each is
        encoded once."""
        known = self._paths.get(path)
        if known is None:
            known = encoded_path(self._api + path.lstrip("/"))
            if len(self._paths) >= KNOWN_PATHS:
                self._paths.clear()
            self._paths[path] = known
        encoded, said = known
        query = query_string(params, self._pairs) if params else ""
        return (f"{encoded}?{query}" if query else encoded), said

    def _send(self, path: str, params: Params, timeout: float | None = None) -> Answer:
        timeouts = self._timeouts(timeout)
        target, said = self._target(path, params)
        try:
            response = self._sender.get(target, said, timeouts)
        except TimeoutException as error:
            if self.settings.cancellation.is_set():  # the deadline passed while it waited
                raise RunCancelled(f"the run was stopped while waiting for {path}") from None
            raise TimedOutError(self.host, timeouts[error.phase], error.name, url=path) from None
        except ConnectError as error:  # refused, or a name that does not resolve
            reason = f"{error.name}: {_transport_reason(error)}"
            refused = error.certificate_refused
            unreachable = UntrustedCertificateError if refused else UnreachableError
            raise unreachable(f"cannot reach {self.host} ({reason})", url=path) from None
        except TransportError as error:
            if self.settings.cancellation.is_set():
                raise RunCancelled(f"the run was stopped while waiting for {path}") from None
            reason = f"{error.name}: {_transport_reason(error)}"
            raise NetworkError(f"cannot reach {self.host} ({reason})", url=path) from None
        return response

    def paginate(
        self,
        path: str,
        params: Params,
        counter: RequestCounter,
        raw_values: bool = False,
        rows_key: str | None = None,
    ) -> Iterator[ListPage]:
        """Every page of a list; stops only on `results="false"` or a missing Link header.

        The rows are the answer itself (a bare array), or its `rows_key` member
        (`{"data": [...], "meta": {...}}`)."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page_params = dict(params) if cursor is None else {**params, "cursor": cursor}
            page = self.get(path, page_params, counter, raw_values and rows_key is None)
            body = page.body
            sampled = False
            if rows_key is not None and isinstance(body, dict):
                meta = body.get("meta")
                sampled = isinstance(meta, dict) and meta.get("dataScanned") == "partial"
                body = body.get(rows_key)
            if not isinstance(body, list):
                raise PaginationError(
                    f"{path}: expected a list, got {type(body).__name__}", url=path
                )
            rows = [row for row in body if isinstance(row, dict)]
            yield ListPage(rows, page.held_bytes, page.cursor is None, sampled)
            if page.cursor is None:
                return
            if page.cursor in seen:
                raise PaginationError(
                    f"{path}: the server sent cursor {page.cursor!r} a second time; "
                    "stopping instead of reading the same pages forever",
                    url=path,
                )
            seen.add(page.cursor)
            cursor = page.cursor


def verification(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """What httpx checks a TLS server's certificate against: the named CA bundle, or what
    it reads from the environment (`SSL_CERT_FILE`, else certifi's bundle)."""
    if ca_bundle:
        import ssl

        return ssl.create_default_context(cafile=ca_bundle)
    return True


def environment_proxy(base_url: str) -> str | None:
    """The proxy the environment names for this URL (as httpx.Client would read it).
    `urllib.request` (and `ssl`, which it imports) only when a variable names one."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import urllib.request

    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def parse_json(content: bytes) -> Any:
    """msgspec: as fast as orjson, and integers beyond 64 bits stay exact integers."""
    return msgspec.json.decode(content)


_RAW_ROWS = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])


def parse_raw_rows(content: bytes) -> Any:
    """A list of objects whose values stay undecoded JSON, or else what `parse_json` gives.

    Full event payloads are mostly nested JSON that is stored as JSON text: keeping it
    raw skips building (and then re-encoding) millions of Python objects. The typer
    decodes the scalar columns (`records.decoded`). The JSON is still checked whole.
    """
    try:
        rows = _RAW_ROWS.decode(content)
    except msgspec.ValidationError:  # valid JSON of another shape: the caller names it
        return parse_json(content)
    if not content.isascii():
        content.decode()  # raw values skip the UTF-8 check that decoding makes
    return rows


# Measured with tracemalloc on events, issues and members: a decoded JSON value costs
# about 60 bytes beyond its text (a dict, list, str or int object and its slot), 7.8
# times the JSON of deep stack traces; an undecoded one (msgspec.Raw, a view of the
# answer) about 90 bytes beside the answer it keeps alive.
DECODED_VALUE_BYTES = 60
RAW_VALUE_BYTES = 90


def held_bytes(content: bytes, body: Any) -> int:
    """What a parsed answer holds in memory, about: its text, and an object per value.

    Rows of undecoded values keep the answer's bytes and a small object per value;
    decoded JSON holds an object per value, counted from the separators and brackets
    (a few milliseconds for megabytes)."""
    if is_raw_rows(body):
        return len(content) + RAW_VALUE_BYTES * sum(len(row) for row in body)
    values = content.count(b",") + content.count(b"[") + content.count(b"{")
    return len(content) + DECODED_VALUE_BYTES * values


def is_raw_rows(body: Any) -> bool:
    """Rows whose values are undecoded JSON (what `parse_raw_rows` gives)."""
    if not isinstance(body, list) or not body or not isinstance(body[0], dict):
        return False
    return any(type(value) is msgspec.Raw for value in body[0].values())


def classify_response(
    response: Answer, host: str, wall_clock: Callable[[], float] = time.time
) -> None:
    """Raise the error a non-2xx response stands for; decide retriable vs fatal here only."""
    status = response.status_code
    if 200 <= status < 300:
        return
    path = response.path
    detail = _detail(response)
    if status == 401:
        raise AuthenticationError(f"the token was rejected by {host} (401)", url=path, status=401)
    if status == 403:
        raise PermissionDeniedError(detail or "permission denied", url=path, status=403)
    if status == 404:
        raise NotFoundError(detail or "not found", url=path, status=404)
    if status == 429:
        raise RateLimitedError(
            detail or "rate limited", retry_after=retry_after(response, wall_clock), url=path
        )
    if status == 400 and "timeout" in detail.lower():  # Sentry says so only in the detail
        raise RangeTooLargeError(f"query timeout: {detail}", url=path, status=400)
    if status == 400:
        raise BadRequestError(detail or "bad request", url=path, status=400)
    if status >= 500:
        raise ServerError(
            f"{host} answered {status}: {detail or 'server error'}", url=path, status=status
        )
    raise SourceError(f"{host} answered {status}: {detail}", url=path, status=status)


def retry_after(response: Answer, wall_clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait: `Retry-After` first, then the rate-limit reset; None when unknown.

    A 429 with requests left in the window is the concurrency cap: the server still
    counts a request we stopped waiting for (a read timeout), so wait a moment for it
    to finish rather than for the window's reset.
    """
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            from email.utils import parsedate_to_datetime  # an HTTP date: seldom

            try:
                moment = parsedate_to_datetime(header)
            except (TypeError, ValueError):
                moment = None
            if moment is not None:
                return max(0.0, moment.timestamp() - wall_clock())
    reset = response.headers.get("X-Sentry-Rate-Limit-Reset")
    remaining = response.headers.get("X-Sentry-Rate-Limit-Remaining", "").strip()
    if remaining.isascii() and remaining.isdigit() and int(remaining) > 0:
        return CONCURRENCY_WAIT
    if reset:
        try:
            return max(0.0, float(reset) - wall_clock())
        except ValueError:
            return None
    return None


def _detail(response: Answer) -> str:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return response.text[:200].strip()
    if isinstance(body, str):
        return body  # 429 bodies are a bare JSON string
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return ""


def query_text(params: Params) -> str:
    """The parameters as a query string, a repeated one (a tuple) once per value."""
    return "&".join(
        f"{key}={item}"
        for key, value in params.items()
        for item in (value if isinstance(value, tuple) else (value,))
    )


def _seconds(wait: float) -> str:
    """`4s`, `1.5s`, `0.2s`: a wait as a person reads it."""
    return f"{wait:.0f}s" if wait >= 10 else f"{wait:.1f}".removesuffix(".0") + "s"


def _short(error: BaseException | None) -> str:
    return str(error) if error is not None else "an error"


def _transport_reason(error: TransportError) -> str:
    text = str(error) or error.name
    return text.splitlines()[0][:200]
