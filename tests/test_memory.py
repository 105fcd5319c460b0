"""Memory is bounded in bytes: large events do not raise the peak, nor do more of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .conftest import sentry_connection

FRAMES = 275  # about 78 KB of JSON an event, as events with long stack traces are
CEILING_MB = 300
# The run's peak, measured by a small launcher: a child's ru_maxrss starts at the size of
# the process that forked it, and the test process grows while the suite runs.
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def peak_rss_mb(folder: Path, events: int, target: str, pg_url: str) -> float:
    size = OrganizationSize(projects=2, issues=20, events=events, frames=FRAMES, history_days=60)
    organization = FakeOrganization("acme", size, seed=2)
    some_event = next(iter(organization.events.values()))[0]
    assert 70_000 < len(msgspec.json.encode(some_event)) < 90_000
    object_name = f"s{events}.{{stream_name}}" if target == "MY_POSTGRES" else "out/{stream_name}"
    (folder / "r.yaml").write_text(
        f"source: SENTRY\ntarget: {target}\ndefaults:\n  object: {object_name}\n"
        "  mode: incremental\nstreams:\n  events:\n"
    )
    with FakeSentry(organization, ServerSettings()) as fake:
        environment = {
            **os.environ,
            "SENTRY_EXTRACT_HOME": str(folder / "home"),
            "SENTRY": sentry_connection(fake.base_url),
            "MY_POSTGRES": pg_url,
        }
        finished = subprocess.run(
            [
                sys.executable,
                "-c",
                MEASURE,
                sys.executable,
                "-m",
                "sentry_extract",
                "run",
                "r.yaml",
            ],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
    return int(finished.stdout.split()[-1]) / 1024


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
