"""Our requests and the fake's answers, checked against Sentry's own API description.

`tests/contract/sentry-openapi-seven-endpoints.json` is the seven endpoints' part of
Sentry's OpenAPI description (see tests/contract/README.md), validated with openapi-core.

Where the description and the real server disagree, the server wins, and the test says so:
- `per_page` on members and events, and `status` on releases, are not in the description;
  the server reads them (without `status=` archived releases vanish), so we send them.
  openapi-core checks only the parameters the description declares.
- issues' `query` is declared with the default `is:unresolved` and no empty value. The
  server reads an empty `query=` as "no filter", the only way to get resolved and ignored
  issues too, so we send it empty; it is checked as sent, then left out of the validation.
- user feedback's `status` and environments' `project` are not in the description. The
  server reads both: without `status=` (empty) reports on resolved or ignored issues
  vanish, without `project=-1` environments of other teams' projects do; both are checked
  as sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from typer.testing import CliRunner

from sentry_extract.model.modes import Mode
from sentry_extract.model.spec import ColumnType, Shape
from sentry_extract.records import RecordTyper, column_name, declared_columns
from sentry_extract.source.catalog import STREAMS, STREAMS_BY_NAME
from sentry_extract.state import StateKey
from sentry_extract.targets.base import StreamRequest
from sentry_extract.targets.parquet import ParquetTarget
from sentry_extract.targets.postgres import PostgresTarget
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import invoke, sentry_connection

DESCRIPTION = Path(__file__).parent / "contract" / "sentry-openapi-seven-endpoints.json"
HOST = "https://us.sentry.io"
UNDECLARED = {"/members/": {"per_page"}, "/events/": {"per_page"}, "/releases/": {"status"}}


@pytest.fixture(scope="module")
def description() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DESCRIPTION.read_text())
    return loaded


@pytest.fixture(scope="module")
def api(description: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(description)


@pytest.fixture
def exchanges(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Every exchange of a full run of all seven streams, as recorded."""
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n  '*':\n"
    )
    assert invoke(cli, "run", "r.yaml", "--record", "cassettes").exit_code == 0
    cassette = yaml.safe_load((tmp_path / "cassettes" / "sentry.yaml").read_text())
    interactions: list[dict[str, Any]] = cassette["interactions"]
    return interactions


def mock_request(uri: str) -> MockRequest:
    parts = urlsplit(uri)
    args = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.path.endswith("/issues/"):
        assert args.pop("query") == "", "issues must be asked with query= (empty)"
    return MockRequest(
        HOST,
        "get",
        parts.path,
        args=args,
        headers={"Authorization": "Bearer sntryu_test_contract"},
    )


def test_every_request_is_valid(api: OpenAPI, exchanges: list[dict[str, Any]]) -> None:
    paths = set()
    for exchange in exchanges:
        uri = exchange["request"]["uri"]
        api.validate_request(mock_request(uri))
        paths.add(urlsplit(uri).path.split("/")[-2])
        query = dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True))
        for part, names in UNDECLARED.items():
            if part in uri:
                assert names <= set(query), f"{uri} must send {names}, undeclared but read"
    assert paths == {"acme", "projects", "teams", "members", "releases", "issues", "events"}


def test_a_wrong_request_is_caught(api: OpenAPI) -> None:
    with pytest.raises(Exception, match="full"):
        api.validate_request(mock_request(f"{HOST}/api/0/projects/a/b/events/?full=maybe"))


def test_every_answer_of_the_fake_is_valid(api: OpenAPI, exchanges: list[dict[str, Any]]) -> None:
    for exchange in exchanges:
        response = exchange["response"]
        body = response["body"]["string"].encode()
        api.validate_response(
            mock_request(exchange["request"]["uri"]),
            MockResponse(
                body, status_code=response["status"]["code"], content_type="application/json"
            ),
        )


