"""The one exception tree of sentry-extract.

    SentryExtractError
    ├── ConfigError                 bad connection, replication or option (exit code 2)
    ├── StateError                  a state file or table that cannot be read or written
    │   └── DamagedStateError       a state file that is not JSON; `state reset` removes it
    ├── TargetError                 a target that cannot be written
    │   └── LockedError             another run holds the lock on a stream's target
    ├── RunCancelled                the run was stopped (a signal, the deadline, a 401)
    ├── Interrupted                 Ctrl-C or SIGTERM a second time: leave now
    ├── TransportError              no answer came (`source.wire`; the client makes it one below)
    │   ├── TimeoutException        a timeout ran out (`phase`: connect or read)
    │   │   ├── ConnectTimeout      no connection within the connect timeout
    │   │   └── ReadTimeout         no whole answer within the timeout
    │   ├── ConnectError            refused, unresolved, or TLS (`certificate_refused`)
    │   ├── ReadError               the connection broke (reset by the server)
    │   └── RemoteProtocolError     closed without an answer, or a body that cannot be decoded
    └── SourceError                 anything the Sentry API answered or failed to answer
        ├── AuthenticationError     401: the token was rejected; stops the whole run
        ├── PermissionDeniedError   403: a scope is missing; stops the stream, never retried
        ├── NotFoundError           404: wrong slug or wrong region
        ├── BadRequestError         400 that is not a query timeout nor a range too long
        ├── PaginationError         a repeated cursor or an unusable page
        ├── ReplayMissError         --replay: the cassettes hold no answer to a request
        └── RetriableError          worth another attempt (decided by `classify_response`)
            ├── RateLimitedError    429, with the wait the server asked for, if any
            ├── ServerError         5xx, a truncated JSON body
            │   └── RangeTooLargeError  a query timeout, a range past an endpoint's span
            └── NetworkError        a connection reset, a timeout
                ├── UnreachableError    refused, or a host name that does not resolve
                │   └── UntrustedCertificateError  a TLS certificate not signed by a trusted CA
                └── TimedOutError       no answer within the timeout (`host`, `seconds`)

Exceptions carry their context as attributes; their text never holds a token. Code that
explains an error (what to fix) raises a new one `from` the original, which stays as it was.
`exit_code` is the one place an error becomes an exit code.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells say it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class SentryExtractError(Exception):
    """Base of every error this package raises on purpose. `requests` counts those a run
    made before the error stopped it (the check of the organization), for its summary."""

    requests: int = 0


class ConfigError(SentryExtractError):
    """A configuration problem the user can fix; `location` names the file and key."""

    def __init__(self, message: str, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class StateError(SentryExtractError):
    """The saved state cannot be read or written."""


class DamagedStateError(StateError):
    """A state file that is not valid JSON (cut short, overwritten): nothing in it is usable."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"state file {path} is not valid JSON; run 'sentry-extract state reset' on the "
            "replication (or remove the file) to start over"
        )


class TargetError(SentryExtractError):
    """The target cannot be written."""


class LockedError(TargetError):
    """Another run holds the lock on this stream's target."""


class RunCancelled(SentryExtractError):
    """The run was stopped (a signal, the deadline, a 401 elsewhere) before this finished."""


class Interrupted(SentryExtractError):
    """Ctrl-C or SIGTERM came a second time, or before any stream ran: leave without
    waiting. `signal_number` is the first signal received."""

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"interrupted by {signal.Signals(signal_number).name}")


class TransportError(SentryExtractError):
    """No answer came: the connection failed, timed out or broke. The names are httpx's
    for the same failures, which messages show, whichever way the request went."""

    def __init__(self, text: str, name: str | None = None) -> None:
        super().__init__(text)
        self.name = name or type(self).__name__


class TimeoutException(TransportError):
    phase = "read"  # the timeout that ran out


class ConnectTimeout(TimeoutException):
    phase = "connect"


class ReadTimeout(TimeoutException):
    pass


class ConnectError(TransportError):
    def __init__(self, text: str, certificate_refused: bool = False) -> None:
        super().__init__(text)
        self.certificate_refused = certificate_refused  # the server's certificate is not trusted


class ReadError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class SourceError(SentryExtractError):
    """The Sentry API did not give us what we asked for."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        stream: str | None = None,
    ) -> None:
        self.message = message
        self.url = url
        self.status = status
        self.stream = stream
        super().__init__(message)


class AuthenticationError(SourceError):
    """401: the token was rejected."""


class PermissionDeniedError(SourceError):
    """403: the token lacks a scope or access to a project."""


class NotFoundError(SourceError):
    """404: wrong organization or project slug, or the wrong region."""


class BadRequestError(SourceError):
    """400 that retrying cannot fix."""


class PaginationError(SourceError):
    """The server sent a cursor we already followed, or a page we cannot read."""


class ReplayMissError(SourceError):
    """--replay: the run asked for something the cassettes do not hold."""


class RetriableError(SourceError):
    """A failure that another attempt may cure."""

    retry_after: float | None = None


class RateLimitedError(RetriableError):
    """429: too many requests; `retry_after` is the wait in seconds, when known."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        url: str | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(message, url=url, status=429, stream=stream)
        self.retry_after = retry_after


class ServerError(RetriableError):
    """5xx, or a body that is not complete JSON."""


class RangeTooLargeError(ServerError):
    """The range asked for is more than the server answers at once: a query that timed out
    (a 400 whose detail says so, retried first like any server error), or a range past
    what the endpoint spans. Readers ask again for a shorter range."""


class NetworkError(RetriableError):
    """The request did not get an answer: refused, reset or timed out."""


class UnreachableError(NetworkError):
    """The host refused the connection, or its name did not resolve."""


class UntrustedCertificateError(UnreachableError):
    """The host's TLS certificate failed verification against the trusted authorities."""


class TimedOutError(NetworkError):
    """The host did not answer within `seconds` (`kind`: httpx's ReadTimeout, ConnectTimeout...)."""

    def __init__(
        self, host: str, seconds: float | None, kind: str, *, url: str | None = None
    ) -> None:
        self.host = host
        self.seconds = seconds
        self.kind = kind
        within = f" within {seconds:g}s" if seconds is not None else ""
        super().__init__(f"no answer from {host}{within} ({kind})", url=url)


def exit_code(error: BaseException | None, *, incomplete: bool = False) -> int:
    """The exit code of a command that `error` stopped (None: nothing did) and that left
    something `incomplete` (a stream failed or skipped something):

        0    nothing stopped it, nothing is incomplete
        1    an error stopped it, or a stream failed or skipped something
        2    bad input (`ConfigError`): a connection, replication file or option to fix
        130  interrupted (Ctrl-C); 143 terminated (SIGTERM)
    """
    if isinstance(error, Interrupted):
        return EXIT_TERMINATED if error.signal_number == signal.SIGTERM else EXIT_INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, ConfigError):
        return EXIT_BAD_INPUT
    if error is not None or incomplete:
        return EXIT_FAILED
    return EXIT_OK
