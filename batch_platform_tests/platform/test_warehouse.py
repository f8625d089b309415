"""The warehouse on DuckLake: partition writes in one commit, snapshots that name their run,
time travel, analysts' read-only sessions, the writer lock, maintenance and the migration."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl
import pytest

from batch_platform.platform import files
from batch_platform.platform.files import exclusive_lock
from batch_platform.platform.storage import lake as lakes
from batch_platform.platform.storage import warehouse as wh
from batch_platform.platform.storage.migration import migrate

D1 = dt.date(2013, 1, 1)
D2 = dt.date(2013, 1, 2)

HOLD_LOCK = """
import sys
from pathlib import Path
from batch_platform.platform.files import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), 5.0, "hold the lock for a test"):
    print("locked", flush=True)
    sys.stdin.readline()
"""

SUM_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from batch_platform.platform.storage.lake import Lake
with Lake(sys.argv[1], Path(sys.argv[2])).read_only() as con:
    print(con.execute("SELECT sum(v) FROM raw.t").fetchone()[0])
"""


@pytest.fixture
def lake(tmp_path: Path) -> lakes.Lake:
    folder = tmp_path / "lake"
    return lakes.Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files",
                      lock_timeout_seconds=0.5)


@pytest.fixture
def con(lake: lakes.Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    with lake.connect() as connection:
        yield connection


def _frame(rows: list[tuple[dt.date, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"partition_date": pl.Date, "v": pl.Int64}, orient="row")


def _rows(con: duckdb.DuckDBPyConnection, table: str = "raw.t") -> list[tuple]:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall())


def _replace(lake: lakes.Lake, writes: Sequence[tuple[str, pl.DataFrame]],
             days: Sequence[dt.date], run_id: str = "run-test") -> float:
    return lake.commit(lambda con: wh.replace_partitions(con, writes, days),
                       f"test write by run {run_id}", {"run_id": run_id})


def _data_files(lake: lakes.Lake) -> set[Path]:
    return set(lake.data_path.rglob("*.parquet"))


@pytest.fixture
def two_days(lake: lakes.Lake, con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """raw.t holds D1 (1, 2) and D2 (3), quarantine.t holds D1 (9)."""
    _replace(lake, [("raw.t", _frame([(D1, 1), (D1, 2), (D2, 3)])),
                    ("quarantine.t", _frame([(D1, 9)]))], [D1, D2])
    return _rows(con)


# --- partition writes ------------------------------------------------------------------------

def test_replace_partitions_writes_rows(con: duckdb.DuckDBPyConnection, two_days: list[tuple]
                                        ) -> None:
    assert two_days == [(D1, 1), (D1, 2), (D2, 3)]
    assert _rows(con, "quarantine.t") == [(D1, 9)]
    assert wh.partition_counts(con, "raw.t", D1, D2) == {D1: 2, D2: 1}
    assert wh.partition_counts(con, "raw.t", D2, D2) == {D2: 1}
    frame = wh.read_partitions(con, "raw.t", D1, D1, order_by=("v",))
    assert frame.get_column("v").to_list() == [1, 2]
    assert frame.schema["partition_date"] == pl.Date


def test_writing_twice_leaves_the_same_rows(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                            two_days: list[tuple]) -> None:
    for _ in range(2):
        _replace(lake, [("raw.t", _frame([(D1, 1), (D1, 2), (D2, 3)])),
                                    ("quarantine.t", _frame([(D1, 9)]))], [D1, D2])
    assert _rows(con) == two_days
    assert _rows(con, "quarantine.t") == [(D1, 9)]


def test_replacing_one_partition_leaves_the_others(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                                   two_days: list[tuple]) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 7)]))], [D1])
    assert _rows(con) == [(D1, 7), (D2, 3)]


def test_column_order_of_the_frame_does_not_matter(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                                    two_days: list[tuple]) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 8)]).select("v", "partition_date"))],
                          [D1])
    assert _rows(con) == [(D1, 8), (D2, 3)]


def test_an_empty_frame_clears_its_partitions(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                              two_days: list[tuple]) -> None:
    # A rerun without rejected rows must not leave the old rejected rows behind.
    _replace(lake, [("quarantine.t", _frame([]))], [D1])
    assert _rows(con, "quarantine.t") == []
    assert _rows(con) == two_days


