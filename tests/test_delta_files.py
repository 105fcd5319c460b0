"""Delta data files written by the target itself, committed with delta-rs, and the stored
keys a checkpoint reads: real tables in a folder, read back with delta-rs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from sentry_extract.model.windows import Window
from sentry_extract.targets.delta import Staging, live_keys, without_dropped
from sentry_extract.targets.delta_files import (
    Bounds,
    FileWriter,
    KeepKeys,
    commit_files,
    read_rows_of_keys,
    stored_files,
)
from sentry_extract.targets.delta_merge import StoredKeyCache, stored_keys
from sentry_extract.targets.delta_table import TableLocation, commit_state, table_location
from sentry_extract.targets.delta_upkeep import (
    COMPACT_AFTER_FILES,
    COMPACTED_TO_FILES,
    excess_small_files,
    keep_up,
)
from sentry_extract.targets.storage import LocalPlace

MOMENT = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("id", pa.string()), ("date_created", MOMENT), ("month", pa.string())])
JANUARY = datetime(2026, 1, 10, 12, 0, 0, 123456, tzinfo=UTC)
MARCH = datetime(2026, 3, 10, 12, 0, 0, 654321, tzinfo=UTC)


def rows(keys: list[str], moment: datetime, month: str) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(keys),
            pa.array([moment + timedelta(seconds=n) for n in range(len(keys))], MOMENT),
            pa.array([month] * len(keys)),
        ],
        schema=SCHEMA,
    )


def commit_batches(location: TableLocation, *batches: pa.RecordBatch) -> None:
    location.storage.prepare()
    writer = FileWriter(location, location.storage.scratch(), SCHEMA, ["month"])
    writer.write_all(batches)
    commit_files(location, location.open(), SCHEMA, ["month"], writer.finish(), states={"k": 1})


def test_files_written_a_batch_at_a_time_make_one_commit_with_statistics(tmp_path: Path) -> None:
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    commit_batches(location, rows(["a", "b"], JANUARY, "01"), rows(["c"], MARCH, "03"))
    table = DeltaTable(location.uri)
    assert table.version() == 0 and table.metadata().partition_columns == ["month"]
    read = table.to_pyarrow_table().sort_by("id")
    assert read.column("id").to_pylist() == ["a", "b", "c"]
    assert read.column("month").to_pylist() == ["01", "01", "03"]
    assert read.column("date_created")[0].as_py() == JANUARY
    files = {stored.partition["month"]: stored for stored in stored_files(table, "date_created")}
    assert files["01"].low == JANUARY and files["01"].high == JANUARY + timedelta(seconds=1)
    assert files["03"].low == files["03"].high == MARCH
    assert '"k": 1' in table.history(1)[0]["sentry_extract.state"]


def test_a_checkpoint_reads_the_keys_of_only_the_files_its_times_fall_in(tmp_path: Path) -> None:
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    commit_batches(location, rows(["a", "b"], JANUARY, "01"))
    commit_batches(location, rows(["c"], MARCH, "03"))
    table = DeltaTable(location.uri)
    every = stored_keys(location, table, ("id",))
    assert sorted(every.keys.to_pylist()) == ["a", "b", "c"]
    march = Bounds("date_created", MARCH, MARCH + timedelta(days=1))
    assert stored_keys(location, table, ("id",), march).keys.to_pylist() == ["c"]
    # the file's newest time, kept to the millisecond by some writers, still counts
    edge = JANUARY + timedelta(seconds=1, microseconds=400)
    assert sorted(
        stored_keys(location, table, ("id",), Bounds("date_created", edge, edge)).keys.to_pylist()
    ) == ["a", "b"]


def test_compaction_joins_the_fewest_bytes_that_bring_the_small_files_down(
    tmp_path: Path,
) -> None:
    """A backfill's shape: many tiny checkpoint files of the oldest events, then larger
    ones. Compaction joins the tiny neighbours only, enough to leave COMPACTED_TO_FILES
    small files beyond one, and leaves the larger files as they are."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    tiny, larger = 24, 16
    for number in range(tiny):
        commit_batches(location, rows([f"t{number}-a", f"t{number}-b"], at(number), "01"))
    for number in range(larger):
        keys = [f"l{number}-{n}-{'x' * 40}" for n in range(2000)]
        commit_batches(location, rows(keys, at(tiny + number), "01"))
    before = DeltaTable(location.uri)
    assert excess_small_files(before) == tiny + larger - 1 >= COMPACT_AFTER_FILES
    large_paths = {stored.path for stored in stored_files(before) if stored.size > 10_000}
    assert len(large_paths) == larger
    assert keep_up(location, location.storage.scratch(), "date_created")
    after = DeltaTable(location.uri)
    assert excess_small_files(after) == COMPACTED_TO_FILES
    assert large_paths <= {stored.path for stored in stored_files(after)}
    assert after.to_pyarrow_table().num_rows == tiny * 2 + larger * 2000
    assert '"k": 1' in after.history(1)[0]["sentry_extract.state"]


