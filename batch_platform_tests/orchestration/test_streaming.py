"""Every stage streams: small chunks give the rows of one chunk per partition, and leave no
staged files behind, whether the step succeeds or fails."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest import landing
from batch_platform_tests.conftest import WEEK, Platform

# What differs between two runs of the same day: who ran it and when.
RUN_COLUMNS = ("_ingested_at", "_run_id", "run_id", "scored_at", "reported_at")
TABLES = {
    "raw.flights": ("carrier", "flight", "origin", "sched_dep_time"),
    "quarantine.weather": ("_line_number",),
    "raw.weather": ("origin", "time_hour"),
    "features.flights": ("flight_id",),
    "predictions.flights": ("flight_id",),
    "reports.flights_daily": ("segment_type", "segment"),
}


def snapshot(platform: Platform, days: list[dt.date]) -> dict[str, pl.DataFrame]:
    tables = {}
    for table, order in TABLES.items():
        rows = platform.query(f"SELECT * FROM {table} WHERE partition_date = ANY(?) "
                              f"ORDER BY partition_date, {', '.join(order)}", [days])
        tables[table] = rows.drop([c for c in RUN_COLUMNS if c in rows.columns])
    return tables


def staged_files(platform: Platform) -> list[Path]:
    folder = platform.settings.staging_dir
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_small_chunks_give_the_same_rows_as_the_default(platform: Platform) -> None:
    days = days_between(WEEK[1] - dt.timedelta(days=1), WEEK[1])
    before = snapshot(platform, days)
    assert before["predictions.flights"].height > 1000
    # 97 rows: every day's landing file, features and predictions split into many chunks.
    platform.run("flights_daily", days[0], days[-1],
                 settings=platform.settings.with_overrides(chunk_rows=97))
    after = snapshot(platform, days)
    for table, rows in before.items():
        assert after[table].height == rows.height, table
        assert_frame_equal(after[table], rows, check_exact=True)
    assert staged_files(platform) == []


def test_a_failed_step_leaves_no_staged_files(platform: Platform, landing_restored: Path
                                              ) -> None:
    day = WEEK[1]
    path = landing.landing_file(landing_restored, "flights", day)
    lines = path.read_text().splitlines()
    # Every row of the second half repeats a row of the first: too many rejected rows.
    path.write_text("\n".join([*lines, *lines[1:]]) + "\n")
    before = snapshot(platform, [day])
    result = platform.run("flights_daily", day, settings=platform.settings.with_overrides(
        chunk_rows=200), raise_on_error=False)
    assert not result.success
    assert "key: duplicate of line" in str(result.all_events)
    assert staged_files(platform) == []
    after = snapshot(platform, [day])
    for table, rows in before.items():
        assert_frame_equal(after[table], rows)
