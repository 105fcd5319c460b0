"""Opening what a run needs: the source connection, the target, state stores, the
client; and the organization read before any stream (the preflight)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sentry_extract.config.connections import (
    Connection,
    ConnectionEntry,
    DuckDBConnection,
    LocalConnection,
    PostgresConnection,
    S3Connection,
    SentryConnection,
    find_connection,
    replay_connection,
    resolve_connection,
)
from sentry_extract.config.replication import Replication, StreamConfig
from sentry_extract.errors import (
    ConfigError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    RunCancelled,
    SentryExtractError,
    SourceError,
    TimedOutError,
    UntrustedCertificateError,
)
from sentry_extract.source.catalog import STREAMS_BY_NAME
from sentry_extract.source.client import (
    Cancellation,
    ClientSettings,
    RequestCounter,
    SentryClient,
    request_timeout,
)
from sentry_extract.source.ratelimit import RequestGate, ServerPacer, TokenBucket
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.state import FileStateStore, StateKey, StateStore
from sentry_extract.targets.base import Target
from sentry_extract.targets.bucket import BucketAccess
from sentry_extract.targets.formats import FileTarget

if TYPE_CHECKING:
    import httpx

    from sentry_extract.source.cassettes import Recording


def resolve_source(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    replay: Recording | None = None,
) -> SentryConnection:
    if replay is not None:  # the recorded inputs make the very same requests; no token
        return replay_connection(replication.source, replay.connection_inputs)
    connection = resolve_connection(find_connection(connections, replication.source))
    if not isinstance(connection, SentryConnection):
        raise ConfigError(
            f"source: connection {replication.source} is not a Sentry connection "
            "(it needs type=api spec=sentry)",
            location=replication.path.name,
        )
    return connection


Formats = Mapping[str, str]  # each stream object's file format (parquet, delta)


def _local_target(connection: Any, lock_wait: float, formats: Formats) -> Target:
    return FileTarget(None, formats)


def _s3_target(connection: S3Connection, lock_wait: float, formats: Formats) -> Target:
    from sentry_extract.targets.s3 import S3Place  # boto3: only when used

    return FileTarget(S3Place(bucket_access(connection)), formats)


def bucket_access(connection: S3Connection) -> BucketAccess:
    """What the S3 storage needs of an s3 connection, as plain values."""
    return BucketAccess(
        name=connection.name,
        bucket=connection.bucket,
        access_key_id=connection.access_key_id,
        secret_access_key=connection.secret_access_key,
        session_token=connection.session_token,
        endpoint=connection.endpoint,
        region=connection.region,
    )


def _postgres_target(connection: PostgresConnection, lock_wait: float, formats: Formats) -> Target:
    from sentry_extract.targets.postgres import PostgresTarget  # psycopg: only when used

    return PostgresTarget(connection.url, lock_wait)


def _duckdb_target(connection: DuckDBConnection, lock_wait: float, formats: Formats) -> Target:
    from sentry_extract.targets.duckdb import DuckDBTarget  # duckdb: only when used

    return DuckDBTarget(connection.instance, lock_wait)


def _test_local(connection: LocalConnection) -> str:
    return "ok (files on this machine)"


def _test_s3(connection: S3Connection) -> str:
    from sentry_extract.targets.s3 import test_s3

    return test_s3(bucket_access(connection))


def _test_postgres(connection: PostgresConnection) -> str:
    from sentry_extract.targets.postgres import test_postgres

    return test_postgres(connection.url)


def _test_duckdb(connection: DuckDBConnection) -> str:
    from sentry_extract.targets.duckdb import test_duckdb

    return test_duckdb(connection.instance)


@dataclass(frozen=True)
class TargetKind:
    """What a kind of target connection does: `open` makes its target from the
    connection, the lock wait and the file format of each stream's object (for the file
    targets); `test` is its `conns test`, one line saying it works or one of our errors;
    `table` names its tables when they are a database's, which has nothing to
    `maintain` (None: files, which maintain each object by its format)."""

    open: Callable[[Any, float, Formats], Target]
    test: Callable[[Any], str]
    table: str | None = None


# The targets, by the type of their connection: a new target is one entry here.
TARGETS: dict[type[Any], TargetKind] = {
    LocalConnection: TargetKind(_local_target, _test_local),
    S3Connection: TargetKind(_s3_target, _test_s3),
    PostgresConnection: TargetKind(_postgres_target, _test_postgres, "a PostgreSQL table"),
    DuckDBConnection: TargetKind(_duckdb_target, _test_duckdb, "a DuckDB table"),
}


def target_kind(
    replication: Replication, connections: Mapping[str, ConnectionEntry]
) -> tuple[Connection, TargetKind]:
    connection = resolve_connection(find_connection(connections, replication.target))
    kind = TARGETS.get(type(connection))
    if kind is None:
        raise ConfigError(
            f"target: connection {replication.target} is a Sentry source, not a target",
            location=replication.path.name,
        )
    return connection, kind


def open_target(
    replication: Replication, connections: Mapping[str, ConnectionEntry], lock_wait: float = 10.0
) -> Target:
    connection, kind = target_kind(replication, connections)
    target = kind.open(connection, lock_wait, {s.object: s.format for s in replication.streams})
    for stream in replication.streams:
        problem = target.object_problem(stream.object)
        if problem:
            raise ConfigError(
                problem, location=f"{replication.path.name}: streams.{stream.name}.object"
            )
    return target


def state_key(replication: Replication, source: SentryConnection, stream: StreamConfig) -> StateKey:
    return StateKey(replication.source.upper(), source.organization, stream.name, stream.object)


def external_state_store(location: str | None, key: StateKey) -> StateStore | None:
    """Where SENTRY_EXTRACT_STATE points: a PostgreSQL URL, or a folder (a file per stream)."""
    if not location:
        return None
    if location.startswith(("postgresql://", "postgres://")):
        from sentry_extract.targets.postgres import PostgresStateStore

        return PostgresStateStore(location)
    digest = hashlib.sha256(key.as_text().encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{key.source}-{key.organization}-{key.stream}")
    return FileStateStore(Path(location).expanduser() / f"{name}-{digest}.json")


def state_stores(
    replication: Replication,
    connections: Mapping[str, ConnectionEntry],
    state_location: str | None = None,
    replay: Recording | None = None,
) -> list[tuple[StreamConfig, StateKey, StateStore]]:
    source = resolve_source(replication, connections, replay)
    target = open_target(replication, connections)
    stores = []
    for stream in replication.streams:
        key = state_key(replication, source, stream)
        store = external_state_store(state_location, key) or target.state_store(stream.object)
        stores.append((stream, key, store))
    return stores


def maintain_tables(
    replication: Replication, connections: Mapping[str, ConnectionEntry]
) -> list[tuple[StreamConfig, str]]:
    """Each stream's table maintained where its format has maintenance (Delta), with a
    line saying what it is now."""
    _, kind = target_kind(replication, connections)
    if kind.table is not None:
        return [(stream, f"{kind.table}, nothing to maintain") for stream in replication.streams]
    target = open_target(replication, connections)
    try:
        assert isinstance(target, FileTarget)  # every kind without tables makes one
        return [(stream, target.maintain(stream.object)) for stream in replication.streams]
    finally:
        target.close()


def build_client(
    source: SentryConnection,
    cancelled: threading.Event,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: httpx.BaseTransport | None = None,
    deadline: float | None = None,
) -> SentryClient:
    """The run's client; `deadline` (a moment of `time.monotonic`) bounds every request."""
    sleep = sleep or _interruptible_sleep(cancelled)
    bucket = TokenBucket(source.rate_limit, burst=1, clock=clock, sleep=sleep)
    retry = retry or RetryPolicy(
        attempts=source.retry_attempts,
        max_total_wait=source.retry_max_wait.total_seconds(),
        max_total_time=source.retry_max_wait.total_seconds(),
    )
    return SentryClient(
        ClientSettings(
            base_url=source.base_url,
            token=source.auth_token,
            gate=RequestGate(bucket, source.concurrency),
            pacer=ServerPacer(sleep=sleep),
            retry=retry,
            timeout=request_timeout(source.timeout.total_seconds()),
            ca_bundle=source.ca_bundle,
            sleep=sleep,
            transport=transport,
            cancellation=Cancellation(cancelled, deadline),
        )
    )