ENDPOINT_OF_STREAM = {
    "organizations": "/api/0/organizations/{organization_id_or_slug}/",
    "projects": "/api/0/organizations/{organization_id_or_slug}/projects/",
    "teams": "/api/0/organizations/{organization_id_or_slug}/teams/",
    "members": "/api/0/organizations/{organization_id_or_slug}/members/",
    "releases": "/api/0/organizations/{organization_id_or_slug}/releases/",
    "issues": "/api/0/organizations/{organization_id_or_slug}/issues/",
    "events": "/api/0/projects/{organization_id_or_slug}/{project_id_or_slug}/events/",
}


def example_rows(description: dict[str, Any], stream: str) -> list[dict[str, Any]]:
    content = description["paths"][ENDPOINT_OF_STREAM[stream]]["get"]["responses"]["200"][
        "content"
    ]["application/json"]
    value = next(iter(content["examples"].values()))["value"]
    return value if isinstance(value, list) else [value]


ARROW = {
    ColumnType.TEXT: "string",
    ColumnType.JSON: "string",
    ColumnType.INTEGER: "int64",
    ColumnType.FLOAT: "double",
    ColumnType.BOOLEAN: "bool",
    ColumnType.TIMESTAMP: "timestamp[us, tz=UTC]",
}
POSTGRES = {
    ColumnType.TEXT: "text",
    ColumnType.JSON: "jsonb",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamp with time zone",
}


@pytest.mark.parametrize("stream", list(ENDPOINT_OF_STREAM))
def test_the_descriptions_examples_load_into_both_targets(
    description: dict[str, Any], pg_url: str, tmp_path: Path, stream: str
) -> None:
    spec = STREAMS_BY_NAME[stream]
    rows = example_rows(description, stream)
    assert rows, "the description has an example"
    if stream == "events":
        for row in rows:
            row.setdefault("projectID", "1")
    typer = RecordTyper(spec)
    batch = typer.to_batch(rows)
    declared = declared_columns(spec, "snake")
    key = tuple(column_name(k, "snake") for k in spec.primary_key)
    for target, object_name in (
        (ParquetTarget(), f"file://{tmp_path / stream}"),
        (PostgresTarget(pg_url), f"contract.{stream}"),
    ):
        request = StreamRequest(
            stream,
            object_name,
            Mode.FULL_REFRESH,
            key,
            typer.to_batch([]).schema,
            StateKey("S", "o", stream, object_name),
            datetime(2026, 1, 1, tzinfo=UTC),
        )
        writer = target.open_stream(request)
        writer.write(batch)
        assert writer.commit() == len(rows)
    table = pq.read_table(tmp_path / stream)
    assert table.num_rows == len(rows)
    for name, column_type in declared.items():
        assert str(table.schema.field(name).type) == ARROW[column_type], name
    for source_name, name in (
        (c.source_name, column_name(c.source_name, "snake"))
        for c in spec.columns
        if c.type is ColumnType.TIMESTAMP
    ):
        given = [row.get(source_name) for row in rows]
        stored = table.column(name).to_pylist()
        assert [v is None for v in stored] == [v is None for v in given], name
    with psycopg.connect(pg_url) as connection:
        types = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'contract' AND table_name = %s",
                (stream,),
            ).fetchall()
        )
        count = connection.execute(f'SELECT count(*) FROM contract."{stream}"').fetchone()
    assert count == (len(rows),)
    for name, column_type in declared.items():
        assert types[name] == POSTGRES[column_type], name


EVERY_ENDPOINT = Path(__file__).parent / "contract" / "sentry-openapi-endpoints.json"


