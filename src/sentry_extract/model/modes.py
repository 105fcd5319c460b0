"""The five replication modes, each carrying what it does to a target's rows.

A mode is a string (`Mode.INCREMENTAL == "incremental"`), so configuration, summaries
and JSON show its name; targets and the pipeline ask its properties instead of
comparing names.
"""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    FULL_REFRESH = "full-refresh"
    INCREMENTAL = "incremental"
    TRUNCATE = "truncate"
    SNAPSHOT = "snapshot"
    BACKFILL = "backfill"

    @property
    def replaces_rows(self) -> bool:
        """The run's rows replace every stored row, at the end of the run."""
        return self in (Mode.FULL_REFRESH, Mode.TRUNCATE)

    @property
    def replaces_table(self) -> bool:
        """PostgreSQL: a new table is swapped in (truncate keeps the table instead)."""
        return self is Mode.FULL_REFRESH

    @property
    def merges_by_key(self) -> bool:
        """Rows are upserted by primary key: the newest read of a key wins."""
        return self in (Mode.INCREMENTAL, Mode.BACKFILL)

    @property
    def appends(self) -> bool:
        """Rows are added with `_snapshot_at`, which joins the primary key."""
        return self is Mode.SNAPSHOT

    @property
    def keeps_state(self) -> bool:
        """The run saves where it got to, for the next incremental run."""
        return self in (Mode.INCREMENTAL, Mode.FULL_REFRESH, Mode.TRUNCATE)

    @property
    def reads_range(self) -> bool:
        """The window comes from `source_options.range`, not from state."""
        return self is Mode.BACKFILL

    @property
    def commits_as_it_goes(self) -> bool:
        """Checkpoints commit rows and state while the stream is read."""
        return self.merges_by_key


MODE_NAMES: tuple[str, ...] = tuple(mode.value for mode in Mode)
