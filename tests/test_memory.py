"""Memory is bounded in bytes: large events do not raise the peak, nor do more of them,
nor do deep stack traces (many small JSON values) cost more than the budget says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import command_environment, sentry_connection

FRAMES = 275  # about 78 KB of JSON an event, as events with long stack traces are
CEILING_MB = 300
# DuckDB's memory limit (twice the budget) on top of a run's own: 300 to 320 MB measured
DUCKDB_CEILING_MB = 340
# A DuckDB run that commits batch by batch: 250 to 260 MB measured at 2,500 events; a
# truncate in one transaction peaked at 305 MB
DUCKDB_COMMITTING_CEILING_MB = 285
BUDGET_MB = 64_000_000 / 2**20  # inputs.memory_budget's default, in the unit of ru_maxrss
# 300 frames with five source lines and six local variables each: also about 78 KB of JSON
# an event, but in many small values (seven times their JSON once decoded).
DEEP_FRAMES = {"frames": 300, "frame_context_lines": 2, "frame_vars": 6}
# The command's peak RSS, reported by a small parent that runs it: on Linux a process's
# ru_maxrss starts at its parent's size when it forks, so a child of a large pytest
# process would count pytest in.
MEASURE = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mb(
    folder: Path,
    events: int,
    target: str,
    pg_url: str,
    frames: dict[str, int] | None = None,
    mode: str = "incremental",
    target_options: str = "",
) -> float:
    shape = frames or {"frames": FRAMES}
    size = OrganizationSize(projects=2, issues=20, events=events, history_days=60, **shape)
    organization = FakeOrganization("acme", size, seed=2)
    if events:
        some_event = next(iter(organization.events.values()))[0]
        assert 70_000 < len(msgspec.json.encode(some_event)) < 90_000
    schema = f"s{events}{'deep' if frames else ''}"
    objects = {"MY_POSTGRES": f"{schema}.{{stream_name}}", "MY_DUCKDB": "main.{stream_name}"}
    object_name = objects.get(target, "out/{stream_name}")
    (folder / "r.yaml").write_text(
        f"source: SENTRY\ntarget: {target}\ndefaults:\n  object: {object_name}\n"
        f"  mode: {mode}\n{target_options}streams:\n  events:\n"
    )
    with FakeSentry(organization, ServerSettings()) as fake:
        connection = sentry_connection(fake.base_url)
        duckdb_connection = json.dumps({"type": "duckdb", "instance": str(folder / "w.duckdb")})
        environment = command_environment(
            folder, connection, MY_POSTGRES=pg_url, MY_DUCKDB=duckdb_connection
        )
        command = [sys.executable, "-m", "sentry_extract", "run", "r.yaml"]
        finished = subprocess.run(
            [sys.executable, "-c", MEASURE, *command],
            cwd=folder,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    *messages, peak = finished.stderr.strip().splitlines()
    assert finished.returncode == 0, "\n".join(messages)
    return int(peak) / 1024


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_peak_memory_does_not_follow_event_size_or_count(
    tmp_path: Path, pg_url: str, target: str
) -> None:
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir()
    many.mkdir()
    small = peak_rss_mb(few, 1_000, target, pg_url)
    large = peak_rss_mb(many, 3_000, target, pg_url)
    assert small < CEILING_MB and large < CEILING_MB, (small, large)
    assert large < small * 1.15 + 10, (small, large)


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_deep_stack_traces_stay_within_the_budget(tmp_path: Path, pg_url: str, target: str) -> None:
    """What the rows cost above an idle run (read ahead, batched, typed, copied) stays
    near the memory budget, and does not grow with the number of events."""
    peaks = {}
    for events in (0, 1_000, 4_000):
        folder = tmp_path / str(events)
        folder.mkdir()
        peaks[events] = peak_rss_mb(folder, events, target, pg_url, DEEP_FRAMES, "full-refresh")
    idle, few, many = peaks.values()
    assert many < CEILING_MB, peaks
    assert many - idle < BUDGET_MB * 1.25, peaks
    assert many < few * 1.15 + 10, peaks


@pytest.mark.parametrize("mode", ["full-refresh", "incremental"])
def test_delta_tables_take_large_events_in_bounded_memory(
    tmp_path: Path, pg_url: str, mode: str
) -> None:
    """A Delta table's rows go to its files a batch at a time, in both the one commit of
    a full refresh and the commits of an incremental run's checkpoints."""
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir()
    many.mkdir()
    delta = "  target_options: {format: delta}\n"
    small = peak_rss_mb(few, 800, "LOCAL", pg_url, mode=mode, target_options=delta)
    large = peak_rss_mb(many, 2_400, "LOCAL", pg_url, mode=mode, target_options=delta)
    assert small < CEILING_MB and large < CEILING_MB, (small, large)
    assert large < small * 1.15 + 10, (small, large)


