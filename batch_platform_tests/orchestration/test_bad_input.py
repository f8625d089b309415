"""Bad input through the real assets: a clear message, and the previous partition untouched.

Every test damages or runs its own copy of the platform (``own_platform``)."""

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.ingest import landing
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.conftest import (
    Platform,
    failure_messages,
    model_config,
    partition_snapshot,
    seal,
)

DAY = dt.date(2013, 1, 16)
TABLES = ("raw.flights", "quarantine.flights", "predictions.flights")


def snapshot(platform: Platform) -> dict[str, pl.DataFrame]:
    return partition_snapshot(platform, TABLES, [DAY])


def assert_unchanged(platform: Platform, before: dict[str, pl.DataFrame]) -> None:
    after = snapshot(platform)
    for table, frame in before.items():
        assert after[table].equals(frame), f"{table} changed after a failed run"


def flights_file(landing_dir: Path) -> Path:
    return landing.landing_file(landing_dir, "flights", DAY)


def rewrite(path: Path, edit) -> None:
    frame = pl.read_csv(path, infer_schema=False)
    edit(frame).write_csv(path)
    seal(path)


@pytest.mark.parametrize(
    ("damage", "message_parts"),
    [
        pytest.param(lambda p: p.unlink(), ["is missing"], id="missing file"),
        pytest.param(lambda p: p.write_bytes(b""), ["is empty"], id="empty file"),
        pytest.param(lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"),
                     ["has 0 data row(s)"], id="header only"),
        pytest.param(lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary"),
                     ["not UTF-8"], id="binary file"),
        pytest.param(lambda p: rewrite(p, lambda f: f.rename({"dep_time": "dep_tme"})),
                     ["missing column(s) 'dep_time'", "'dep_tme' looks like a misspelling"],
                     id="misspelt column"),
        pytest.param(lambda p: rewrite(p, lambda f: f.drop("carrier")),
                     ["missing column(s) 'carrier'"], id="missing column"),
        pytest.param(lambda p: rewrite(p, lambda f: f.with_columns(
                         pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("far"))
                         .otherwise(pl.col("distance")).alias("distance"))),
                     ["rows rejected", "above the limit", "distance", "Nothing was written"],
                     id="too many wrong types"),
        pytest.param(lambda p: p.write_bytes(p.with_name("2013-01-15.csv").read_bytes()),
                     ["rows rejected (100.0%)",
                      "first, line 2: date: row date 2013-1-15 is not partition 2013-01-16"],
                     id="file of another day"),
        pytest.param(lambda p: rewrite(p, lambda f: f.with_columns(
                         pl.when(pl.int_range(pl.len()) % 3 == 0).then(None)
                         .otherwise(pl.col("sched_dep_time")).alias("sched_dep_time"))),
                     ["sched_dep_time: required value is missing", "Nothing was written"],
                     id="nulls in a required column"),
    ],
)
def test_a_bad_landing_file_fails_the_partition_and_keeps_the_old_one(
    own_platform: Platform, damage, message_parts: list[str]
) -> None:
    before = snapshot(own_platform)
    damage(flights_file(own_platform.settings.landing_dir))
    seal(flights_file(own_platform.settings.landing_dir))
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    for part in [*message_parts, "2013-01-16"]:
        assert part in message
    assert str(flights_file(own_platform.settings.landing_dir)) in message
    assert_unchanged(own_platform, before)


def test_a_few_bad_rows_go_to_quarantine_with_their_reason(
    own_platform: Platform
) -> None:
    path = flights_file(own_platform.settings.landing_dir)
    original = pl.read_csv(path, infer_schema=False)
    rewrite(path, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("27")).otherwise(pl.col("hour"))
        .alias("hour"),
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("-5")).otherwise(pl.col("distance"))
        .alias("distance"),
    ))
    own_platform.run("flights_daily", DAY)
    quarantined = own_platform.query("SELECT _line_number, hour, distance, reason, _source_file "
                                     "FROM quarantine.flights WHERE partition_date = ? "
                                     "ORDER BY _line_number", [DAY])
    assert quarantined["_line_number"].to_list() == [2, 3]
    assert "hour: '27' must be between 0 and 23" in quarantined["reason"][0]
    assert "distance: '-5' must be between 1 and 10000" in quarantined["reason"][1]
    assert quarantined["_source_file"][0] == str(path)
    kept = own_platform.query("SELECT count(*) FROM raw.flights WHERE partition_date = ?", [DAY])
    scored = own_platform.query("SELECT count(*) FROM predictions.flights WHERE partition_date = ?",
                                [DAY])
    assert kept.item() == scored.item() == original.height - 2

    # Once the feed is fixed, the rerun replaces the partition: nothing left in quarantine.
    flights_landing.land(own_platform.settings.landing_dir, [DAY], with_reference=False)
    own_platform.run("flights_daily", DAY)
    assert own_platform.query("SELECT count(*) FROM quarantine.flights WHERE partition_date = ?",
                              [DAY]).item() == 0
    assert own_platform.query("SELECT count(*) FROM predictions.flights WHERE partition_date = ?",
                              [DAY]).item() == original.height