def test_new_columns_are_refused_and_nothing_changes(
    lake: lakes.Lake, con: duckdb.DuckDBPyConnection, two_days: list[tuple]
) -> None:
    wider = _frame([(D1, 5)]).with_columns(pl.lit("x").alias("extra"))
    with pytest.raises(wh.SchemaMismatchError) as raised:
        _replace(lake, [("raw.t", wider)], [D1])
    message = str(raised.value)
    assert message.startswith("raw.t has columns the new data does not match")
    assert "(missing [], new ['extra'])" in message
    assert _rows(con) == two_days
    assert [r[0] for r in con.execute("DESCRIBE raw.t").fetchall()] == ["partition_date", "v"]


def test_missing_columns_are_refused(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                     two_days: list[tuple]) -> None:
    with pytest.raises(wh.SchemaMismatchError, match=r"missing \['v'\], new \[\]"):
        _replace(lake, [("raw.t", _frame([(D1, 5)]).drop("v"))], [D1])
    assert _rows(con) == two_days


def test_rows_outside_the_partitions_are_refused(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                                 two_days: list[tuple]) -> None:
    with pytest.raises(ValueError) as raised:
        _replace(lake, [("raw.t", _frame([(D1, 5), (D2, 6)]))], [D1])
    assert str(raised.value) == ("1 row(s) for raw.t fall outside the partitions being written "
                                 "(2013-01-01..2013-01-01)")
    assert _rows(con) == two_days


def test_two_tables_are_written_together_or_not_at_all(
    lake: lakes.Lake, con: duckdb.DuckDBPyConnection, two_days: list[tuple]
) -> None:
    # The second insert fails inside the transaction, after the first table was replaced.
    bad = pl.DataFrame({"partition_date": [D1], "v": ["not a number"]})
    with pytest.raises(duckdb.ConversionException):
        _replace(lake, [("raw.t", _frame([(D1, 100)])), ("quarantine.t", bad)], [D1])
    assert _rows(con) == two_days
    assert _rows(con, "quarantine.t") == [(D1, 9)]
    # The lake takes the next commit: no transaction or lock was left behind.
    _replace(lake, [("raw.t", _frame([(D1, 100)]))], [D1])
    assert _rows(con) == [(D1, 100), (D2, 3)]


def test_changes_are_durable_across_connections(lake: lakes.Lake) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1])
    with lake.connect() as con:
        assert _rows(con) == [(D1, 1)]


def test_no_connection_draws_a_progress_bar_on_standard_output(lake: lakes.Lake) -> None:
    """DuckDB draws one for any query over 2 s of a connection, even into a pipe (not under
    pytest, hence the process): an ATTACH on a loaded machine would write it into what reads
    the process's output (`batch-platform sql` redirected to a file, a run's log)."""
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1])
    probe = (
        "import duckdb, sys\n"
        "from pathlib import Path\n"
        "from batch_platform.platform.storage.lake import Lake\n"
        "print(duckdb.connect().execute(\"SELECT current_setting('enable_progress_bar')\")"
        ".fetchone()[0])\n"
        "lake = Lake(sys.argv[1], Path(sys.argv[2]))\n"
        "for read_only in (False, True):\n"
        "    print(lake._open_instance(read_only).execute("
        "\"SELECT current_setting('enable_progress_bar')\").fetchone()[0])\n")
    shown = subprocess.run([sys.executable, "-c", probe, lake.catalog, str(lake.data_path)],
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["True", "False", "False"]  # DuckDB's default, then the lake's instances


def test_replace_table_replaces_every_row(lake: lakes.Lake,
                                          con: duckdb.DuckDBPyConnection) -> None:
    for tails in (["N1", "N2"], ["N3"]):
        lake.commit(lambda c, t=tails: wh.replace_table(c, "raw.planes",
                                                         pl.DataFrame({"tailnum": t})),
                    "planes", {})
    assert _rows(con, "raw.planes") == [("N3",)]
    assert wh.read_table(con, "raw.planes").get_column("tailnum").to_list() == ["N3"]


def test_reading_a_table_that_does_not_exist(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(wh.MissingDataError, match=r"raw\.nothing does not exist yet"):
        wh.read_table(con, "raw.nothing")
    with pytest.raises(wh.MissingDataError, match=r"raw\.nothing does not exist yet"):
        wh.read_partitions(con, "raw.nothing", D1, D2)
    assert wh.partition_counts(con, "raw.nothing", D1, D2) == {}
    assert not wh.table_exists(con, "raw.nothing")


def test_partition_times_are_the_newest_or_oldest_per_day(
    lake: lakes.Lake, con: duckdb.DuckDBPyConnection
) -> None:
    early, late = (dt.datetime(2013, 1, 2, h, tzinfo=dt.UTC) for h in (6, 9))
    frame = pl.DataFrame({"partition_date": [D1, D1, D2], "at": [early, late, early]},
                         schema={"partition_date": pl.Date, "at": pl.Datetime("us", "UTC")})
    _replace(lake, [("raw.times", frame)], [D1, D2])
    newest = wh.partition_times(con, "raw.times", "at", newest=True)
    assert {day: at.astimezone(dt.UTC) for day, at in newest.items()} == {D1: late, D2: early}
    oldest = wh.partition_times(con, "raw.times", "at", newest=False)
    assert oldest[D1].astimezone(dt.UTC) == early
    assert wh.partition_times(con, "raw.nothing", "at", newest=True) == {}
    with pytest.raises(ValueError, match="invalid column name"):
        wh.partition_times(con, "raw.times", "at) FROM x; --", newest=True)


# --- SQL safety ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["raw.flights; drop table x", "flights", "Raw.Flights",
                                  "raw.flights.x", 'raw."flights"', "raw.1flights", ""])
