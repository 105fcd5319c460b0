"""Opening what a run needs: the source connection, the target, state stores, the
client; and the organization read before any stream (the preflight)."""

from __future__ import annotations

import hashlib
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from sentry_extract.config.connections import (
    Connection,
    ConnectionEntry,
    LocalConnection,
    PostgresConnection,
    S3Connection,
    SentryConnection,
    find_connection,
    replay_connection,
    resolve_connection,
)
from sentry_extract.config.replication import Replication, StreamConfig
from sentry_extract.errors import ConfigError, NetworkError, SourceError
from sentry_extract.source.cassettes import Recording
from sentry_extract.source.client import ClientSettings, RequestCounter, SentryClient
from sentry_extract.source.ratelimit import RequestGate, ServerPacer, TokenBucket
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.state import FileStateStore, StateKey, StateStore
from sentry_extract.targets.base import Target
from sentry_extract.targets.parquet import ParquetTarget


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


def open_target(
    replication: Replication, connections: Mapping[str, ConnectionEntry], lock_wait: float = 10.0
) -> Target:
    connection = resolve_connection(find_connection(connections, replication.target))
    if isinstance(connection, LocalConnection):
        target: Target = ParquetTarget()
    elif isinstance(connection, S3Connection):
        from sentry_extract.targets.s3 import S3Place  # boto3: only when used

        target = ParquetTarget(S3Place(connection))
    elif isinstance(connection, PostgresConnection):
        from sentry_extract.targets.postgres import PostgresTarget  # psycopg: only when used

        target = PostgresTarget(connection.url, lock_wait)
    else:
        raise ConfigError(
            f"target: connection {replication.target} is a Sentry source, not a target",
            location=replication.path.name,
        )
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
) -> list[tuple[StreamConfig, StateKey, StateStore]]:
    source = resolve_source(replication, connections)
    target = open_target(replication, connections)
    stores = []
    for stream in replication.streams:
        key = state_key(replication, source, stream)
        store = external_state_store(state_location, key) or target.state_store(stream.object)
        stores.append((stream, key, store))
    return stores


def build_client(
    source: SentryConnection,
    cancelled: threading.Event,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: httpx.BaseTransport | None = None,
) -> SentryClient:
    sleep = sleep or _interruptible_sleep(cancelled)
    bucket = TokenBucket(source.rate_limit, burst=1, clock=clock, sleep=sleep)
    retry = retry or RetryPolicy(
        attempts=source.retry_attempts,
        max_total_wait=source.retry_max_wait.total_seconds(),
    )
    seconds = source.timeout.total_seconds()
    return SentryClient(
        ClientSettings(
            base_url=source.base_url,
            token=source.auth_token,
            gate=RequestGate(bucket, source.concurrency),
            pacer=ServerPacer(sleep=sleep),
            retry=retry,
            timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
            verify=_verify(source),
            sleep=sleep,
            transport=transport,
        )
    )


def _verify(source: SentryConnection) -> ssl.SSLContext | bool:
    """TLS certificates are checked: against the named CA bundle, or the system's."""
    if source.ca_bundle:
        return ssl.create_default_context(cafile=source.ca_bundle)
    return True


def _interruptible_sleep(cancelled: threading.Event) -> Callable[[float], None]:
    """Waits that end early when the run is cancelled (deadline, signal, 401)."""

    def sleep(seconds: float) -> None:
        cancelled.wait(seconds)

    return sleep


def preflight(
    client: SentryClient, source: SentryConnection, counter: RequestCounter
) -> dict[str, Any] | None:
    """Read the organization once before any stream: a wrong host or slug is bad input.

    None when the token may not read it (403): an org token can still read releases.
    """
    path = f"organizations/{source.organization}/"
    try:
        body = client.get(path, {}, counter).body
    except NetworkError as error:
        raise ConfigError(f"{error.message}: check inputs.base_url ({source.base_url})") from None
    except SourceError as error:
        if error.status == 404:
            raise ConfigError(explain_organization_error(error, source).message) from None
        if error.status == 403:
            return None
        raise
    return body if isinstance(body, dict) else None


def describe_source_error(error: SourceError, stream: str) -> str:
    if error.status == 403:
        return (
            f"{error.message} (403): the token probably lacks the scope "
            f"{REQUIRED_SCOPES.get(stream, 'org:read')}"
        )
    return error.message


REQUIRED_SCOPES = {
    "organizations": "org:read",
    "projects": "project:read",
    "teams": "team:read",
    "members": "member:read",
    "releases": "project:releases (or project:read)",
    "issues": "event:read",
    "events": "event:read",
}


def test_connection(connection: Connection) -> str:
    """One line saying the connection works; raises our errors when it does not."""
    if isinstance(connection, LocalConnection):
        return "ok (files on this machine)"
    if isinstance(connection, S3Connection):
        from sentry_extract.targets.s3 import test_s3

        return test_s3(connection)
    if isinstance(connection, PostgresConnection):
        from sentry_extract.targets.postgres import test_postgres

        return test_postgres(connection.url)
    retry = RetryPolicy(attempts=3, initial_wait=0.5, max_wait=5.0)
    with build_client(connection, threading.Event(), retry=retry) as client:
        counter = RequestCounter()
        path = f"organizations/{connection.organization}/"
        try:
            body = client.get(path, {}, counter).body
        except SourceError as error:
            raise explain_organization_error(error, connection) from None
    name = body.get("name", connection.organization) if isinstance(body, dict) else "?"
    return f"ok: organization '{name}' ({connection.organization}) at {connection.base_url}"


def explain_organization_error(error: SourceError, connection: SentryConnection) -> SourceError:
    """The organization request failed: say what to fix."""
    if error.status == 404:
        error.message = (
            f"organization '{connection.organization}' not found at {connection.base_url}: "
            "wrong slug, or an organization in another region (EU organizations live on "
            "https://de.sentry.io)"
        )
    elif error.status == 403:
        error.message = (
            f"the token may not read organization '{connection.organization}' "
            "(403): it needs the org:read scope"
        )
    error.args = (error.message,)
    return error
