"""`make demo`: the fake Sentry on a free loopback port, the "sync all endpoints"
replication against it into ./demo-output/, the summary, and how to look at the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sentry_extract.events import counted
from sentry_extract.testing.fake_sentry import (
    DEFAULT_TOKEN,
    SENTRY_IO_LIMITS,
    FakeSentry,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

REPLICATION = Path("examples/demo.yaml")
SIZE = OrganizationSize(projects=4, teams=3, members=10, releases=15, issues=60, events=600)


def main() -> int:
    organization = FakeOrganization("acme", SIZE)
    settings = ServerSettings(rate_limits=dict(SENTRY_IO_LIMITS), latency=0.02)
    with FakeSentry(organization, settings) as fake:
        print(f"fake Sentry serving organization 'acme' at {fake.base_url}", flush=True)
        connection = {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": DEFAULT_TOKEN},
            "inputs": {"organization": "acme", "base_url": fake.base_url},
        }
        environment = {**os.environ, "SENTRY": json.dumps(connection)}
        command = [sys.executable, "-m", "sentry_extract", "run", str(REPLICATION)]
        print("$ SENTRY='{...}' .venv/bin/sentry-extract run " + str(REPLICATION), flush=True)
        started = time.monotonic()
        completed = subprocess.run(command, env=environment, check=False)
        seconds = time.monotonic() - started
        print(
            f"\nthe fake answered {counted(len(fake.requests), 'request')} in {seconds:.1f}s "
            f"({sum(1 for r in fake.requests if r.status == 429)} answered 429)"
        )
    print(
        '\nLook at the data:\n  .venv/bin/python -c "import pyarrow.dataset as d; '
        "print(d.dataset('demo-output/issues').to_table()"
        ".select(['short_id', 'status', 'count', 'last_seen']).slice(0, 5))\""
    )
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
