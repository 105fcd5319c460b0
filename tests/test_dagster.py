"""The Dagster assets, materialized in-process with `dagster.materialize` against the fake
Sentry: metadata that matches the rows written, subsets that run only their streams, and
a failing stream that fails its asset while the others are recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from sentry_extract.dagster import asset_key_parts, sentry_assets
from sentry_extract.testing.fake_sentry import FakeSentry
from sentry_extract.testing.fake_state import ALL_SCOPES

from .helpers import TOKEN, Workspace, sentry_connection

STREAMS = "  teams:\n  projects:\n  issues:\n  events:\n"


def materialized(result: dg.ExecuteInProcessResult) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each materialized asset's key, with its metadata as plain values."""
    return {
        tuple(event.asset_key.path): {
            name: value.value for name, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """What the step's `Failure` said."""
    (failure,) = result.get_step_failure_events()
    said = failure.step_failure_data.user_failure_data
    assert said is not None and said.description is not None
    return said.description


def test_one_asset_per_stream_with_rows_that_match_the_parquet_files(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication(STREAMS)
    assets = sentry_assets(path, key_prefix=["acme"], environment=workspace.environ)
    out = ["acme", *asset_key_parts(f"file://{workspace.folder}/out")]
    names = ("teams", "projects", "issues", "events")
    assert {tuple(key.path) for key in assets.keys} == {(*out, name) for name in names}
    assert assets.op.pool == "sentry-extract/SENTRY"  # one run per source connection
    result = dg.materialize([assets])
    assert result.success
    found = materialized(result)
    assert set(found) == {(*out, name) for name in names}
    for name in names:
        recorded = found[(*out, name)]
        assert recorded["status"] == "ok" and recorded["problems"] == ""
        assert recorded["rows"] == workspace.table(name).num_rows > 0
    assert found[(*out, "teams")]["requests"] == len(fake.requests_to("/teams/"))
    assert found[(*out, "issues")]["requests"] == len(fake.requests_to("/issues/"))


def test_into_duckdb_the_keys_are_the_tables(
    workspace: Workspace, fake: FakeSentry, tmp_path: Path
) -> None:
    database = tmp_path / "warehouse.duckdb"
    workspace.environ["MY_DUCKDB"] = f'{{"type": "duckdb", "instance": "{database}"}}'
    path = workspace.replication(
        STREAMS, object_template="sentry.{{stream_name}}", target="MY_DUCKDB"
    )
    assets = sentry_assets(path, pool="sentry-acme", environment=workspace.environ)
    assert assets.op.pool == "sentry-acme"
    result = dg.materialize([assets])
    assert result.success
    found = materialized(result)
    assert set(found) == {("sentry", name) for name in ("teams", "projects", "issues", "events")}
    with duckdb.connect(str(database), read_only=True) as connection:
        for (schema, table), recorded in found.items():
            query = f"SELECT count(*) FROM {schema}.{table}"
            (count,) = connection.execute(query).fetchone() or (None,)
            assert recorded["rows"] == count > 0, table


def test_a_subset_runs_only_its_streams(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication(STREAMS)
    assets = sentry_assets(path, environment=workspace.environ)
    keys = {key.path[-1]: key for key in assets.keys}
    result = dg.materialize([assets], selection=[keys["teams"], keys["issues"]])
    assert result.success
    assert {key[-1] for key in materialized(result)} == {"teams", "issues"}
    assert fake.requests_to("/teams/") and fake.requests_to("/issues/")
    assert fake.requests_to("/projects/") == [] and fake.requests_to("/events/") == []
    written = {folder.name for folder in (workspace.folder / "out").iterdir()}
    assert written == {"teams", "issues"}


def test_a_failing_stream_fails_its_asset_and_the_others_are_recorded(
    workspace: Workspace, fake: FakeSentry
) -> None:
    fake.settings.token_scopes[TOKEN] = ALL_SCOPES - {"team:read"}
    path = workspace.replication(STREAMS)
    assets = sentry_assets(path, environment=workspace.environ)
    result = dg.materialize([assets], raise_on_error=False)
    assert not result.success
    found = {key[-1]: recorded for key, recorded in materialized(result).items()}
    assert set(found) == {"projects", "issues", "events"}  # not teams
    assert found["issues"]["rows"] == workspace.table("issues").num_rows
    message = failure_message(result)
    assert message.startswith("teams: ") and "team:read" in message
    assert "\n" not in message
    (failure,) = result.get_step_failure_events()
    said = failure.step_failure_data.user_failure_data
    assert said is not None and said.metadata["teams"].value == "failed"


def test_an_error_before_any_stream_fails_the_step_with_its_message(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication(STREAMS)
    assets = sentry_assets(path, environment=workspace.environ)
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, "sntryu_test_revoked")
    result = dg.materialize([assets], raise_on_error=False)
    assert not result.success and materialized(result) == {}
    host = fake.base_url.removeprefix("http://")
    assert failure_message(result) == f"the token was rejected by {host} (401)"


@pytest.mark.parametrize(
    ("object_name", "parts"),
    [
        ("sentry.issues", ["sentry", "issues"]),
        ("file://./out/issues", ["out", "issues"]),
        ("s3://my-bucket/sentry/acme/events", ["my-bucket", "sentry", "acme", "events"]),
        ("sentry/events/year={part_year}/{part_month}", ["sentry", "events"]),
        ("file:///srv/data v2/issues", ["srv", "data_v2", "issues"]),
    ],
)
def test_asset_keys_from_target_objects(object_name: str, parts: list[str]) -> None:
    assert asset_key_parts(object_name) == parts
