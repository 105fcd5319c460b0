"""Parquet datasets in a bucket: moto's S3 server on loopback, real pyarrow and boto3.

The same replications as on local folders, pointed at `target: AWS_S3`; a kill -9 and a
rerun; a reader polling the bucket; the lock and its lease; what a wrong key, a missing
bucket and an unreachable endpoint say.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from sentry_extract.config.replication import Overrides
from sentry_extract.errors import LockedError, TargetError
from sentry_extract.targets import dataset
from sentry_extract.targets.s3 import S3Place, S3Storage
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    RETENTION,
    S3_KEY_ID,
    S3_SECRET,
    Bucket,
    Command,
    Workspace,
    assert_complete,
    assert_done_projects_stored,
    assert_events_exact,
    assert_issues_exact,
    change_between_runs,
    command_environment,
    invoke,
    keys,
    kill_at_moments,
    next_second,
    s3_place,
    sentry_connection,
    wait_for,
    wait_for_the_next_second,
    watch_runs_for_duplicates,
)

EXAMPLES = Path(__file__).parent.parent / "examples"
LOCK = ".sentry-extract.lock"


def sync_all_endpoints(folder: Path, object_name: str = "sentry/{stream_name}") -> Path:
    """examples/parquet-sync-all-endpoints.yaml, pointed at the bucket."""
    text = (EXAMPLES / "parquet-sync-all-endpoints.yaml").read_text()
    text = text.replace("target: LOCAL", "target: AWS_S3")
    text = text.replace("object: file://./output/sentry/{stream_name}", f"object: {object_name}")
    assert "AWS_S3" in text and object_name in text
    path = folder / "replication.yaml"
    path.write_text(text)
    return path


def test_moto_answers_conditional_puts_as_s3_does(bucket: Bucket) -> None:
    """The lock relies on If-None-Match (create only) and If-Match (replace a version)."""
    from botocore.exceptions import ClientError

    client = bucket.client()
    created = client.put_object(Bucket=bucket.name, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket.name, Key="k", Body=b"2", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError):
        client.put_object(Bucket=bucket.name, Key="k", Body=b"3", IfMatch='"not-the-etag"')
    client.put_object(Bucket=bucket.name, Key="k", Body=b"4", IfMatch=created["ETag"])
    assert bucket.read("k") == b"4"


# --- exact rows -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["prefix", "s3-url"])
def test_sync_all_endpoints_into_a_bucket_then_incremental_runs_are_exact(
    s3_workspace: Workspace, organization: FakeOrganization, bucket: Bucket, form: str
) -> None:
    object_name = (
        "sentry/{stream_name}" if form == "prefix" else f"s3://{bucket.name}/sentry/{{stream_name}}"
    )
    path = sync_all_endpoints(s3_workspace.folder, object_name)
    first = next_second()
    assert s3_workspace.run(path, started=first).exit_code == 0
    assert_complete(s3_workspace, organization, first)
    assert s3_workspace.table("organizations").column("slug").to_pylist() == ["acme"]

    change_between_runs(organization)
    organization.add_member()
    second = first + timedelta(seconds=5)
    incremental = Overrides(mode="incremental")
    assert s3_workspace.run(path, overrides=incremental, started=second).exit_code == 0
    assert_complete(s3_workspace, organization, second)
    assert_issues_exact(s3_workspace, organization, second)
    # Nothing but data, state and the journal-free dataset: no working file, no lock.
    stored = bucket.objects()
    assert all(key.startswith("sentry/") for key in stored)
    names = {key.rpartition("/")[2] for key in stored}
    assert names - {"_sentry_extract_state.json"} == {
        name for name in names if name.startswith("part-") and name.endswith(".parquet")
    }
    state = json.loads(bucket.read("sentry/events/_sentry_extract_state.json"))
    assert next(iter(state["streams"].values()))["state"]["project_watermarks"]


def test_partitions_compaction_and_a_new_field_work_the_same_in_a_bucket(
    s3_workspace: Workspace, organization: FakeOrganization, bucket: Bucket, small_files: None
) -> None:
    s3_workspace.replication(
        "  issues:\n  events:\n",
        mode="incremental",
        object_template="file://{folder}/out/{{stream_name}}/year={{part_year}}/{{part_month}}",
    )
    first = next_second()
    assert s3_workspace.run(started=first).exit_code == 0
    files = [key for key in bucket.objects("sentry/events/") if key.endswith(".parquet")]
    assert len({key.rpartition("/")[0] for key in files}) > 1
    assert all(key.split("/")[2].startswith("year=") for key in files)
    for event in organization.add_events(30, project_slug="project-0"):
        event["brandNewField"] = "x"
    change_between_runs(organization)
    second = first + timedelta(seconds=5)
    assert s3_workspace.run(started=second).exit_code == 0
    assert_events_exact(s3_workspace, organization, second)
    assert_issues_exact(s3_workspace, organization, second)
    table = bucket.table("sentry/events", partitioning="hive")
    assert {"year", "brand_new_field"} <= set(table.column_names)
    assert not [key for key in bucket.objects() if key.endswith((".pending", ".lock"))]


def test_a_full_refresh_killed_while_swapping_objects_is_finished_by_the_next_run(
    s3_workspace: Workspace,
    organization: FakeOrganization,
    bucket: Bucket,
    small_files: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_workspace.replication(
        "  events:\n",
        mode="full-refresh",
        object_template="file://{folder}/out/{{stream_name}}/{{part_year_month}}",
    )
    assert s3_workspace.run(started=next_second()).exit_code == 0
    organization.add_events(30, project_slug="project-0")
    moves: list[str] = []
    real_move = S3Storage.move

    def crash_after_one(self: S3Storage, source: str, target: str) -> None:
        if moves:
            raise KeyboardInterrupt  # killed in the middle of the swap
        moves.append(target)
        real_move(self, source, target)

    monkeypatch.setattr(S3Storage, "move", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        s3_workspace.run(started=next_second() + timedelta(seconds=2))
    monkeypatch.undo()
    assert f"sentry/events/{dataset.JOURNAL}" in bucket.objects()
    stored = keys(s3_workspace.table("events"), "project_id", "event_id")
    assert len(stored) == len(set(stored))  # old objects went first: never a key twice
    later = next_second() + timedelta(seconds=4)
    assert s3_workspace.run(started=later).exit_code == 0
    assert f"sentry/events/{dataset.JOURNAL}" not in bucket.objects()
    assert not [key for key in bucket.objects() if key.endswith(".pending")]
    assert_events_exact(s3_workspace, organization, later)


def test_a_reader_polling_the_bucket_never_sees_a_key_twice(
    s3_workspace: Workspace, organization: FakeOrganization, bucket: Bucket, small_files: None
) -> None:
    s3_workspace.replication("  events:\n", mode="incremental")
    filesystem = bucket.filesystem()

    def read() -> pa.Table:
        dataset = ds.dataset(
            f"{bucket.name}/sentry/events", format="parquet", filesystem=filesystem
        )
        return dataset.to_table(columns=["project_id", "event_id"])

    reads, duplicates = watch_runs_for_duplicates(s3_workspace, organization, read, runs=3)
    assert len(reads) > 5 and max(reads) > 0
    assert duplicates == []


def test_the_pyarrow_query_of_docs_scaling_reads_the_bucket(
    s3_workspace: Workspace, organization: FakeOrganization, bucket: Bucket
) -> None:
    """The PyArrow example of docs/scaling.md, run as written against the bucket."""
    s3_workspace.replication(
        "  events:\n",
        mode="incremental",
        object_template="file://{folder}/out/{{stream_name}}/year={{part_year}}/month={{part_month}}",
    )
    assert s3_workspace.run(started=next_second()).exit_code == 0
    text = (Path(__file__).parent.parent / "docs" / "scaling.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace("my-bucket", bucket.name)
    example = example.replace(
        'fs.S3FileSystem(region="us-east-1")',
        f"fs.S3FileSystem(region='us-east-1', endpoint_override='{bucket.endpoint}', "
        f"access_key='{S3_KEY_ID}', secret_key='{S3_SECRET}')",
    )
    assert "endpoint_override" in example, "the example's S3FileSystem line changed"
    namespace: dict[str, object] = {}
    exec(compile(example, "docs/scaling.md", "exec"), namespace)
    per_project = namespace["per_project"]
    assert isinstance(per_project, pa.Table)
    expected: dict[str, int] = {}
    for event in organization.visible_events(RETENTION):
        expected[event["projectID"]] = expected.get(event["projectID"], 0) + 1
    got = dict(
        zip(
            *(per_project.column(c).to_pylist() for c in ("project_id", "event_id_count")),
            strict=True,
        )
    )
    assert got == expected


def test_state_show_and_reset_read_the_state_in_the_bucket(
    cli: CliRunner,
    fake: FakeSentry,
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setenv("AWS_S3", bucket.connection())
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: AWS_S3\ndefaults:\n  mode: incremental\n"
        "  object: sentry/{stream_name}\nstreams:\n  issues:\n"
    )
    assert invoke(cli, "run", "r.yaml").exit_code == 0
    shown = invoke(cli, "state", "show", "r.yaml")
    assert shown.exit_code == 0
    assert f"s3://{bucket.name}/sentry/issues/_sentry_extract_state.json" in shown.stdout
    [row] = shown.stdout.splitlines()[1:]
    assert row.split()[:2] == ["issues", "sentry/issues"] and row.split()[2] != "-"
    reset = invoke(cli, "state", "reset", "r.yaml")
    assert reset.stdout.strip() == "issues: state cleared"
    state = json.loads(bucket.read("sentry/issues/_sentry_extract_state.json"))
    assert state["streams"] == {}


# --- kill -9, then a rerun --------------------------------------------------------------


def stored_events(bucket: Bucket) -> list[tuple[str, str]]:
    if not [key for key in bucket.objects("sentry/events/") if key.endswith(".parquet")]:
        return []
    table = bucket.table("sentry/events").select(["project_id", "event_id"])
    return keys(table, "project_id", "event_id")


def assert_state_not_ahead(bucket: Bucket, organization: FakeOrganization) -> None:
    """No key twice, and every project the state calls done has all of its events."""
    stored = stored_events(bucket)
    assert len(stored) == len(set(stored)), "a key stored twice"
    if "sentry/events/_sentry_extract_state.json" not in bucket.objects("sentry/events/"):
        return
    document = json.loads(bucket.read("sentry/events/_sentry_extract_state.json"))
    for entry in document["streams"].values():
        assert_done_projects_stored(stored, entry["state"]["project_watermarks"], organization)


def test_runs_killed_at_random_moments_then_rerun_leave_exactly_sentrys_rows(
    tmp_path: Path, bucket: Bucket
) -> None:
    """The connection as an environment variable map, as a cron job would give it."""
    organization = FakeOrganization("acme", OrganizationSize(projects=5, issues=30, events=500))
    path = sync_all_endpoints(tmp_path)
    chance = random.Random("kill-s3")
    with FakeSentry(organization, ServerSettings(latency=0.01)) as fake:
        connection = sentry_connection(fake.base_url, concurrency=1)
        environment = command_environment(tmp_path, connection, AWS_S3=bucket.connection())
        incremental = Command(tmp_path, environment, ("run", str(path), "--mode", "incremental"))

        def after_each() -> None:
            assert_state_not_ahead(bucket, organization)
            organization.add_events(3, project_slug="project-1")

        moments = [chance.randrange(1, 60) for _ in range(3)]  # a whole run asks about 60
        assert kill_at_moments(incremental, fake, moments, after_each, chance) >= 2
        wait_for_the_next_second()  # the last run reads the events added after the last kill
        finished = incremental.run()
        assert finished.returncode == 0, finished.stdout + finished.stderr
    stored = stored_events(bucket)
    assert len(stored) == len(set(stored))
    assert set(stored) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION)
    }
    issues = bucket.table("sentry/issues").column("id").to_pylist()
    assert sorted(issues) == sorted(i["id"] for i in organization.visible_issues(RETENTION))
    assert not [key for key in bucket.objects() if key.endswith((".lock", ".pending"))]


# --- the lock ---------------------------------------------------------------------------


def test_a_second_run_on_a_dataset_being_written_is_refused(
    s3_workspace: Workspace, bucket: Bucket
) -> None:
    s3_workspace.replication("  teams:\n")
    held = s3_place(bucket).storage(f"{bucket.name}/sentry/teams", LOCK).lock()
    try:
        summary = s3_workspace.run()
    finally:
        held.release()
    assert summary.exit_code == 1
    [problem] = summary.results[0].problems
    assert problem.startswith(
        f"another sentry-extract run is writing s3://{bucket.name}/sentry/teams (pid {os.getpid()}"
    )
    assert s3_workspace.run().exit_code == 0  # released: the next run goes ahead


def test_a_running_lease_is_renewed_every_third_of_its_length(bucket: Bucket) -> None:
    """Each renewal writes the lock object again (a new version, and a new last-modified
    time, by which other runs age it); meanwhile other runs are refused."""
    root = f"{bucket.name}/sentry/events"
    first = s3_place(bucket, lease_seconds=0.3).storage(root, LOCK).lock()
    created = first.etag
    versions = {created}

    def renewed_twice() -> bool:
        versions.add(first.etag)
        return len(versions) >= 3

    try:
        wait_for(renewed_twice, "two renewals of the lease")
        assert first.lost is None
        stored = bucket.client().get_object(Bucket=bucket.name, Key=f"sentry/events/{LOCK}")
        assert stored["ETag"] != created  # the object written again, not only its version told
        assert json.loads(stored["Body"].read())["id"] == first.owner["id"]
        with pytest.raises(LockedError, match="another sentry-extract run is writing"):
            s3_place(bucket).storage(root, LOCK).lock()
    finally:
        first.release()
    assert f"sentry/events/{LOCK}" not in bucket.objects()


def test_an_abandoned_lease_is_taken_over_once_it_has_run_out(bucket: Bucket) -> None:
    """A run on another machine killed with -9: its lease is not renewed any more. Runs
    age a lock by the server's clock; here, by clocks set past its last write."""
    root = f"{bucket.name}/sentry/events"
    abandoned = {"id": "x", "host": "another-machine", "pid": 1, "lease_seconds": 1.5}
    client = bucket.client()
    client.put_object(Bucket=bucket.name, Key=f"sentry/events/{LOCK}", Body=json.dumps(abandoned))
    written = client.head_object(Bucket=bucket.name, Key=f"sentry/events/{LOCK}")["LastModified"]

    def aged(seconds: float) -> S3Place:
        return s3_place(bucket, clock=lambda: written + timedelta(seconds=seconds))

    with pytest.raises(LockedError, match="pid 1 on another-machine"):
        s3_place(bucket).storage(root, LOCK).lock()  # by the server's clock: just written
    with pytest.raises(LockedError, match="pid 1 on another-machine, its lease renewed 2s"):
        aged(2.5).storage(root, LOCK).lock()  # its lease, and a second for clock resolution
    taken = aged(2.6).storage(root, LOCK).lock()
    assert json.loads(bucket.read(f"sentry/events/{LOCK}"))["pid"] == os.getpid()
    taken.release()