def test_table_name_refuses_anything_but_schema_dot_table(name: str) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        wh.table_name(name)


def test_table_name_accepts_a_plain_name() -> None:
    assert wh.table_name("quarantine.flights_2") == "quarantine.flights_2"


def test_bad_table_name_is_refused_before_any_sql(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                                  two_days: list[tuple]) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        _replace(lake, [("raw.t; DROP TABLE raw.t", _frame([(D1, 1)]))], [D1])
    with pytest.raises(ValueError, match="invalid column name"):
        wh.read_table(con, "raw.t", columns=["v; DROP TABLE raw.t"])
    assert _rows(con) == two_days


def test_partition_values_are_dates_not_sql(lake: lakes.Lake, con: duckdb.DuckDBPyConnection,
                                            two_days: list[tuple]) -> None:
    injected = "2013-01-01' OR TRUE; DROP TABLE raw.t; --"
    with pytest.raises(pl.exceptions.InvalidOperationError):
        _replace(lake, [("raw.t", _frame([]))], [injected])  # type: ignore[list-item]
    assert _rows(con) == two_days
    # Read filters are bound parameters: text in them is a value, never SQL. Interpolated,
    # "OR TRUE" would return every row and the DROP would run.
    widened = "2013-01-02' OR TRUE; DROP TABLE raw.t; --"
    frame = wh.read_partitions(con, "raw.t", widened, D2)  # type: ignore[arg-type]
    assert frame.rows() == [(D2, 3)]
    with pytest.raises(duckdb.ConversionException):
        wh.read_partitions(con, "raw.t", "DROP TABLE raw.t", D2)  # type: ignore[arg-type]
    assert _rows(con) == two_days


# --- snapshots, time travel and analysts -----------------------------------------------------

def test_each_commit_is_a_snapshot_that_names_its_run(lake: lakes.Lake) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1], run_id="run-a")
    _replace(lake, [("raw.t", _frame([(D1, 2), (D1, 3)]))], [D1], run_id="run-b")
    with lake.read_only() as ro:
        named = [s for s in lakes.snapshots(ro) if s.get("run_id")]
        assert [(s["run_id"], s["message"]) for s in named] == [
            ("run-a", "test write by run run-a"), ("run-b", "test write by run run-b")]
        # What raw.t held when run-a finished, and now: time travel by snapshot id.
        at_a = named[0]["snapshot_id"]
        assert ro.execute(f"SELECT v FROM raw.t AT (VERSION => {at_a})").fetchall() == [(1,)]
        assert sorted(ro.execute("SELECT v FROM raw.t").fetchall()) == [(2,), (3,)]
        # ... and by time, for a moment between the two commits.
        between = named[1]["snapshot_time"] - dt.timedelta(microseconds=1)
        assert ro.execute("SELECT v FROM raw.t AT (TIMESTAMP => $t)",
                          {"t": between}).fetchall() == [(1,)]


