"""Replication YAML: the reference examples, modes, templating and exact error messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentry_extract.config.replication import Overrides, Replication, load_replication
from sentry_extract.errors import ConfigError
from sentry_extract.source.catalog import STREAM_NAMES, WILDCARD_NAMES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STARTED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def load(
    tmp_path: Path,
    text: str,
    overrides: Overrides = Overrides(),
    environ: dict[str, str] | None = None,
) -> Replication:
    path = tmp_path / "replication.yaml"
    path.write_text(text)
    return load_replication(path, environ or {}, STARTED, overrides)


def error_of(tmp_path: Path, text: str, overrides: Overrides = Overrides()) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, overrides)
    return str(raised.value)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("reference-*.yaml")))
def test_reference_examples_load_unchanged(example: str) -> None:
    replication = load_replication(EXAMPLES / example, {}, STARTED)
    assert replication.source == "SENTRY" and replication.target == "MY_POSTGRES"
    assert replication.streams


def test_reference_seed_modes_and_keys() -> None:
    replication = load_replication(EXAMPLES / "reference-sentry-to-postgres.yaml", {}, STARTED)
    modes = {s.name: s.mode for s in replication.streams}
    assert modes == {
        "organizations": "full-refresh",
        "projects": "full-refresh",
        "teams": "full-refresh",
        "members": "full-refresh",
        "releases": "full-refresh",
        "issues": "incremental",
        "events": "incremental",
    }
    issues, events = replication.stream("issues"), replication.stream("events")
    assert issues.primary_key == ("id",) and issues.update_key == "last_seen"
    assert events.primary_key == ("event_id", "project_id")  # eventID is unique per project only
    assert events.object == "sentry.events"


def test_wildcard_streams_take_defaults_mode_as_sling_applies_it(tmp_path: Path) -> None:
    replication = load_replication(EXAMPLES / "reference-sync-all-endpoints.yaml", {}, STARTED)
    modes = {s.name: s.mode for s in replication.streams}
    assert list(modes) == list(WILDCARD_NAMES)
    assert set(modes.values()) == {"full-refresh"} and replication.notes == ()
    incremental = load(
        tmp_path,
        "source: S\ntarget: LOCAL\ndefaults:\n  mode: incremental\n"
        "  object: out/{stream_name}\nstreams:\n  '*':\n",
    )
    assert {s.mode for s in incremental.streams} == {"incremental"}
    natural = load(tmp_path, "source: S\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
                   "streams:\n  '*':\n")  # fmt: skip
    modes = {s.name: s.mode for s in natural.streams}
    assert modes["issues"] == modes["events"] == "incremental"
    assert {modes[n] for n in WILDCARD_NAMES[:5]} == {"full-refresh"}


def test_a_default_backfill_leaves_streams_without_a_time_range_in_their_mode_and_says_so(
    tmp_path: Path,
) -> None:
    replication = load(
        tmp_path,
        "source: S\ntarget: LOCAL\ndefaults:\n  mode: backfill\n  object: out/{stream_name}\n"
        "  source_options:\n    range: '2026-01-01,2026-02-01'\nstreams:\n  '*':\n"
        "  teams:\n    mode: snapshot\n",
    )
    modes = {s.name: s.mode for s in replication.streams}
    assert modes["issues"] == modes["events"] == "backfill"
    assert modes["teams"] == "snapshot"  # its own mode, not the default
    assert modes["projects"] == modes["releases"] == "full-refresh"
    assert replication.notes == (
        "defaults.mode backfill does not apply to streams without a time range: "
        "organizations (full-refresh), projects (full-refresh), members (full-refresh), "
        "releases (full-refresh)",
    )


def test_explicit_stream_overrides_wildcard_and_takes_defaults_mode(tmp_path: Path) -> None:
    replication = load(
        tmp_path,
        "source: S\ntarget: LOCAL\ndefaults:\n  mode: snapshot\n"
        "  object: out/{stream_name}\nstreams:\n  '*':\n  issues:\n"
        "    object: other/{stream_name}\n  teams:\n    disabled: true\n",
    )
    assert replication.stream("issues").mode == "snapshot"
    assert replication.stream("issues").object == "other/issues"
    assert replication.stream("events").mode == "snapshot"  # from '*': the default too
    assert "teams" not in {s.name for s in replication.streams}


def test_cli_mode_and_streams_win(tmp_path: Path) -> None:
    text = "source: S\ntarget: LOCAL\ndefaults:\n  object: o/{stream_name}\nstreams:\n  '*':\n"
    replication = load(tmp_path, text, Overrides(("issues", "teams"), "full-refresh"))
    assert [(s.name, s.mode) for s in replication.streams] == [
        ("teams", "full-refresh"),
        ("issues", "full-refresh"),
    ]


def test_object_templating(tmp_path: Path) -> None:
    replication = load(
        tmp_path,
        "source: SENTRY\ntarget: LOCAL\nenv:\n  ROOT: /data\nstreams:\n  issues:\n"
        "    object: '${ROOT}/${SUB}/{source_name}_{target_name}/{stream_name}_{run_timestamp}'\n",
        environ={"SUB": "x"},
    )
    assert replication.stream("issues").object == "/data/x/sentry_local/issues_2026_03_04_050607"


def test_backfill_range(tmp_path: Path) -> None:
    replication = load(
        tmp_path,
        "source: S\ntarget: LOCAL\nstreams:\n  events:\n"
        "    mode: backfill\n    object: o\n    source_options:\n"
        "      range: '2024-01-01,2024-02-01T12:00:00Z'\n",
    )
    window = replication.stream("events").backfill_range
    assert window is not None
    assert (window.start.isoformat(), window.end.isoformat()) == (
        "2024-01-01T00:00:00+00:00",
        "2024-02-01T12:00:00+00:00",
    )


BASE = "source: S\ntarget: LOCAL\ndefaults:\n  object: o/{stream_name}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + "streams:\n  issues:\n    mode: incremantal\n",
            "replication.yaml: streams.issues.mode: 'incremantal' is not one of full-refresh, "
            "incremental, truncate, snapshot, backfill",
        ),
        (
            BASE + "streams:\n  isues:\n",
            "replication.yaml: streams.isues: unknown stream (did you mean 'issues'?); available: "
            f"{', '.join(STREAM_NAMES)} (or '*' for all)",
        ),
        (
            BASE + "streams:\n  issues:\n    primary_keys: [id]\n",
            "replication.yaml: streams.issues.primary_keys: unknown key (did you mean "
            "'primary_key'?); expected one of mode, object, primary_key, update_key, select, "
            "disabled, source_options, target_options",
        ),
        (
            BASE + "stream:\n  issues:\n",
            "replication.yaml: stream: unknown key (did you mean 'streams'?); expected one of "
            "source, target, defaults, streams, env",
        ),
        (
            BASE + "streams:\n  issues:\n    update_key: lastSeen\n",
            "replication.yaml: streams.issues.update_key: 'lastSeen' is not a column of issues "
            "(did you mean 'last_seen'?); see 'sentry-extract conns discover NAME --columns'",
        ),
        (
            BASE + "streams:\n  events:\n    mode: backfill\n",
            "replication.yaml: streams.events.source_options.range: backfill needs range: "
            "'START,END' "
            "(e.g. '2024-01-01,2024-02-01')",
        ),
        (
            BASE + "streams:\n  events:\n    mode: backfill\n    source_options:\n"
            "      range: '2024-02-01,2024-01-01'\n",
            "replication.yaml: streams.events.source_options.range: START must be before END",
        ),
        (
            "source: S\ntarget: LOCAL\nstreams:\n  issues:\n",
            "replication.yaml: streams.issues.object: required: where to write the stream, e.g. "
            "sentry.{stream_name} or file://./output/{stream_name}",
        ),
        (
            BASE + "streams:\n  issues:\n    object: 'x/{stream}'\n",
            "replication.yaml: streams.issues.object: unknown placeholder '{stream}' (did you mean "
            "'stream_name'?); use {stream_name}, {source_name}, {target_name}, {run_timestamp}",
        ),
        (
            BASE + "streams:\n  issues:\n    object: '${NOPE}/x'\n",
            "replication.yaml: streams.issues.object: environment variable 'NOPE' is not set",
        ),
        (
            BASE + "streams:\n  issues:\n    target_options:\n      column_casing: camel\n",
            "replication.yaml: streams.issues.target_options.column_casing: 'camel' is not one of "
            "snake, source",
        ),
        (
            BASE + "streams:\n  issues:\n    select: 5\n",
            "replication.yaml: streams.issues.select: expected a list of column names, "
            "got a number (5)",
        ),
        (
            BASE + "streams:\n  issues: [a]\n",
            "replication.yaml: streams.issues: expected a map, got a list",
        ),
        (
            BASE + "streams:\n",
            "replication.yaml: streams: expected a map of stream names (or '*'), got nothing",
        ),
        (
            "target: LOCAL\nstreams:\n  issues:\n",
            "replication.yaml: source: required: the name of a connection",
        ),
        ("source: S\n  target: [\n", "replication.yaml: not valid YAML: "),
        (
            "- a\n- b\n",
            "replication.yaml: expected a map with source, target and streams, got a list",
        ),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text).startswith(message)


def test_unknown_stream_on_the_command_line(tmp_path: Path) -> None:
    text = BASE + "streams:\n  issues:\n"
    assert error_of(tmp_path, text, Overrides(("evnts",))) == (
        "--streams: unknown stream 'evnts' (did you mean 'events'?); available: "
        + ", ".join(STREAM_NAMES)
    )
    assert error_of(tmp_path, text, Overrides(("events",))) == (
        "--streams: stream 'events' is not in replication.yaml; it has: issues"
    )
    assert error_of(tmp_path, text, Overrides(mode="merge")).startswith(
        "--mode: 'merge' is not one of full-refresh"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_replication(tmp_path / "nope.yaml", {}, STARTED)
