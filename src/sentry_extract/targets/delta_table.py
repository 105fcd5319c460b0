"""A Delta table's address, the writes every Delta module makes, and the stream states
carried in the commits' metadata (`sentry_extract.state`).

The bottom of the Delta modules: `delta` (the target) and `delta_upkeep` (compaction,
checkpoints, vacuum) both build on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from sentry_extract.errors import TargetError
from sentry_extract.targets.partitions import Layout
from sentry_extract.targets.storage import LocalPlace, Place, Storage

STATE_PROPERTY = "sentry_extract.state"
LOCK_FILE = ".sentry-extract.lock"
CHECKPOINT_INTERVAL = 10  # versions between log checkpoints, written by delta-rs itself
# Set on every table the tool creates: delta-rs (and Spark) write a log checkpoint every
# CHECKPOINT_INTERVAL commits, so opening the table reads one checkpoint and at most
# nine commit files instead of up to 99 (delta-rs's default interval is 100, Spark's 10).
TABLE_CONFIGURATION = {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}


@dataclass(frozen=True)
class TableLocation:
    """A table's address for delta-rs, and the storage (lock, scratch) of its folder."""

    uri: str
    storage_options: dict[str, str] | None
    storage: Storage

    def open(self) -> DeltaTable | None:
        """The table, or None when no commit was ever made."""
        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as error:
            raise TargetError(f"cannot read Delta table {self.uri}: {error_line(error)}") from None


def table_location(place: Place, object_name: str) -> TableLocation:
    """The table of `object_name`: its folder, above any partition folders it names."""
    root = Layout.parse(place.location(object_name)).root
    root = root.rstrip("/") or root
    storage = place.storage(root, LOCK_FILE)
    if isinstance(place, LocalPlace):
        return TableLocation(str(Path(root).expanduser().absolute()), None, storage)
    from sentry_extract.targets.s3 import S3Place  # boto3: only when used

    assert isinstance(place, S3Place)
    return TableLocation(f"s3://{root}", s3_storage_options(place), storage)


def s3_storage_options(place: Any) -> dict[str, str]:
    """delta-rs settings from an s3 connection: its keys, endpoint and region, and
    commits by conditional put (`If-None-Match`), which S3, MinIO and R2 honour."""
    connection = place.connection
    options = {"aws_conditional_put": "etag"}
    values = {
        "AWS_ACCESS_KEY_ID": connection.access_key_id,
        "AWS_SECRET_ACCESS_KEY": connection.secret_access_key,
        "AWS_SESSION_TOKEN": connection.session_token,
        "AWS_ENDPOINT_URL": connection.endpoint,
        "AWS_REGION": connection.region or ("us-east-1" if connection.endpoint else None),
    }
    options.update({name: value for name, value in values.items() if value})
    if connection.endpoint and connection.endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


# --- state in the commits -----------------------------------------------------------------------


def commit_states(table: DeltaTable) -> dict[str, Any]:
    """The newest state of every stream key found in the table's commits (None: reset).

    Every commit is read, newest first, so commits without a state (an OPTIMIZE by
    another tool, a SET TBLPROPERTIES) hide nothing; log checkpoints are not commits."""
    return _states_in(table.history())


def commit_state(table: DeltaTable, key: str) -> Any:
    """The newest state of one stream key in the table's commits (None: none, or reset).

    The newest STATE_SEARCH_FIRST commits are read first, and four times as many again
    while none of them names the key: a run's own commits carry its state, so a run
    reads a few commit files, not the whole log (in a bucket, a request each)."""
    limit = STATE_SEARCH_FIRST
    while True:
        commits = table.history(limit)
        states = _states_in(commits)
        if key in states:
            return states[key]
        if len(commits) < limit:
            return None
        limit *= 4


STATE_SEARCH_FIRST = 8


def _states_in(commits: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest state of every stream key in `commits` (newest first)."""
    states: dict[str, Any] = {}
    for commit in commits:
        text = commit.get(STATE_PROPERTY)
        if not isinstance(text, str):
            continue
        try:
            entries = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(entries, dict):
            for key, value in entries.items():
                states.setdefault(key, value)
    return states


def commit_properties(states: Mapping[str, Any] | None) -> CommitProperties | None:
    if not states:
        return None
    return CommitProperties(custom_metadata={STATE_PROPERTY: json.dumps(dict(states))})


# --- writes ---------------------------------------------------------------------------------------


def write_table(
    location: TableLocation,
    rows: pa.Table | pa.RecordBatchReader,
    mode: str,
    states: Mapping[str, Any] | None,
    partition_by: Sequence[str] | None = None,
) -> None:
    """Append `rows` (new columns merged in), or overwrite the table with them (schema
    and partition columns replaced); `states` ride in the commit. `partition_by` None
    keeps the table's partition columns on an append; a new table gets the tool's
    configuration (`TABLE_CONFIGURATION`)."""
    overwrite = mode == "overwrite"
    write_deltalake(
        location.uri,
        rows,
        mode="overwrite" if overwrite else "append",
        schema_mode="overwrite" if overwrite else "merge",
        partition_by=list(partition_by) if partition_by is not None else None,
        configuration=TABLE_CONFIGURATION,
        storage_options=location.storage_options,
        commit_properties=commit_properties(states),
    )


def error_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
