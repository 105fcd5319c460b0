"""A long life in miniature: many runs with Sentry changing in between, faults and cut runs,
ending with exactly Sentry's rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentry_extract.testing.fake_sentry import FakeSentry, FaultRates, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import PATIENT, RETENTION, Clock, Workspace, keys, pg_rows, sentry_connection

RUNS = 16


def stored(
    workspace: Workspace, target: str, stream: str, *columns: str
) -> list[tuple[object, ...]]:
    if target == "MY_POSTGRES":
        url = workspace.environ["MY_POSTGRES"]
        return pg_rows(url, f"SELECT {', '.join(columns)} FROM sentry.{stream}")
    return keys(workspace.table(stream), *columns)


def change(
    organization: FakeOrganization, chance: random.Random, gone: set[tuple[str, str]]
) -> None:
    """What happens in Sentry between two runs."""
    for _ in range(chance.randrange(1, 4)):
        project = f"project-{chance.randrange(3)}"
        age = timedelta(minutes=chance.choice([0, 0, 5, 25]))  # some arrive late
        organization.add_events(chance.randrange(1, 30), project_slug=project, age=age)
    if chance.random() < 0.3:
        organization.add_events(2, project_slug="project-1", new_issue=True)
    issues = organization.visible_issues(RETENTION)
    if chance.random() < 0.5:
        issue = chance.choice(issues)
        organization.set_issue_status(
            issue["id"], chance.choice(["resolved", "ignored", "unresolved"])
        )
    if chance.random() < 0.3 and len(issues) > 10:
        # Deleted: any issue, or the oldest one Sentry keeps (the retention's edge).
        issue = chance.choice([chance.choice(issues), min(issues, key=lambda i: i["lastSeen"])])
        gone.update(
            (event["projectID"], event["eventID"])
            for event in organization.visible_events(RETENTION)
            if event["groupID"] == issue["id"]
        )
        organization.delete_issue(issue["id"])
    issues = organization.visible_issues(RETENTION)
    if chance.random() < 0.3 and len(issues) > 10:  # merged, within a project
        survivor = chance.choice(issues)
        same = [i for i in issues if i["project"]["id"] == survivor["project"]["id"]]
        merged = chance.choice([i for i in same if i["id"] != survivor["id"]] or [survivor])
        if merged is not survivor:
            organization.merge_issues([merged["id"]], survivor["id"])


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_many_runs_with_changes_faults_and_cut_runs_end_exact(
    tmp_path: Path, pg_url: str, target: str
) -> None:
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    organization = FakeOrganization(
        "acme", OrganizationSize(projects=3, issues=30, events=400), seed=21, clock=clock
    )
    chance = random.Random(f"life-{target}")
    faults = FaultRates(server_error=0.04, rate_limited=0.04, reset=0.02, truncated=0.02, seed=8)
    gone: set[tuple[str, str]] = set()
    with FakeSentry(organization, ServerSettings(faults=faults)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url, reconcile_every="0", timeout="2s"),
            "MY_POSTGRES": pg_url,
        }
        workspace = Workspace(tmp_path, environ, [])
        object_template = (
            "sentry.{{stream_name}}"
            if target == "MY_POSTGRES"
            else "file://{folder}/out/{{stream_name}}"
        )
        workspace.replication(
            "  issues:\n  events:\n",
            mode="incremental",
            object_template=object_template,
            target=target,
        )
        for run in range(RUNS):
            cut = run % 4 == 2  # some runs are stopped part way (a deadline, a reboot)
            settings = {"deadline": chance.uniform(0.05, 0.3)} if cut else {}
            summary = workspace.run(started=clock.moment, retry=PATIENT, **settings)
            assert cut or summary.exit_code == 0, [r.problems for r in summary.results]
            change(organization, chance, gone)
            clock.moment += timedelta(hours=1)
        fake.settings.faults = FaultRates()
        final = clock.moment
        assert workspace.run(started=final, retry=PATIENT).exit_code == 0
    events = stored(workspace, target, "events", "project_id", "event_id")
    assert len(events) == len(set(events)), "an event stored twice"
    expected = {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, final)
    }
    # History stays: events that left Sentry's retention during the runs, and events of
    # deleted issues (events have no soft delete), are kept.
    history = {
        (e["projectID"], e["eventID"])
        for e in organization.visible_events(RETENTION + timedelta(hours=RUNS), final)
    }
    assert expected <= set(events) <= history | gone
    issues = stored(workspace, target, "issues", "id", "status", "_deleted_at", "merged_into_id")
    assert len(issues) == len({row[0] for row in issues}), "an issue stored twice"
    live = {row[0]: row[1] for row in issues if row[2] is None}
    merged_into = {row[0]: row[3] for row in issues if row[3] is not None}
    redirects = organization.redirects
    assert merged_into, "the test needs issues merged while stored"
    assert merged_into == {key: redirects[key] for key in merged_into}  # the survivor's id
    assert set(merged_into) == set(redirects) & {row[0] for row in issues}
    visible = {i["id"]: i["status"] for i in organization.visible_issues(RETENTION, final)}
    assert {key: live[key] for key in visible} == visible  # every status as Sentry has it
    older = {i["id"] for i in organization.visible_issues(RETENTION + timedelta(hours=RUNS))}
    assert set(live) <= older  # live rows are Sentry's, or history that left its window
    deleted = {row[0] for row in issues if row[2] is not None}
    assert deleted and not deleted & set(organization.issues)  # only issues Sentry lost
