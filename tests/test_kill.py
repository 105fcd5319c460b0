"""kill -9 at random moments, then a rerun: nothing lost, nothing doubled, state never ahead."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    RETENTION,
    Command,
    assert_state_not_ahead,
    command_environment,
    kill_at_moments,
    sentry_connection,
    stored_events,
    wait_for_the_next_second,
)

KILLS = 4
REQUESTS = 56  # about what a whole first run asks


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
        connection = sentry_connection(fake.base_url, concurrency=1)
        command = Command(tmp_path, command_environment(tmp_path, connection, MY_POSTGRES=pg_url))

        def after_each() -> None:
            assert_state_not_ahead(target, tmp_path, pg_url, organization)
            organization.add_events(3, project_slug=f"project-{chance.randrange(5)}")

        moments = [chance.randrange(1, REQUESTS) for _ in range(KILLS)]
        assert kill_at_moments(command, fake, moments, after_each, chance) >= KILLS // 2
        wait_for_the_next_second()  # the last run reads the events added after the last kill
        finished = command.run()
        assert finished.returncode == 0, finished.stderr
    stored = stored_events(target, tmp_path, pg_url)
    assert len(stored) == len(set(stored))
    assert set(stored) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)
    }