def _interruptible_sleep(cancelled: threading.Event) -> Callable[[float], None]:
    """Waits that end the request when the run is cancelled (deadline, signal, 401):
    no retry or paced request goes out after a cancel."""

    def sleep(seconds: float) -> None:
        if cancelled.wait(seconds):
            raise RunCancelled("the run was stopped while waiting")

    return sleep


# The first request of a run, and of `conns test`: a host that cannot be reached, or that
# takes the connection and never answers, is said to be so within seconds, or half a
# minute, not after the minutes of retries a run allows later on.
FIRST_REQUEST_ATTEMPTS = 3  # refused, or a name that does not resolve: about 5 seconds
FIRST_REQUEST_SILENT_ATTEMPTS = 2  # no answer: twice the timeout below, and one wait
FIRST_REQUEST_TIMEOUT = 15.0  # seconds (or `inputs.timeout`, when shorter)


def check_organization(
    client: SentryClient, connection: SentryConnection, counter: RequestCounter
) -> dict[str, Any] | None:
    """Read the organization; what fails is explained as what to fix.

    A host that cannot be reached or an organization that is not there is bad input
    (`ConfigError`); a token that may not read it is a `PermissionDeniedError`.
    """
    path = f"organizations/{connection.organization}/"
    first_try = replace(
        client.settings.retry,
        unreachable_attempts=FIRST_REQUEST_ATTEMPTS,
        silent_attempts=FIRST_REQUEST_SILENT_ATTEMPTS,
    )
    try:
        body = client.get(path, {}, counter, retry=first_try, timeout=FIRST_REQUEST_TIMEOUT).body
    except (NetworkError, NotFoundError, PermissionDeniedError) as error:
        raise explain_organization_error(error, connection) from error
    return body if isinstance(body, dict) else None