def test_a_lock_held_by_a_killed_process_of_this_machine_is_taken_over_at_once(
    bucket: Bucket, tmp_path: Path
) -> None:
    """At once: while its lease (a minute) is fresh, as the lock never waits for one."""
    script = (
        "import sys, time\n"
        "from tests.helpers import Bucket, s3_place\n"
        f"bucket = Bucket({bucket.endpoint!r}, {bucket.name!r})\n"
        f"s3_place(bucket).storage('{bucket.name}/sentry/teams', '{LOCK}').lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError):  # alive: refused
            s3_place(bucket).storage(f"{bucket.name}/sentry/teams", LOCK).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    lock = s3_place(bucket).storage(f"{bucket.name}/sentry/teams", LOCK).lock()
    owner = json.loads(bucket.read(f"sentry/teams/{LOCK}"))
    assert owner["pid"] == os.getpid()
    lock.release()


def test_a_run_whose_lease_was_taken_over_stops_writing(bucket: Bucket) -> None:
    storage = s3_place(bucket, lease_seconds=0.3).storage(f"{bucket.name}/sentry/teams", LOCK)
    lock = storage.lock()
    storage.write_bytes("probe.json", b"{}")
    # Paused past its lease, the run finds another one holding the lock.
    bucket.client().put_object(
        Bucket=bucket.name,
        Key=f"sentry/teams/{LOCK}",
        Body=json.dumps({"id": "other", "host": "elsewhere", "pid": 7}),
    )
    wait_for(lambda: lock.lost is not None, "the next renewal")
    with pytest.raises(TargetError, match="another run took the lock over"):
        storage.write_bytes("probe.json", b"{}")
    lock.release()
    owner = json.loads(bucket.read(f"sentry/teams/{LOCK}"))
    assert owner["id"] == "other"  # the other run's lock stays


# --- connections: set, list, test; what goes wrong ----------------------------------------


def test_conns_set_list_and_test_an_s3_connection(cli: CliRunner, bucket: Bucket) -> None:
    saved = invoke(
        cli,
        "conns",
        "set",
        "AWS_S3",
        "type=s3",
        f"bucket={bucket.name}",
        f"access_key_id={S3_KEY_ID}",
        f"secret_access_key={S3_SECRET}",
        f"endpoint={bucket.endpoint}",
        "region=us-east-1",
    )
    assert saved.exit_code == 0, saved.stderr
    listed = invoke(cli, "conns", "list")
    assert "AWS_S3" in listed.stdout and " s3 " in listed.stdout
    assert S3_SECRET not in listed.stdout
    tested = invoke(cli, "conns", "test", "AWS_S3")
    assert tested.exit_code == 0, tested.stderr
    assert tested.stdout.strip() == (
        f"AWS_S3: ok: wrote, read and deleted a probe object in s3://{bucket.name} "
        f"at {bucket.endpoint}"
    )
    assert bucket.objects() == []  # the probe is gone
    typo = invoke(cli, "conns", "set", "AWS_S3", "type=s3", "bucket=b-1", "secret_acess_key=x")
    assert typo.exit_code == 2
    assert "unknown key 'secret_acess_key' (did you mean 'secret_access_key'?)" in typo.stderr


@pytest.fixture
def enforced_auth(s3_server: str) -> object:
    """The server checks signatures while the test runs; yields a real key id."""
    import boto3
    import httpx

    iam = boto3.client(
        "iam",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
    )
    name = f"user-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    key_id = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    httpx.post(f"{s3_server}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        yield key_id
    finally:
        httpx.post(f"{s3_server}/moto-api/reset-auth", content=b"inf").raise_for_status()


def one_line_error(result: object) -> str:
    stderr = getattr(result, "stderr", "")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return str(lines[0])


@pytest.mark.parametrize("wrong", ["key-id", "secret"])
def test_wrong_credentials_are_named_in_one_line(
    cli: CliRunner,
    fake: FakeSentry,
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    enforced_auth: str,
    wrong: str,
) -> None:
    key_id = "AKIAWRONGKEY00000000" if wrong == "key-id" else enforced_auth
    monkeypatch.setenv("AWS_S3", bucket.connection(access_key_id=key_id))
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: AWS_S3\ndefaults:\n  object: sentry/{stream_name}\n"
        "streams:\n  teams:\n"
    )
    problem = (
        "the access key id was rejected by {endpoint} (403 InvalidAccessKeyId)"
        if wrong == "key-id"
        else "the secret access key was rejected by {endpoint} (403 SignatureDoesNotMatch)"
    ).format(endpoint=bucket.endpoint)
    tested = invoke(cli, "conns", "test", "AWS_S3")
    assert tested.exit_code == 2
    assert one_line_error(tested) == (
        f"error: cannot write a probe object in s3://{bucket.name}: {problem}"
    )
    ran = invoke(cli, "run", "r.yaml")
    assert ran.exit_code == 2
    assert one_line_error(ran) == (
        f"error: connection AWS_S3: cannot list s3://{bucket.name}/sentry/teams: {problem}"
    )
    assert not fake.requests_to("/teams/")  # found before reading Sentry


