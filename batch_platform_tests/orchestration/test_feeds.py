"""Nothing lost from a bad feed: a file still being written, a run that fails half-way and a
refused delivery leave every layer of every day as it was, and the rerun is exact."""

from __future__ import annotations

import datetime as dt

import polars as pl

from batch_platform.platform.ingest import landing
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.conftest import (
    WEEK,
    Platform,
    failure_messages,
    partition_snapshot,
    seal,
)

DAY, NEXT = dt.date(2013, 1, 17), dt.date(2013, 1, 18)
LAYERS = ("raw.flights", "raw.weather", "quarantine.flights", "features.flights",
          "predictions.flights", "reports.flights_daily")


def layers(platform: Platform, without_lineage: bool = False) -> dict[str, pl.DataFrame]:
    return partition_snapshot(platform, LAYERS, [DAY, NEXT], without_lineage=without_lineage)


def assert_every_layer_as(platform: Platform, before: dict[str, pl.DataFrame]) -> None:
    after = layers(platform)
    changed = [table for table in LAYERS if not after[table].equals(before[table])]
    assert not changed, f"{changed} changed after a failed run"


def flights_file(platform: Platform, day: dt.date = DAY):
    return landing.landing_file(platform.settings.landing_dir, "flights", day)


def test_a_file_still_being_written_is_not_read(own_platform: Platform) -> None:
    assert WEEK[0] <= DAY < NEXT <= WEEK[1]
    before = layers(own_platform)
    path = flights_file(own_platform)
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:len(lines) * 95 // 100]))  # its manifest landed before
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    first, *others = failure_messages(result).splitlines()
    assert first == (
        f"raw__flights: IncompleteLandingError: flights landing file {path} (partition {DAY}) "
        f"is not complete: it holds {path.stat().st_size:,} bytes, its manifest says "
        f"{len(whole):,} ({len(lines) - 1:,} rows): still being written, or replaced without a "
        "new manifest; nothing of the day was read: run it again once the file is whole")
    # The reference tables committed before it were undone; the steps after it cannot commit.
    assert all(f"RunRolledBackError: run {result.run_id} was rolled back after raw/flights "
               "failed" in other for other in others), others
    assert_every_layer_as(own_platform, before)
    # The feed finishes the file: the rerun gives the rows the day had.
    clean = layers(own_platform, without_lineage=True)
    path.write_bytes(whole)
    own_platform.run("flights_daily", DAY)
    after = layers(own_platform, without_lineage=True)
    assert all(after[table].equals(clean[table]) for table in LAYERS)


def test_a_run_that_fails_after_raw_leaves_raw_as_it_was(own_platform: Platform) -> None:
    """Distances landed in kilometres: raw accepts them, the features' drift check blocks the
    day, and the run's raw commit is undone, so the next day's statistics never see them."""
    before = layers(own_platform)
    path = flights_file(own_platform)
    frame = pl.read_csv(path, infer_schema=False)
    frame.with_columns((pl.col("distance").cast(pl.Float64) * 1.609).round(0).cast(pl.Int64)
                       .alias("distance")).write_csv(path)
    seal(path)
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    assert "features/flights 2013-01-17 not published" in failure_messages(result)
    assert "distance" in failure_messages(result)
    assert_every_layer_as(own_platform, before)
    undone = own_platform.query("SELECT run_id, reason, restored FROM platform.rolled_back_runs")
    assert undone["run_id"].to_list() == [result.run_id]
    assert undone["reason"][0].startswith("features/flights failed: features/flights "
                                          "2013-01-17 not published")
    assert "raw.flights 2013-01-17 restored to snapshot" in " ".join(undone["restored"][0])
    # The next day, scored again, reads the day's previous raw rows for its statistics.
    own_platform.run("flights_daily", NEXT)
    after = layers(own_platform, without_lineage=True)
    assert after["predictions.flights"].filter(pl.col("partition_date") == NEXT).select(
        "flight_id", "score").equals(before["predictions.flights"].filter(
            pl.col("partition_date") == NEXT).select("flight_id", "score"))


def test_a_failed_parallel_source_undoes_the_other_sources_commit(own_platform: Platform
                                                                  ) -> None:
    before = layers(own_platform)
    path = flights_file(own_platform)
    frame = pl.read_csv(path, infer_schema=False)
    frame.head(frame.height - 40).write_csv(path)  # a new delivery that raw accepts
    seal(path)
    weather = landing.landing_file(own_platform.settings.landing_dir, "weather", DAY)
    weather.unlink()
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    assert f"weather landing file {weather} (partition {DAY}) is missing" in \
        failure_messages(result)
    assert_every_layer_as(own_platform, before)  # raw.flights committed first, then undone


