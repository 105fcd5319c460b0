"""--record against the fake, then --replay offline: same rows, same state, same exit code;
for the seven streams and for each group of named ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from sentry_extract.source.code_streams import CODE_STREAMS
from sentry_extract.source.explore_streams import EXPLORE_STREAMS
from sentry_extract.source.further_streams import FURTHER_STREAMS
from sentry_extract.testing.fake_sentry import FakeSentry, Fault, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import TOKEN, invoke, named, sentry_connection

REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://{out}/{{stream_name}}\n"
    "streams:\n  '*':\n"
)


def snapshot(folder: Path) -> dict[str, list[dict[str, object]]]:
    tables = {}
    for stream in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        table = ds.dataset(folder / stream, format="parquet").to_table()
        key = "event_id" if stream == "events" else "id"
        tables[stream] = sorted(table.to_pylist(), key=lambda row: str(row[key]))
    return tables


def state_files(folder: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in folder.rglob("_sentry_extract_state.json")}


def test_a_recorded_run_replays_offline_with_identical_results(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=25, events=150))
    (tmp_path / "recorded.yaml").write_text(REPLICATION.format(out=tmp_path / "recorded"))
    (tmp_path / "replayed.yaml").write_text(REPLICATION.format(out=tmp_path / "replayed"))
    with FakeSentry(organization, ServerSettings()) as fake:
        fake.inject(Fault("/teams/", 502, body={"detail": "bad gateway"}, times=1))
        monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
        recorded = invoke(cli, "run", "recorded.yaml", "--record", "cassettes")
        assert recorded.exit_code == 0, recorded.stderr
    # Offline now: no server, and no Sentry connection at all.
    monkeypatch.delenv("SENTRY")
    replayed = invoke(cli, "run", "replayed.yaml", "--replay", "cassettes")
    assert replayed.exit_code == recorded.exit_code == 0, replayed.stdout + replayed.stderr
    assert snapshot(tmp_path / "replayed") == snapshot(tmp_path / "recorded")
    recorded_state = {
        k: v.replace(str(tmp_path / "recorded"), "X")
        for k, v in state_files(tmp_path / "recorded").items()
    }
    replayed_state = {
        k: v.replace(str(tmp_path / "replayed"), "X")
        for k, v in state_files(tmp_path / "replayed").items()
    }
    assert replayed_state == recorded_state and recorded_state
    cassette = (tmp_path / "cassettes" / "sentry.yaml").read_text()
    assert TOKEN not in cassette and "Authorization" not in cassette
    assert "502" in cassette  # the failed attempt is part of the recording


def test_the_cassette_is_in_vcrpy_format(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer

    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION.format(out=tmp_path / "out"))
    assert invoke(cli, "run", "r.yaml", "--streams", "teams", "--record", "c").exit_code == 0
    requests, responses = FilesystemPersister.load_cassette(
        str(tmp_path / "c" / "sentry.yaml"), yamlserializer
    )
    assert [r.path for r in requests] == [
        "/api/0/organizations/acme/",
        "/api/0/organizations/acme/teams/",
    ]
    assert responses[1]["status"]["code"] == 200


def test_a_request_missing_from_the_cassettes_is_named(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION.format(out=tmp_path / "out"))
    assert invoke(cli, "run", "r.yaml", "--streams", "teams", "--record", "c").exit_code == 0
    result = invoke(cli, "run", "r.yaml", "--streams", "teams,members", "--replay", "c")
    assert result.exit_code == 1
    assert (
        "members: the cassettes hold no answer to GET /api/0/organizations/acme/members/"
        "?per_page=100; the closest recorded one is GET /api/0/organizations/acme/teams/"
        "?per_page=100"
    ) in result.stdout


def test_replay_needs_a_recording(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(REPLICATION.format(out=tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    result = invoke(cli, "run", "r.yaml", "--replay", "empty")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --replay: ")
    assert "holds no recording" in result.stderr


STREAM_GROUPS = {
    "code": [spec.name for spec in CODE_STREAMS],
    "explore": [spec.name for spec in EXPLORE_STREAMS],
    "further": [spec.name for spec in FURTHER_STREAMS],
}


@pytest.mark.parametrize("streams", list(STREAM_GROUPS.values()), ids=list(STREAM_GROUPS))
def test_named_streams_replay_from_cassettes(
    cli: CliRunner,
    fake: FakeSentry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    streams: list[str],
) -> None:
    """Each stream beyond Sling's seven: recorded, then replayed with the fake stopped,
    the same rows again; the token never lands in a cassette."""
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n"
        + named(*streams)
    )
    recorded = invoke(cli, "run", "r.yaml", "--record", "cassettes")
    assert recorded.exit_code == 0, recorded.stdout + recorded.stderr
    first = {s: ds.dataset(tmp_path / "out" / s).to_table().num_rows for s in streams}
    for cassette in (tmp_path / "cassettes").iterdir():
        assert "sntryu_test_" not in cassette.read_text()  # no token, nor a part of one
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
    fake.stop()
    replayed = invoke(cli, "run", "r.yaml", "--replay", "cassettes")
    assert replayed.exit_code == 0, replayed.stdout + replayed.stderr
    second = {s: ds.dataset(tmp_path / "out" / s).to_table().num_rows for s in streams}
    assert second == first and min(first.values()) > 0
