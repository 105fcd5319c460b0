"""Connections from env.yaml, environment variables and .env.sling, with precedence."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from sentry_extract.config.connections import (
    ConnectionEntry,
    LocalConnection,
    PostgresConnection,
    SentryConnection,
    discover_connections,
    environment_with_dotenv,
    find_connection,
    parse_assignments,
    read_dotenv,
    resolve_connection,
    set_connection,
    unset_connection,
)
from sentry_extract.errors import ConfigError
from sentry_extract.source.client import request_timeout
from sentry_extract.source.retry import RetryPolicy

TOKEN = "sntryu_test_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"


def home(tmp_path: Path) -> dict[str, str]:
    return {"SENTRY_EXTRACT_HOME": str(tmp_path / "home")}


def test_conns_set_stores_maps_upper_cased_with_mode_0600(tmp_path: Path) -> None:
    environ = home(tmp_path)
    values = parse_assignments(
        [
            "type=api",
            "spec=sentry",
            f"secrets={{ auth_token: {TOKEN} }}",
            "inputs={ organization: my-org }",
        ]
    )
    path = set_connection(environ, "sentry", values)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = yaml.safe_load(path.read_text())
    assert document == {
        "connections": {
            "SENTRY": {
                "type": "api",
                "spec": "sentry",
                "secrets": {"auth_token": TOKEN},
                "inputs": {"organization": "my-org"},
            }
        }
    }
    connection = resolve_connection(find_connection(discover_connections(environ), "Sentry"))
    assert isinstance(connection, SentryConnection)
    assert connection.organization == "my-org" and connection.auth_token == TOKEN
    assert connection.base_url == "https://sentry.io" and connection.rate_limit == 3
    assert connection.concurrency == 2 and connection.lookback.total_seconds() == 3600
    assert TOKEN not in repr(connection)
    assert unset_connection(environ, "SENTRY") is True
    assert "SENTRY" not in discover_connections(environ)


def test_reference_env_yaml_form(tmp_path: Path) -> None:
    environ = home(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "env.yaml").write_text(
        "connections:\n  SENTRY:\n    type: api\n    spec: sentry\n    secrets:\n"
        f'      auth_token: "{TOKEN}"\n    inputs:\n      organization: my-org\n'
        '      anchor_date: "2024-01-01T00:00:00Z"\n'
    )
    connection = resolve_connection(discover_connections(environ)["SENTRY"])
    assert isinstance(connection, SentryConnection)
    assert connection.anchor_date is not None and connection.anchor_date.year == 2024


def test_reference_environment_variable_form() -> None:
    environ = {
        "SENTRY": '{ type: api, spec: sentry, secrets: { auth_token: "sntryu_test_x" }, '
        'inputs: { organization: "my-org" } }',
        "HOME": "/nonexistent",
    }
    connection = resolve_connection(discover_connections(environ)["SENTRY"])
    assert isinstance(connection, SentryConnection) and connection.organization == "my-org"


def test_precedence_local_then_env_yaml_then_environment(tmp_path: Path) -> None:
    environ = home(tmp_path)
    set_connection(
        environ,
        "SENTRY",
        {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": TOKEN},
            "inputs": {"organization": "from-file"},
        },
    )
    found = discover_connections(environ)
    assert isinstance(resolve_connection(found["LOCAL"]), LocalConnection)
    assert found["SENTRY"].origin.endswith("env.yaml")
    environ["SENTRY"] = json.dumps(
        {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": TOKEN},
            "inputs": {"organization": "from-env"},
        }
    )
    entry = discover_connections(environ)["SENTRY"]
    assert entry.origin == "environment variable"
    connection = resolve_connection(entry)
    assert isinstance(connection, SentryConnection) and connection.organization == "from-env"


def test_dotenv_loads_without_overriding(tmp_path: Path) -> None:
    (tmp_path / ".env.sling").write_text(
        "# comment\n\nMY_POSTGRES='postgresql://u:p@localhost:5432/db'\n"
        'export GREETING="hello world"\nKEPT=from-file\nPLAIN=value # trailing comment\n'
    )
    environ = environment_with_dotenv({"KEPT": "from-environment"}, tmp_path)
    assert environ["GREETING"] == "hello world"
    assert environ["KEPT"] == "from-environment"
    assert environ["PLAIN"] == "value"
    connection = resolve_connection(discover_connections(environ)["MY_POSTGRES"])
    assert isinstance(connection, PostgresConnection)


def test_dotenv_is_read_as_python_dotenv_reads_it(tmp_path: Path) -> None:
    (tmp_path / ".env.sling").write_text(
        "A='a b' # note\n"
        'B="two\\nlines and \\"quotes\\"" # note\n'
        "C='# not a comment'\n"
        "D=plain # note\n"
        "E='it\\'s'\n"
    )
    assert read_dotenv(tmp_path / ".env.sling") == {
        "A": "a b",
        "B": 'two\nlines and "quotes"',
        "C": "# not a comment",
        "D": "plain",
        "E": "it's",
    }


def test_dotenv_bad_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".env.sling").write_text("GOOD=1\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match=r"\.env\.sling:2: expected KEY=value"):
        read_dotenv(tmp_path / ".env.sling")


def test_postgres_connection_from_discrete_keys() -> None:
    entry = discover_connections(
        {
            "PG": "{type: postgres, host: db, port: 5433, user: me, "
            "password: secret, database: warehouse}"
        }
    )["PG"]
    connection = resolve_connection(entry)
    assert isinstance(connection, PostgresConnection)
    assert "host=db" in connection.url and "dbname=warehouse" in connection.url


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "{ type: api, spec: sentry, inputs: { organization: x } }",
            "secrets.auth_token is required",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t } }",
            "inputs.organization is required",
        ),
        (
            "{ type: api, spec: github, secrets: { auth_token: t }, inputs: { organization: x } }",
            "spec: 'github' is not supported",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t }, inputs: { organisation: x } }",
            "unknown key 'organisation' (did you mean 'organization'?)",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t }, "
            "inputs: { organization: x, anchor_date: yesterday } }",
            "inputs.anchor_date: 'yesterday'",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t }, "
            'inputs: { organization: x, base_url: "sentry.io" } }',
            "inputs.base_url: 'sentry.io'",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t }, "
            "inputs: { organization: x, rate_limit: fast } }",
            "inputs.rate_limit: expected a number",
        ),
        (
            "{ type: api, spec: sentry, secrets: { auth_token: t }, "
            "inputs: { organization: x, retention_days: '²' } }",
            "inputs.retention_days: '²' is not a whole number of days",
        ),
        ("{ type: api, spec: sentry, secrets: { auth_token: t", "malformed map"),
        ("{ type: ftp }", "type: 'ftp' is not supported"),
        (
            "{ type: postgres, url: 'postgresql://u@/db?host=/a?host=/b' }",
            "url: not a valid PostgreSQL URL",
        ),
    ],
)
def test_bad_connections_say_what_to_fix(variable: str, message: str) -> None:
    entry = discover_connections({"SENTRY": variable})["SENTRY"]
    with pytest.raises(ConfigError) as raised:
        resolve_connection(entry)
    assert message in str(raised.value)
    assert str(raised.value).startswith("connection SENTRY (environment variable)")
    assert "auth_token: t" not in str(raised.value)


def test_a_date_alone_is_accepted_as_anchor() -> None:
    entry = discover_connections(
        {
            "S": "{ type: api, spec: sentry, secrets: { auth_token: t }, "
            "inputs: { organization: x, anchor_date: 2024-03-01 } }"
        }
    )["S"]
    connection = resolve_connection(entry)
    assert isinstance(connection, SentryConnection)
    assert connection.anchor_date is not None
    assert connection.anchor_date.isoformat() == "2024-03-01T00:00:00+00:00"


def test_unknown_connection_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"connection 'SENTRI' is not defined.*did you mean 'SENTRY'"
    ):
        find_connection(discover_connections({"SENTRY": "{ type: api }"}), "SENTRI")


def test_conns_set_refuses_non_map_secrets() -> None:
    with pytest.raises(ConfigError, match="secrets: expected a map"):
        parse_assignments(["secrets=just-a-string"])


def test_inputs_left_out_take_the_one_set_of_defaults() -> None:
    """A connection without its optional inputs is the dataclass with its defaults, and
    those the HTTP client and its retry policy use when nobody says otherwise."""
    values = {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": TOKEN},
        "inputs": {"organization": "my-org"},
    }
    connection = resolve_connection(ConnectionEntry("SENTRY", values, "test"))
    assert connection == SentryConnection("SENTRY", "my-org", TOKEN)
    assert isinstance(connection, SentryConnection)
    policy = RetryPolicy()
    assert connection.retry_attempts == policy.attempts
    assert connection.retry_max_wait.total_seconds() == policy.max_total_wait
    assert request_timeout(connection.timeout.total_seconds()) == request_timeout()