def test_an_open_transaction_keeps_its_snapshot_while_a_commit_lands(lake: lakes.Lake) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)])), ("raw.u", _frame([(D1, 1)]))], [D1])
    with lake.read_only() as old:
        old.execute("BEGIN TRANSACTION")
        assert old.execute("SELECT sum(v) FROM raw.t").fetchone()[0] == 1
        _replace(lake, [("raw.t", _frame([(D1, 2)])), ("raw.u", _frame([(D1, 2)]))], [D1])
        # Another process sees the new snapshot at once...
        done = subprocess.run([sys.executable, "-c", SUM_IN_ANOTHER_PROCESS, lake.catalog,
                               str(lake.data_path)], capture_output=True, text=True,
                              timeout=60, check=True)
        assert done.stdout.strip() == "2"
        # ...while the open transaction keeps the old one, even for a table it had not read.
        assert old.execute("SELECT sum(v) FROM raw.u").fetchone()[0] == 1
        old.execute("COMMIT")
        assert old.execute("SELECT sum(v) FROM raw.u").fetchone()[0] == 2


def test_an_analyst_session_reads_the_lake_and_nothing_else(lake: lakes.Lake,
                                                            tmp_path: Path) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1])
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    with lake.read_only() as ro:
        assert ro.execute("SELECT count(*) FROM raw.t").fetchone()[0] == 1
        with pytest.raises(duckdb.Error, match=r"read-only|read only"):
            ro.execute("DELETE FROM raw.t")
        with pytest.raises(duckdb.PermissionException):
            ro.execute(f"COPY (SELECT 1) TO '{tmp_path / 'copy.csv'}'")
        with pytest.raises(duckdb.PermissionException):
            ro.execute(f"SELECT * FROM read_csv('{outside}')")
        with pytest.raises(duckdb.Error, match="locked"):
            ro.execute("SET enable_external_access = true")
        assert ro.execute("SELECT count(*) FROM raw.t").fetchone()[0] == 1
    assert not (tmp_path / "copy.csv").exists()


def test_no_lake_yet_is_one_clear_error(lake: lakes.Lake) -> None:
    with (pytest.raises(FileNotFoundError, match=r"no warehouse at .*catalog.sqlite: run `make"),
          lake.read_only()):
        pass
    assert not lake.exists()


def test_a_failed_commit_leaves_no_visible_file_and_maintenance_removes_it(
    lake: lakes.Lake, tmp_path: Path
) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1])
    with lake.read_only() as ro:
        listed = ro.execute("SELECT data_file FROM ducklake_list_files('lake', 't', "
                            "schema => 'raw')").fetchall()
    before = _data_files(lake)

    def write_then_fail(con: duckdb.DuckDBPyConnection) -> None:
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 2)] * 20))], [D1])
        raise RuntimeError("the step failed after its write")

    with pytest.raises(RuntimeError, match="after its write"):
        lake.commit(write_then_fail, "failing write", {})
    with lake.read_only() as ro:
        assert ro.execute("SELECT v FROM raw.t").fetchall() == [(1,)]
        assert ro.execute("SELECT data_file FROM ducklake_list_files('lake', 't', "
                          "schema => 'raw')").fetchall() == listed
    # Whatever the failed transaction wrote is no snapshot's: maintenance deletes it.
    lake.maintain(dt.timedelta(0))
    assert _data_files(lake) == before


