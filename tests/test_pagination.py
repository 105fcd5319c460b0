"""The Link-header stop rule, including random and malformed headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry_extract.errors import PaginationError
from sentry_extract.source.pagination import next_cursor


def link(next_results: str, cursor: str = "1700000000000:100:0") -> str:
    return (
        f'<https://other.host/api/0/x/?cursor=0:0:1>; rel="previous"; results="false"; '
        f'cursor="0:0:1", <https://other.host/api/0/x/?cursor={cursor}>; rel="next"; '
        f'results="{next_results}"; cursor="{cursor}"'
    )


def response(header: str | bytes | None) -> str | None:
    """The Link header as the client reads it (bytes as UTF-8, as httpx reads them)."""
    return header.decode("utf-8") if isinstance(header, bytes) else header


def test_results_true_gives_the_cursor() -> None:
    assert next_cursor(response(link("true"))) == "1700000000000:100:0"


def test_results_false_is_the_last_page_even_with_a_next_entry() -> None:
    assert next_cursor(response(link("false"))) is None


def test_no_link_header_is_the_only_page() -> None:
    assert next_cursor(response(None)) is None


def test_a_next_page_without_cursor_is_an_error_not_an_end() -> None:
    with pytest.raises(PaginationError):
        next_cursor(response('<https://x/>; rel="next"; results="true"'))


@given(st.text(max_size=300))
def test_any_header_gives_a_cursor_none_or_a_pagination_error(header: str) -> None:
    try:
        cursor = next_cursor(response(header.encode("utf-8")))
    except PaginationError:
        return
    assert cursor is None or (isinstance(cursor, str) and cursor)


@given(st.from_regex(r"[0-9]{1,13}:[0-9]{1,6}:[01]", fullmatch=True))
def test_cursors_round_trip(cursor: str) -> None:
    assert next_cursor(response(link("true", cursor))) == cursor
