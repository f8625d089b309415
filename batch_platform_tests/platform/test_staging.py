"""Staged Parquet: chunks in, the same rows out, in order; nothing left behind."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.storage import staging, warehouse
from batch_platform.platform.storage.lake import Lake

DAY = dt.date(2013, 1, 1)


def frame(start: int, rows: int) -> pl.DataFrame:
    return pl.DataFrame({"partition_date": [DAY] * rows, "n": list(range(start, start + rows)),
                         "line": list(range(rows))})


def test_small_chunks_are_buffered_into_parts_and_read_back_in_order(tmp_path: Path) -> None:
    table = staging.StagedTable(tmp_path / "t", part_rows=100)
    for start in range(0, 1000, 30):
        table.write(frame(start, 30))
    table.close()
    assert table.rows == 1020
    assert len(table.files) == 9  # buffered up to 100 rows (120 each), then the rest
    back = pl.concat(staging.chunks(table.files, 64))
    assert_frame_equal(back, pl.concat(frame(s, 30) for s in range(0, 1000, 30)))
    assert max(c.height for c in staging.chunks(table.files, 64)) == 64


def test_a_table_without_rows_still_has_its_columns(tmp_path: Path) -> None:
    table = staging.StagedTable(tmp_path / "t", part_rows=10, exclude=("line",))
    table.write(frame(0, 0))
    table.close()
    assert len(table.files) == 1
    assert table.empty().columns == ["partition_date", "n"]
    (chunk,) = staging.chunks(table.files, 5)
    assert chunk.height == 0 and chunk.columns == ["partition_date", "n", "line"]


def test_a_chunk_with_other_columns_is_refused(tmp_path: Path) -> None:
    table = staging.StagedTable(tmp_path / "t", part_rows=10)
    table.write(frame(0, 3))
    with pytest.raises(ValueError, match="a chunk has columns"):
        table.write(frame(0, 3).rename({"n": "m"}))


def test_staged_rows_replace_a_partition_without_the_excluded_columns(tmp_path: Path) -> None:
    lake = Lake(f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}", tmp_path / "lake" / "files")

    def replace(rows: warehouse.Rows) -> None:
        lake.commit(lambda con: warehouse.replace_partitions(con, [("s.t", rows)], [DAY]),
                    "test", {})

    replace(frame(0, 5).drop("line"))
    table = staging.StagedTable(tmp_path / "t", part_rows=4, exclude=("line",))
    for start in (100, 104, 108):
        table.write(frame(start, 4))
    replace(table.close())
    with lake.read_only() as con:
        assert con.execute("SELECT n FROM s.t ORDER BY n").fetchall() == [
            (n,) for n in range(100, 112)]
    other_day = staging.StagedTable(tmp_path / "u", part_rows=4)
    other_day.write(frame(0, 2).with_columns(pl.lit(dt.date(2013, 1, 2)).alias("partition_date"))
                    .drop("line"))
    with pytest.raises(ValueError, match=r"2 row\(s\) for s\.t fall outside the partitions"):
        replace(other_day.close())
    with lake.read_only() as con:
        assert con.execute("SELECT count(*) FROM s.t").fetchone() == (12,)


def test_export_streams_a_query_to_parquet(tmp_path: Path) -> None:
    con = duckdb.connect()
    place = staging.Staging(tmp_path / "stage", chunk_rows=1000)
    path = place.export(con, "numbers", "SELECT range AS n FROM range($n)", {"n": 2500})
    assert staging.row_count(path) == 2500
    assert [c.height for c in staging.chunks([path], 1000)] == [1000, 1000, 500]


def test_the_staging_directory_is_removed_even_when_the_step_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging.staging(tmp_path, "run-1", "raw/x", 10) as place:
        place.table("t").write(frame(0, 20))
        assert any(place.root.rglob("*.parquet"))
        raise RuntimeError("the step failed")
    assert list(tmp_path.iterdir()) == []


def test_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / "step-run_1-999999999-abcdef12"
    alive = tmp_path / f"step-run_2-{os.getpid()}-abcdef12"
    # Another user of the directory, whose name happens to end like a dead step's.
    other = tmp_path / "84d63916-57e7-465e-4636-f8fdc96e28cc"
    for folder in (dead, alive, other):
        (folder / "step").mkdir(parents=True)
    assert staging.remove_orphans(tmp_path) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()
