"""Warehouse: transactional partition writes, a lock that names its holder, atomic publishing."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest

from batch_platform.platform import files
from batch_platform.platform.files import exclusive_lock
from batch_platform.platform.storage import warehouse as wh

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

COUNT_PUBLISHED = """
import sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT sum(v) FROM raw.t").fetchone()[0])
"""


@pytest.fixture
def warehouse(tmp_path: Path) -> wh.Warehouse:
    return wh.Warehouse(tmp_path / "pipeline.duckdb", tmp_path / "warehouse.duckdb",
                        lock_timeout_seconds=0.5)


@pytest.fixture
def con(warehouse: wh.Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse.connect("write test rows") as connection:
        yield connection


def _frame(rows: list[tuple[dt.date, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"partition_date": pl.Date, "v": pl.Int64}, orient="row")


def _rows(con: duckdb.DuckDBPyConnection, table: str = "raw.t") -> list[tuple]:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall())


@pytest.fixture
def two_days(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """raw.t holds D1 (1, 2) and D2 (3), quarantine.t holds D1 (9)."""
    wh.replace_partitions(con, [("raw.t", _frame([(D1, 1), (D1, 2), (D2, 3)])),
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


def test_writing_twice_leaves_the_same_rows(con: duckdb.DuckDBPyConnection,
                                            two_days: list[tuple]) -> None:
    for _ in range(2):
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 1), (D1, 2), (D2, 3)])),
                                    ("quarantine.t", _frame([(D1, 9)]))], [D1, D2])
    assert _rows(con) == two_days
    assert _rows(con, "quarantine.t") == [(D1, 9)]


def test_replacing_one_partition_leaves_the_others(con: duckdb.DuckDBPyConnection,
                                                   two_days: list[tuple]) -> None:
    wh.replace_partitions(con, [("raw.t", _frame([(D1, 7)]))], [D1])
    assert _rows(con) == [(D1, 7), (D2, 3)]


def test_column_order_of_the_frame_does_not_matter(con: duckdb.DuckDBPyConnection,
                                                    two_days: list[tuple]) -> None:
    wh.replace_partitions(con, [("raw.t", _frame([(D1, 8)]).select("v", "partition_date"))],
                          [D1])
    assert _rows(con) == [(D1, 8), (D2, 3)]


def test_an_empty_frame_clears_its_partitions(con: duckdb.DuckDBPyConnection,
                                              two_days: list[tuple]) -> None:
    # A rerun without rejected rows must not leave the old rejected rows behind.
    wh.replace_partitions(con, [("quarantine.t", _frame([]))], [D1])
    assert _rows(con, "quarantine.t") == []
    assert _rows(con) == two_days


def test_new_columns_are_refused_and_nothing_changes(con: duckdb.DuckDBPyConnection,
                                                     two_days: list[tuple]) -> None:
    wider = _frame([(D1, 5)]).with_columns(pl.lit("x").alias("extra"))
    with pytest.raises(wh.SchemaMismatchError) as raised:
        wh.replace_partitions(con, [("raw.t", wider)], [D1])
    message = str(raised.value)
    assert message.startswith("raw.t has columns the new data does not match")
    assert "(missing [], new ['extra'])" in message
    assert _rows(con) == two_days
    assert [r[0] for r in con.execute("DESCRIBE raw.t").fetchall()] == ["partition_date", "v"]


def test_missing_columns_are_refused(con: duckdb.DuckDBPyConnection, two_days: list[tuple]) -> None:
    with pytest.raises(wh.SchemaMismatchError, match=r"missing \['v'\], new \[\]"):
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 5)]).drop("v"))], [D1])
    assert _rows(con) == two_days


def test_rows_outside_the_partitions_are_refused(con: duckdb.DuckDBPyConnection,
                                                 two_days: list[tuple]) -> None:
    with pytest.raises(ValueError) as raised:
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 5), (D2, 6)]))], [D1])
    assert str(raised.value) == ("1 row(s) for raw.t fall outside the partitions being written "
                                 "(2013-01-01..2013-01-01)")
    assert _rows(con) == two_days


def test_two_tables_are_written_together_or_not_at_all(con: duckdb.DuckDBPyConnection,
                                                       two_days: list[tuple]) -> None:
    # The second insert fails inside the transaction, after the first table was replaced.
    bad = pl.DataFrame({"partition_date": [D1], "v": ["not a number"]})
    with pytest.raises(duckdb.ConversionException):
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 100)])), ("quarantine.t", bad)], [D1])
    assert _rows(con) == two_days
    assert _rows(con, "quarantine.t") == [(D1, 9)]
    # The connection is usable afterwards: no transaction was left open.
    wh.replace_partitions(con, [("raw.t", _frame([(D1, 100)]))], [D1])
    assert _rows(con) == [(D1, 100), (D2, 3)]


def test_changes_are_durable_across_connections(warehouse: wh.Warehouse) -> None:
    with warehouse.connect("write") as con:
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 1)]))], [D1])
    with warehouse.connect("read") as con:
        assert _rows(con) == [(D1, 1)]


def test_replace_table_replaces_every_row(con: duckdb.DuckDBPyConnection) -> None:
    wh.replace_table(con, "raw.planes", pl.DataFrame({"tailnum": ["N1", "N2"]}))
    wh.replace_table(con, "raw.planes", pl.DataFrame({"tailnum": ["N3"]}))
    assert _rows(con, "raw.planes") == [("N3",)]
    assert wh.read_table(con, "raw.planes").get_column("tailnum").to_list() == ["N3"]


def test_reading_a_table_that_does_not_exist(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(wh.MissingDataError, match=r"raw\.nothing does not exist yet"):
        wh.read_table(con, "raw.nothing")
    with pytest.raises(wh.MissingDataError, match=r"raw\.nothing does not exist yet"):
        wh.read_partitions(con, "raw.nothing", D1, D2)
    assert wh.partition_counts(con, "raw.nothing", D1, D2) == {}
    assert not wh.table_exists(con, "raw.nothing")


def test_partition_times_are_the_newest_or_oldest_per_day(con: duckdb.DuckDBPyConnection
                                                          ) -> None:
    early, late = (dt.datetime(2013, 1, 2, h, tzinfo=dt.UTC) for h in (6, 9))
    frame = pl.DataFrame({"partition_date": [D1, D1, D2], "at": [early, late, early]},
                         schema={"partition_date": pl.Date, "at": pl.Datetime("us", "UTC")})
    wh.replace_partitions(con, [("raw.times", frame)], [D1, D2])
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


def test_bad_table_name_is_refused_before_any_sql(con: duckdb.DuckDBPyConnection,
                                                  two_days: list[tuple]) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        wh.replace_partitions(con, [("raw.t; DROP TABLE raw.t", _frame([(D1, 1)]))], [D1])
    with pytest.raises(ValueError, match="invalid column name"):
        wh.read_table(con, "raw.t", columns=["v; DROP TABLE raw.t"])
    assert _rows(con) == two_days


def test_partition_values_are_dates_not_sql(con: duckdb.DuckDBPyConnection,
                                            two_days: list[tuple]) -> None:
    injected = "2013-01-01' OR TRUE; DROP TABLE raw.t; --"
    with pytest.raises(pl.exceptions.InvalidOperationError):
        wh.replace_partitions(con, [("raw.t", _frame([]))], [injected])  # type: ignore[list-item]
    assert _rows(con) == two_days
    # Read filters are bound parameters: text in them is a value, never SQL. Interpolated,
    # "OR TRUE" would return every row and the DROP would run.
    widened = "2013-01-02' OR TRUE; DROP TABLE raw.t; --"
    frame = wh.read_partitions(con, "raw.t", widened, D2)  # type: ignore[arg-type]
    assert frame.rows() == [(D2, 3)]
    with pytest.raises(duckdb.ConversionException):
        wh.read_partitions(con, "raw.t", "DROP TABLE raw.t", D2)  # type: ignore[arg-type]
    assert _rows(con) == two_days


# --- publishing ------------------------------------------------------------------------------

def _write_and_publish(warehouse: wh.Warehouse, value: int) -> None:
    warehouse.write_and_publish(
        lambda con: wh.replace_partitions(con, [("raw.t", _frame([(D1, value)])),
                                                ("raw.u", _frame([(D1, value)]))], [D1]),
        "write")


def test_a_failed_write_publishes_nothing(warehouse: wh.Warehouse) -> None:
    _write_and_publish(warehouse, 1)
    published = warehouse.published_path.read_bytes()

    def write_then_fail(con: duckdb.DuckDBPyConnection) -> None:
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 2)]))], [D1])
        raise RuntimeError("the step failed after its write")

    with pytest.raises(RuntimeError, match="after its write"):
        warehouse.write_and_publish(write_then_fail, "write")
    assert warehouse.published_path.read_bytes() == published
    with wh.read_only(warehouse.published_path) as ro:
        assert ro.execute("SELECT v FROM raw.t").fetchall() == [(1,)]


def _published_sum_in_another_process(path: Path) -> int:
    done = subprocess.run([sys.executable, "-c", COUNT_PUBLISHED, str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.strip())


def test_publish_without_a_pipeline_database(warehouse: wh.Warehouse) -> None:
    assert warehouse.publish() == 0.0
    assert not warehouse.published_path.exists()
    with (pytest.raises(FileNotFoundError, match=re.escape(str(warehouse.published_path))),
          wh.read_only(warehouse.published_path)):
        pass


def test_publish_copies_the_pipeline_database(warehouse: wh.Warehouse) -> None:
    _write_and_publish(warehouse, 1)
    assert sorted(p.name for p in warehouse.published_path.parent.iterdir()
                  if not p.name.startswith("pipeline")) == ["warehouse.duckdb"]  # no temp file
    with wh.read_only(warehouse.published_path) as ro:
        assert ro.execute("SELECT partition_date, v FROM raw.t").fetchall() == [(D1, 1)]


def test_open_session_keeps_its_snapshot_while_new_ones_see_the_latest(
    warehouse: wh.Warehouse
) -> None:
    _write_and_publish(warehouse, 1)
    with (wh.read_only(warehouse.published_path) as old,
          open(warehouse.published_path, "rb") as old_file):
        old_bytes = old_file.read()
        assert old.execute("SELECT sum(v) FROM raw.t").fetchone()[0] == 1
        _write_and_publish(warehouse, 2)
        # Publishing swapped in a new file: the one sessions hold open was never written to.
        old_file.seek(0)
        assert old_file.read() == old_bytes
        assert os.fstat(old_file.fileno()).st_ino != warehouse.published_path.stat().st_ino
        # An analyst who opens the warehouse now (another process) sees the new data...
        assert _published_sum_in_another_process(warehouse.published_path) == 2
        # ...while the open session keeps working on the version it opened, even for a table
        # it had not read yet.
        assert old.execute("SELECT sum(v) FROM raw.t").fetchone()[0] == 1
        assert old.execute("SELECT sum(v) FROM raw.u").fetchone()[0] == 1
    with wh.read_only(warehouse.published_path) as new:
        assert new.execute("SELECT sum(v) FROM raw.u").fetchone()[0] == 2


def test_read_only_session_refuses_writes(warehouse: wh.Warehouse) -> None:
    _write_and_publish(warehouse, 1)
    with wh.read_only(warehouse.published_path) as ro:
        with pytest.raises(duckdb.Error, match="read-only"):
            ro.execute("DELETE FROM raw.t")
        assert ro.execute("SELECT count(*) FROM raw.t").fetchone()[0] == 1


# --- the lock --------------------------------------------------------------------------------

@pytest.fixture
def lock_holder(warehouse: wh.Warehouse) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the pipeline lock until its stdin is closed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(warehouse.lock_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_lock_timeout_names_the_holder(warehouse: wh.Warehouse,
                                       lock_holder: subprocess.Popen[str]) -> None:
    started = time.monotonic()
    with pytest.raises(files.LockTimeout) as raised, warehouse.connect("write test rows"):
        pass
    assert 0.5 <= time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(f"waited 0.5s for {warehouse.lock_path} to write test rows")
    assert f"held by process {lock_holder.pid} on " in message
    assert "(hold the lock for a test, since " in message
    assert "BATCH_PLATFORM_LOCK_TIMEOUT_SECONDS" in message
    assert not warehouse.pipeline_path.exists()  # it never got to open the database
    with pytest.raises(files.LockTimeout):
        warehouse.publish()


def test_lock_is_free_once_the_holder_finishes(warehouse: wh.Warehouse,
                                               lock_holder: subprocess.Popen[str]) -> None:
    assert lock_holder.stdin is not None
    lock_holder.stdin.close()
    assert lock_holder.wait(timeout=30) == 0
    with warehouse.connect("write") as con:
        wh.replace_partitions(con, [("raw.t", _frame([(D1, 1)]))], [D1])
    assert warehouse.lock_path.read_text() == ""  # the holder record is cleared on release


def test_a_crashed_holder_leaves_no_stale_lock(warehouse: wh.Warehouse,
                                               lock_holder: subprocess.Popen[str]) -> None:
    os.kill(lock_holder.pid, signal.SIGKILL)
    lock_holder.wait(timeout=30)
    with exclusive_lock(warehouse.lock_path, 0.5, "after a crash"):
        assert f'"pid": {os.getpid()}' in warehouse.lock_path.read_text()
