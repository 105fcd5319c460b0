"""`make cassettes`: record the examples' HTTP exchanges against the built-in fake.

For each `examples/parquet-*.yaml` (the reference replications pointed at Parquet), run
it against a small generated organization with `--record`, and keep the cassettes and
the rows per stream in `examples/cassettes/<name>/`. The smoke tests replay them, into
Parquet and into PostgreSQL, and compare the rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as ds

from sentry_extract.testing.fake_sentry import DEFAULT_TOKEN, FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

EXAMPLES = Path("examples")
SIZE = OrganizationSize(projects=3, teams=2, members=5, releases=6, issues=18, events=60, frames=4)
EXPECTED_FILE = "expected-rows.json"


def record(replication: Path) -> dict[str, int]:
    name = replication.stem.removeprefix("parquet-")
    folder = EXAMPLES / "cassettes" / name
    folder.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as scratch,
        FakeSentry(FakeOrganization("my-org", SIZE, seed=42), ServerSettings()) as fake,
    ):
        connection = {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": DEFAULT_TOKEN},
            "inputs": {"organization": "my-org", "base_url": fake.base_url},
        }
        environment = {
            **os.environ,
            "SENTRY": json.dumps(connection),
            "SENTRY_EXTRACT_HOME": str(Path(scratch) / "home"),
        }
        command = [
            sys.executable,
            "-m",
            "sentry_extract",
            "run",
            str(replication.resolve()),
            "--record",
            str(folder.resolve()),
        ]
        subprocess.run(command, cwd=scratch, env=environment, check=True)
        rows = {
            dataset.name: ds.dataset(dataset, format="parquet").count_rows()
            for dataset in sorted(Path(scratch).glob("output/*/*"))
            if dataset.is_dir()
        }
    (folder / EXPECTED_FILE).write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    return rows


def main() -> int:
    for replication in sorted(EXAMPLES.glob("parquet-*.yaml")):
        print(replication.name, record(replication))
    return 0


if __name__ == "__main__":
    sys.exit(main())