def test_a_missing_bucket_is_named_in_one_line(
    cli: CliRunner,
    fake: FakeSentry,
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = Bucket(s3_server, "no-such-bucket-here")
    monkeypatch.setenv("AWS_S3", missing.connection())
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: AWS_S3\ndefaults:\n  object: sentry/{stream_name}\n"
        "streams:\n  teams:\n"
    )
    problem = f"no such bucket 'no-such-bucket-here' at {s3_server} (404 NoSuchBucket)"
    tested = invoke(cli, "conns", "test", "AWS_S3")
    assert tested.exit_code == 2
    assert one_line_error(tested) == (
        f"error: cannot write a probe object in s3://no-such-bucket-here: {problem}"
    )
    ran = invoke(cli, "run", "r.yaml")
    assert ran.exit_code == 2
    assert one_line_error(ran) == (
        f"error: connection AWS_S3: cannot list s3://no-such-bucket-here/sentry/teams: {problem}"
    )


def test_an_unreachable_endpoint_is_named_in_one_line_within_seconds(
    cli: CliRunner,
    fake: FakeSentry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    noted_waits: list[float],
) -> None:
    nowhere = Bucket("http://127.0.0.1:9", "some-bucket")
    monkeypatch.setenv("AWS_S3", nowhere.connection())
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: AWS_S3\ndefaults:\n  object: sentry/{stream_name}\n"
        "streams:\n  teams:\n"
    )
    tested = invoke(cli, "conns", "test", "AWS_S3")
    ran = invoke(cli, "run", "r.yaml")
    assert noted_waits and sum(noted_waits) < 10  # a few attempts, seconds apart at most
    assert (tested.exit_code, ran.exit_code) == (2, 2)
    problem = "cannot reach http://127.0.0.1:9 ([Errno 111] Connection refused)"
    assert (
        one_line_error(tested)
        == f"error: cannot write a probe object in s3://some-bucket: {problem}"
    )
    assert one_line_error(ran) == (
        f"error: connection AWS_S3: cannot list s3://some-bucket/sentry/teams: {problem}"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bucket": ""}, "bucket is required (the bucket's name)"),
        ({"bucket": "Not_A_Bucket"}, "bucket: 'Not_A_Bucket' is not a bucket name"),
        ({"secret_access_key": ""}, "access_key_id and secret_access_key go together"),
        ({"endpoint": "ftp://x"}, "endpoint: 'ftp://x' is not a URL like https://s3.example.com"),
        ({"endpoint": "http://x:9000/path"}, "must be scheme://host[:port] only"),
    ],
)
def test_bad_s3_connections_are_refused(
    cli: CliRunner,
    bucket: Bucket,
    monkeypatch: pytest.MonkeyPatch,
    values: dict[str, str],
    message: str,
) -> None:
    monkeypatch.setenv("AWS_S3", bucket.connection(**values))
    tested = invoke(cli, "conns", "test", "AWS_S3")
    assert tested.exit_code == 2
    assert message in one_line_error(tested)
    assert S3_SECRET not in tested.stderr


