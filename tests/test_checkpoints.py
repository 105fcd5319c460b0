"""Checkpoints: a sliced backfill killed at any moment resumes from its last checkpoint."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentry_extract.pipeline import loader
from sentry_extract.testing.fake_sentry import FakeSentry, RequestRecord, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    RETENTION,
    Command,
    Workspace,
    assert_state_not_ahead,
    command_environment,
    kill_when,
    sentry_connection,
    stored_events,
    when_answered,
)

SIZE = OrganizationSize(projects=2, issues=40, events=12_000, history_days=80)


def replication(folder: Path, target: str) -> None:
    object_name = "sentry.{stream_name}" if target == "MY_POSTGRES" else "out/{stream_name}"
    (folder / "r.yaml").write_text(
        f"source: SENTRY\ntarget: {target}\ndefaults:\n  object: {object_name}\n"
        "  mode: incremental\nstreams:\n  events:\n"
    )


def command(folder: Path, fake: FakeSentry, pg_url: str) -> Command:
    connection = sentry_connection(fake.base_url, checkpoint_every="2s")
    return Command(folder, command_environment(folder, connection, MY_POSTGRES=pg_url))


def rows_of(requests: list[RequestRecord]) -> int:
    return sum(record.rows for record in requests)


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_a_backfill_killed_at_70_percent_resumes_from_its_last_checkpoint(
    tmp_path: Path, pg_url: str, target: str
) -> None:
    replication(tmp_path, target)
    organization = FakeOrganization("acme", SIZE, seed=11)
    with FakeSentry(organization, ServerSettings()) as fake:
        killed = command(tmp_path, fake, pg_url)
        answered = when_answered(fake, lambda seen: rows_of(seen) >= 0.7 * SIZE.events)
        chance = random.Random(f"checkpoints-{target}")
        assert kill_when(killed, fake, answered, chance)  # before it finished
        assert_state_not_ahead(target, tmp_path, pg_url, organization)
        before = len(fake.requests)
        rerun = killed.run()
        assert rerun.returncode == 0, rerun.stderr
        again = rows_of(fake.requests[before:])
    assert again <= 0.45 * SIZE.events, again  # the rest, and what its checkpoints had not
    stored = stored_events(target, tmp_path, pg_url)
    assert len(stored) == len(set(stored)), "a key stored twice"
    assert set(stored) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)
    }


def test_a_sliced_crawl_asks_oldest_slice_first(tmp_path: Path) -> None:
    organization = FakeOrganization("acme", SIZE, seed=11)
    replication(tmp_path, "LOCAL")
    with FakeSentry(organization, ServerSettings()) as fake:
        run = command(tmp_path, fake, "").run()
        assert run.returncode == 0, run.stderr
    for project in organization.projects:
        requests = fake.requests_to(f"/{project['slug']}/events/")
        ranges = [(r.param("start"), r.param("end")) for r in requests]
        starts = [start for start, _ in dict.fromkeys(ranges)]
        assert len(starts) > 3 and starts == sorted(starts)  # slices, oldest first
        # Slices tile the window: each starts where the one before ended.
        slices = list(dict.fromkeys(ranges))
        assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))


def test_a_backfill_checkpoints_its_rows_but_never_its_state(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "CHECKPOINT_ROWS", 10)
    workspace.replication("  events:\n", mode="incremental")
    started = datetime.now(UTC).replace(microsecond=0)
    assert workspace.run(started=started).exit_code == 0
    state_file = workspace.folder / "out" / "events" / "_sentry_extract_state.json"
    before = state_file.read_text()
    start = (started - timedelta(days=60)).strftime("%Y-%m-%d")
    end = (started - timedelta(days=1)).strftime("%Y-%m-%d")
    workspace.replication(
        f"  events:\n    mode: backfill\n    source_options:\n      range: '{start},{end}'\n"
    )
    summary = workspace.run(started=started + timedelta(seconds=3))
    assert summary.exit_code == 0 and summary.results[0].checkpoints > 2
    assert state_file.read_text() == before


def test_a_writer_may_ask_for_bytes_in_each_checkpoint() -> None:
    """A writer whose commits cost more than a few rows (Delta) asks for bytes of rows in
    each checkpoint besides the rows; `checkpoint_every` still bounds the wait."""
    now = [0.0]
    checkpoints = loader.Checkpoints(60, lambda: now[0], least_bytes=1_000)
    checkpoints.add(loader.CHECKPOINT_ROWS, 999)
    assert not checkpoints.is_due()  # rows enough, bytes not
    checkpoints.add(1, 1)
    assert checkpoints.is_due()
    checkpoints.done()
    checkpoints.add(1, 0)
    assert not checkpoints.is_due()
    now[0] = 60.0
    assert checkpoints.is_due()  # the time still calls for one
    checkpoints.done()
    checkpoints.add(loader.CHECKPOINT_ROWS, 1_000)
    assert checkpoints.is_due()
