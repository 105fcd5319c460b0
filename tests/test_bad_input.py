"""A corpus of broken configurations: each exits 2 with one or two lines that say what to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.errors import ConfigError
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import closed_port, invoke, parquet_files, sentry_connection

GOOD = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://out/{stream_name}\n"
    "streams:\n  issues:\n"
)


CASES: list[tuple[str, str, dict[str, str], list[str], str]] = [
    # (id, replication text, connection inputs or raw variables, extra arguments, message start)
    ("yaml-syntax", "source: SENTRY\n  target: [\n", {}, [], "r.yaml: not valid YAML"),
    ("not-a-map", "[1, 2]\n", {}, [], "r.yaml: expected a map"),
    (
        "streams-a-list",
        GOOD.replace("  issues:\n", "  - issues\n"),
        {},
        [],
        "r.yaml: streams: expected a map of stream names",
    ),
    (
        "unknown-root-key",
        GOOD + "defualts: {}\n",
        {},
        [],
        "r.yaml: defualts: unknown key (did you mean 'defaults'?)",
    ),
    (
        "unknown-stream-key",
        GOOD + "    mdoe: incremental\n",
        {},
        [],
        "r.yaml: streams.issues.mdoe: unknown key (did you mean 'mode'?)",
    ),
    (
        "unknown-stream",
        GOOD.replace("issues:", "issuez:"),
        {},
        [],
        "r.yaml: streams.issuez: unknown stream (did you mean 'issues'?)",
    ),
    (
        "bad-mode",
        GOOD + "    mode: upsert\n",
        {},
        [],
        "r.yaml: streams.issues.mode: 'upsert' is not one of",
    ),
    (
        "bad-range",
        GOOD + "    mode: backfill\n    source_options:\n      range: 'May,June'\n",
        {},
        [],
        "r.yaml: streams.issues.source_options.range: 'May' is not a date-time",
    ),
    (
        "bad-anchor",
        GOOD,
        {"anchor_date": "last year"},
        [],
        "connection SENTRY (environment variable): inputs.anchor_date: 'last year' is not a "
        "date-time",
    ),
    (
        "no-organization",
        GOOD,
        {"organization": ""},
        [],
        "connection SENTRY (environment variable): inputs.organization is required",
    ),
    (
        "unknown-input",
        GOOD,
        {"organisation": "acme"},
        [],
        "connection SENTRY (environment variable): inputs: unknown key 'organisation' "
        "(did you mean 'organization'?)",
    ),
    (
        "bad-rate",
        GOOD,
        {"rate_limit": "fast"},
        [],
        "connection SENTRY (environment variable): inputs.rate_limit: expected a number",
    ),
    ("bad-option-mode", GOOD, {}, ["--mode", "merge"], "--mode: 'merge' is not one of"),
    (
        "bad-option-streams",
        GOOD,
        {},
        ["--streams", "event"],
        "--streams: unknown stream 'event' (did you mean 'events'?)",
    ),
    ("bad-deadline", GOOD, {}, ["--deadline", "soon"], "--deadline: 'soon' is not a duration"),
    (
        "file-as-folder",
        GOOD.replace("file://out/", "file://blocker/"),
        {},
        [],
        "r.yaml: streams.issues.object: cannot write under",
    ),
    (
        "url-object-for-files",
        GOOD.replace("file://out/", "s3://bucket/"),
        {},
        [],
        "r.yaml: streams.issues.object: 's3://bucket/issues' is not a file path",
    ),
    (
        "undefined-target",
        GOOD.replace("target: LOCAL", "target: WAREHOUSE"),
        {},
        [],
        "connection 'WAREHOUSE' is not defined",
    ),
]


@pytest.mark.parametrize(
    ("text", "inputs", "arguments", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_broken_configuration(
    cli: CliRunner,
    fake: FakeSentry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    inputs: dict[str, str],
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, **inputs))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "r.yaml").write_text(text)
    result = invoke(cli, "run", "r.yaml", *arguments)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2
    assert "Traceback" not in result.stdout + result.stderr
    assert fake.requests_to("/events/") == [] and fake.requests_to("/issues/") == []


@pytest.mark.parametrize(
    "variable",
    [
        "{ type: api, spec: sentry, secrets: { auth_token: sntryu_test_x }, "
        "inputs: { organization: ",
        "{ type: api, spec: sentry, secrets: [sntryu_test_x], inputs: { organization: acme } }",
        "{ type: api, spec: sentry, inputs: { organization: acme } }",
    ],
)
def test_malformed_environment_connections(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("SENTRY", variable)
    (tmp_path / "r.yaml").write_text(GOOD)
    result = invoke(cli, "run", "r.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: connection SENTRY (environment variable):")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "sntryu_test_x" not in result.stderr


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        ("http://127.0.0.1:{port}", "cannot reach 127.0.0.1:{port} (ConnectError: "),
        ("http://sentry.nowhere.invalid", "cannot reach sentry.nowhere.invalid (ConnectError: "),
    ],
    ids=["refused", "not-resolved"],
)
def test_an_unreachable_host_fails_fast_and_as_conns_test_says(
    cli: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    noted_waits: list[float],
    base_url: str,
    reason: str,
) -> None:
    """The default retry settings: the first request fails after three attempts and less
    than 15 s of waits between them, saying why."""
    port = closed_port()
    base_url, reason = base_url.format(port=port), reason.format(port=port)
    monkeypatch.setenv("SENTRY", sentry_connection(base_url))
    (tmp_path / "r.yaml").write_text(GOOD)
    result = invoke(cli, "run", "r.yaml")
    assert len(noted_waits) == 2 and sum(noted_waits) < 15
    tested = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == tested.exit_code == 2
    error = result.stderr.splitlines()[-1]
    assert error == tested.stderr.splitlines()[-1]
    assert error.startswith(f"error: {reason}")
    assert error.endswith(f": check inputs.base_url ({base_url})")
    waits = [line for line in result.stderr.splitlines() if " retrying in " in line]
    assert len(waits) == 2 and f": {reason}" in waits[0]
    assert re.search(r"WARNING retrying in \d+(\.\d)?s: ", waits[0]), waits[0]
    assert not (tmp_path / "out").exists()


def test_missing_replication_file(cli: CliRunner) -> None:
    result = invoke(cli, "run", "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: nope.yaml: no such file"


def test_debug_shows_the_traceback(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("[1]\n")
    result = cli.invoke(app, ["run", "r.yaml", "--debug"])
    assert isinstance(result.exception, ConfigError)  # raised, not turned into a one-liner
    assert (
        str(result.exception)
        == "r.yaml: expected a map with source, target and streams, got a list"
    )
    assert result.exception.location == "r.yaml"


def test_a_deadline_stops_the_run(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.settings.latency = 0.3
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(GOOD.replace("issues:", "events:"))
    result = invoke(cli, "run", "r.yaml", "--deadline", "1s")
    assert result.exit_code == 1
    assert (
        "error: the run's deadline (1s) passed; unfinished streams stopped, their checkpoints kept "
        "for the next run" in result.stderr
    )
    assert not parquet_files(tmp_path / "out" / "events")
