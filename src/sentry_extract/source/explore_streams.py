"""Traces and logs through Explore (`GET /organizations/{org}/events/`): spans,
transactions (the spans that begin a transaction) and logs, read like `error_index`.

Each asks for a default field list taken from Sentry's own names for the dataset (its
`search/eap/spans/attributes.py` and `ourlogs/attributes.py`), at most 20 fields; a
replication can ask for others (`source_options.fields`, docs/reference.md). Volume is
the cost: spans can be millions a day, 100 rows a request (README, "All streams").
"""

from __future__ import annotations

from sentry_extract.model.spec import (
    ColumnType,
    StreamSpec,
    columns_of,
)
from sentry_extract.source.further_streams import explore_stream

T = ColumnType

# Explore's span fields, typed: the defaults first, then what a field list may add.
SPAN_COLUMNS = columns_of(
    **{
        "id": T.TEXT,  # the span's id: unique within its trace
        "trace": T.TEXT,
        "parent_span": T.TEXT,
        "transaction": T.TEXT,
        "transaction.span_id": T.TEXT,
        "is_transaction": T.BOOLEAN,
        "span.op": T.TEXT,
        "span.description": T.TEXT,
        "span.category": T.TEXT,
        "span.status": T.TEXT,
        "span.status_code": T.TEXT,
        "span.duration": T.FLOAT,  # milliseconds
        "span.self_time": T.FLOAT,  # milliseconds
        "timestamp": T.TIMESTAMP,
        "project.id": T.TEXT,
        "project": T.TEXT,
        "environment": T.TEXT,
        "release": T.TEXT,
        "platform": T.TEXT,
        "sdk.name": T.TEXT,
    }
)
MORE_SPAN_COLUMNS = columns_of(
    **{
        "transaction.op": T.TEXT,
        "transaction.method": T.TEXT,
        "trace.status": T.TEXT,
        "span.action": T.TEXT,
        "span.domain": T.TEXT,
        "span.group": T.TEXT,
        "precise.start_ts": T.FLOAT,
        "precise.finish_ts": T.FLOAT,
        "profile.id": T.TEXT,
        "replay.id": T.TEXT,
        "user.id": T.TEXT,
        "user.email": T.TEXT,
        "user.username": T.TEXT,
        "user.geo.country_code": T.TEXT,
        "browser.name": T.TEXT,
        "sdk.version": T.TEXT,
        "cache.hit": T.BOOLEAN,
        "http.response_content_length": T.INTEGER,
        "sampling_rate": T.FLOAT,
    }
)
SPAN_FIELDS = tuple(column.source_name for column in SPAN_COLUMNS)

TRANSACTION_FIELDS = (
    "id",
    "trace",
    "transaction",
    "transaction.op",
    "transaction.method",
    "span.op",
    "span.description",
    "span.status",
    "trace.status",
    "span.duration",
    "span.self_time",
    "timestamp",
    "project.id",
    "project",
    "environment",
    "release",
    "platform",
    "user.id",
    "profile.id",
    "replay.id",
)
_EVERY_SPAN_COLUMN = {column.source_name: column for column in (*SPAN_COLUMNS, *MORE_SPAN_COLUMNS)}
TRANSACTION_COLUMNS = tuple(_EVERY_SPAN_COLUMN[name] for name in TRANSACTION_FIELDS)
MORE_TRANSACTION_COLUMNS = tuple(
    column for name, column in _EVERY_SPAN_COLUMN.items() if name not in TRANSACTION_FIELDS
)

LOG_COLUMNS = columns_of(
    **{
        "id": T.TEXT,  # sentry.item_id: unique
        "trace": T.TEXT,
        "severity": T.TEXT,
        "severity_number": T.INTEGER,
        "message": T.TEXT,
        "message.template": T.TEXT,
        "timestamp": T.TIMESTAMP,
        "timestamp_precise": T.INTEGER,  # nanoseconds since the epoch
        "observed_timestamp": T.TEXT,  # nanoseconds, as Sentry stores them: text
        "project.id": T.TEXT,
        "project": T.TEXT,
        "environment": T.TEXT,
        "release": T.TEXT,
        "trace.parent_span_id": T.TEXT,
        "sdk.name": T.TEXT,
        "sdk.version": T.TEXT,
        "origin": T.TEXT,
        "browser.name": T.TEXT,
    }
)
MORE_LOG_COLUMNS = columns_of(**{"payload_size": T.INTEGER, "browser.version": T.TEXT})
LOG_FIELDS = tuple(column.source_name for column in LOG_COLUMNS)


SPANS = explore_stream(
    "spans",
    "Every span of every trace, organization-wide, 100 a request (can be millions a day)",
    (("dataset", "spans"), ("field", SPAN_FIELDS), ("query", "")),
    ("trace", "id"),  # a span's id is unique within its trace
    SPAN_COLUMNS,
    MORE_SPAN_COLUMNS,
)

TRANSACTIONS = explore_stream(
    "transactions",
    "The spans that begin a transaction (a request, a page load, a job), one row each",
    (("dataset", "spans"), ("field", TRANSACTION_FIELDS), ("query", "is_transaction:true")),
    ("trace", "id"),
    TRANSACTION_COLUMNS,
    MORE_TRANSACTION_COLUMNS,
)

LOGS = explore_stream(
    "logs",
    "Log lines sent to Sentry, organization-wide, 100 a request",
    (("dataset", "logs"), ("field", LOG_FIELDS), ("query", "")),
    ("id",),  # the log's item id
    LOG_COLUMNS,
    MORE_LOG_COLUMNS,
)

EXPLORE_STREAMS: tuple[StreamSpec, ...] = (SPANS, TRANSACTIONS, LOGS)
