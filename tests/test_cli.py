"""The command line as a user runs it: exit codes, exact messages, no secrets."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.source.catalog import STREAMS
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import TOKEN, invoke, parquet_files, sentry_connection

REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://out/{stream_name}\n"
    "streams:\n  '*':\n"
)


@pytest.fixture
def with_sentry(cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    return cli


def all_output(result: object) -> str:
    return getattr(result, "stdout", "") + getattr(result, "stderr", "")


HELP = [
    ((), "Extract Sentry data into Parquet or PostgreSQL, incrementally."),
    (("conns",), "Set, list, test and discover connections."),
    (("state",), "Show or clear the incremental state of a replication."),
    (("run",), "Run a replication: read the streams from Sentry and write them to the target."),
    (("conns", "set"), "Store a connection in env.yaml (file mode 0600)."),
    (("conns", "unset"), "Remove a connection from env.yaml."),
    (("conns", "list"), "List connections: name, type and where each comes from."),
    (("conns", "test"), "Check a connection: authenticate and read the organization."),
    (
        ("conns", "discover"),
        "List every stream: parent, default mode, keys, scope, whether '*' selects it.",
    ),
    (("state", "show"), "Show the saved state of each stream of a replication."),
    (("state", "reset"), "Clear saved state, so the next run reads from the anchor date again."),
    (("fake",), "Serve a fake Sentry to practise on: a generated organization, until Ctrl-C."),
]
PYTHON_TYPES = re.compile(r"<(str|bool|int|float|path|dir|file|list\[\w+\])>")


@pytest.mark.parametrize(("words", "summary"), HELP, ids=[" ".join(w) or "-" for w, _ in HELP])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(
    cli: CliRunner, words: tuple[str, ...], summary: str, flag: str
) -> None:
    result = invoke(cli, *words, flag)
    assert result.exit_code == 0, result.stdout
    text = " ".join(result.stdout.replace("│", " ").split())
    assert text.startswith(f"Usage: sentry-extract {' '.join(words)}".rstrip())
    assert summary in text
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)


def test_help_names_values_readably(cli: CliRunner) -> None:
    run_help = " ".join(invoke(cli, "run", "-h").stdout.replace("│", " ").split())
    assert "Usage: sentry-extract run [OPTIONS] {REPLICATION}" in run_help
    for option, value in [
        ("--streams", "NAMES"),
        ("--mode", "MODE"),
        ("--deadline", "DURATION"),
        ("--record", "FOLDER"),
        ("--replay", "FOLDER"),
        ("--log-format", "text|json"),
        ("--summary-json", "FILE"),
    ]:
        assert f"{option} {value} " in run_help, option
    set_help = " ".join(invoke(cli, "conns", "set", "-h").stdout.replace("│", " ").split())
    assert "Usage: sentry-extract conns set [OPTIONS] {NAME} {KEY=VALUE...}" in set_help


def test_conns_set_list_unset(cli: CliRunner, tmp_path: Path) -> None:
    result = invoke(
        cli,
        "conns",
        "set",
        "sentry",
        "type=api",
        "spec=sentry",
        f"secrets={{ auth_token: {TOKEN} }}",
        "inputs={ organization: my-org }",
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("connection SENTRY saved in")
    listing = invoke(cli, "conns", "list")
    assert listing.exit_code == 0
    assert "SENTRY" in listing.stdout and "api/sentry" in listing.stdout
    assert "LOCAL" in listing.stdout and "built-in" in listing.stdout
    assert TOKEN not in all_output(listing)
    assert invoke(cli, "conns", "unset", "sentry").exit_code == 0
    missing = invoke(cli, "conns", "unset", "sentry")
    assert missing.exit_code == 2 and "is not in" in missing.stderr


def test_conns_list_names_the_dotenv_file_as_the_source(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env.sling").write_text(
        "SENTRY='{ type: api, spec: sentry, secrets: { auth_token: sntryu_test_x }, "
        "inputs: { organization: acme } }'\nMY_POSTGRES=postgresql://u:p@db/warehouse\n"
    )
    monkeypatch.setenv("MY_POSTGRES", "postgresql://u:p@elsewhere/warehouse")  # wins
    listing = invoke(cli, "conns", "list")
    assert listing.exit_code == 0
    rows = {line.split()[0]: line.split()[1:] for line in listing.stdout.splitlines()[1:]}
    assert rows["SENTRY"] == ["api/sentry", ".env.sling"]
    assert rows["MY_POSTGRES"] == ["postgres", "environment", "variable"]
    assert "sntryu_test_x" not in all_output(listing)


def test_conns_set_refuses_an_incomplete_connection(cli: CliRunner) -> None:
    result = invoke(
        cli, "conns", "set", "sentry", "type=api", "spec=sentry", "inputs={ organization: my-org }"
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: connection SENTRY (conns set): secrets.auth_token is "
        "required (a Sentry auth token, sntryu_...)"
    )


def test_conns_set_without_a_type_says_it_is_required(cli: CliRunner) -> None:
    result = invoke(
        cli,
        "conns",
        "set",
        "sentry",
        "spec=sentry",
        f"secrets={{ auth_token: {TOKEN} }}",
        "inputs={ organization: my-org }",
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: connection SENTRY (conns set): type is required: type=api spec=sentry for "
        "Sentry, type=postgres for PostgreSQL"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql//loader:s3cret@db/warehouse", "url: not a PostgreSQL URL"),
        ("postgresql+psycopg://loader:s3cret@db/warehouse", "url: not a PostgreSQL URL"),
        ("postgresql://loader:s3cret@db:port/warehouse", "url: the port is not a number"),
        ("postgresql://loader:s3cret@[::1/warehouse", "url: not a valid PostgreSQL URL (end"),
    ],
)
def test_conns_test_on_a_malformed_postgres_url_says_so(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("MY_POSTGRES", url)
    result = invoke(cli, "conns", "test", "MY_POSTGRES")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: connection MY_POSTGRES (environment variable): {problem}"
    ), result.stderr
    assert "s3cret" not in all_output(result)


def test_conns_test_ok(with_sentry: CliRunner, fake: FakeSentry) -> None:
    result = invoke(with_sentry, "conns", "test", "sentry")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"SENTRY: ok: organization 'Acme' (acme) at {fake.base_url}"


def test_conns_test_rejected_token(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token="sntryu_test_wrong"))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 1
    host = fake.base_url.removeprefix("http://")
    assert result.stderr.strip() == f"error: the token was rejected by {host} (401)"


def test_conns_test_unknown_organization(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, organization="nope"))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 2  # as from run: bad input
    assert result.stderr.strip() == (
        f"error: organization 'nope' not found at {fake.base_url}: wrong slug, or an "
        "organization in another region (EU organizations live on https://de.sentry.io)"
    )


def test_conns_test_network_error(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, noted_waits: list[float]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SENTRY", sentry_connection(f"http://127.0.0.1:{port}"))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 2  # as from run: bad input
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: cannot reach 127.0.0.1:{port} (ConnectError")
    assert error.endswith(f": check inputs.base_url (http://127.0.0.1:{port})")
    assert "Traceback" not in all_output(result)


def test_conns_discover(with_sentry: CliRunner) -> None:
    result = invoke(with_sentry, "conns", "discover", "SENTRY")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(STREAMS) + 2  # a header, the streams and where the keys are
    assert max(len(line.rstrip()) for line in lines) <= 100  # fits a 100-column terminal
    assert lines[6].split()[:4] == ["issues", "organization", "incremental", "event:read"]
    assert "'*' or name" in lines[6]
    assert lines[7].split()[:3] == ["events", "project", "incremental"]
    deploys = next(line for line in lines if line.startswith("release_deploys"))
    assert deploys.split()[1:3] == ["release", "full-refresh"] and "name only" in deploys
    assert lines[-1] == "keys and columns: add --columns"
    columns = invoke(with_sentry, "conns", "discover", "SENTRY", "--columns").stdout
    assert "event_type" in columns and "timestamp" in columns and "json" in columns
    assert "events: primary key project_id, event_id; update key date_created" in columns
    assert "issues: primary key id; update key last_seen" in columns


def test_run_writes_parquet_and_exits_0(with_sentry: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    result = invoke(with_sentry, "run", "replication.yaml")
    assert result.exit_code == 0, all_output(result)
    assert "events" in result.stdout and "incremental" in result.stdout
    assert parquet_files(tmp_path / "out" / "events")
    shown = invoke(with_sentry, "state", "show", "replication.yaml")
    assert shown.exit_code == 0 and "issues" in shown.stdout
    reset = invoke(with_sentry, "state", "reset", "replication.yaml", "--streams", "issues")
    assert reset.stdout.strip() == "issues: state cleared"
    again = invoke(with_sentry, "state", "reset", "replication.yaml", "--streams", "issues")
    assert again.stdout.strip() == "issues: no state"


def test_run_with_a_bad_file_exits_2_with_one_line(with_sentry: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION.replace("'*':", "isues:"))
    result = invoke(with_sentry, "run", "replication.yaml")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in all_output(result)
    assert result.stderr.startswith("error: replication.yaml: streams.isues: unknown stream")


def test_run_with_an_undefined_connection(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    result = invoke(cli, "run", "replication.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: connection 'SENTRY' is not defined")


def test_run_exits_1_when_a_stream_fails(
    with_sentry: CliRunner, fake: FakeSentry, tmp_path: Path
) -> None:
    fake.settings.forbidden_projects = frozenset({"project-2"})
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    result = invoke(with_sentry, "run", "replication.yaml", "--streams", "events")
    assert result.exit_code == 1
    assert "events: project 'project-2' skipped: You do not have permission" in result.stdout


def test_the_token_never_appears_anywhere(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    outputs = [
        invoke(cli, "run", "replication.yaml", "--debug"),
        invoke(cli, "conns", "list", "--debug"),
        invoke(cli, "conns", "test", "SENTRY", "--debug"),
        invoke(cli, "state", "show", "replication.yaml"),
    ]
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token=TOKEN + "x"))
    outputs.append(invoke(cli, "run", "replication.yaml"))
    for result in outputs:
        assert TOKEN not in all_output(result)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_debug_logs_requests(with_sentry: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    result = invoke(with_sentry, "run", "replication.yaml", "--debug", "--streams", "teams")
    assert result.exit_code == 0
    assert "GET organizations/acme/teams/ per_page=100 -> 200" in result.stderr


def test_version(cli: CliRunner) -> None:
    result = invoke(cli, "--version")
    assert result.exit_code == 0 and result.stdout.startswith("sentry-extract ")


def test_state_file_holds_no_secret_and_is_json(with_sentry: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    invoke(with_sentry, "run", "replication.yaml", "--streams", "issues")
    text = (tmp_path / "out" / "issues" / "_sentry_extract_state.json").read_text()
    assert TOKEN not in text and "auth_token" not in text and "secrets" not in text
    state = json.loads(text)
    assert set(state) == {"version", "streams"}
    [(key, entry)] = state["streams"].items()
    assert key == "SENTRY/acme/issues/file://out/issues"
    assert set(entry) == {"source", "organization", "stream", "object", "state"}
    assert entry["organization"] == "acme" and entry["stream"] == "issues"
    kept = {"watermark", "project_watermarks", "ranges", "project_ranges", "reconciled_at"}
    assert {"watermark", "project_watermarks"} <= set(entry["state"]) <= kept
    assert entry["state"]["watermark"] and entry["state"]["project_watermarks"] == {}


def test_unknown_option_is_a_usage_error(cli: CliRunner) -> None:
    result = CliRunner().invoke(app, ["run", "x.yaml", "--moed", "full-refresh"])
    assert result.exit_code == 2


def test_conns_test_missing_scope(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentry_extract.testing.fake_sentry import ORG_TOKEN_SCOPES

    org_token = "sntrys_test_organization_token"
    fake.settings.token_scopes[org_token] = ORG_TOKEN_SCOPES
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token=org_token))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the token may not read organization 'acme' (403): it needs the org:read scope"
    )


def test_run_against_the_wrong_region_names_it(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, organization="elsewhere"))
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    result = invoke(cli, "run", "replication.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: organization 'elsewhere' not found at {fake.base_url}: wrong slug, or an "
        "organization in another region (EU organizations live on https://de.sentry.io)"
    )
    assert len(fake.requests) == 1  # stopped before any stream started


@pytest.mark.parametrize(("variable", "backend"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_command_makes_arrow_allocate_with_malloc_unless_told(
    variable: str | None, backend: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if variable:
        environment["ARROW_DEFAULT_MEMORY_POOL"] = variable
    script = (
        "from sentry_extract.__main__ import prepare_process\n"
        "prepare_process()  # what the command does first\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip().splitlines()[-1] == backend


def test_one_of_a_thing_is_not_plural(with_sentry: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "replication.yaml").write_text(REPLICATION.replace("'*':", "organizations:"))
    text = invoke(with_sentry, "run", "replication.yaml")
    assert re.fullmatch(r"1 row, 1 request in \d+\.\ds", text.stdout.splitlines()[-1])
    result = invoke(with_sentry, "run", "replication.yaml", "--log-format", "json")
    assert result.exit_code == 0, result.stderr
    messages = {
        line["event"]: line["message"] for line in map(json.loads, result.stderr.splitlines())
    }
    assert re.fullmatch(r"organizations: ok, 1 row, 1 request, \d+\.\ds", messages["stream_end"])
    assert re.fullmatch(
        r"run ended: 1 row, 1 request in \d+\.\ds, exit code 0", messages["run_end"]
    )
