"""Spans and logs for the fake's Explore index (`dataset=spans`, `dataset=logs`), made
from its error events so that they follow the same clock: each event stands for one trace
of three spans (a transaction and two children) and two log lines.

As Sentry's EAP datasets do: fields take Sentry's public names (`id`, `trace`, `span.op`,
`is_transaction`...); a field Sentry knows nothing of is an attribute no item has (null,
not an error); `query` is a list of `key:value` terms that must all hold (`!key:value`
negates one, `"..."` quotes a value), an unknown key matching nothing.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from datetime import datetime
from typing import Any

from sentry_extract.testing.rows import Row

SPAN_TYPES = {  # name -> the type `meta.fields` reports
    "id": "string",
    "trace": "string",
    "parent_span": "string",
    "transaction": "string",
    "transaction.span_id": "string",
    "transaction.op": "string",
    "transaction.method": "string",
    "is_transaction": "boolean",
    "span.op": "string",
    "span.description": "string",
    "span.category": "string",
    "span.status": "string",
    "span.status_code": "string",
    "span.duration": "duration",
    "span.self_time": "duration",
    "trace.status": "string",
    "timestamp": "date",
    "project.id": "integer",
    "project": "string",
    "environment": "string",
    "release": "string",
    "platform": "string",
    "sdk.name": "string",
    "user.id": "string",
    "user.email": "string",
    "profile.id": "string",
    "replay.id": "string",
}
LOG_TYPES = {
    "id": "string",
    "trace": "string",
    "severity": "string",
    "severity_number": "integer",
    "message": "string",
    "message.template": "string",
    "timestamp": "date",
    "timestamp_precise": "number",
    "observed_timestamp": "number",
    "project.id": "integer",
    "project": "string",
    "environment": "string",
    "release": "string",
    "trace.parent_span_id": "string",
    "sdk.name": "string",
    "sdk.version": "string",
    "origin": "string",
    "browser.name": "string",
}
FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\-:@\[\]]+$")  # an attribute's name


def _moment(event: Row) -> datetime:
    return datetime.fromisoformat(event["dateCreated"].replace("Z", "+00:00"))


def _shared(event: Row, organization: Any) -> Row:
    project = next(p for p in organization.projects if p["id"] == event["projectID"])
    release = event.get("release")
    return {
        "trace": event["eventID"][::-1],
        "timestamp": _moment(event).isoformat(timespec="seconds"),
        "project.id": int(event["projectID"]),
        "project": project["slug"],
        "environment": "production",
        "release": release.get("version") if isinstance(release, dict) else release,
        "platform": event["platform"],
        "sdk.name": f"sentry.{event['platform']}",
    }


def spans_of(event: Row, organization: Any) -> list[Row]:
    """A transaction span and two children, all at the event's second."""
    shared = _shared(event, organization)
    number = int(event["eventID"][:6], 16)
    root = event["eventID"][:16]
    name = f"GET /items/{number % 40}"
    user = event.get("user") or {}
    transaction = {
        **shared,
        "id": root,
        "parent_span": None,
        "transaction": name,
        "transaction.span_id": root,
        "transaction.op": "http.server",
        "transaction.method": "GET",
        "is_transaction": True,
        "span.op": "http.server",
        "span.description": name,
        "span.category": "http",
        "span.status": "ok" if number % 7 else "internal_error",
        "span.status_code": "200" if number % 7 else "500",
        "span.duration": float(40 + number % 400),
        "span.self_time": float(10 + number % 30),
        "trace.status": "ok" if number % 7 else "internal_error",
        "user.id": user.get("id"),
        "user.email": user.get("email"),
        "profile.id": None,
        "replay.id": None,
    }
    children = [
        {
            **transaction,
            "id": child,
            "parent_span": root,
            "is_transaction": False,
            "span.op": op,
            "span.description": description,
            "span.category": op.split(".")[0],
            "span.duration": float(5 + number % (20 + index)),
            "span.self_time": float(5 + number % (20 + index)),
        }
        for index, (child, op, description) in enumerate(
            (
                (event["eventID"][16:], "db.query", "SELECT * FROM items WHERE id = %s"),
                (event["eventID"][8:24], "cache.get", f"items:{number % 40}"),
            )
        )
    ]
    return [transaction, *children]


def logs_of(event: Row, organization: Any) -> list[Row]:
    """Two log lines of the event's trace: an info, then the error."""
    shared = _shared(event, organization)
    nanoseconds = int(_moment(event).timestamp()) * 1_000_000_000
    rows = []
    for index, (severity, number, template) in enumerate(
        (("info", 9, "handling item {}"), ("error", 17, "failed on item {}"))
    ):
        item = int(event["eventID"][:4], 16)
        rows.append(
            {
                **shared,
                "id": hashlib.md5(f"{event['eventID']}:{index}".encode()).hexdigest(),
                "severity": severity,
                "severity_number": number,
                "message": template.format(item),
                "message.template": template,
                "timestamp_precise": nanoseconds + index,
                "observed_timestamp": nanoseconds + index + 5_000,
                "trace.parent_span_id": event["eventID"][:16],
                "sdk.version": "2.0.0",
                "origin": "auto.logging",
                "browser.name": None,
            }
        )
    return rows


ITEMS = {"spans": (spans_of, SPAN_TYPES), "logs": (logs_of, LOG_TYPES)}


def is_field_name(name: str) -> bool:
    return FIELD_NAME.match(name) is not None


def matches(item: Row, query: str) -> bool:
    """Every `key:value` term of `query` holds for the item."""
    for term in shlex.split(query.replace("(", " ").replace(")", " ")):  # AND only
        negated = term.startswith("!")
        key, _, wanted = term.removeprefix("!").partition(":")
        value = item.get(key)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        held = key in item and value is not None and text == wanted
        if held == negated:
            return False
    return True
