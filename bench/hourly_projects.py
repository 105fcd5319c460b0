"""An hourly events run over 60 projects, new events in 11, under sentry.io-like limits
(events: 60 requests a minute, 1 in flight): requests to the per-project events endpoint
and wall time, for the package found in SRC (default: this checkout's `src`).

    .venv/bin/python bench/hourly_projects.py [SRC]

Give SRC a checkout of an older commit to compare (`git worktree add /tmp/old REV`, then
`/tmp/old/src`). The fake Sentry runs in this process; each run is the CLI in a child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sentry_extract.testing.fake_sentry import (
    DEFAULT_TOKEN,
    SENTRY_IO_LIMITS,
    FakeSentry,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

PROJECTS = 60
ACTIVE = 11  # projects with new events in the hour
REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://./out/{stream_name}\n"
    "streams:\n  events:\n"
)


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "src"
    organization = FakeOrganization(size=OrganizationSize(projects=PROJECTS, issues=120))
    with tempfile.TemporaryDirectory() as folder, FakeSentry(organization) as fake:
        connection = {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": DEFAULT_TOKEN},
            "inputs": {"organization": "acme", "base_url": fake.base_url},
        }
        environment = dict(
            os.environ,
            PYTHONPATH=str(source),
            SENTRY_EXTRACT_HOME=f"{folder}/home",
            SENTRY=json.dumps(connection),
        )
        Path(folder, "replication.yaml").write_text(REPLICATION)
        command = [sys.executable, "-m", "sentry_extract", "run", "replication.yaml"]
        subprocess.run(command, cwd=folder, env=environment, check=True, capture_output=True)
        for project in organization.projects[:ACTIVE]:
            organization.add_events(2, project_slug=project["slug"], age=timedelta(seconds=30))
        fake.settings = ServerSettings(rate_limits=SENTRY_IO_LIMITS)
        time.sleep(61)  # a fresh window of the events limit
        fake.reset_log()
        started = time.monotonic()
        run = subprocess.run(command, cwd=folder, env=environment, capture_output=True)
        seconds = time.monotonic() - started
        events = sum(1 for record in fake.requests if record.group == "events")
        print(
            json.dumps(
                {
                    "source": str(source),
                    "exit_code": run.returncode,
                    "seconds": round(seconds, 1),
                    "events_endpoint_requests": events,
                    "all_requests": len(fake.requests),
                    "projects": PROJECTS,
                    "projects_with_new_events": ACTIVE,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
