"""Bad input through the real assets: a clear message, and the previous partition untouched."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.core import landing
from batch_platform_tests.conftest import Platform, failure_messages

DAY = dt.date(2013, 1, 16)


def snapshot(platform: Platform, day: dt.date) -> dict[str, pl.DataFrame]:
    return {
        table: platform.query(f"SELECT * EXCLUDE (_ingested_at, _run_id) FROM {table} "
                              "WHERE partition_date = ? ORDER BY ALL", [day])
        for table in ("raw.flights", "quarantine.flights")
    } | {
        "predictions.flights": platform.query(
            "SELECT flight_id, score, run_id FROM predictions.flights WHERE partition_date = ? "
            "ORDER BY flight_id", [day]),
    }


def assert_unchanged(platform: Platform, before: dict[str, pl.DataFrame]) -> None:
    after = snapshot(platform, DAY)
    for table, frame in before.items():
        assert after[table].equals(frame), f"{table} changed after a failed run"


def flights_file(landing_dir: Path) -> Path:
    return landing.landing_file(landing_dir, "flights", DAY)


def rewrite(path: Path, edit) -> None:
    frame = pl.read_csv(path, infer_schema=False)
    edit(frame).write_csv(path)


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
    ],
)
def test_a_bad_landing_file_fails_the_partition_and_keeps_the_old_one(
    platform: Platform, landing_restored: Path, damage, message_parts: list[str]
) -> None:
    before = snapshot(platform, DAY)
    damage(flights_file(landing_restored))
    result = platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    for part in [*message_parts, "2013-01-16"]:
        assert part in message
    assert str(flights_file(landing_restored)) in message
    assert_unchanged(platform, before)


def test_a_few_bad_rows_go_to_quarantine_with_their_reason(
    platform: Platform, landing_restored: Path
) -> None:
    path = flights_file(landing_restored)
    original = pl.read_csv(path, infer_schema=False)
    rewrite(path, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("27")).otherwise(pl.col("hour"))
        .alias("hour"),
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("-5")).otherwise(pl.col("distance"))
        .alias("distance"),
    ))
    platform.run("flights_daily", DAY)
    quarantined = platform.query("SELECT _line_number, hour, distance, reason, _source_file "
                                 "FROM quarantine.flights WHERE partition_date = ? "
                                 "ORDER BY _line_number", [DAY])
    assert quarantined["_line_number"].to_list() == [2, 3]
    assert "hour: '27' must be between 0 and 23" in quarantined["reason"][0]
    assert "distance: '-5' must be between 1 and 10000" in quarantined["reason"][1]
    assert quarantined["_source_file"][0] == str(path)
    kept = platform.query("SELECT count(*) FROM raw.flights WHERE partition_date = ?", [DAY])
    scored = platform.query("SELECT count(*) FROM predictions.flights WHERE partition_date = ?",
                            [DAY])
    assert kept.item() == scored.item() == original.height - 2

    # Once the feed is fixed, the rerun replaces the partition: nothing left in quarantine.
    landing.land(landing_restored, [DAY], with_reference=False)
    platform.run("flights_daily", DAY)
    assert platform.query("SELECT count(*) FROM quarantine.flights WHERE partition_date = ?",
                          [DAY]).item() == 0
    assert platform.query("SELECT count(*) FROM predictions.flights WHERE partition_date = ?",
                          [DAY]).item() == original.height


def test_a_day_missing_upstream_names_what_to_materialize(platform: Platform) -> None:
    result = platform.run("flights_predict", dt.date(2013, 3, 1), raise_on_error=False)
    assert not result.success
    assert "features.flights has no rows for 2013-03-01" in failure_messages(result)