def test_a_duckdb_snapshot_in_one_transaction_does_not_hold_its_rows(
    tmp_path: Path, pg_url: str
) -> None:
    """A snapshot onto rows already stored stages its batches as Parquet files and reads
    them into the table at the commit, which DuckDB streams, writing full row groups
    before the commit and spilling beside the file what its memory limit does not hold:
    a run held in a temporary table until its one commit peaked at 2.0 GB here, one
    committed batch by batch at 430 MB, and a truncate (one transaction) at 640 MB for
    4,000 events."""
    peak_rss_mb(tmp_path, 2_500, "MY_DUCKDB", pg_url, mode="snapshot")  # into an empty table
    peak = peak_rss_mb(tmp_path, 2_500, "MY_DUCKDB", pg_url, mode="snapshot")
    assert peak < DUCKDB_CEILING_MB, peak
    assert not (tmp_path / "w.duckdb.tmp").exists()  # what DuckDB spilled went with the run
    assert not list(tmp_path.glob("w.duckdb.staging-*"))  # and what the run staged


def test_a_duckdb_snapshot_of_fewer_large_events_than_a_row_group_commits(
    tmp_path: Path, pg_url: str
) -> None:
    """DuckDB writes no row group of a transaction's rows before its commit when they are
    fewer than one (2,048), and takes them all at once then: a snapshot of 1,800 large
    events onto a first one failed to commit ("failed to pin block", at twice the
    budget), run after run. The commit now gets memory for them: 1.5 times the staged
    rows' bytes (531 to 605 MB peak measured, the process's 180 MB included), a bound
    with room for that and none for holding the rows several times over."""
    peak_rss_mb(tmp_path, 1_800, "MY_DUCKDB", pg_url, mode="snapshot")  # into an empty table
    peak = peak_rss_mb(tmp_path, 1_800, "MY_DUCKDB", pg_url, mode="snapshot")
    assert peak < 700, peak
    assert not (tmp_path / "w.duckdb.tmp").exists()


@pytest.mark.parametrize("mode", ["incremental", "full-refresh", "truncate", "snapshot"])
def test_a_duckdb_run_that_commits_as_it_goes_stays_under_the_ceiling(
    tmp_path: Path, pg_url: str, mode: str
) -> None:
    """Each batch is upserted and committed as it comes (a full refresh, a truncate and a
    first snapshot into their new table), a few rows a statement: DuckDB joined each
    commit's small row group with the ones before at its checkpoints, and rewrote up to
    2,048 large events each time (436 MB here for 2,500 events of an incremental run); a
    truncate or a snapshot that held its rows in one transaction took DuckDB's row groups
    of them at its commit (304 to 305 MB)."""
    peak = peak_rss_mb(tmp_path, 2_500, "MY_DUCKDB", pg_url, mode=mode)
    assert peak < DUCKDB_COMMITTING_CEILING_MB, peak
    assert not (tmp_path / "w.duckdb.tmp").exists()