@pytest.mark.parametrize(
    ("object_name", "message"),
    [
        ("file://out/{stream_name}", "is not an object of the s3 connection AWS_S3"),
        ("gs://b/{stream_name}", "is not an object of the s3 connection AWS_S3"),
        ("s3:///{stream_name}", "names no bucket"),
        ("sentry/{stream_name}/{part_decade}", "unknown placeholder '{part_decade}'"),
    ],
)
def test_bad_objects_in_a_bucket_are_explained(
    cli: CliRunner,
    fake: FakeSentry,
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    object_name: str,
    message: str,
) -> None:
    monkeypatch.setenv("AWS_S3", bucket.connection())
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        f"source: SENTRY\ntarget: AWS_S3\ndefaults:\n  object: '{object_name}'\n"
        "streams:\n  teams:\n"
    )
    ran = invoke(cli, "run", "r.yaml")
    assert ran.exit_code == 2
    line = one_line_error(ran)
    assert line.startswith("error: r.yaml: ") and message in line


def test_the_sync_all_endpoints_recording_replays_into_the_bucket(
    cli: CliRunner, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's recorded run (examples/cassettes), offline, into the bucket: the
    recorded row counts, read back with pyarrow."""
    monkeypatch.setenv("AWS_S3", bucket.connection())
    path = sync_all_endpoints(tmp_path)
    cassettes = EXAMPLES / "cassettes" / "sync-all-endpoints"
    result = invoke(cli, "run", str(path), "--replay", str(cassettes))
    assert result.exit_code == 0, result.stdout + result.stderr
    expected = json.loads((cassettes / "expected-rows.json").read_text())
    stored = {stream: bucket.table(f"sentry/{stream}").num_rows for stream in expected}
    assert stored == expected
