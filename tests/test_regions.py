"""Regions: an organization whose details name another host (`links.regionUrl`, an EU
organization reached through sentry.io) is read there, and the log says so once. Two fake
Sentry servers on loopback: the front one answers the organization's details only (404
for the rest, as for an organization of another region), the other is its region."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest

from sentry_extract.config.connections import (
    DEFAULT_BASE_URL,
    ConnectionEntry,
    SentryConnection,
    resolve_connection,
)
from sentry_extract.errors import ConfigError
from sentry_extract.pipeline.connect import region_to_follow
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Workspace, sentry_connection


def two_regions(organization: FakeOrganization) -> tuple[FakeSentry, FakeSentry]:
    region = FakeSentry(organization, ServerSettings())
    front = FakeSentry(organization, ServerSettings(region_url=region.base_url))
    return front, region


def test_a_run_follows_the_region_the_organization_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    organization = FakeOrganization(size=OrganizationSize(projects=2, issues=8, events=60))
    front, region = two_regions(organization)
    with front, region, tempfile.TemporaryDirectory() as folder:
        connection = sentry_connection(front.base_url, follow_region="true")
        workspace = Workspace(
            Path(folder), {"SENTRY_EXTRACT_HOME": f"{folder}/home", "SENTRY": connection}, []
        )
        path = workspace.replication(streams="  '*':\n  repository_commits:\n")
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(path)
        assert {r.status for r in summary.results} == {"ok"}, [r.problems for r in summary.results]
        assert [r.path for r in front.requests] == ["/api/0/organizations/acme/"]
        assert all(r.status == 200 for r in region.requests)
        assert workspace.table("issues").num_rows > 0
        assert workspace.table("repository_commits").num_rows > 0
        said = [m for m in caplog.messages if "links.regionUrl" in m]
        assert said == [
            f"organization 'acme' lives at {region.base_url} (links.regionUrl): its requests "
            f"go there, not to {front.base_url}"
        ]


def test_a_base_url_of_ones_own_is_not_left_unless_asked() -> None:
    organization = FakeOrganization(size=OrganizationSize(projects=2, issues=8, events=60))
    front, region = two_regions(organization)
    with front, region, tempfile.TemporaryDirectory() as folder:
        environ = {
            "SENTRY_EXTRACT_HOME": f"{folder}/home",
            "SENTRY": sentry_connection(front.base_url),
        }
        workspace = Workspace(Path(folder), environ, [])
        summary = workspace.run(workspace.replication(streams="  projects:\n"))
        assert [r.status for r in summary.results] == ["failed"]
        assert region.requests == []
        assert any(r.path.endswith("/projects/") and r.status == 404 for r in front.requests)


def sentry(**inputs: object) -> SentryConnection:
    values = {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": "sntryu_test_region"},
        "inputs": {"organization": "acme", **inputs},
    }
    connection = resolve_connection(ConnectionEntry("SENTRY", values, "test"))
    assert isinstance(connection, SentryConnection)
    return connection


def details(region: object) -> dict[str, object]:
    return {"slug": "acme", "links": {"regionUrl": region}}


def test_which_region_is_followed() -> None:
    eu = "https://de.sentry.io"
    assert sentry().base_url == DEFAULT_BASE_URL
    assert region_to_follow(sentry(), details(eu)) == eu
    assert region_to_follow(sentry(), details(eu + "/")) == eu
    assert region_to_follow(sentry(), details(DEFAULT_BASE_URL)) is None
    assert region_to_follow(sentry(), None) is None  # a token that may not read it
    assert region_to_follow(sentry(), details(None)) is None  # an older server
    assert region_to_follow(sentry(), details("not a url")) is None
    assert region_to_follow(sentry(follow_region=False), details(eu)) is None
    hosted = sentry(base_url="https://sentry.example.com")
    assert region_to_follow(hosted, details("http://web:9000")) is None  # its own, internal
    assert (
        region_to_follow(sentry(base_url="http://127.0.0.1:8000", follow_region=True), details(eu))
        == eu
    )


def test_follow_region_must_be_true_or_false() -> None:
    with pytest.raises(ConfigError, match=r"inputs\.follow_region: 'maybe' is not true or false"):
        sentry(follow_region="maybe")
