"""The Link-header stop rule.

Sentry always sends `rel="previous"` and `rel="next"` entries, each with
`results="true|false"` and `cursor="…"`. A `next` entry is present even on the last
page, and short or empty pages are not the end: only `results="false"` is. A
response without a Link header (or without a `next` entry) is the only page.
"""

from __future__ import annotations

import httpx

from sentry_extract.errors import PaginationError


def next_cursor(response: httpx.Response) -> str | None:
    """The cursor of the next page, or None when this is the last page."""
    if "link" not in response.headers:
        return None
    try:
        following = response.links.get("next")
    except (ValueError, IndexError):
        following = None
    if not following:
        return None
    if following.get("results", "").strip().lower() == "false":
        return None
    cursor = following.get("cursor", "").strip()
    if not cursor:
        raise PaginationError("the server announced a next page without a cursor")
    return cursor