def at(hour: int) -> datetime:
    return JANUARY + timedelta(hours=hour)


def test_a_files_keys_are_read_once_across_checkpoints(tmp_path: Path) -> None:
    """Data files never change: checkpoints that meet the same files read their keys from
    storage once, and a file committed later is read when first met."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    commit_batches(location, rows(["a", "b"], JANUARY, "01"))
    commit_batches(location, rows(["c"], MARCH, "03"))
    cache = StoredKeyCache()
    first = stored_keys(location, DeltaTable(location.uri), ("id",), cache=cache)
    again = stored_keys(location, DeltaTable(location.uri), ("id",), cache=cache)
    assert sorted(first.keys.to_pylist()) == sorted(again.keys.to_pylist()) == ["a", "b", "c"]
    assert cache.reads == 2
    commit_batches(location, rows(["d"], MARCH, "03"))
    later = stored_keys(location, DeltaTable(location.uri), ("id",), cache=cache)
    assert sorted(later.keys.to_pylist()) == ["a", "b", "c", "d"]
    assert cache.reads == 3
    small = StoredKeyCache(limit=1)  # past its limit, files are read again
    stored_keys(location, DeltaTable(location.uri), ("id",), cache=small)
    stored_keys(location, DeltaTable(location.uri), ("id",), cache=small)
    assert small.reads == 5 and small.held == 1  # one file of one key kept


def test_staged_keys_are_kept_as_rows_are_staged(tmp_path: Path) -> None:
    """A checkpoint takes the staged rows' keys from memory, the same keys the staged
    files hold, in the order staged; a batch without a key column makes it read them back."""
    staging = Staging(tmp_path, SCHEMA, ("id",))
    staging.write(rows(["a", "b"], JANUARY, "01"))
    staging.write(rows(["c", "a"], MARCH, "03"))
    assert [len(keys) for keys in staging.staged_keys] == [2, 2]
    assert staging.keys(("id",)).to_pylist() == ["a", "b", "c", "a"]
    assert staging.keys(("id", "month")).to_pylist() == ["a\x1f01", "b\x1f01", "c\x1f03", "a\x1f03"]
    staging.write(pa.record_batch([pa.array(["x"])], names=["month"]))
    assert staging.key_columns == ()
    staging.clear()
    assert staging.staged_keys == [] and staging.parts == []


def test_a_checkpoint_keeps_a_batch_it_drops_nothing_from_as_it_is() -> None:
    """Rows are copied only when some are dropped: a backfill's batches (every key new,
    none read twice) go to the data files without a copy of a large batch in memory."""
    batch = rows(["a", "b", "c"], JANUARY, "01")
    assert without_dropped(batch, pa.array([False, False, False])) is batch
    assert without_dropped(batch, pa.array([False, True, False])).column("id").to_pylist() == [
        "a",
        "c",
    ]


def test_live_keys_in_a_window_read_only_the_files_it_meets(tmp_path: Path) -> None:
    """A run's reconcile asks for the stored keys of its window: files whose times lie
    outside it are not read (here the January file is gone: reading it would fail)."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    commit_batches(location, rows(["a", "b"], JANUARY, "01"))
    commit_batches(location, rows(["c"], MARCH, "03"))
    table = DeltaTable(location.uri)
    january = next(f for f in stored_files(table) if f.partition["month"] == "01")
    (tmp_path / "table" / january.storage_path()).unlink()
    window = Window(MARCH - timedelta(days=1), MARCH + timedelta(days=1))
    assert live_keys(location, table, ("id",), "date_created", window) == {"c"}
    outside = Window(MARCH + timedelta(days=1), MARCH + timedelta(days=2))
    assert live_keys(location, table, ("id",), "date_created", outside) == set()


def spoil_row_group(path: Path, index: int) -> None:
    """Overwrite the bytes of one row group's column chunks: reading it now fails."""
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(index)
    content = bytearray(path.read_bytes())
    for position in range(group.num_columns):
        chunk = group.column(position)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        end = start + chunk.total_compressed_size
        content[start:end] = b"\xff" * (end - start)
    path.write_bytes(bytes(content))


