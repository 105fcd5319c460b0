"""kill -9 at random moments, then a rerun: nothing lost, nothing doubled, state never ahead."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .conftest import parquet_files, pg_rows, sentry_connection

RETENTION = timedelta(days=90)
KILLS = 4


def stored_events(target: str, folder: Path, url: str) -> list[tuple[str, str]]:
    if target == "MY_POSTGRES":
        if not pg_rows(url, "SELECT to_regclass('sentry.events')")[0][0]:
            return []
        return [
            (r[0], r[1]) for r in pg_rows(url, "SELECT project_id, event_id FROM sentry.events")
        ]
    data = folder / "out" / "events"
    if not parquet_files(data):
        return []
    table = ds.dataset(data, format="parquet").to_table(columns=["project_id", "event_id"])
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def saved_watermarks(target: str, folder: Path, url: str) -> dict[str, Any]:
    if target == "MY_POSTGRES":
        if not pg_rows(url, "SELECT to_regclass('sentry._sentry_extract_state')")[0][0]:
            return {}
        rows = pg_rows(
            url, "SELECT state FROM sentry._sentry_extract_state WHERE stream = 'events'"
        )
        return dict(rows[0][0]["project_watermarks"]) if rows else {}
    state = folder / "out" / "events" / "_sentry_extract_state.json"
    if not state.exists():
        return {}
    entry = next(iter(json.loads(state.read_text())["streams"].values()))
    return dict(entry["state"]["project_watermarks"])


def assert_state_not_ahead(
    target: str, folder: Path, url: str, organization: FakeOrganization
) -> None:
    """Every project the state calls done has all of its events stored."""
    stored = stored_events(target, folder, url)
    assert len(stored) == len(set(stored)), "a key stored twice"
    for project_id, watermark in saved_watermarks(target, folder, url).items():
        until = datetime.fromisoformat(watermark)
        expected = {
            (e["projectID"], e["eventID"])
            for e in organization.visible_events(RETENTION, until)
            if e["projectID"] == project_id
        }
        assert expected <= set(stored), f"state says project {project_id} is done; rows missing"


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_kill_at_random_moments_then_rerun(tmp_path: Path, pg_url: str, target: str) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=5, issues=30, events=500))
    chance = random.Random(f"kill-{target}")
    object_name = "sentry.{stream_name}" if target == "MY_POSTGRES" else "out/{stream_name}"
    (tmp_path / "r.yaml").write_text(
        f"source: SENTRY\ntarget: {target}\ndefaults:\n  object: {object_name}\n"
        "  mode: incremental\nstreams:\n  issues:\n  events:\n"
    )
    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        environment = {
            **os.environ,
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url, concurrency=1),
            "MY_POSTGRES": pg_url,
        }
        command = [sys.executable, "-m", "sentry_extract", "run", "r.yaml"]
        for _ in range(KILLS):
            process = subprocess.Popen(
                command,
                cwd=tmp_path,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(chance.uniform(0.3, 3.0))  # a random moment of the run
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert_state_not_ahead(target, tmp_path, pg_url, organization)
            organization.add_events(3, project_slug=f"project-{chance.randrange(5)}")
        # The run's window ends at its start, to the second: events of the same second
        # are the next run's (its lookback covers them). Start the last run after them.
        time.sleep(1.1)
        finished = subprocess.run(
            command,
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
    stored = stored_events(target, tmp_path, pg_url)
    assert len(stored) == len(set(stored))
    assert set(stored) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)
    }