def test_maintenance_keeps_what_snapshots_within_the_retention_read(lake: lakes.Lake) -> None:
    for value in range(1, 5):  # four snapshots, four small files of D1, one of D2
        _replace(lake, [("raw.t", _frame([(D1, value)] * 20))], [D1])
    _replace(lake, [("raw.t", _frame([(D2, 7)] * 20))], [D2])
    with lake.read_only() as ro:
        first = next(s for s in lakes.snapshots(ro) if s.get("run_id"))["snapshot_id"]
    kept = lake.maintain(dt.timedelta(days=7))
    assert kept["snapshots_expired"] == 0 and kept["files_deleted"] == 0
    with lake.read_only() as ro:  # time travel still reaches the first write
        assert ro.execute(f"SELECT DISTINCT v FROM raw.t AT (VERSION => {first}) "
                          "WHERE partition_date = $d", {"d": D1}).fetchall() == [(1,)]
    with lake.read_only() as session:  # opened before maintenance, still open after it
        assert session.execute("SELECT sum(v) FROM raw.t").fetchone()[0] == 20 * 4 + 20 * 7
        removed = lake.maintain(dt.timedelta(0))
        assert removed["snapshots_expired"] > 0 and removed["files_deleted"] >= 3
        assert session.execute("SELECT sum(v) FROM raw.t").fetchone()[0] == 20 * 4 + 20 * 7
    with lake.read_only() as ro:
        assert sorted(ro.execute("SELECT partition_date, count(*), sum(v) FROM raw.t "
                                 "GROUP BY ALL").fetchall()) == [(D1, 20, 80), (D2, 20, 140)]
        with pytest.raises(duckdb.Error):  # expired: time travel no longer reaches it
            ro.execute(f"SELECT count(*) FROM raw.t AT (VERSION => {first})").fetchall()
        listed = {Path(row[0]) for row in ro.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 't', schema => 'raw')").fetchall()}
    assert _data_files(lake) == listed  # every file left on disk is one the snapshot reads


def test_a_data_file_deleted_by_hand_fails_the_read_naming_it(lake: lakes.Lake) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)] * 20))], [D1])
    (victim,) = _data_files(lake)
    victim.unlink()
    with lake.read_only() as ro, pytest.raises(duckdb.Error, match=victim.name):
        ro.execute("SELECT sum(v) FROM raw.t").fetchall()


def test_a_data_file_corrupted_by_hand_fails_the_read_naming_it(lake: lakes.Lake) -> None:
    _replace(lake, [("raw.t", _frame([(D1, 1)] * 20))], [D1])
    (victim,) = _data_files(lake)
    content = victim.read_bytes()
    victim.write_bytes(content[: len(content) // 2])  # a torn copy: no footer
    with lake.read_only() as ro, pytest.raises(duckdb.Error, match=victim.name):
        ro.execute("SELECT sum(v) FROM raw.t").fetchall()


def test_writes_cost_the_partition_not_the_lake(lake: lakes.Lake) -> None:
    days = [D1 + dt.timedelta(days=n) for n in range(30)]
    _replace(lake, [("raw.t", pl.DataFrame({"partition_date": days * 1000,
                                            "v": list(range(30_000))}))], days)
    before = {path: (path.stat().st_size, path.stat().st_mtime_ns)
              for path in _data_files(lake)}
    _replace(lake, [("raw.t", _frame([(D2, 5)] * 20))], [D2])
    added = _data_files(lake) - before.keys()
    # The day's new rows, and the positions of its old rows in the 30-day file: no other file
    # is rewritten or copied, and what is added is a small fraction of the table.
    assert len(added) == 2
    assert len([p for p in added if p.name.endswith("-delete.parquet")]) == 1
    assert sum(p.stat().st_size for p in added) < sum(size for size, _ in before.values()) / 4
    assert all((p.stat().st_size, p.stat().st_mtime_ns) == stamp for p, stamp in before.items())
    with lake.read_only() as ro:
        assert ro.execute("SELECT count(*), sum(v) FROM raw.t WHERE partition_date = $d",
                          {"d": D2}).fetchone() == (20, 100)
        assert ro.execute("SELECT count(*) FROM raw.t").fetchone()[0] == 29 * 1000 + 20


# --- migration from the previous storage -----------------------------------------------------

def test_the_previous_storage_is_refused_until_migrated(tmp_path: Path) -> None:
    previous = tmp_path / lakes.PREVIOUS_STORAGE
    old = duckdb.connect(str(previous))
    old.execute("CREATE SCHEMA raw; CREATE TABLE raw.t AS SELECT DATE '2013-01-01' AS "
                "partition_date, 1 AS v UNION ALL SELECT DATE '2013-01-02', 2")
    old.execute("CREATE SCHEMA models; CREATE TABLE models.registry AS SELECT 'abc' AS "
                "model_version")
    old.close()
    (tmp_path / "warehouse.duckdb").write_bytes(previous.read_bytes())
    folder = tmp_path / "lake"
    refusing = lakes.Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files",
                          previous_storage=previous)
    with (pytest.raises(lakes.PreviousStorageError,
                        match=rf"{previous} is the previous storage .*`batch-platform migrate`"),
          refusing.connect()):
        pass
    migrating = lakes.Lake(refusing.catalog, refusing.data_path)
    said = migrate(tmp_path, migrating)
    assert said.startswith(f"migrated 2 table(s), 3 rows, from {previous} into the lake")
    assert not previous.exists() and (tmp_path / "pipeline.duckdb.migrated").exists()
    assert (tmp_path / "warehouse.duckdb.migrated").exists()
    with refusing.read_only() as ro:
        assert sorted(ro.execute("SELECT * FROM raw.t").fetchall()) == [(D1, 1), (D2, 2)]
        assert ro.execute("SELECT * FROM models.registry").fetchall() == [("abc",)]
    assert migrate(tmp_path, migrating) == f"nothing to migrate: {previous} does not exist"


# --- the lock --------------------------------------------------------------------------------

@pytest.fixture
def lock_holder(lake: lakes.Lake) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lake's writer lock until its stdin is closed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lake.lock_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_lock_timeout_names_the_holder(lake: lakes.Lake,
                                       lock_holder: subprocess.Popen[str]) -> None:
    started = time.monotonic()
    with pytest.raises(files.LockTimeout) as raised:
        _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1], run_id="r1")
    # The holder never lets go: the wait ends at the 0.5 s timeout (a loaded machine adds).
    assert 0.5 <= time.monotonic() - started < 10
    message = str(raised.value)
    assert message.startswith(f"waited 0.5s for {lake.lock_path} to commit test write by run r1")
    assert f"held by process {lock_holder.pid} on " in message
    assert "(hold the lock for a test, since " in message
    assert "BATCH_PLATFORM_LOCK_TIMEOUT_SECONDS" in message
    with lake.read_only() as ro:  # readers never wait for the lock
        assert not wh.table_exists(ro, "raw.t")