def test_a_day_missing_upstream_names_what_to_materialize(own_platform: Platform) -> None:
    result = own_platform.run("flights_predict", dt.date(2013, 3, 1), raise_on_error=False)
    assert not result.success
    assert "features.flights has no rows for 2013-03-01" in failure_messages(result)


def test_unknown_airports(own_platform: Platform) -> None:
    """An origin outside New York is quarantined; a destination the model never saw is scored
    with that feature missing, and counted."""
    path = flights_file(own_platform.settings.landing_dir)
    rewrite(path, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("XXX")).otherwise(pl.col("origin"))
        .alias("origin"),
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("ZZZ")).otherwise(pl.col("dest"))
        .alias("dest"),
    ))
    result = own_platform.run("flights_daily", DAY)
    quarantined = own_platform.query("SELECT _line_number, reason FROM quarantine.flights "
                                     "WHERE partition_date = ?", [DAY])
    assert quarantined.rows() == [
        (2, "origin: 'XXX' must be one of the New York airports EWR, JFK, LGA")]
    scored = own_platform.query("SELECT score FROM predictions.flights p JOIN features.flights f "
                                "USING (flight_id) WHERE f.dest = 'ZZZ' AND p.partition_date = ?",
                                [DAY])
    assert scored.height == 1
    assert 0.0 < scored.item() < 1.0
    metadata = result.asset_materializations_for_node("predictions__flights")[0].metadata
    assert metadata["unknown_categories"].value == 1


def test_a_missing_weather_file_fails_the_day_and_keeps_what_it_had(
    own_platform: Platform
) -> None:
    before = snapshot(own_platform)
    weather_before = own_platform.query("SELECT * FROM raw.weather WHERE partition_date = ? "
                                        "ORDER BY ALL", [DAY])
    features_before = own_platform.query("SELECT * FROM features.flights WHERE partition_date = ? "
                                         "ORDER BY ALL", [DAY])
    weather_file = landing.landing_file(own_platform.settings.landing_dir, "weather", DAY)
    weather_file.unlink()
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    assert message.startswith("raw__weather: BadInputError: ")
    assert f"weather landing file {weather_file} (partition {DAY}) is missing" in message
    assert own_platform.query("SELECT * FROM raw.weather WHERE partition_date = ? ORDER BY ALL",
                              [DAY]).equals(weather_before)
    # Features are not built without the day's weather, so what was scored stays as it was.
    assert own_platform.query("SELECT * FROM features.flights WHERE partition_date = ? "
                              "ORDER BY ALL", [DAY]).equals(features_before)
    after = snapshot(own_platform)
    assert after["predictions.flights"].equals(before["predictions.flights"])


def test_a_landing_file_that_links_outside_the_landing_directory_is_refused(
    own_platform: Platform, tmp_path: Path
) -> None:
    before = snapshot(own_platform)
    path = flights_file(own_platform.settings.landing_dir)
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    assert (f"UnsafeLandingPath: landing file {path} (partition {DAY}) resolves to "
            f"{elsewhere}, outside the landing directory") in message
    assert_unchanged(own_platform, before)
    path.unlink()  # platform.settings.landing_dir lays the file again


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"train_start": "2013-01-14", "train_end": "2013-01-01"},
         "train window ends (2013-01-01) before it starts (2013-01-14)"),
        ({"valid_start": "2013-01-10"},
         "validation window starts (2013-01-10) before the training window ends (2013-01-14)"),
        ({"valid_end": "2013-02-30"},
         "model config valid_end='2013-02-30' is not a date like 2013-01-31"),
        ({"valid_start": "2013-03-01", "valid_end": "2013-03-05"},
         "features.flights has no rows for 2013-03-01"),
    ],
)
def test_an_invalid_training_window_is_refused(own_platform: Platform, window: dict,
                                               message: str) -> None:
    registry = own_platform.query("SELECT * FROM models.registry ORDER BY ALL")
    result = own_platform.run("flights_train", run_config=model_config(**window),
                              raise_on_error=False)
    assert not result.success
    assert message in failure_messages(result)
    assert own_platform.query("SELECT * FROM models.registry ORDER BY ALL").equals(registry)


def test_an_invalid_reject_threshold_stops_the_step_naming_the_variable(
    own_platform: Platform
) -> None:
    before = snapshot(own_platform)
    invalid = dataclasses.replace(own_platform.settings, max_reject_fraction=1.5)
    result = own_platform.run("flights_daily", DAY, settings=invalid, raise_on_error=False)
    assert not result.success
    assert "BATCH_PLATFORM_MAX_REJECT_FRACTION=1.5 must be between 0 and 1" in (
        failure_messages(result))
    assert_unchanged(own_platform, before)
