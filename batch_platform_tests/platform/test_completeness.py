"""A landing file is read only when whole: manifests, settle times, and a day's rows against
its history, on real landing files of the flights feed."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.ingest import arrivals
from batch_platform.platform.ingest.completeness import (
    MANIFEST,
    RENAMED,
    SETTLED,
    IncompleteLandingError,
    incomplete,
    manifest_path,
    read_manifest,
    require_complete,
)
from batch_platform.platform.monitoring.audits import ERROR, WARN, RowHistory, audit_row_counts
from batch_platform.use_cases.flights import landing as flights_landing

DAY = dt.date(2013, 3, 14)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    """The real flights and weather files of DAY, with their manifests."""
    flights_landing.land(tmp_path, [DAY], with_reference=False)
    return tmp_path / "flights" / f"{DAY}.csv"


def test_the_lander_writes_a_manifest_that_describes_the_file(landed: Path) -> None:
    manifest = read_manifest(landed)
    assert manifest is not None
    payload = landed.read_bytes()
    assert manifest.bytes == len(payload)
    assert manifest.rows == pl.read_csv(landed, infer_schema=False).height == \
        payload.count(b"\n") - 1
    assert incomplete(landed, MANIFEST, NOW, 10) is None
    # Landing again changes nothing, not even the manifest's time.
    before = manifest_path(landed).stat().st_mtime_ns
    summary = flights_landing.land(landed.parent.parent, [DAY], with_reference=False)
    assert summary.files_written == 0
    assert manifest_path(landed).stat().st_mtime_ns == before


def test_a_file_cut_short_is_not_complete(landed: Path) -> None:
    full = landed.read_bytes()
    lines = full.splitlines(keepends=True)
    landed.write_bytes(b"".join(lines[:len(lines) * 95 // 100]))  # the feed is still writing
    reason = incomplete(landed, MANIFEST, NOW, 10)
    assert reason is not None
    assert reason.startswith(f"it holds {landed.stat().st_size:,} bytes, its manifest says "
                             f"{len(full):,} ({len(lines) - 1:,} rows)")
    where = f"flights landing file {landed} (partition {DAY})"
    with pytest.raises(IncompleteLandingError) as raised:
        require_complete(landed, MANIFEST, where, NOW, 10)
    assert str(raised.value) == (f"{where} is not complete: {reason}; nothing of the day was "
                                 "read: run it again once the file is whole")
    assert "\n" not in str(raised.value)


def test_a_file_changed_after_its_manifest_is_not_complete(landed: Path) -> None:
    payload = bytearray(landed.read_bytes())
    payload[-3] = ord("9") if payload[-3] != ord("9") else ord("8")  # same size, other bytes
    landed.write_bytes(bytes(payload))
    reason = incomplete(landed, MANIFEST, NOW, 10)
    assert reason is not None and "differs from its manifest's" in reason


def test_a_file_without_its_manifest_waits_for_it(landed: Path) -> None:
    manifest_path(landed).unlink()
    assert incomplete(landed, MANIFEST, NOW, 10) == (
        f"its manifest {landed.name}.manifest.json has not landed (the feed writes it last)")
    assert incomplete(landed, RENAMED, NOW, 10) is None  # a renamed file is whole as it is


def test_an_unreadable_manifest_says_what_it_must_hold(landed: Path) -> None:
    manifest_path(landed).write_text('{"rows": 3}')
    with pytest.raises(IncompleteLandingError, match=r'must be JSON with "rows", "bytes" and '
                                                     r'"sha256"'):
        incomplete(landed, MANIFEST, NOW, 10)


def test_a_settled_file_is_one_unchanged_for_the_settle_time(landed: Path) -> None:
    changed = landed.stat().st_mtime
    assert incomplete(landed, SETTLED, dt.datetime.fromtimestamp(changed + 60, dt.UTC),
                      10) is None
    reason = incomplete(landed, SETTLED, dt.datetime.fromtimestamp(changed + 3, dt.UTC), 10)
    assert reason == ("it changed 3s ago, less than BATCH_PLATFORM_LANDING_SETTLE_SECONDS=10: "
                      "it may still be being written")


def test_the_sensor_waits_for_the_manifest_then_requests_the_day(landed: Path) -> None:
    landing_dir = landed.parent.parent
    manifest = manifest_path(landed)
    kept = manifest.read_bytes()
    manifest.unlink()
    ways = {"flights": MANIFEST, "weather": MANIFEST}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    waiting = arrivals.scan(landing_dir, {}, DAY, DAY, later, 10, ["flights", "weather"], ways)
    assert waiting.arrivals == []
    assert waiting.waiting == [f"{landed}: its manifest {manifest.name} has not landed (the feed "
                               "writes it last)"]
    assert waiting.ignored == []  # the weather file's manifest is no stray file
    manifest.write_bytes(kept)
    ready = arrivals.scan(landing_dir, arrivals.decode_cursor(arrivals.encode_cursor(
        waiting.seen)), DAY, DAY, later, 10, ["flights", "weather"], ways)
    assert [arrival.day for arrival in ready.arrivals] == [DAY]


def real_rows_per_day(source: str) -> dict[dt.date, int]:
    frame = flights_landing.read_source_text(source)
    days = frame.select(pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int8),
                                pl.col("day").cast(pl.Int8)).alias("day")).group_by("day").len()
    return dict(zip(days["day"], days["len"], strict=True))


def test_every_real_day_of_2013_passes_the_declared_history_and_half_a_day_does_not() -> None:
    from batch_platform import catalog

    flights = next(entry.use_case for entry in catalog.load()[1]
                   if entry.use_case.name == "flights")
    history = flights.sources["flights"].rows_vs_history
    assert history == RowHistory(weeks=4, tolerance=0.4, min_weeks=3)
    counts = real_rows_per_day("flights")
    audit = audit_row_counts("flights", counts, (300, 2000), history)
    assert audit.passed, audit.description
    assert audit.metadata["days_far_from_history"] == 0

    # Thanksgiving's Thursday a week later, delivered in half: blocked, with the figures.
    day = dt.date(2013, 12, 5)
    before = {d: n for d, n in counts.items() if d < day}
    half = counts[day] // 2
    audit = audit_row_counts("flights", {day: half}, (300, 2000), history, before)
    expected = sorted(counts[day - dt.timedelta(weeks=w)] for w in range(1, 5))
    median = (expected[1] + expected[2]) / 2
    assert not audit.passed and audit.severity == ERROR and audit.failed_days == {day: ERROR}
    assert audit.description == (
        f"flights: {day} has {half:,} rows, expected about {median:,.0f} (the median of the "
        "same weekday over the previous 4 weeks, ±40%): a partial or duplicated delivery?")


def test_without_enough_history_a_day_is_not_judged_and_the_range_only_warns() -> None:
    history = RowHistory(weeks=4, tolerance=0.4, min_weeks=3)
    day = dt.date(2013, 1, 17)
    two_weeks = {dt.date(2013, 1, 10): 900, dt.date(2013, 1, 3): 900}
    audit = audit_row_counts("flights", {day: 100}, (300, 2000), history, two_weeks)
    assert not audit.passed and audit.severity == WARN and audit.failed_days == {day: WARN}
    assert audit.metadata["days_far_from_history"] == 0
    # The run's own earlier days count as history too (a range scored as one run).
    run = {dt.date(2012, 12, 27) + dt.timedelta(weeks=w): 900 for w in range(3)} | {day: 100}
    audit = audit_row_counts("flights", run, (50, 2000), history)
    assert audit.failed_days == {day: ERROR}


def test_the_landing_folder_stays_free_of_temporary_files(landed: Path) -> None:
    names = sorted(os.listdir(landed.parent))
    assert names == [f"{DAY}.csv", f"{DAY}.csv.manifest.json"]
    assert json.loads(manifest_path(landed).read_text())["file"] == landed.name
