"""The sandbox of docs/sandbox.md: `sentry-extract fake`, the fake's control routes over
real HTTP, and the throwaway S3 server, each run as a user runs it."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.testing.fake_sentry import DEFAULT_TOKEN, FakeOptions, FakeSentry
from sentry_extract.testing.local_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY

from .helpers import Workspace, invoke

COMMAND = Path(sys.executable).parent / "sentry-extract"
STARTUP_SECONDS = 60


def started(arguments: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


def first_lines(process: subprocess.Popen[str], count: int) -> list[str]:
    """The first lines the process prints, waiting for them no longer than needed (read
    from the pipe itself: a buffered readline would hide lines from the selector)."""
    assert process.stdout is not None
    received = b""
    deadline = time.monotonic() + STARTUP_SECONDS
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while received.count(b"\n") < count and selector.select(deadline - time.monotonic()):
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, f"it stopped ({process.wait()}): {process.communicate()[1]}"
            received += chunk
    lines = received.decode().splitlines()
    assert len(lines) >= count, f"no answer in {STARTUP_SECONDS}s: {lines}"
    return lines[:count]


def answering(url: str) -> httpx.Response:
    """Poll until the server answers (each try fails fast while it is not listening)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def interrupted(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Ctrl-C, then the exit code and what was left to read."""
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=STARTUP_SECONDS)
    return process.returncode, stdout, stderr


@pytest.fixture
def served_fake() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = started([str(COMMAND), "fake", "--port", "0", "--issues", "12", "--events", "60"])
    try:
        yield process, first_lines(process, 2)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# --- sentry-extract fake ----------------------------------------------------------------


def test_sentry_extract_fake_serves_prints_its_connection_and_stops_on_ctrl_c(
    served_fake: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, (serving, export) = served_fake
    base_url = serving.removeprefix("fake Sentry serving organization 'acme' at ")
    assert base_url.startswith("http://127.0.0.1:")
    connection = yaml.safe_load(export.removeprefix("export SENTRY='").removesuffix("'"))
    assert connection == {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": DEFAULT_TOKEN},
        "inputs": {"organization": "acme", "base_url": base_url},
    }
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    answer = answering(f"{base_url}/_fake/stats")
    assert answer.status_code == 200
    organization = httpx.get(f"{base_url}/api/0/organizations/acme/", headers=headers)
    assert organization.json()["slug"] == "acme"
    assert interrupted(process) == (0, "", "")


def test_sentry_extract_fake_on_a_busy_port_says_so_in_one_line(
    served_fake: tuple[subprocess.Popen[str], list[str]],
) -> None:
    port = served_fake[1][0].rsplit(":", 1)[1]
    finished = subprocess.run(
        [str(COMMAND), "fake", "--port", port],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (
        f"error: cannot serve on 127.0.0.1:{port}: the address is already in use "
        "(choose another --port)\n"
    )


def test_the_fake_command_has_the_modules_flags_and_defaults() -> None:
    command: Any = typer.main.get_command(app)
    parameters = {p.name: p.default for p in command.commands["fake"].params}
    assert parameters == {field.name: field.default for field in fields(FakeOptions)}


def test_the_help_lists_fake(cli: CliRunner) -> None:
    text = invoke(cli, "--help").stdout
    assert "fake" in text and "Serve a fake Sentry to practise on" in text


def test_run_does_not_import_the_fake() -> None:
    code = (
        "import sys, sentry_extract.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('sentry_extract.testing')))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert finished.stdout == "[]\n"


# --- control routes ---------------------------------------------------------------------


def control(fake: FakeSentry, name: str, **params: str) -> httpx.Response:
    return httpx.get(f"{fake.base_url}/_fake/{name}", params=params)


def sentry(fake: FakeSentry, path: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    return httpx.get(
        f"{fake.base_url}/api/0/organizations/acme/{path}", params=params, headers=headers
    )


def listed(fake: FakeSentry, query: str) -> list[str]:
    answer = sentry(fake, "issues/", query=query, project="-1", limit="100")
    return [issue["id"] for issue in answer.json()]


def test_issues_lists_ids_to_pick_newest_first(fake: FakeSentry) -> None:
    issues = control(fake, "issues").json()
    visible = fake.organization.visible_issues(fake.settings.retention)
    assert {issue["id"] for issue in issues} == {issue["id"] for issue in visible}
    assert set(issues[0]) == {"id", "shortId", "status", "lastSeen", "project"}
    seen = [issue["lastSeen"] for issue in issues]
    assert seen == sorted(seen, reverse=True)


def test_resolve_changes_the_status_and_not_last_seen(fake: FakeSentry) -> None:
    issue = next(i for i in control(fake, "issues").json() if i["status"] == "unresolved")
    answer = control(fake, "resolve", issue=issue["id"], status="resolved")
    assert answer.json() == {**issue, "status": "resolved"}
    assert issue["id"] in listed(fake, "is:resolved")
    assert issue["id"] not in listed(fake, "is:unresolved")
    details = sentry(fake, f"issues/{issue['id']}/").json()
    assert (details["status"], details["substatus"]) == ("resolved", None)
    assert details["lastSeen"] == issue["lastSeen"]
    control(fake, "resolve", issue=issue["id"], status="ignored")
    assert issue["id"] in listed(fake, "is:ignored")


def test_delete_removes_the_issue_and_its_events(fake: FakeSentry) -> None:
    issue = control(fake, "issues").json()[0]
    assert control(fake, "delete", issue=issue["id"]).json() == {"deleted": issue["id"]}
    assert issue["id"] not in listed(fake, "")
    assert sentry(fake, f"issues/{issue['id']}/").status_code == 404
    assert all(
        event["groupID"] != issue["id"]
        for events in fake.organization.events.values()
        for event in events
    )


def test_merge_moves_issues_into_one_and_redirects_their_ids(fake: FakeSentry) -> None:
    issues = [i for i in control(fake, "issues").json() if i["project"] == "project-0"]
    first, second, survivor = (issue["id"] for issue in issues[:3])
    count = sum(int(fake.organization.issues[i]["count"]) for i in (first, second, survivor))
    answer = control(fake, "merge", issues=f"{first},{second}", into=survivor).json()
    assert answer["merged"] == [first, second] and answer["into"]["id"] == survivor
    assert not {first, second} & set(listed(fake, ""))
    for merged in (first, second):
        redirected = sentry(fake, f"issues/{merged}/").json()
        assert redirected["id"] == survivor and int(redirected["count"]) == count


def test_new_issue_and_add_events_make_recent_rows(fake: FakeSentry) -> None:
    created = control(fake, "new_issue", project="project-1", events="3").json()
    assert (created["project"], created["status"]) == ("project-1", "unresolved")
    assert control(fake, "issues").json()[0]["id"] == created["id"]
    assert sentry(fake, f"issues/{created['id']}/").json()["count"] == "3"
    assert control(fake, "add_events", count="4", projects="project-2").json() == {"added": 4}


@pytest.mark.parametrize(
    ("name", "params", "detail"),
    [
        ("resolve", {}, "issue is required"),
        ("resolve", {"issue": "1"}, "no issue '1' (GET /_fake/issues lists them)"),
        ("resolve", {"issue": "{zero}", "status": "done"}, "status: 'done' is not one of "),
        ("delete", {"issue": "x"}, "no issue 'x' (GET /_fake/issues lists them)"),
        ("merge", {"issues": "{zero}"}, "into is required"),
        ("merge", {"issues": "{zero}", "into": "{zero}"}, "cannot be merged into itself"),
        ("merge", {"issues": "{one}", "into": "{zero}"}, "Sentry merges issues of one project"),
        ("new_issue", {"project": "nope"}, "no project 'nope'; the projects: project-0, "),
        ("new_issue", {"events": "0"}, "events: '0' is not a number from 1 to 100000"),
        ("add_events", {"count": "many"}, "count: 'many' is not a number from 1 to 100000"),
        ("hold", {"after": "-1"}, "after: '-1' is not a number of requests"),
    ],
)
def test_bad_parameters_answer_400_with_a_detail(
    fake: FakeSentry, name: str, params: dict[str, str], detail: str
) -> None:
    issues = control(fake, "issues").json()
    zero, one = (next(i["id"] for i in issues if i["project"] == f"project-{n}") for n in (0, 1))
    before = fake.organization.version, len(fake.organization.issues)
    answer = control(fake, name, **{k: v.format(zero=zero, one=one) for k, v in params.items()})
    assert answer.status_code == 400
    assert detail in answer.json()["detail"], answer.json()
    assert (fake.organization.version, len(fake.organization.issues)) == before


def test_an_unknown_route_is_a_404(fake: FakeSentry) -> None:
    assert control(fake, "nothing").status_code == 404


def test_an_incremental_run_picks_up_what_the_routes_changed(
    fake: FakeSentry, workspace: Workspace
) -> None:
    workspace.environ["SENTRY"] = workspace.environ["SENTRY"].replace(
        '"rate_limit": 0', '"rate_limit": 0, "reconcile_every": "0"'
    )
    workspace.replication("  issues:\n")
    assert workspace.run().exit_code == 0
    issues = [i for i in control(fake, "issues").json() if i["project"] == "project-0"]
    changed = next(i["id"] for i in issues if i["status"] != "ignored")
    deleted, merged, survivor = [i["id"] for i in issues if i["id"] != changed][:3]
    control(fake, "resolve", issue=changed, status="ignored")
    control(fake, "delete", issue=deleted)
    control(fake, "merge", issues=merged, into=survivor)
    assert workspace.run().exit_code == 0
    rows = {row["id"]: row for row in workspace.table("issues").to_pylist()}
    assert (rows[changed]["status"], rows[changed]["_deleted_at"]) == ("ignored", None)
    assert rows[deleted]["_deleted_at"] is not None and rows[deleted]["merged_into_id"] is None
    assert rows[merged]["_deleted_at"] is not None and rows[merged]["merged_into_id"] == survivor
    assert rows[survivor]["_deleted_at"] is None


# --- local_s3 ---------------------------------------------------------------------------


def test_local_s3_serves_a_bucket_prints_its_connection_and_stops_on_ctrl_c() -> None:
    process = started(
        [
            sys.executable,
            "-m",
            "sentry_extract.testing.local_s3",
            "--port",
            "0",
            "--bucket",
            "sandbox-b1",
        ]
    )
    try:
        serving, export = first_lines(process, 2)
        endpoint = serving.split(" at ")[1].split()[0]
        connection = yaml.safe_load(export.removeprefix("export AWS_S3='").removesuffix("'"))
        assert connection == {
            "type": "s3",
            "bucket": "sandbox-b1",
            "endpoint": endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        }
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        client.put_object(Bucket="sandbox-b1", Key="probe", Body=b"hello")
        assert client.get_object(Bucket="sandbox-b1", Key="probe")["Body"].read() == b"hello"
        assert interrupted(process) == (0, "", "")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_local_s3_without_moto_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['moto.moto_server.werkzeug_app'] = None; "
        "from sentry_extract.testing.local_s3 import main; sys.exit(main(['--port', '0']))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert finished.returncode == 2
    assert finished.stderr == (
        "moto is not installed: run 'make test' or \".venv/bin/pip install 'moto[server]'\" first\n"
    )


def test_local_s3_on_a_busy_port_says_so_in_one_line(
    served_fake: tuple[subprocess.Popen[str], list[str]],
) -> None:
    port = served_fake[1][0].rsplit(":", 1)[1]
    finished = subprocess.run(
        [sys.executable, "-m", "sentry_extract.testing.local_s3", "--port", port],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )
    assert finished.returncode == 2
    assert finished.stderr == (
        f"error: cannot serve on 127.0.0.1:{port}: the address is already in use "
        "(choose another --port)\n"
    )
