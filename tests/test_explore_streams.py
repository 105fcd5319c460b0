"""Spans, transactions and logs through Explore, against the fake Sentry over HTTP: keys,
the requests Sentry accepts (20 fields, the sort a field, 100 a page, the transactions'
query), the 10,000-row cap and sampling at small sizes, incremental second runs, both
targets, a field list of the replication's, and replay from cassettes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentry_extract.config.replication import load_replication
from sentry_extract.errors import ConfigError
from sentry_extract.source.explore_streams import EXPLORE_STREAMS, SPAN_FIELDS
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.fake_traces import logs_of, spans_of
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Workspace, invoke, keys, named, pg_rows, sentry_connection, served

EXPLORE = [spec.name for spec in EXPLORE_STREAMS]


def expected_spans(fake: FakeSentry) -> set[tuple[str, str]]:
    """(trace, id) of every span the fake holds for the events a run can read."""
    organization = fake.organization
    events = organization.visible_events(fake.settings.retention)
    return {(span["trace"], span["id"]) for e in events for span in spans_of(e, organization)}


def expected_logs(fake: FakeSentry) -> set[str]:
    organization = fake.organization
    events = organization.visible_events(fake.settings.retention)
    return {log["id"] for event in events for log in logs_of(event, organization)}


def test_discover_lists_them_named_only_with_their_keys_and_scope(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    result = invoke(cli, "conns", "discover", "SENTRY", "--columns", "-o", "json")
    assert result.exit_code == 0
    listed = {entry["endpoint"]: entry for entry in json.loads(result.stdout)}
    assert listed["spans"]["primary_key"] == ["trace", "id"]
    assert listed["transactions"]["primary_key"] == ["trace", "id"]
    assert listed["logs"]["primary_key"] == ["id"]
    for name in EXPLORE:
        assert listed[name]["scope"] == "event:read"  # OrganizationEventPermission
        assert listed[name]["named_only"] is True
        assert listed[name]["mode"] == "incremental"
        assert len(listed[name]["columns"]) <= 20


def test_every_span_transaction_and_log_once_then_only_new_ones(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication(streams=named(*EXPLORE))
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    summary = workspace.run(path, started=first)
    assert {r.status for r in summary.results} == {"ok"}, [r.problems for r in summary.results]
    requests = fake.requests_to("/events/")
    refused = [r for r in requests if r.status != 200]  # a range wholly past the retention
    assert {r.status for r in refused} <= {400} and len(refused) <= 3
    for request in refused:
        assert datetime.fromisoformat(str(request.param("end"))) < first - timedelta(days=89)
    for request in requests:
        assert request.param("per_page") == "100" and request.param("sort") == "timestamp"
        assert request.param("start") and request.param("end")
    asked = {(r.param("dataset"), r.param("query")) for r in requests}
    assert asked == {("spans", None), ("spans", "is_transaction:true"), ("logs", None)}

    spans = workspace.table("spans")
    stored = set(keys(spans, "trace", "id"))
    assert len(stored) == spans.num_rows and stored == expected_spans(fake)
    assert spans.schema.field("span_duration").type == "double"
    assert spans.schema.field("is_transaction").type == "bool"
    transactions = workspace.table("transactions")
    roots = {
        key
        for key, root in zip(
            keys(spans, "trace", "id"), spans.column("is_transaction").to_pylist(), strict=True
        )
        if root
    }
    assert set(keys(transactions, "trace", "id")) == roots and transactions.num_rows == len(roots)
    logs = workspace.table("logs")
    assert sorted(logs.column("id").to_pylist()) == sorted(expected_logs(fake))
    assert set(logs.column("severity").to_pylist()) == {"info", "error"}

    fake.organization.add_events(7)
    fake.organization.add_events(3, age=timedelta(minutes=30))  # late, inside the lookback
    fake.reset_log()
    workspace.run(path, started=first + timedelta(hours=1))
    again = fake.requests_to("/events/")
    window = timedelta(hours=3)
    for request in again:
        start = datetime.fromisoformat(str(request.param("start")))
        assert start >= first - window  # from the watermark less the lookback, not day one
    spans = workspace.table("spans")
    assert set(keys(spans, "trace", "id")) == expected_spans(fake)
    assert len(set(keys(spans, "trace", "id"))) == spans.num_rows
    assert workspace.table("logs").num_rows == len(expected_logs(fake))
    assert workspace.table("transactions").num_rows == len(expected_spans(fake)) // 3


@pytest.mark.parametrize(
    "settings",
    [
        ServerSettings(explore_max_rows=300, explore_cap_refuses=True),
        ServerSettings(explore_sampled_above=150),
    ],
    ids=["cap-at-300-then-400", "sampled-above-150"],
)
def test_spans_are_exact_past_the_row_cap_and_sampling(settings: ServerSettings) -> None:
    """1,200 spans in two hours: one query of the first slice reaches a row cap of 300 (the
    page after it a 400) and the crawl goes on from its newest second; or queries of more
    than 150 rows are sampled, and are asked again in halves."""
    organization = FakeOrganization(size=OrganizationSize(projects=2, events=0))
    for index in range(40):
        project = organization.projects[index % 2]["slug"]
        organization.add_events(10, project_slug=project, age=timedelta(minutes=3 * index))
    with served(organization, settings) as (fake, workspace):
        started = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        summary = workspace.run(workspace.replication(streams=named("spans")), started=started)
        assert summary.results[0].status == "ok", summary.results[0].problems
        requests = fake.requests_to("/events/")
        if settings.explore_sampled_above is None:
            assert any(r.status == 400 for r in requests)  # past the cap
        else:
            ends: dict[str | None, set[str | None]] = {}
            for request in requests:
                ends.setdefault(request.param("start"), set()).add(request.param("end"))
            assert max(len(asked) for asked in ends.values()) > 1  # a start asked again, halved
        table = workspace.table("spans")
        stored = set(keys(table, "trace", "id"))
        assert len(stored) == table.num_rows == 1_200
        assert stored == expected_spans(fake)


def test_a_field_list_and_a_query_of_the_replications(
    workspace: Workspace, fake: FakeSentry
) -> None:
    streams = (
        "  transactions:\n"
        "    source_options:\n"
        "      fields: [id, trace, timestamp, user.email, span.duration, http.flavor]\n"
        f"      query: 'project:{fake.organization.projects[0]['slug']}'\n"
    )
    summary = workspace.run(workspace.replication(streams=streams))
    assert summary.results[0].status == "ok", summary.results[0].problems
    request = fake.requests_to("/events/")[0]
    assert [value for key, value in request.params if key == "field"] == [
        "id",
        "trace",
        "timestamp",
        "user.email",
        "span.duration",
        "http.flavor",
    ]
    slug = fake.organization.projects[0]["slug"]
    assert request.param("query") == f"is_transaction:true (project:{slug})"
    table = workspace.table("transactions")
    assert table.column_names[:6] == [
        "id",
        "trace",
        "timestamp",
        "user_email",
        "span_duration",
        "http_flavor",
    ]
    assert table.schema.field("span_duration").type == "double"
    assert set(table.column("http_flavor").to_pylist()) == {None}  # no item has it
    project_id = fake.organization.projects[0]["id"]
    wanted = {
        (span["trace"], span["id"])
        for event in fake.organization.visible_events(fake.settings.retention)
        if event["projectID"] == project_id
        for span in spans_of(event, fake.organization)
        if span["is_transaction"]
    }
    assert set(keys(table, "trace", "id")) == wanted and wanted


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            "[id, timestamp]",
            "missing trace: a field list must hold the key (trace, id) and timestamp (the sort)",
        ),
        (f"[{', '.join((*SPAN_FIELDS, 'user.id'))}]", "21 fields: Sentry answers at most 20"),
        ("[id, trace, timestamp, id]", "id named twice"),
        ("[id, trace, timestamp, 'count()']", "count() is a function"),
        ("id", "expected a list of Sentry field names, got text ('id')"),
    ],
)
def test_a_bad_field_list_is_refused_naming_the_key(
    workspace: Workspace, fields: str, message: str
) -> None:
    streams = f"  spans:\n    source_options:\n      fields: {fields}\n"
    path = workspace.replication(streams=streams)
    with pytest.raises(ConfigError) as refused:
        load_replication(path, workspace.environ, datetime.now(UTC))
    assert "streams.spans.source_options.fields" in str(refused.value)
    assert message in str(refused.value)


def test_only_explore_streams_take_a_field_list(workspace: Workspace) -> None:
    streams = "  issues:\n    source_options:\n      fields: [id]\n"
    with pytest.raises(ConfigError, match="issues takes no field list"):
        load_replication(
            workspace.replication(streams=streams), workspace.environ, datetime.now(UTC)
        )


def test_spans_and_logs_into_postgres_twice(pg_workspace: Workspace, fake: FakeSentry) -> None:
    path = pg_workspace.replication(
        streams=named(*EXPLORE), object_template="traces.{{stream_name}}", target="MY_POSTGRES"
    )
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    pg_workspace.run(path, started=first)
    fake.organization.add_events(4)
    summary = pg_workspace.run(path, started=first + timedelta(hours=1))
    assert {r.status for r in summary.results} == {"ok"}
    url = pg_workspace.environ["MY_POSTGRES"]
    [(spans, distinct)] = pg_rows(
        url, "select count(*), count(distinct (trace, id)) from traces.spans"
    )
    assert spans == distinct == len(expected_spans(fake))
    [(logs,)] = pg_rows(url, "select count(distinct id) from traces.logs")
    assert logs == len(expected_logs(fake))
    [(roots,)] = pg_rows(url, "select count(distinct (trace, id)) from traces.transactions")
    assert roots == spans // 3
    [(kind,)] = pg_rows(
        url,
        "select data_type from information_schema.columns "
        "where table_schema = 'traces' and table_name = 'spans' and column_name = 'timestamp'",
    )
    assert kind.startswith("timestamp")


def test_a_changed_field_list_adds_its_columns_to_the_stored_table(
    pg_workspace: Workspace, fake: FakeSentry
) -> None:
    """A field added to the list between runs becomes a column of the stored table; the
    rows read before it hold none."""
    url = pg_workspace.environ["MY_POSTGRES"]
    target = "  object: traces.{stream_name}\n"

    def spans(fields: str) -> Path:
        return pg_workspace.write(
            "replication.yaml",
            f"source: SENTRY\ntarget: MY_POSTGRES\ndefaults:\n{target}streams:\n"
            f"  spans:\n    source_options:\n      fields: [{fields}]\n",
        )

    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    pg_workspace.run(spans("id, trace, timestamp, span.op"), started=first)
    fake.organization.add_events(2)
    summary = pg_workspace.run(
        spans("id, trace, timestamp, span.op, user.email"), started=first + timedelta(hours=1)
    )
    assert summary.results[0].status == "ok", summary.results[0].problems
    [(total, with_email)] = pg_rows(url, "select count(*), count(user_email) from traces.spans")
    assert total == len(expected_spans(fake))
    assert 6 <= with_email < total  # the new events' spans, and those read again


def test_a_changed_field_list_adds_its_columns_to_parquet(
    workspace: Workspace, fake: FakeSentry
) -> None:
    def spans(fields: str) -> Path:
        streams = f"  spans:\n    source_options:\n      fields: [{fields}]\n"
        return workspace.replication(streams=streams)

    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    workspace.run(spans("id, trace, timestamp, span.op"), started=first)
    fake.organization.add_events(2)
    summary = workspace.run(
        spans("id, trace, timestamp, span.op, user.email"), started=first + timedelta(hours=1)
    )
    assert summary.results[0].status == "ok", summary.results[0].problems
    table = workspace.table("spans")
    assert set(keys(table, "trace", "id")) == expected_spans(fake)
    emails = table.column("user_email").to_pylist()
    assert 6 <= sum(email is not None for email in emails) < table.num_rows


def test_the_fake_asks_event_read_and_serves_spans_and_logs_as_sentry_does(
    organization: FakeOrganization,
) -> None:
    """Explore needs `event:read` (Sentry's OrganizationEventPermission), `org:read` is not
    enough; rows come under `data` with `meta`, at most 100 a page, a sort among the fields."""
    import httpx

    reader, events = "sntryu_test_org_read_only", "sntryu_test_event_read"
    scopes = {reader: frozenset({"org:read"}), events: frozenset({"event:read"})}
    url = "/api/0/organizations/acme/events/"
    params = [("dataset", "logs"), ("field", "id"), ("field", "timestamp"), ("project", "-1")]
    with FakeSentry(organization, ServerSettings(token_scopes=scopes)) as fake:

        def get(token: str, extra: list[tuple[str, str]]) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.get(fake.base_url + url, params=[*params, *extra], headers=headers)

        assert get(reader, []).status_code == 403
        answer = get(events, [("sort", "timestamp"), ("per_page", "100")])
        assert answer.status_code == 200
        body = answer.json()
        assert body["meta"]["dataset"] == "logs" and body["meta"]["fields"]["id"] == "string"
        assert 0 < len(body["data"]) <= 100 and set(body["data"][0]) == {"id", "timestamp"}
        times = [row["timestamp"] for row in body["data"]]
        assert times == sorted(times)
        assert get(events, [("sort", "severity")]).status_code == 400  # not a field asked
        assert get(events, [("per_page", "101")]).status_code == 400
        many = [("field", f"attribute.{index}") for index in range(19)]
        assert get(events, many).status_code == 400  # 21 fields
