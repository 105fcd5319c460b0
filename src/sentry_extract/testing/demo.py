"""`make demo`: the fake Sentry on a free loopback port, the "sync all endpoints"
replication against it into a DuckDB file (./demo-output/acme.duckdb), the summary, and
a SQL query answered from that file.
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
DATABASE = Path("demo-output/acme.duckdb")
QUERY = "SELECT status, count(*) AS issues FROM sentry.issues GROUP BY status ORDER BY status"
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
        DATABASE.parent.mkdir(exist_ok=True)
        DATABASE.unlink(missing_ok=True)  # each demo starts from an empty file
        target = {"type": "duckdb", "instance": str(DATABASE)}
        environment = {
            **os.environ,
            "SENTRY": json.dumps(connection),
            "DEMO_DUCKDB": json.dumps(target),
        }
        command = [sys.executable, "-m", "sentry_extract", "run", str(REPLICATION)]
        print("$ SENTRY='{...}' .venv/bin/sentry-extract run " + str(REPLICATION), flush=True)
        started = time.monotonic()
        completed = subprocess.run(command, env=environment, check=False)
        seconds = time.monotonic() - started
        print(
            f"\nthe fake answered {counted(len(fake.requests), 'request')} in {seconds:.1f}s "
            f"({sum(1 for r in fake.requests if r.status == 429)} answered 429)"
        )
    if completed.returncode == 0:
        show_query()
    return completed.returncode


def show_query() -> None:
    """The issues by status, answered from the DuckDB file, and how to ask more."""
    import duckdb  # a dependency of the tool; imported here so the fake starts fast

    print(f"\nSQL on {DATABASE}: {QUERY}")
    with duckdb.connect(str(DATABASE), read_only=True) as database:
        for status, count in database.execute(QUERY).fetchall():
            print(f"  {status:<12} {count}")
    print(
        '\nAsk more:\n  .venv/bin/python -c "import duckdb; '
        f"print(duckdb.connect('{DATABASE}', read_only=True).sql('SELECT * FROM sentry.events "
        "LIMIT 5'))\""
    )


if __name__ == "__main__":
    sys.exit(main())