def preflight(
    client: SentryClient, source: SentryConnection, counter: RequestCounter
) -> dict[str, Any] | None:
    """Read the organization once before any stream: a wrong host or slug is bad input.

    None when the token may not read it (403): an org token can still read releases.
    """
    try:
        return check_organization(client, source, counter)
    except PermissionDeniedError:
        return None


def region_to_follow(
    source: SentryConnection, organization: Mapping[str, Any] | None
) -> str | None:
    """The host the organization's requests go to instead of `base_url`: its
    `links.regionUrl` (`https://de.sentry.io` for an EU organization reached through
    sentry.io), when it names another one and the connection follows it; else None."""
    if organization is None or not source.follows_region:
        return None
    links = organization.get("links")
    region = links.get("regionUrl") if isinstance(links, Mapping) else None
    if not isinstance(region, str):
        return None
    region = region.strip().rstrip("/")
    parts = urlsplit(region)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        return None
    return None if region == source.base_url else region


def describe_source_error(error: SourceError, stream: str) -> str:
    if error.status == 403:
        return f"{error.message} (403): the token probably lacks the scope {_scope(stream)}"
    return error.message


def _scope(stream: str) -> str:
    spec = STREAMS_BY_NAME.get(stream)
    return spec.scope if spec is not None else "org:read"


def test_connection(connection: Connection) -> str:
    """One line saying the connection works; raises our errors when it does not (the
    same errors, and so the same exit codes, as the first request of a run)."""
    kind = TARGETS.get(type(connection))
    if kind is not None:
        return kind.test(connection)
    assert isinstance(connection, SentryConnection)  # a connection is a target or Sentry
    retry = RetryPolicy(attempts=3, initial_wait=0.5, max_wait=5.0)
    with build_client(connection, threading.Event(), retry=retry) as client:
        body = check_organization(client, connection, RequestCounter())
    name = body.get("name", connection.organization) if body else "?"
    return f"ok: organization '{name}' ({connection.organization}) at {connection.base_url}"


_SILENT = (
    "the host took the connection and never answered: a wrong port, a proxy or firewall "
    "in the way (HTTPS_PROXY, NO_PROXY), or a server that hangs"
)
_SILENCE = {
    "ConnectTimeout": "the connection was never taken: a firewall that drops it, a host "
    "that is down, or a proxy needed (HTTPS_PROXY)",
}


def explain_organization_error(
    error: SourceError, connection: SentryConnection
) -> SentryExtractError:
    """What a failed organization request means, as a new error to raise `from` it: the
    original keeps its own message and status."""
    if isinstance(error, TimedOutError):
        within = f" within {error.seconds:g}s" if error.seconds is not None else ""
        return ConfigError(
            f"cannot reach {error.host}: no answer{within} ({error.kind}): check "
            f"inputs.base_url ({connection.base_url}); {_SILENCE.get(error.kind, _SILENT)}"
        )
    if isinstance(error, UntrustedCertificateError):
        return ConfigError(f"{error.message}: check inputs.ca_bundle (the server's CA)")
    if isinstance(error, NetworkError):
        return ConfigError(f"{error.message}: check inputs.base_url ({connection.base_url})")
    if error.status == 404:
        return ConfigError(
            f"organization '{connection.organization}' not found at {connection.base_url}: "
            "wrong slug, or an organization in another region (EU organizations live on "
            "https://de.sentry.io)"
        )
    if error.status == 403:
        return PermissionDeniedError(
            f"the token may not read organization '{connection.organization}' "
            "(403): it needs the org:read scope",
            url=error.url,
            status=403,
        )
    return error
