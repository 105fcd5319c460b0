"""Where a benchmark run writes, and what it leaves there.

Targets: `parquet` (a local dataset), `postgres`, `delta` (a Delta table in a local
folder), `delta-s3` (a Delta table in a bucket), `duckdb` (a DuckDB file), and `s3`
(a Parquet dataset in a bucket, scenario 8). Each dataset has its own folder, its own
PostgreSQL schema (`bench<dataset>`), its own DuckDB file and its own bucket prefix, so
that a scenario can keep several side by side.

The bucket is moto's S3 server in a process of its own (delta-rs holds the GIL in some
calls, and the harness must stay small: a child's peak RSS starts at its parent's).
Objects are listed over plain HTTP, so the harness never imports boto3.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ALL_TARGETS = ("parquet", "postgres", "delta", "delta-s3", "duckdb")
BUCKET_TARGETS = ("delta-s3", "s3")
STATE_FILE = "_sentry_extract_state.json"
S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
Listing = dict[str, tuple[int, str]]  # a file's path -> (size, what changes when rewritten)


class Bucket:
    """moto's S3 server in its own process, with one bucket."""

    name = "bench"

    def __init__(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(400):
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        created = httpx.put(f"{self.endpoint}/{self.name}", headers=self.headers(), timeout=30)
        created.raise_for_status()

    def headers(self) -> dict[str, str]:
        """moto checks no signature, but refuses a DELETE from nobody: say who asks."""
        key = self.connection()["access_key_id"]
        credential = f"{key}/20260101/us-east-1/s3/aws4_request"
        signature = f"Credential={credential}, SignedHeaders=host, Signature=00"
        return {"Authorization": f"AWS4-HMAC-SHA256 {signature}"}

    def connection(self) -> dict[str, str]:
        """The s3 connection sentry-extract is given (moto takes any keys)."""
        return {
            "type": "s3",
            "bucket": self.name,
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "AKIATESTBENCH0000001",
            "secret_access_key": "test-bench-secret-key-0000000000000000",
        }

    def storage_options(self) -> dict[str, str]:
        """The same bucket for deltalake's readers."""
        values = self.connection()
        return {
            "AWS_ACCESS_KEY_ID": values["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": values["secret_access_key"],
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def listing(self, prefix: str) -> Listing:
        """Every object under `prefix`: key -> (size, ETag)."""
        objects: Listing = {}
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            answer = httpx.get(
                f"{self.endpoint}/{self.name}", params=params, headers=self.headers(), timeout=60
            )
            answer.raise_for_status()
            root = ElementTree.fromstring(answer.content)
            for entry in root.iter(f"{S3_NAMESPACE}Contents"):
                key = entry.findtext(f"{S3_NAMESPACE}Key") or ""
                size = int(entry.findtext(f"{S3_NAMESPACE}Size") or 0)
                objects[key] = (size, entry.findtext(f"{S3_NAMESPACE}ETag") or "")
            token = root.findtext(f"{S3_NAMESPACE}NextContinuationToken")
            if not token:
                return objects

    def delete_prefix(self, prefix: str) -> None:
        """Every object under `prefix` (moto keeps them in its memory)."""
        for key in self.listing(prefix):
            address = f"{self.endpoint}/{self.name}/{key}"
            httpx.delete(address, headers=self.headers(), timeout=60).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass(frozen=True)
class Services:
    postgres_url: str
    bucket: Bucket | None = None


@dataclass(frozen=True)
class Destination:
    """One dataset of one target: how a run is pointed at it and what it holds."""

    target: str
    dataset: str
    root: Path  # the harness's working folder; the dataset's own is root / dataset
    services: Services

    @property
    def folder(self) -> Path:
        return self.root / self.dataset

    @property
    def prefix(self) -> str:
        return f"sentry/{self.dataset}"

    @property
    def duckdb_file(self) -> Path:
        return self.folder / "bench.duckdb"

    def replication_target(self) -> tuple[str, str, str]:
        """The connection's name, the defaults' object and any defaults' target options."""
        delta = "  target_options: {format: delta}\n"
        if self.target == "postgres":
            return "BENCH_PG", f"bench{self.dataset}.{{stream_name}}", ""
        if self.target == "duckdb":
            return "BENCH_DUCKDB", "main.{stream_name}", ""
        if self.target == "s3":  # a new prefix each run, as scenario 8 always had
            return "BENCH_S3", f"{self.prefix}-{time.monotonic_ns()}/{{stream_name}}", ""
        if self.target == "delta-s3":
            return "BENCH_S3", f"{self.prefix}/{{stream_name}}", delta
        folder = f"file://{self.folder}/{{stream_name}}"
        return "LOCAL", folder, delta if self.target == "delta" else ""

    def environment(self) -> dict[str, str]:
        """Connections this target needs, added to the run's environment."""
        values = {"BENCH_PG": self.services.postgres_url}
        if self.target == "duckdb":
            values["BENCH_DUCKDB"] = json.dumps(
                {"type": "duckdb", "instance": str(self.duckdb_file)}
            )
        if self.target in BUCKET_TARGETS:
            assert self.services.bucket is not None, "a bucket target needs the S3 server"
            values["BENCH_S3"] = json.dumps(self.services.bucket.connection())
        return values

    # --- what the dataset holds ------------------------------------------------------------

    def listing(self, stream: str = "events") -> Listing:
        """The stream's files (data, log, state), to tell what a run wrote."""
        if self.target == "delta-s3":
            assert self.services.bucket is not None
            return self.services.bucket.listing(f"{self.prefix}/{stream}/")
        if self.target == "duckdb":
            files = [self.duckdb_file, self.duckdb_file.with_name("bench.duckdb.wal")]
            return {
                path.name: (path.stat().st_size, str(path.stat().st_mtime_ns))
                for path in files
                if path.exists()
            }
        if self.target not in ("parquet", "delta"):
            return {}
        folder = self.folder / stream
        found: Listing = {}
        for path in folder.rglob("*") if folder.exists() else ():
            relative = path.relative_to(folder)
            hidden = any(part.startswith(".") for part in relative.parts)
            if path.is_file() and not hidden:
                status = path.stat()
                found[str(relative)] = (status.st_size, str(status.st_mtime_ns))
        return found

    def inspect_request(self, stream: str = "events") -> dict[str, Any]:
        """What a child process needs to read the stream's rows back (`inspect`)."""
        uri = str(self.folder / stream)
        options: dict[str, str] = {}
        if self.target == "delta-s3":
            assert self.services.bucket is not None
            uri = f"s3://{self.services.bucket.name}/{self.prefix}/{stream}"
            options = self.services.bucket.storage_options()
        return {
            "target": self.target,
            "uri": uri,
            "table": f"bench{self.dataset}.{stream}",
            "duckdb_file": str(self.duckdb_file),
            "duckdb_table": f"main.{stream}",
            "postgres_url": self.services.postgres_url,
            "storage_options": options,
        }


def bytes_written(target: str, before: Listing, after: Listing) -> dict[str, int]:
    """Bytes a run wrote into a dataset, from its listings before and after: files that
    are new or changed (Parquet: rewritten in place; Delta: added by the commits, data
    files and log apart); for DuckDB, the growth of the file."""
    if target == "duckdb":
        grown = sum(size for size, _ in after.values()) - sum(size for size, _ in before.values())
        return {"bytes_written": max(0, grown)}
    changed = {
        path: size for path, (size, mark) in after.items() if before.get(path) != (size, mark)
    }
    if target in ("delta", "delta-s3"):
        log = sum(size for path, size in changed.items() if "_delta_log/" in path)
        return {"bytes_written": sum(changed.values()) - log, "log_bytes_written": log}
    return {"bytes_written": sum(changed.values())}


# --- reading back, in a child process (`bench/run.py --inspect`) --------------------------------


def inspect(request: dict[str, Any], expected: list[list[Any]]) -> dict[str, int]:
    """Stored rows against the expected keys (keys stored twice, missing or unexpected),
    and the bytes of data the dataset holds now (for Delta, the files its version reads)."""
    stored, data_bytes = stored_keys(request)
    expected_keys = {(str(project), str(event)) for project, event in expected}
    unique = set(stored)
    return {
        "expected_rows": len(expected_keys),
        "stored_rows": len(stored),
        "duplicates": len(stored) - len(unique),
        "missing": len(expected_keys - unique),
        "unexpected": len(unique - expected_keys),
        "dataset_bytes": data_bytes,
    }


def stored_keys(request: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """(project_id, event_id) of every stored event row, and the dataset's data bytes."""
    target = request["target"]
    columns = ["project_id", "event_id"]
    if target == "parquet":
        import pyarrow.dataset

        folder = Path(request["uri"])
        if not folder.exists():
            return [], 0
        found = pyarrow.dataset.dataset(folder, format="parquet")
        if not found.files:
            return [], 0
        size = sum(Path(name).stat().st_size for name in found.files)
        return _pairs(found.to_table(columns=columns)), size
    if target in ("delta", "delta-s3"):
        import pyarrow as pa
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(request["uri"], storage_options=request["storage_options"] or None)
        except TableNotFoundError:
            return [], 0
        actions = pa.table(table.get_add_actions(flatten=True))
        size = sum(value or 0 for value in actions.column("size_bytes").to_pylist())
        return _pairs(table.to_pyarrow_table(columns=columns)), int(size)
    if target == "duckdb":
        import duckdb

        path = Path(request["duckdb_file"])
        if not path.exists():
            return [], 0
        connection = duckdb.connect(str(path), read_only=True)
        try:
            rows = connection.execute(
                f"SELECT project_id::VARCHAR, event_id::VARCHAR FROM {request['duckdb_table']}"
            ).fetchall()
        except duckdb.CatalogException:
            rows = []
        finally:
            connection.close()
        return [(str(project), str(event)) for project, event in rows], path.stat().st_size
    return postgres_keys(request["postgres_url"], request["table"])


def postgres_keys(postgres_url: str, table: str) -> tuple[list[tuple[str, str]], int]:
    import psycopg

    with psycopg.connect(postgres_url) as database:
        if database.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return [], 0
        found = database.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
        pairs = database.execute(f"SELECT project_id::text, event_id::text FROM {table}")
        keys = [(str(project), str(event)) for project, event in pairs.fetchall()]
        return keys, int(found[0]) if found else 0


def _pairs(table: Any) -> list[tuple[str, str]]:
    projects = table["project_id"].to_pylist()
    events = table["event_id"].to_pylist()
    return [(str(project), str(event)) for project, event in zip(projects, events, strict=True)]


def drop_schema(postgres_url: str, schema: str) -> None:
    """A dataset's PostgreSQL schema, tables and state, once measured (`--drop-schema`)."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
