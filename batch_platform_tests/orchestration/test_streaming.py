"""Every stage streams: small chunks give the rows of one chunk per partition, and leave no
staged files behind, whether the step succeeds or fails. Each test reruns its own copy of the
platform (``own_platform``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest import landing
from batch_platform_tests.conftest import WEEK, Platform, partition_snapshot, seal

TABLES = ("raw.flights", "quarantine.weather", "raw.weather", "features.flights",
          "predictions.flights", "reports.flights_daily")


def snapshot(platform: Platform, days: list[dt.date]) -> dict[str, pl.DataFrame]:
    """The days as any clean run makes them: without who ran them and when."""
    return partition_snapshot(platform, TABLES, days, without_lineage=True)


def staged_files(platform: Platform) -> list[Path]:
    folder = platform.settings.staging_dir
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_small_chunks_give_the_same_rows_as_the_default(own_platform: Platform) -> None:
    days = days_between(WEEK[1] - dt.timedelta(days=1), WEEK[1])
    before = snapshot(own_platform, days)
    assert before["predictions.flights"].height > 1000
    # 97 rows: every day's landing file, features and predictions split into many chunks.
    own_platform.run("flights_daily", days[0], days[-1],
                     settings=own_platform.settings.with_overrides(chunk_rows=97))
    after = snapshot(own_platform, days)
    for table, rows in before.items():
        assert after[table].height == rows.height, table
        assert_frame_equal(after[table], rows, check_exact=True)
    assert staged_files(own_platform) == []


def test_a_failed_step_leaves_no_staged_files(own_platform: Platform) -> None:
    day = WEEK[1]
    path = landing.landing_file(own_platform.settings.landing_dir, "flights", day)
    lines = path.read_text().splitlines()
    # Every row of the second half repeats a row of the first: too many rejected rows.
    path.write_text("\n".join([*lines, *lines[1:]]) + "\n")
    seal(path)
    before = snapshot(own_platform, [day])
    small_chunks = own_platform.settings.with_overrides(chunk_rows=200)
    result = own_platform.run("flights_daily", day, settings=small_chunks, raise_on_error=False)
    assert not result.success
    assert "key: duplicate of line" in str(result.all_events)
    assert staged_files(own_platform) == []
    after = snapshot(own_platform, [day])
    for table, rows in before.items():
        assert_frame_equal(after[table], rows)
