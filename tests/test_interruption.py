"""SIGTERM and Ctrl-C on a real process: stop promptly, keep what was committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .conftest import parquet_files, sentry_connection, working_files


@pytest.mark.parametrize(("number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_and_leaves_no_partial_data(
    tmp_path: Path, number: signal.Signals, code: int
) -> None:
    organization = FakeOrganization("acme", OrganizationSize(events=600))
    with FakeSentry(organization, ServerSettings(latency=0.1)) as fake:
        (tmp_path / "r.yaml").write_text(
            "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
            "streams:\n  events:\n"
        )
        environment = {
            **os.environ,
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "sentry_extract", "run", "r.yaml"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while len(fake.requests_to("/events/")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(number)
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - stopped < 5
    assert process.returncode == code, stderr
    assert "interrupted: committed rows and state are kept" in stderr
    assert "Traceback" not in stderr
    folder = tmp_path / "out" / "events"
    assert not parquet_files(folder)
    assert not (folder / "_sentry_extract_state.json").exists()
    assert not working_files(folder)
