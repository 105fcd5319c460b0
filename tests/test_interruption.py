"""SIGTERM and Ctrl-C on a real process: stop promptly, keep what was committed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    Command,
    command_environment,
    parquet_files,
    sentry_connection,
    signal_when,
    working_files,
)


@pytest.mark.parametrize(("number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_and_leaves_no_partial_data(
    tmp_path: Path, number: signal.Signals, code: int
) -> None:
    organization = FakeOrganization("acme", OrganizationSize(events=600))
    with FakeSentry(organization, ServerSettings(latency=0.25)) as fake:
        (tmp_path / "r.yaml").write_text(
            "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
            "streams:\n  events:\n"
        )
        connection = sentry_connection(fake.base_url, concurrency=2)
        process = Command(tmp_path, command_environment(tmp_path, connection)).start()
        signal_when(process, lambda: len(fake.requests_to("/events/")) >= 3, number)
        signalled = len(fake.requests)
        _, stderr = process.communicate(timeout=60)
        # Stopped promptly: the requests in flight are answered, and the two workers send
        # no other (one each, at most, if the signal waited for an answer's quarter second).
        assert len(fake.requests) - signalled <= 4
    assert process.returncode == code, stderr
    assert "interrupted: committed rows and state are kept" in stderr
    assert "Traceback" not in stderr
    folder = tmp_path / "out" / "events"
    assert not parquet_files(folder)
    assert not (folder / "_sentry_extract_state.json").exists()
    assert not working_files(folder)