def test_a_refused_delivery_keeps_every_rejected_row_readable(own_platform: Platform) -> None:
    before = layers(own_platform)
    path = flights_file(own_platform)
    frame = pl.read_csv(path, infer_schema=False)
    bad = list(range(0, 60, 3))  # 20 rows with an hour that cannot be
    frame.with_columns(pl.when(pl.int_range(pl.len()).is_in(bad)).then(pl.lit("27"))
                       .otherwise(pl.col("hour")).alias("hour")).write_csv(path)
    seal(path)
    strict = own_platform.settings.with_overrides(max_reject_fraction=0.01)
    result = own_platform.run("flights_daily", DAY, settings=strict, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    assert f"20 of {frame.height} rows rejected" in message
    assert (f"Its 20 rejected rows and their reasons: quarantine.flights_refused WHERE "
            f"partition_date = '{DAY}'") in message
    assert_every_layer_as(own_platform, before)
    refused = own_platform.query("SELECT _line_number, reason FROM quarantine.flights_refused "
                                 "WHERE partition_date = ? ORDER BY _line_number", [DAY])
    assert refused["_line_number"].to_list() == [row + 2 for row in bad]  # the header is line 1
    assert all("hour: '27' must be between 0 and 23" in reason for reason in refused["reason"])
    # The fixed delivery is published, and the refused rows of the day are gone.
    flights_landing.land(own_platform.settings.landing_dir, [DAY], with_reference=False)
    own_platform.run("flights_daily", DAY, settings=strict)
    assert own_platform.query("SELECT count(*) FROM quarantine.flights_refused "
                              "WHERE partition_date = ?", [DAY]).item() == 0



def test_a_refused_day_of_a_range_keeps_only_its_own_rejected_rows(own_platform: Platform
                                                                    ) -> None:
    """The range's files are validated together: the refused day's rejected rows are kept
    apart, the next day's (validated in the same pass) are not, and no day is published."""
    before = layers(own_platform)
    for day, bad in ((DAY, list(range(0, 60, 3))), (NEXT, [5])):
        path = flights_file(own_platform, day)
        frame = pl.read_csv(path, infer_schema=False)
        frame.with_columns(pl.when(pl.int_range(pl.len()).is_in(bad)).then(pl.lit("27"))
                           .otherwise(pl.col("hour")).alias("hour")).write_csv(path)
        seal(path)
    strict = own_platform.settings.with_overrides(max_reject_fraction=0.01)
    result = own_platform.run("flights_daily", DAY, NEXT, settings=strict, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    assert f"{flights_file(own_platform, DAY)} (partition {DAY}): 20 of " in message
    assert (f"Its 20 rejected rows and their reasons: quarantine.flights_refused WHERE "
            f"partition_date = '{DAY}'") in message
    assert_every_layer_as(own_platform, before)
    refused = own_platform.query("SELECT partition_date, count(*) AS n FROM "
                                 "quarantine.flights_refused GROUP BY ALL")
    assert refused.rows() == [(DAY, 20)]

def test_half_a_day_with_a_consistent_manifest_is_blocked_by_its_history(own_platform: Platform
                                                                          ) -> None:
    """A feed that delivers part of a day, whole as far as its manifest says: the day's rows
    against the same weekday of the three weeks before block it, naming both counts."""
    day = WEEK[1] + dt.timedelta(weeks=1)  # a Monday after the slice's three Mondays
    own_platform.land(day)
    path = flights_file(own_platform, day)
    whole = path.read_bytes()
    frame = pl.read_csv(path, infer_schema=False)
    frame.head(frame.height // 2).write_csv(path)
    seal(path)
    before = partition_snapshot(own_platform, LAYERS, [day])
    result = own_platform.run("flights_daily", day, raise_on_error=False)
    assert not result.success
    mondays = own_platform.query(
        "SELECT count(*) AS n FROM raw.flights WHERE partition_date IN ($1, $2, $3) "
        "GROUP BY partition_date ORDER BY n",
        [day - dt.timedelta(weeks=w) for w in (1, 2, 3)])["n"].to_list()
    assert len(mondays) == 3
    assert (f"flights: {day} has {frame.height // 2:,} rows, expected about {mondays[1]:,} "
            "(the median of the same weekday over the previous 4 weeks, ±40%): a partial or "
            "duplicated delivery?") in failure_messages(result)
    after = partition_snapshot(own_platform, LAYERS, [day])
    assert all(after[table].equals(before[table]) for table in LAYERS)
    # A day known to be short (every other flight cancelled) is published with a larger
    # tolerance.
    thinned = frame.gather_every(2)
    thinned.write_csv(path)
    seal(path)
    lenient = own_platform.settings.with_overrides(rows_vs_history_tolerance=0.6)
    assert own_platform.run("flights_daily", day, settings=lenient).success
    assert own_platform.query(
        "SELECT (SELECT count(*) FROM raw.flights WHERE partition_date = $1) + "
        "(SELECT count(*) FROM quarantine.flights WHERE partition_date = $1)", [day]
    ).item() == thinned.height
    # The whole delivery passes, and every row of it is published.
    path.write_bytes(whole)
    seal(path)
    own_platform.run("flights_daily", day)
    published = own_platform.query("SELECT count(*) FROM predictions.flights "
                                   "WHERE partition_date = $1", [day]).item()
    quarantined = own_platform.query("SELECT count(*) FROM quarantine.flights "
                                     "WHERE partition_date = $1", [day]).item()
    assert published + quarantined == frame.height
