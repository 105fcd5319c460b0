"""Cut Sentry's OpenAPI description down to the operations the fake serves.

    python tests/contract/cut.py /path/to/openapi-derefed.json

writes `sentry-openapi-endpoints.json` next to this script: the `get` operations of the
seven streams' endpoints, of the issue details, of the twelve further endpoints and of
the repositories and their commits, and
`components.securitySchemes`; nothing else changed (see README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ORG = "/api/0/organizations/{organization_id_or_slug}/"
PROJECT = "/api/0/projects/{organization_id_or_slug}/{project_id_or_slug}/"
PATHS = (
    ORG,
    ORG + "projects/",
    ORG + "teams/",
    ORG + "members/",
    ORG + "releases/",
    ORG + "issues/",
    PROJECT + "events/",
    ORG + "issues/{issue_id}/",
    ORG + "stats_v2/",
    ORG + "stats-summary/",
    ORG + "sessions/",
    ORG + "environments/",
    ORG + "releases/{version}/deploys/",
    ORG + "releases/{version}/commits/",
    ORG + "monitors/",
    ORG + "monitors/{monitor_id_or_slug}/checkins/",
    ORG + "replays/",
    PROJECT + "user-feedback/",
    ORG + "issues/{issue_id}/tags/{key}/values/",
    ORG + "events/",
    ORG + "repos/",
    ORG + "repos/{repo_id}/commits/",
)
OUTPUT = Path(__file__).parent / "sentry-openapi-endpoints.json"


def cut(description: dict[str, Any], paths: tuple[str, ...] = PATHS) -> dict[str, Any]:
    kept = {key: value for key, value in description.items() if key not in ("paths", "components")}
    kept["paths"] = {
        path: {"get": description["paths"][path]["get"]}
        for path in paths
        if "get" in description["paths"].get(path, {})
    }
    kept["components"] = {"securitySchemes": description["components"]["securitySchemes"]}
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python {argv[0]} OPENAPI_DEREFED_JSON", file=sys.stderr)
        return 2
    description = json.loads(Path(argv[1]).read_text())
    OUTPUT.write_text(json.dumps(cut(description), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