def test_lock_is_free_once_the_holder_finishes(lake: lakes.Lake,
                                               lock_holder: subprocess.Popen[str]) -> None:
    assert lock_holder.stdin is not None
    lock_holder.stdin.close()
    assert lock_holder.wait(timeout=30) == 0
    _replace(lake, [("raw.t", _frame([(D1, 1)]))], [D1])
    assert lake.lock_path.read_text() == ""  # the holder record is cleared on release


def test_a_crashed_holder_leaves_no_stale_lock(lake: lakes.Lake,
                                               lock_holder: subprocess.Popen[str]) -> None:
    os.kill(lock_holder.pid, signal.SIGKILL)
    lock_holder.wait(timeout=30)
    with exclusive_lock(lake.lock_path, 0.5, "after a crash"):
        assert f'"pid": {os.getpid()}' in lake.lock_path.read_text()


# --- spilling --------------------------------------------------------------------------------

SPILL_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from batch_platform.platform.storage.lake import Lake
with Lake(sys.argv[1], Path(sys.argv[2]), memory_limit="32MB").connect() as con:
    con.execute("SELECT count(*) FROM (SELECT random() AS x FROM range(3000000) ORDER BY x)")
"""


def test_a_process_that_spills_leaves_another_process_spill_files(lake: lakes.Lake,
                                                                  con: duckdb.DuckDBPyConnection
                                                                  ) -> None:
    # DuckDB names spill files alike in every process and an instance deletes every such
    # file of its directory when it closes: each process spills into its own.
    ours = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
    ours.mkdir(parents=True, exist_ok=True)
    sorting = ours / "duckdb_temp_storage_DEFAULT-0.tmp"  # as a sort of this process leaves it
    sorting.write_bytes(b"spilled rows")
    gone = lake.data_path.parent / "tmp" / "999999999"  # a process killed mid-sort
    gone.mkdir()
    subprocess.run([sys.executable, "-c", SPILL_IN_ANOTHER_PROCESS, lake.catalog,
                    str(lake.data_path)], check=True, timeout=120)
    assert sorting.read_bytes() == b"spilled rows"
    assert not gone.exists()


def test_a_session_spills_before_any_spill_directory_exists(tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    with lakes.Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files",
                    memory_limit="32MB").connect() as con:
        assert con.execute("SELECT count(*) FROM (SELECT random() AS x FROM range(3000000) "
                           "ORDER BY x)").fetchone() == (3_000_000,)
