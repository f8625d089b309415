"""The test platforms themselves: a copy of the prepared slice reads and writes its own files and
keeps the slice's Dagster history; the prepared slice never changes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb

from batch_platform.platform.dates import days_between
from batch_platform_tests.conftest import (
    SHARED_BY_LINK,
    WEEK,
    Platform,
    PreparedSlice,
    attach_lake,
    fingerprint,
)


def contents(root: Path) -> dict[str, str]:
    """Every file under ``root`` by its bytes, the linked extensions left out."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file() and not any(path.relative_to(root).is_relative_to(shared)
                                          for shared in SHARED_BY_LINK)}


def test_a_run_in_a_copy_writes_the_copys_files_and_leaves_the_slice_unchanged(
    prepared_slice: PreparedSlice, own_platform: Platform
) -> None:
    data_dir = own_platform.settings.data_dir
    copy_root = data_dir.parent
    prepared = contents(prepared_slice.root)
    # Only the extensions are shared by a hard link: no file a test might write in place.
    prepared_inodes = {path.stat().st_ino for path in prepared_slice.root.rglob("*")
                       if path.is_file()}
    shared = [path for path in copy_root.rglob("*")
              if path.is_file() and path.stat().st_ino in prepared_inodes]
    assert shared and all(path.relative_to(copy_root).is_relative_to(SHARED_BY_LINK[0])
                          for path in shared)
    catalog = sqlite3.connect(f"file:{data_dir / 'lake' / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        (data_path,) = catalog.execute("SELECT value FROM ducklake_metadata "
                                       "WHERE key = 'data_path'").fetchone()
    finally:
        catalog.close()
    assert data_path == f"{data_dir / 'lake' / 'files'}/"

    before = fingerprint(own_platform)
    day = WEEK[1]
    result = own_platform.run("flights_predict", day)
    assert result.success
    after = fingerprint(own_platform)
    assert after["snapshot"] > before["snapshot"] and after["runs"] == before["runs"] + 1
    assert set(after["files"]) > set(before["files"])  # the day's new Parquet files

    # What the copy's catalog lists is the copy's files, for the pipeline and for an analyst
    # attaching with the documented line (which does not override the data path).
    listed = [Path(row[0]) for row in own_platform.query(
        "SELECT data_file FROM ducklake_list_files('lake', 'flights', schema => 'predictions')"
    ).rows()]
    assert listed and all(path.is_relative_to(data_dir) and path.exists() for path in listed)
    analyst = duckdb.connect()
    try:
        analyst.execute(attach_lake(data_dir))
        runs = analyst.execute("SELECT DISTINCT run_id FROM predictions.flights "
                               "WHERE partition_date = ?", [day]).fetchall()
    finally:
        analyst.close()
    assert runs == [(result.run_id,)]

    assert contents(prepared_slice.root) == prepared


def test_a_copy_keeps_the_slices_dagster_history(own_platform: Platform) -> None:
    instance = own_platform.instance
    assert instance.get_runs_count() == 3  # features, training, the week
    predictions = dg.AssetKey(["predictions", "flights"])
    assert instance.get_materialized_partitions(predictions) == {
        day.isoformat() for day in days_between(*WEEK)}
