"""A benchmark peer: dlt's generic `rest_api` source, set up for the seven Sentry endpoints.

Run by bench/run.py inside its own virtualenv (dlt[parquet,postgres]):

    python dlt_sentry.py BASE_URL TOKEN ORGANIZATION STREAMS DESTINATION TARGET START END

DESTINATION is `parquet` (TARGET: a folder) or `postgres` (TARGET: a URL). STREAMS is a
comma-separated subset of the seven. It prints one JSON line: rows loaded per table.

Sentry pages by the Link header: the `next` entry is there even on the last page, and
only `results="false"` ends a list; its URL must not be followed as is. No built-in dlt
paginator does that, so a small one below sends the `next` cursor with the original
request, the way the API notes say.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import dlt
from dlt.sources.helpers.rest_client.paginators import BasePaginator
from dlt.sources.rest_api import rest_api_source


class SentryLinkPaginator(BasePaginator):
    """Follow `rel="next"`'s cursor until it says `results="false"`."""

    def __init__(self) -> None:
        super().__init__()
        self.cursor: str | None = None

    def update_state(self, response: Any, data: Any = None) -> None:
        following = response.links.get("next", {})
        if following.get("results") == "true" and following.get("cursor"):
            self.cursor = following["cursor"]
            self._has_next_page = True
        else:
            self._has_next_page = False

    def update_request(self, request: Any) -> None:
        request.params = {**(request.params or {}), "cursor": self.cursor}


def resources(organization: str, start: str, end: str) -> list[dict[str, Any]]:
    window = {"start": start, "end": end}
    return [
        {
            "name": "organizations",
            "endpoint": {
                "path": f"organizations/{organization}/",
                "paginator": "single_page",
                "data_selector": "$",
            },
        },
        {
            "name": "projects",
            "endpoint": {
                "path": f"organizations/{organization}/projects/",
                "params": {"per_page": 100},
            },
        },
        {
            "name": "teams",
            "endpoint": {
                "path": f"organizations/{organization}/teams/",
                "params": {"per_page": 100},
            },
        },
        {
            "name": "members",
            "endpoint": {
                "path": f"organizations/{organization}/members/",
                "params": {"per_page": 100},
            },
        },
        {
            "name": "releases",
            "endpoint": {
                "path": f"organizations/{organization}/releases/",
                "params": {"per_page": 100, "status": "", "project": "-1"},
            },
        },
        {
            "name": "issues",
            "endpoint": {
                "path": f"organizations/{organization}/issues/",
                "params": {"query": "", "project": "-1", "sort": "date", "limit": 100, **window},
            },
        },
        {
            "name": "events",
            "endpoint": {
                "path": f"projects/{organization}/{{resources.projects.slug}}/events/",
                "params": {"full": "true", "per_page": 100, **window},
            },
            "include_from_parent": ["id"],
        },
    ]


def main() -> int:
    base_url, token, organization, streams, destination, target, start, end = sys.argv[1:9]
    wanted = set(streams.split(","))
    chosen = [
        r
        for r in resources(organization, start, end)
        if r["name"] in wanted or (r["name"] == "projects" and "events" in wanted)
    ]
    source = rest_api_source(
        {
            "client": {
                "base_url": f"{base_url}/api/0/",
                "auth": {"type": "bearer", "token": token},
                "paginator": SentryLinkPaginator(),
            },
            "resource_defaults": {"write_disposition": "replace"},
            "resources": chosen,
        }
    )
    if destination == "parquet":
        pipeline = dlt.pipeline(
            "sentry_bench",
            destination=dlt.destinations.filesystem(target),
            dataset_name="sentry",
            pipelines_dir=f"{target}/.dlt",
        )
        info = pipeline.run(source, loader_file_format="parquet")
    else:
        pipeline = dlt.pipeline(
            "sentry_bench",
            destination=dlt.destinations.postgres(target),
            dataset_name="sentry_dlt",
            pipelines_dir="/tmp/.dlt-bench",
        )
        info = pipeline.run(source)
    counts = pipeline.last_trace.last_normalize_info.row_counts
    print(
        json.dumps(
            {
                "rows": {k: v for k, v in counts.items() if not k.startswith("_dlt")},
                "loads": len(info.loads_ids),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
