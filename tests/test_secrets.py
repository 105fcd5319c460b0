"""The token never appears anywhere: output, logs, errors, tracebacks, state, files, tables."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.testing.fake_sentry import ALL_SCOPES, FakeSentry, Fault

from .helpers import Bucket, sentry_connection

SECRET = "sntryu_test_RECOGNISABLE_SECRET_0123456789"
REPLICATION = "source: SENTRY\ntarget: {target}\ndefaults:\n  object: {object}\nstreams:\n  '*':\n"


def table_text(url: str) -> str:
    """Every row of every table in the database, as text."""
    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') AND schemaname !~ '^pg_temp'"
        ).fetchall()
        chunks = []
        for schema, table in tables:
            rows = connection.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            chunks.extend(row[0] for row in rows)
    return "\n".join(chunks)


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_no_trace_of_the_token(
    cli: CliRunner,
    fake: FakeSentry,
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    noted_waits: list[float],
    target: str,
) -> None:
    fake.settings.token_scopes[SECRET] = ALL_SCOPES
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    object_name = "file://out/{stream_name}" if target == "LOCAL" else "sentry.{stream_name}"
    (tmp_path / "r.yaml").write_text(REPLICATION.format(target=target, object=object_name))
    # Failures of every kind, so that the error paths print too.
    fake.inject(Fault("/teams/", 500, body={"detail": "boom"}, times=20))
    fake.inject(Fault("/members/", 403, body={"detail": "You do not have permission"}, times=1))
    fake.inject(Fault("/releases/", 200, raw=b'[{"id": 1, "vers', times=1))
    fake.inject(Fault("/project-1/events/", 404, body={"detail": "gone"}, times=1))
    results: list[Any] = []

    def run(*arguments: str) -> None:
        """As a user would: --debug runs raise with a traceback instead of exiting 1 or 2."""
        result = cli.invoke(app, list(arguments))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert SECRET not in "".join(traceback.format_exception(result.exception))
        results.append(result)

    run(
        "conns",
        "set",
        "SENTRY_STORED",
        "type=api",
        "spec=sentry",
        f"secrets={{ auth_token: {SECRET} }}",
        "inputs={ organization: acme }",
    )
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token=SECRET, retry_attempts=2))
    run("run", "r.yaml", "--debug")
    run("run", "r.yaml")
    run("conns", "list", "--debug")
    run("conns", "test", "SENTRY", "--debug")
    run("conns", "discover", "SENTRY", "--columns")
    run("state", "show", "r.yaml")
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token=SECRET + "_revoked"))
    run("run", "r.yaml", "--debug")
    run("conns", "test", "SENTRY")
    monkeypatch.setenv(
        "SENTRY", sentry_connection("http://127.0.0.1:1", token=SECRET, retry_attempts=1)
    )
    run("run", "r.yaml", "--debug")
    run("run", "r.yaml")
    assert results[1].exit_code == 1  # the injected failures did happen
    for result in results:
        assert SECRET not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if not path.is_file():
            continue
        if path.name == "env.yaml":  # the one place it belongs, readable by its owner only
            assert path.stat().st_mode & 0o077 == 0
            continue
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in table_text(pg_url)


S3_SECRET_KEY = "s3-secret-RECOGNISABLE-0123456789abcdefghij"
S3_SESSION_TOKEN = "s3-session-token-RECOGNISABLE-9876543210"


def test_no_trace_of_the_s3_secret_key_or_session_token(
    cli: CliRunner,
    fake: FakeSentry,
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    noted_waits: list[float],
) -> None:
    secrets = (S3_SECRET_KEY, S3_SESSION_TOKEN)
    connection = bucket.connection(secret_access_key=S3_SECRET_KEY, session_token=S3_SESSION_TOKEN)
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, retry_attempts=2))
    monkeypatch.setenv("AWS_S3", connection)
    (tmp_path / "r.yaml").write_text(
        REPLICATION.format(target="AWS_S3", object="sentry/{stream_name}")
    )
    fake.inject(Fault("/teams/", 500, body={"detail": "boom"}, times=20))
    results: list[Any] = []

    def run(*arguments: str) -> None:
        result = cli.invoke(app, list(arguments))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            text = "".join(traceback.format_exception(result.exception))
            assert not any(secret in text for secret in secrets)
        results.append(result)

    run(
        "conns",
        "set",
        "AWS_S3_STORED",
        "type=s3",
        f"bucket={bucket.name}",
        "access_key_id=AKIAFAKE",
        f"secret_access_key={S3_SECRET_KEY}",
        f"session_token={S3_SESSION_TOKEN}",
        f"endpoint={bucket.endpoint}",
    )
    run("run", "r.yaml", "--summary-json", "summary.json", "--record", "cassettes")
    run("run", "r.yaml", "--debug", "--log-format", "json", "--mode", "incremental")
    run("conns", "list", "--debug")
    run("conns", "test", "AWS_S3", "--debug")
    run("conns", "test", "AWS_S3_STORED")
    run("state", "show", "r.yaml")
    run("run", "r.yaml", "--dry-run")
    held = bucket.client().put_object(  # another run's lock: the stream fails with a message
        Bucket=bucket.name, Key="sentry/issues/.sentry-extract.lock", Body=b'{"host": "x"}'
    )
    assert held["ETag"]
    run("run", "r.yaml", "--streams", "issues")
    for broken in ("no-such-bucket-x", "http://127.0.0.1:9"):
        values = {"bucket": broken} if "://" not in broken else {"endpoint": broken}
        monkeypatch.setenv(
            "AWS_S3",
            bucket.connection(
                secret_access_key=S3_SECRET_KEY, session_token=S3_SESSION_TOKEN, **values
            ),
        )
        run("run", "r.yaml")
        run("run", "r.yaml", "--debug")
        run("conns", "test", "AWS_S3")
    assert results[1].exit_code == 1  # the injected failures did happen
    assert results[-1].exit_code == 2
    for result in results:
        for secret in secrets:
            assert secret not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path.name == "env.yaml":
            continue
        for secret in secrets:
            assert secret.encode() not in path.read_bytes(), path
    assert (tmp_path / "summary.json").exists() and list((tmp_path / "cassettes").iterdir())
    for key in bucket.objects():
        content = bucket.read(key)
        for secret in secrets:
            assert secret.encode() not in content, key
