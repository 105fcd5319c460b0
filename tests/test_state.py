"""State files: read, saved atomically, and repaired by `state reset` when damaged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentry_extract.errors import StateError
from sentry_extract.model.windows import Coverage
from sentry_extract.state import FileStateStore, StateKey, StreamState
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import invoke, sentry_connection

KEY = StateKey("SENTRY", "acme", "issues", "out/issues")
OTHER = StateKey("SENTRY", "acme", "teams", "out/teams")
MOMENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_saved_state_reads_back_and_keeps_other_keys(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    assert store.load(KEY) == StreamState()
    store.save(KEY, StreamState(coverage=Coverage(MOMENT)))
    store.save(OTHER, StreamState(projects={"1": Coverage(MOMENT)}))
    assert store.load(KEY) == StreamState(coverage=Coverage(MOMENT))
    assert store.load(OTHER).project_watermarks == {"1": MOMENT}
    assert store.reset(KEY) is True and store.reset(KEY) is False
    assert store.load(OTHER).project_watermarks == {"1": MOMENT}


def test_a_state_file_cut_short_is_an_error_that_names_the_repair(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "streams": {"SENTRY/ac')
    with pytest.raises(StateError) as raised:
        FileStateStore(path).load(KEY)
    assert str(raised.value) == (
        f"state file {path} is not valid JSON; run 'sentry-extract state reset' on the "
        "replication (or remove the file) to start over"
    )


def test_reset_removes_a_state_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\x00\x00\x00 not json")
    store = FileStateStore(path)
    assert store.reset(KEY) is True
    assert not path.exists()
    store.save(KEY, StreamState(coverage=Coverage(MOMENT)))
    assert store.load(KEY) == StreamState(coverage=Coverage(MOMENT))


def test_a_damaged_entry_is_an_error_and_reset_clears_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = FileStateStore(path)
    store.save(OTHER, StreamState(coverage=Coverage(MOMENT)))
    document = json.loads(path.read_text())
    document["streams"][KEY.as_text()] = {"state": {"watermark": "last tuesday"}}
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match="is damaged"):
        store.load(KEY)
    assert store.reset(KEY) is True
    assert store.load(KEY) == StreamState() and store.load(OTHER).watermark == MOMENT


def test_state_reset_repairs_a_corrupt_file_and_the_next_run_works(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
        "streams:\n  issues:\n"
    )
    shown = "out/issues/_sentry_extract_state.json"  # as the object names it
    state = tmp_path / shown
    state.parent.mkdir(parents=True)
    state.write_text('{"version": 1, "streams": {')  # a disk that filled up mid-write
    broken = invoke(cli, "run", "r.yaml")
    assert broken.exit_code == 1
    assert f"issues: state file {shown} is not valid JSON" in broken.stdout
    reset = invoke(cli, "state", "reset", "r.yaml")
    assert reset.exit_code == 0, reset.stderr
    assert reset.stdout.strip() == "issues: state cleared"
    assert reset.stderr.strip().endswith(f"WARNING state file {shown} was not valid JSON: removed")
    assert not state.exists()
    again = invoke(cli, "run", "r.yaml")
    assert again.exit_code == 0, again.stdout + again.stderr
    entry = next(iter(json.loads(state.read_text())["streams"].values()))
    assert entry["stream"] == "issues" and entry["state"]["watermark"]