def test_every_request_of_every_stream_is_valid(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stream, the repeated parameters (`field`, `groupBy`, `collapse`) as sent, and
    the org-wide count the events stream asks first, against the endpoints' cut."""
    from sentry_extract.source.catalog import STREAM_NAMES

    api = OpenAPI.from_dict(json.loads(EVERY_ENDPOINT.read_text()))
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    named = "".join(f"  {name}:\n" for name in STREAM_NAMES)
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n" + named
    )
    first = invoke(cli, "run", "r.yaml")
    assert first.exit_code == 0, first.stdout
    fake.organization.add_events(3, age=timedelta(seconds=5))
    records = list(fake.requests)
    fake.reset_log()
    assert invoke(cli, "run", "r.yaml", "--streams", "events").exit_code == 0  # counts first
    counted = [r for r in fake.requests if r.path.endswith("/organizations/acme/events/")]
    assert counted and ("field", "count()") in counted[0].params
    operations = set()
    for record in [*records, *fake.requests]:
        query = [(key, value) for key, value in record.params]
        if record.path.endswith("/issues/"):
            assert ("query", "") in query
            query = [(key, value) for key, value in query if key != "query"]
        if record.path.endswith("/user-feedback/"):
            assert ("status", "") in query
        if record.path.endswith("/environments/"):
            assert ("project", "-1") in query
        request = MockRequest(
            HOST,
            "get",
            record.path,
            args=query,  # type: ignore[arg-type]  # pairs: a parameter may repeat
            headers={"Authorization": "Bearer sntryu_test_contract"},
        )
        api.validate_request(request)
        operations.add(record.group)
    assert len(operations) == 22  # one group per stream; the index as rows and as counts
    assert operations >= {"events", "explore", "stats_v2", "checkins", "tag_values"}
    assert operations >= {"repositories", "repository_commits", "issue"}


def row_schema(operation: dict[str, Any], rows_key: str = "data") -> dict[str, Any]:
    """The schema of one row of a list operation's answer (a bare array, or `rows_key`:
    `data`, an issue's `activity`)."""
    schema: dict[str, Any] = operation["responses"]["200"]["content"]["application/json"]["schema"]
    if schema.get("type") == "object" and rows_key in schema.get("properties", {}):
        schema = schema["properties"][rows_key]
    items: dict[str, Any] = schema.get("items", schema)
    return items


def declared_type(schema: dict[str, Any]) -> set[ColumnType]:
    """The column types a property's schema admits."""
    kind, shape = schema.get("type"), schema.get("format")
    if kind == "string" and shape == "date-time":
        return {ColumnType.TIMESTAMP}
    return {
        "string": {ColumnType.TEXT},
        "integer": {ColumnType.INTEGER},
        "number": {ColumnType.INTEGER, ColumnType.FLOAT},
        "boolean": {ColumnType.BOOLEAN},
    }.get(kind or "", {ColumnType.JSON})


STRINGS_OF_INTEGERS = {("issues", "count")}  # a string holding an integer (the API notes)


@pytest.mark.parametrize(
    "stream",
    [spec.name for spec in STREAMS if spec.shape is not Shape.SERIES],
)
def test_declared_columns_follow_the_description(stream: str) -> None:
    """Each column a stream declares has the type of the description's property of that
    name (dates as timestamps, objects and arrays as JSON); the description's free-form
    rows (the Explore index, an issue's activity) are the exceptions that need no check."""
    spec = STREAMS_BY_NAME[stream]
    described = json.loads(EVERY_ENDPOINT.read_text())
    operations = {
        operation["operationId"]: operation
        for path in described["paths"].values()
        for operation in path.values()
    }
    properties = row_schema(operations[spec.operation], spec.rows_key or "data")
    properties = properties.get("properties", {})
    checked = 0
    for column in spec.columns:
        schema = properties.get(column.source_name)
        if schema is None or column.path:
            continue
        admitted = declared_type(schema)
        if schema.get("type") == "string":  # dates without a format (replays, tag values)
            admitted |= {ColumnType.TEXT, ColumnType.TIMESTAMP}
        if (stream, column.source_name) in STRINGS_OF_INTEGERS:
            admitted.add(ColumnType.INTEGER)
        assert column.type in admitted or column.type is ColumnType.JSON, (
            f"{stream}.{column.source_name}: {column.type} vs {schema}"
        )
        checked += 1
    assert checked or spec.takes_fields or stream == "issue_activity"  # free-form rows