def test_a_window_reads_only_the_row_groups_its_times_fall_in(tmp_path: Path) -> None:
    """A compacted file spans months, each of its row groups hours: a run's reconcile, and a
    checkpoint's stored keys and rows, read only the row groups whose statistics meet their
    times (here the January row group is spoilt: reading it would fail)."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    commit_batches(location, rows(["a", "b"], JANUARY, "01"), rows(["c", "d"], MARCH, "01"))
    table = DeltaTable(location.uri)
    (stored,) = stored_files(table, "date_created")
    assert pq.ParquetFile(tmp_path / "table" / stored.storage_path()).num_row_groups == 2
    assert stored.low == JANUARY  # the file's statistics meet every window below
    spoil_row_group(tmp_path / "table" / stored.storage_path(), 0)
    window = Window(MARCH - timedelta(days=1), MARCH + timedelta(days=1))
    assert live_keys(location, table, ("id",), "date_created", window) == {"c", "d"}
    march = Bounds("date_created", MARCH, MARCH + timedelta(days=1))
    cache = StoredKeyCache()
    assert stored_keys(location, table, ("id",), march, cache).keys.to_pylist() == ["c", "d"]
    assert cache.reads == 1
    # the row groups' keys and extremes are kept: the same question opens no file again
    assert stored_keys(location, table, ("id",), march, cache).keys.to_pylist() == ["c", "d"]
    assert cache.reads == 1
    found = read_rows_of_keys(location, stored, ("id",), pa.array(["d"]), march)
    assert [row["id"] for batch in found for row in batch.to_pylist()] == ["d"]
    # keys known from the cache: a row group none of whose keys is wanted is not read
    spared = read_rows_of_keys(
        location, stored, ("id",), pa.array(["x"]), None, {0: pa.array(["a", "b"])}.get
    )
    assert list(spared) == []
    # the reconcile's read keeps the keys for the run's checkpoints
    shared = StoredKeyCache()
    assert live_keys(location, table, ("id",), "date_created", window, shared) == {"c", "d"}
    assert stored_keys(location, table, ("id",), march, shared).keys.to_pylist() == ["c", "d"]
    assert shared.reads == 0


def test_a_streams_state_is_read_from_the_newest_commits_not_the_whole_log(
    tmp_path: Path,
) -> None:
    """A run's own commits carry its state: loading it reads the newest commits, and older
    ones only while none names the stream (here an old commit file is spoilt: reading
    the whole log, as before, would fail)."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    location.storage.prepare()
    for number in range(24):
        states = {"old": 5} if number == 2 else {"k": number}
        writer = FileWriter(location, location.storage.scratch(), SCHEMA, ["month"])
        writer.write(rows([f"key{number}"], at(number), "01"))
        commit_files(location, location.open(), SCHEMA, ["month"], writer.finish(), states=states)
    table = DeltaTable(location.uri)
    assert commit_state(table, "k") == 23
    assert commit_state(table, "old") == 5  # found further back
    assert commit_state(table, "missing") is None
    (tmp_path / "table" / "_delta_log" / "00000000000000000001.json").write_text("{not json")
    table = DeltaTable(location.uri)
    assert commit_state(table, "k") == 23


def test_the_keys_of_files_a_run_wrote_are_not_read_back(tmp_path: Path) -> None:
    """A backfill's next checkpoint meets the files its last one wrote: their keys, kept
    by row group as they were written, answer it without reading the files (here they
    are gone: reading them would fail), with and without bounds."""
    location = table_location(LocalPlace(), str(tmp_path / "table"))
    location.storage.prepare()
    keep = KeepKeys(("id",), "date_created")
    writer = FileWriter(location, location.storage.scratch(), SCHEMA, ["month"], keep_keys=keep)
    writer.write_all([rows(["a", "b"], JANUARY, "01"), rows(["c"], MARCH, "01")])
    writer.write(rows(["d"], MARCH, "03"))
    commit_files(location, None, SCHEMA, ["month"], writer.finish(), states={"k": 1})
    cache = StoredKeyCache()
    cache.remember(writer.keyed)
    table = DeltaTable(location.uri)
    for stored in stored_files(table):
        (tmp_path / "table" / stored.storage_path()).unlink()
    every = stored_keys(location, table, ("id",), cache=cache)
    assert sorted(every.keys.to_pylist()) == ["a", "b", "c", "d"]
    march = Bounds("date_created", MARCH, MARCH + timedelta(days=1))
    assert sorted(stored_keys(location, table, ("id",), march, cache).keys.to_pylist()) == [
        "c",
        "d",
    ]
    assert cache.reads == 0
