"""The Link-header stop rule.

Sentry always sends `rel="previous"` and `rel="next"` entries, each with
`results="true|false"` and `cursor="…"`. A `next` entry is present even on the last
page, and short or empty pages are not the end: only `results="false"` is. A
response without a Link header (or without a `next` entry) is the only page.
"""

from __future__ import annotations

import re

from sentry_extract.errors import PaginationError

_LINK_SEPARATOR = re.compile(", *<")
_QUOTES = " '\""


def next_cursor(link: str | None) -> str | None:
    """The cursor of the next page, or None when this is the last page (`link`: the
    response's Link header, None when it has none)."""
    if link is None:
        return None
    following = parse_links(link).get("next")
    if not following:
        return None
    if following.get("results", "").strip().lower() == "false":
        return None
    cursor = following.get("cursor", "").strip()
    if not cursor:
        raise PaginationError("the server announced a next page without a cursor")
    return cursor


def parse_links(header: str) -> dict[str, dict[str, str]]:
    """A Link header's entries by `rel` (else by URL), each with its URL and parameters:
    httpx's `Response.links`, for a header read without httpx."""
    links: dict[str, dict[str, str]] = {}
    value = header.strip(_QUOTES)
    if not value:
        return links
    for entry in _LINK_SEPARATOR.split(value):
        url, _, params = entry.partition(";")
        link = {"url": url.strip("<> '\"")}
        for param in params.split(";") if params else ():
            key, equals, text = param.partition("=")
            if not equals or "=" in text:
                break
            link[key.strip(_QUOTES)] = text.strip(_QUOTES)
        links[link.get("rel") or link["url"]] = link
    return links
