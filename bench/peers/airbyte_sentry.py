"""A benchmark peer: Airbyte's `airbyte-source-sentry` (0.6.11), source only.

Run by bench/run.py inside its own virtualenv:

    python airbyte_sentry.py HOSTNAME TOKEN ORGANIZATION PROJECT[,PROJECT...] FOLDER

The source reads one project per configuration and insists on https: the harness serves
the fake over TLS with a throwaway certificate. Airbyte's CDK sends through
`Session.send`, which ignores REQUESTS_CA_BUNDLE, so the CA bundle that requests loads
at import is pointed at that certificate's CA (this process talks to the fake only). The
source runs in this process (so its CPU and memory are measured) and writes its records
to stdout as Airbyte messages; they are counted, not kept. Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path


class Counter(io.TextIOBase):
    """Counts the events RECORD messages the source prints."""

    def __init__(self) -> None:
        self.records = 0
        self.pending = ""
        self.error = ""  # the last error the source reported

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.startswith('{"type":"RECORD"') and '"stream":"events"' in line[:200]:
                self.records += 1
            elif line.startswith('{"type":"TRACE"') and '"ERROR"' in line:
                error = json.loads(line).get("trace", {}).get("error", {})
                self.error = str(error.get("internal_message") or error.get("message"))
        return len(text)


def main() -> int:
    hostname, token, organization, projects, folder = sys.argv[1:6]
    import certifi

    authority = os.environ["BENCH_CA_BUNDLE"]
    certifi.where = lambda: authority  # before requests is imported (it preloads the CAs)
    from airbyte_cdk.entrypoint import launch
    from source_sentry.run import _get_source

    catalog = {
        "streams": [
            {
                "stream": {
                    "name": "events",
                    "json_schema": {"type": "object"},
                    "supported_sync_modes": ["full_refresh"],
                },
                "sync_mode": "full_refresh",
                "destination_sync_mode": "overwrite",
            }
        ]
    }
    catalog_path = Path(folder) / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    counter = Counter()
    real_stdout = sys.__stdout__
    sys.__stdout__ = counter  # type: ignore[misc]  # the CDK's print buffer writes there
    for project in projects.split(","):
        config_path = Path(folder) / f"config-{project}.json"
        config_path.write_text(
            json.dumps(
                {
                    "auth_token": token,
                    "hostname": hostname,
                    "organization": organization,
                    "project": project,
                }
            )
        )
        arguments = ["read", "--config", str(config_path), "--catalog", str(catalog_path)]
        try:
            with contextlib.redirect_stdout(counter):
                launch(_get_source(arguments), arguments)
        finally:
            if counter.error:  # the harness shows stderr's last line as the reason
                print(counter.error.replace("\n", " ")[:300], file=sys.stderr, flush=True)
    sys.__stdout__ = real_stdout  # type: ignore[misc]
    print(json.dumps({"rows": {"events": counter.records}}), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
