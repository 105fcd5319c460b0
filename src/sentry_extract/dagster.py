"""Dagster assets for a replication: one asset per stream, run by the library call.

    import dagster as dg
    from sentry_extract.dagster import sentry_assets

    defs = dg.Definitions(assets=[sentry_assets("replication.yaml")])

Needs the `dagster` extra (`pip install 'sentry-extract[dagster]'`).

- **Keys** come from each stream's target object: `sentry.issues` is `sentry/issues`;
  `file://./out/issues` is `out/issues`; `s3://bucket/sentry/issues` is
  `bucket/sentry/issues` (folders of row placeholders such as `{part_year}` left out),
  under `key_prefix`.
- **One step runs the selected streams** together (a `multi_asset` that can be subset):
  materializing some of the assets runs only their streams, in one `run`, sharing one
  client and its rate limit, as the command does.
- **One run per source connection at a time**: the step belongs to the concurrency pool
  `sentry-extract/<SOURCE>` (or `pool=`); give the pool a limit of 1 in the instance
  (`concurrency: pools: default_limit: 1` in dagster.yaml, or
  `dagster instance concurrency set sentry-extract/SENTRY 1`).
- **Each stream's outcome is its asset's**: an ok or partial stream (its rows are
  committed; partial: something was skipped, logged as a warning) is materialized with
  `rows`, `requests`, `retries`, `seconds`, `status`, `mode`, `object` and `problems` as
  metadata; the others are recorded first, then a failed or cancelled stream fails the
  step with its one-line error, so its asset is not materialized and the run fails. An
  error that stops the run before any stream (a replication to fix, a rejected token)
  fails the step with its message.
"""

# No `from __future__ import annotations` here: Dagster reads the `context` parameter's
# annotation as an object when the asset is defined, and refuses it as text.

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from sentry_extract import api
from sentry_extract.errors import SentryExtractError

MATERIALIZED = (api.STATUS_OK, api.STATUS_PARTIAL)  # their rows are committed


def sentry_assets(
    replication: str | os.PathLike[str],
    *,
    name: str | None = None,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
    pool: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> dg.AssetsDefinition:
    """One Dagster asset per stream of the replication file, materialized by `api.run`.

    - `name`: the step's (default `sentry_extract_<file name>`);
    - `key_prefix`: put before every asset key;
    - `pool`: the concurrency pool (default `sentry-extract/<SOURCE>`, the replication's
      source connection);
    - `environment`: where connections are looked up, now to list the streams and at
      each materialization to run them (None: the process's environment and
      `.env.sling`, as for `api.run`).
    """
    path = Path(replication)
    described = api.describe(path, environment=environment)
    keys = {
        stream.name: dg.AssetKey([*key_prefix, *asset_key_parts(stream.object)])
        for stream in described.streams
    }
    streams_by_key = {key: stream_name for stream_name, key in keys.items()}
    specs = [
        dg.AssetSpec(
            keys[stream.name],
            description=stream.description,
            group_name=group_name,
            kinds={"sentry"},
            metadata={"stream": stream.name, "object": stream.object, "mode": stream.mode},
            skippable=True,
        )
        for stream in described.streams
    ]

    @dg.multi_asset(
        name=name or step_name(path),
        specs=specs,
        can_subset=True,
        pool=pool or f"sentry-extract/{described.source}",
    )
    def sentry_streams(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult[Any]]:
        selected = [streams_by_key[key] for key in context.selected_asset_keys]
        try:
            report = api.run(path, streams=selected, environment=environment)
        except SentryExtractError as error:
            raise dg.Failure(description=str(error)) from None
        for stream in report.streams:
            if stream.status == api.STATUS_PARTIAL:
                context.log.warning(f"{stream.name}: {stream.error}")
            if stream.status in MATERIALIZED:
                yield dg.MaterializeResult(asset_key=keys[stream.name], metadata=metadata(stream))
        failed = [stream for stream in report.streams if stream.status not in MATERIALIZED]
        if failed or report.fatal:
            lines = [f"{stream.name}: {stream.error}" for stream in failed]
            raise dg.Failure(
                description="; ".join(lines if lines else [report.fatal or ""]),
                metadata={stream.name: stream.status for stream in failed},
            )

    return sentry_streams


def metadata(stream: api.StreamReport) -> dict[str, Any]:
    """What a materialization records of its stream's run."""
    return {
        "rows": stream.rows,
        "requests": stream.requests,
        "retries": stream.retries,
        "seconds": round(stream.seconds, 3),
        "status": stream.status,
        "mode": stream.mode,
        "object": stream.object,
        "problems": "\n".join(stream.problems),
    }


def asset_key_parts(object_name: str) -> list[str]:
    """An asset key's parts from a target object: `schema.table` split at the dot, a
    file or bucket object at its slashes (scheme, `.` and placeholder folders left out);
    characters a key does not take become `_`."""
    if "://" in object_name:
        parts = object_name.split("://", 1)[1].split("/")
    elif "/" in object_name:
        parts = object_name.split("/")
    else:
        parts = object_name.split(".")
    kept = [part for part in parts if part not in ("", ".", "..") and "{" not in part]
    return [re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in kept]


def step_name(path: Path) -> str:
    """`sentry_extract_<file name>`, as a Dagster name takes it (letters, digits, `_`)."""
    return "sentry_extract_" + re.sub(r"[^A-Za-z0-9_]", "_", path.stem)


__all__ = ["asset_key_parts", "sentry_assets"]
