"""Features: one row per flight of the window, nothing observed about the flight itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from batch_platform.use_cases.flights import features
from batch_platform.use_cases.flights.features import PREVIOUS_DAY_FEATURES
from batch_platform_tests.flights import FLIGHTS
from batch_platform_tests.platform.support import DAY_1, DAY_2, DAY_3

OUTCOME_COLUMNS = FLIGHTS.outcome_columns


def _build(flights: pl.DataFrame, weather: pl.DataFrame, planes: pl.DataFrame,
           start: dt.date, end: dt.date) -> pl.DataFrame:
    return features.build_flight_features(flights, weather, planes, start, end).sort("flight_id")


@pytest.fixture(scope="module")
def day_2_3(raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
            ) -> pl.DataFrame:
    """Days 2 and 3 featured, with day 1 given as input for the previous-day statistics."""
    return _build(raw_flights, raw_weather, planes, DAY_2, DAY_3)


@pytest.fixture(scope="module")
def raw_with_ids(raw_flights: pl.DataFrame) -> pl.DataFrame:
    return raw_flights.with_columns(features.flight_id())


def test_one_row_per_flight_of_the_window(day_2_3: pl.DataFrame, raw_with_ids: pl.DataFrame
                                          ) -> None:
    window = raw_with_ids.filter(pl.col("partition_date").is_between(DAY_2, DAY_3))
    assert day_2_3.height == window.height
    # The previous day is input only: none of its flights comes out.
    assert set(day_2_3.get_column("partition_date").unique().to_list()) == {DAY_2, DAY_3}
    assert day_2_3.get_column("flight_id").is_unique().all()
    assert set(day_2_3.get_column("flight_id")) == set(window.get_column("flight_id"))


def test_output_columns_follow_the_spec(day_2_3: pl.DataFrame) -> None:
    assert day_2_3.columns == ["flight_id", "partition_date", *FLIGHTS.feature_columns,
                               "arrived_late"]
    for name in FLIGHTS.categorical_columns:
        assert day_2_3.schema[name] == pl.String
    for name in FLIGHTS.numeric_columns:
        assert day_2_3.schema[name].is_numeric(), name


def test_no_outcome_column_is_a_feature() -> None:
    assert not set(OUTCOME_COLUMNS) & set(FLIGHTS.feature_columns)
    assert FLIGHTS.label_column not in FLIGHTS.feature_columns


def test_flight_id_format(day_2_3: pl.DataFrame, raw_flights: pl.DataFrame) -> None:
    # An early departure, so the zero padding of the scheduled time shows.
    row = raw_flights.filter((pl.col("partition_date") == DAY_2)
                             & (pl.col("sched_dep_time") < 1000)).row(0, named=True)
    expected = (f"20130102-{row['carrier']}{row['flight']}-{row['origin']}-"
                f"{row['sched_dep_time']:04d}")
    assert len(expected.split("-")[-1]) == 4
    matching = day_2_3.filter(pl.col("flight_id") == expected)
    assert matching.height == 1
    assert matching.row(0, named=True)["sched_dep_minute"] == (
        row["sched_dep_time"] // 100 * 60 + row["sched_dep_time"] % 100)
    assert day_2_3.get_column("flight_id").str.contains(
        r"^2013010[23]-[A-Z0-9]{2}\d+-(EWR|JFK|LGA)-\d{4}$").all()


def test_schedule_features_of_one_flight(day_2_3: pl.DataFrame, raw_with_ids: pl.DataFrame
                                         ) -> None:
    raw = raw_with_ids.filter(pl.col("partition_date") == DAY_2).row(0, named=True)
    row = day_2_3.filter(pl.col("flight_id") == raw["flight_id"]).row(0, named=True)
    assert row["month"] == 1
    assert row["day_of_week"] == 3  # 2013-01-02 was a Wednesday (Monday is 1)
    dep = raw["sched_dep_time"] // 100 * 60 + raw["sched_dep_time"] % 100
    arr = raw["sched_arr_time"] // 100 * 60 + raw["sched_arr_time"] % 100
    assert row["sched_dep_minute"] == dep
    assert row["sched_arr_minute"] == arr
    assert row["sched_duration_minutes"] == (arr - dep) % 1440
    assert row["distance"] == raw["distance"]
    assert row["carrier"] == raw["carrier"]
    assert row["dest"] == raw["dest"]


def test_overnight_schedule_has_a_positive_duration(day_2_3: pl.DataFrame) -> None:
    durations = day_2_3.get_column("sched_duration_minutes")
    assert durations.min() >= 0
    overnight = day_2_3.filter(pl.col("sched_arr_minute") < pl.col("sched_dep_minute"))
    assert overnight.height > 0
    assert (overnight.get_column("sched_duration_minutes")
            == 1440 + overnight.get_column("sched_arr_minute")
            - overnight.get_column("sched_dep_minute")).all()


def test_scheduled_counts_at_the_origin(day_2_3: pl.DataFrame, raw_flights: pl.DataFrame) -> None:
    day = raw_flights.filter((pl.col("partition_date") == DAY_2) & (pl.col("origin") == "EWR"))
    rows = day_2_3.filter((pl.col("partition_date") == DAY_2) & (pl.col("origin") == "EWR"))
    assert rows.get_column("origin_flights_scheduled_day").unique().to_list() == [day.height]
    by_hour = dict(day.group_by("hour").len().iter_rows())
    sample = day.row(0, named=True)
    feature_id = (f"20130102-{sample['carrier']}{sample['flight']}-EWR-"
                  f"{sample['sched_dep_time']:04d}")
    row = rows.filter(pl.col("flight_id") == feature_id).row(0, named=True)
    assert row["origin_flights_scheduled_hour"] == by_hour[sample["hour"]]


def test_label_is_arrival_more_than_15_minutes_late(day_2_3: pl.DataFrame,
                                                    raw_with_ids: pl.DataFrame) -> None:
    joined = day_2_3.join(raw_with_ids.select("flight_id", "arr_delay"), on="flight_id")
    assert joined.height == day_2_3.height
    for arr_delay, late in joined.select("arr_delay", "arrived_late").iter_rows():
        assert late == (None if arr_delay is None else arr_delay > 15)
    assert joined.get_column("arrived_late").null_count() > 0  # cancelled flights: unknown
    # Exactly 15 minutes late is still on time.
    on_the_edge = joined.filter(pl.col("arr_delay") == 15)
    assert on_the_edge.height > 0
    assert not on_the_edge.get_column("arrived_late").any()


def test_scored_day_outcomes_do_not_change_features(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    """No leakage: rewriting what happened to the scored day's flights only moves the label."""
    flights = raw_flights.filter(pl.col("partition_date") <= DAY_2)
    scored_day = pl.col("partition_date") == DAY_2
    perturbed = flights.with_columns(
        pl.when(scored_day).then(None).otherwise(pl.col("dep_time")).alias("dep_time"),
        pl.when(scored_day).then(pl.lit(500.0)).otherwise(pl.col("dep_delay")).alias("dep_delay"),
        pl.when(scored_day).then(None).otherwise(pl.col("arr_time")).alias("arr_time"),
        pl.when(scored_day).then(pl.lit(600.0)).otherwise(pl.col("arr_delay")).alias("arr_delay"),
        pl.when(scored_day).then(pl.lit(1.0)).otherwise(pl.col("air_time")).alias("air_time"),
    )
    before = _build(flights, raw_weather, planes, DAY_2, DAY_2)
    after = _build(perturbed, raw_weather, planes, DAY_2, DAY_2)
    feature_columns = ["flight_id", "partition_date", *FLIGHTS.feature_columns]
    assert_frame_equal(after.select(feature_columns), before.select(feature_columns))
    assert after.get_column("arrived_late").all()
    assert not before.get_column("arrived_late").fill_null(True).all()


def test_previous_day_outcomes_do_change_features(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    """The control for the leakage test: the previous day's outcomes are legitimate inputs."""
    flights = raw_flights.filter(pl.col("partition_date") <= DAY_2)
    perturbed = flights.with_columns(
        pl.when(pl.col("partition_date") == DAY_1).then(pl.lit(600.0))
        .otherwise(pl.col("arr_delay")).alias("arr_delay"))
    after = _build(perturbed, raw_weather, planes, DAY_2, DAY_2)
    assert after.get_column("prev_day_origin_late_rate").unique().to_list() == [1.0]
    assert after.get_column("prev_day_carrier_late_rate").unique().to_list() == [1.0]


@pytest.mark.parametrize("origin", ["EWR", "JFK", "LGA"])
def test_previous_day_origin_statistics_by_hand(day_2_3: pl.DataFrame, raw_flights: pl.DataFrame,
                                                origin: str) -> None:
    previous = raw_flights.filter((pl.col("partition_date") == DAY_1)
                                  & (pl.col("origin") == origin))
    known = [d for d in previous.get_column("arr_delay").to_list() if d is not None]
    assert 0 < len(known) < previous.height  # some flights of day 1 have no outcome
    late_rate = sum(d > 15 for d in known) / len(known)
    dep_delays = [d for d in previous.get_column("dep_delay").to_list() if d is not None]
    mean_dep_delay = sum(dep_delays) / len(dep_delays)
    cancelled_rate = previous.get_column("dep_time").null_count() / previous.height

    rows = day_2_3.filter((pl.col("partition_date") == DAY_2) & (pl.col("origin") == origin))
    assert rows.height > 0
    for name, expected in [("prev_day_origin_late_rate", late_rate),
                           ("prev_day_origin_mean_dep_delay", mean_dep_delay),
                           ("prev_day_origin_cancelled_rate", cancelled_rate)]:
        values = rows.get_column(name).unique().to_list()
        assert len(values) == 1, name
        assert values[0] == pytest.approx(expected), name


def test_previous_day_carrier_statistics_by_hand(day_2_3: pl.DataFrame,
                                                 raw_flights: pl.DataFrame) -> None:
    for carrier in ("UA", "B6"):
        delays = raw_flights.filter((pl.col("partition_date") == DAY_2)
                                    & (pl.col("carrier") == carrier)
                                    & pl.col("arr_delay").is_not_null()
                                    ).get_column("arr_delay").to_list()
        expected = sum(d > 15 for d in delays) / len(delays)
        rows = day_2_3.filter((pl.col("partition_date") == DAY_3) & (pl.col("carrier") == carrier))
        assert rows.get_column("prev_day_carrier_late_rate").unique().to_list() == [
            pytest.approx(expected)]


def test_first_day_without_previous_day_has_null_statistics(feature_rows: pl.DataFrame) -> None:
    # feature_rows starts on 2013-01-01, and no 2012-12-31 flights were given.
    first = feature_rows.filter(pl.col("partition_date") == DAY_1)
    later = feature_rows.filter(pl.col("partition_date") == DAY_2)
    assert first.height > 0
    for name in PREVIOUS_DAY_FEATURES:
        assert first.get_column(name).null_count() == first.height, name
        assert later.get_column(name).null_count() < later.height, name


def test_weather_is_joined_on_origin_and_scheduled_hour(
    day_2_3: pl.DataFrame, raw_with_ids: pl.DataFrame, raw_weather: pl.DataFrame
) -> None:
    observed = {
        (row["origin"], row["time_hour"]): row
        for row in raw_weather.iter_rows(named=True)
    }
    hours = dict(raw_with_ids.select("flight_id", "time_hour").iter_rows())
    with_weather = 0
    for row in day_2_3.iter_rows(named=True):
        weather = observed.get((row["origin"], hours[row["flight_id"]]))
        for name in features.WEATHER_FEATURES:
            assert row[name] == (None if weather is None else weather[name]), name
        with_weather += weather is not None
    assert with_weather > 0.9 * day_2_3.height


def test_plane_facts_are_joined_on_tail_number(day_2_3: pl.DataFrame, raw_with_ids: pl.DataFrame,
                                               planes: pl.DataFrame) -> None:
    facts = {row["tailnum"]: row for row in planes.iter_rows(named=True)}
    tails = dict(raw_with_ids.select("flight_id", "tailnum").iter_rows())
    known = 0
    for row in day_2_3.iter_rows(named=True):
        plane = facts.get(tails[row["flight_id"]])
        if plane is None:
            assert row["plane_seats"] is None
            continue
        known += 1
        assert row["plane_seats"] == plane["seats"]
        assert row["plane_engines"] == plane["engines"]
        assert row["plane_age"] == (None if plane["year"] is None else 2013 - plane["year"])
    assert known > 0.5 * day_2_3.height


def test_the_same_input_in_any_order_gives_the_same_frame(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    """Training reads features in stored order: a stable order keeps the model reproducible."""
    shuffled = raw_flights.sample(fraction=1.0, shuffle=True, seed=7)
    first = features.build_flight_features(raw_flights, raw_weather, planes, DAY_2, DAY_3)
    second = features.build_flight_features(shuffled, raw_weather.reverse(), planes.reverse(),
                                            DAY_2, DAY_3)
    assert_frame_equal(first, second)
    assert first.get_column("flight_id").to_list() == sorted(
        first.get_column("flight_id").to_list(), key=lambda i: (i[:8], i))


CHUNK_ROWS = 97  # prime, so chunks straddle days, origins and hours


def _window_rows(raw_flights: pl.DataFrame) -> pl.DataFrame:
    """Days 1..3 as raw.flights stores them: day 1 is the previous day of the window 2..3."""
    return raw_flights.filter(pl.col("partition_date").is_between(DAY_1, DAY_3))


def test_chunked_features_equal_the_whole_frame(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame,
    tmp_path: Path,
) -> None:
    """As a streaming stage runs: the context from a Parquet scan, then chunk by chunk."""
    path = tmp_path / "flights.parquet"
    _window_rows(raw_flights).write_parquet(path)
    context = features.flight_feature_context(pl.scan_parquet(path), raw_weather.lazy(), planes,
                                              DAY_2, DAY_3)
    batches = pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS)
    chunks = [features.flight_features_chunk(pl.from_arrow(batch), context) for batch in batches]
    assert len(chunks) > 20
    # Some chunks hold only previous-day rows, some straddle the two days of the window.
    assert any(chunk.height == 0 for chunk in chunks)
    assert any(chunk.get_column("partition_date").n_unique() == 2 for chunk in chunks)
    chunked = pl.concat(chunks).sort("partition_date", "flight_id")
    whole = features.build_flight_features(raw_flights, raw_weather, planes, DAY_2, DAY_3)
    assert_frame_equal(chunked, whole, check_exact=True)


def test_a_chunk_keeps_its_row_order(raw_flights: pl.DataFrame, raw_weather: pl.DataFrame,
                                     planes: pl.DataFrame) -> None:
    context = features.flight_feature_context(raw_flights.lazy(), raw_weather.lazy(), planes,
                                              DAY_2, DAY_3)
    chunk = raw_flights.filter(pl.col("partition_date") == DAY_3).reverse().head(CHUNK_ROWS)
    built = features.flight_features_chunk(chunk, context)
    assert built.get_column("flight_id").to_list() == (
        chunk.select(features.flight_id()).get_column("flight_id").to_list())


def test_a_chunk_of_previous_day_rows_gives_no_rows(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    context = features.flight_feature_context(raw_flights.lazy(), raw_weather.lazy(), planes,
                                              DAY_2, DAY_3)
    chunk = raw_flights.filter(pl.col("partition_date") == DAY_1).head(CHUNK_ROWS)
    assert chunk.height == CHUNK_ROWS
    built = features.flight_features_chunk(chunk, context)
    whole = features.build_flight_features(raw_flights, raw_weather, planes, DAY_2, DAY_3)
    assert built.height == 0
    assert built.schema == whole.schema


def test_the_context_holds_narrow_tables_without_outcomes(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    context = features.flight_feature_context(raw_flights.lazy(), raw_weather.lazy(), planes,
                                              DAY_2, DAY_3)
    window = raw_flights.filter(pl.col("partition_date").is_between(DAY_2, DAY_3))
    previous = raw_flights.filter(pl.col("partition_date").is_between(DAY_1, DAY_2))
    days, origins, hours = 2, 3, 24
    carriers = raw_flights.get_column("carrier").n_unique()
    # One row per key, keys of the window's days only: bounded by days x origins (x hours).
    expected = [
        (context.scheduled_hour, window.select("partition_date", "origin", "hour").n_unique(),
         days * origins * hours),
        (context.scheduled_day, window.select("partition_date", "origin").n_unique(),
         days * origins),
        (context.previous_origin, previous.select("partition_date", "origin").n_unique(),
         days * origins),
        (context.previous_carrier, previous.select("partition_date", "carrier").n_unique(),
         days * carriers),
    ]
    for table, keys, bound in expected:
        assert table.height == keys <= bound
        assert table.get_column("partition_date").is_between(DAY_2, DAY_3).all()
    assert context.weather_at_hour.height <= raw_weather.height
    assert context.plane_facts.height == planes.get_column("tailnum").n_unique()
    # The plane's schedule: one row per departure of a known plane, the keys and numbers only.
    planned = window.filter(pl.col("tailnum").is_not_null())
    assert context.plane_day.height == planned.select(
        "partition_date", "tailnum", "sched_dep_time").n_unique()
    assert context.plane_day.columns == ["partition_date", "tailnum", "sched_dep_time",
                                         *features.PLANE_DAY_FEATURES]
    # The history: one row per key that flew in the days before, for the window's days only.
    for name, table in context.history.items():
        assert table.get_column("partition_date").is_between(DAY_2, DAY_3).all(), name
        assert table.height <= days * raw_flights.select(
            features.HISTORY_KEYS[name]).n_unique(), name
    # No context table holds an outcome, a flight id or a whole flight row.
    for field in dataclasses.fields(context):
        value = getattr(context, field.name)
        tables = value.values() if isinstance(value, dict) else [value]
        for table in tables:
            if isinstance(table, pl.DataFrame):
                assert not {"flight_id", *OUTCOME_COLUMNS} & set(table.columns), field.name


def _outcomes_rewritten(flights: pl.DataFrame, rewritten: pl.Expr) -> pl.DataFrame:
    """Every outcome column of the flights where ``rewritten`` holds set to other values."""
    return flights.with_columns(
        pl.when(rewritten).then(None).otherwise(pl.col("dep_time")).alias("dep_time"),
        pl.when(rewritten).then(pl.lit(500.0)).otherwise(pl.col("dep_delay")).alias("dep_delay"),
        pl.when(rewritten).then(None).otherwise(pl.col("arr_time")).alias("arr_time"),
        pl.when(rewritten).then(pl.lit(600.0)).otherwise(pl.col("arr_delay")).alias("arr_delay"),
        pl.when(rewritten).then(pl.lit(1.0)).otherwise(pl.col("air_time")).alias("air_time"),
    )


def test_no_feature_reads_an_outcome_of_the_day_or_later(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    """No leakage, the plane's day and the week's history included: the outcomes of every
    flight of the scored day (the flight itself and all others) and of the day after are
    rewritten, and no feature of the day changes; only the label does."""
    assert set(OUTCOME_COLUMNS) == {"dep_time", "dep_delay", "arr_time", "arr_delay",
                                    "air_time"}
    perturbed = _outcomes_rewritten(raw_flights, pl.col("partition_date") >= DAY_2)
    before = _build(raw_flights, raw_weather, planes, DAY_2, DAY_2)
    after = _build(perturbed, raw_weather, planes, DAY_2, DAY_2)
    columns = ["flight_id", "partition_date", *FLIGHTS.feature_columns]
    assert set(features.PLANE_DAY_FEATURES + features.HISTORY_FEATURES) <= set(columns)
    assert_frame_equal(after.select(columns), before.select(columns))
    assert after.get_column("arrived_late").all()
    assert not before.get_column("arrived_late").fill_null(True).all()
    # The day after is in the input: it is read (it has rows) but never looked at.
    assert raw_flights.filter(pl.col("partition_date") == DAY_3).height > 0


def test_earlier_days_outcomes_feed_the_history(
    raw_flights: pl.DataFrame, raw_weather: pl.DataFrame, planes: pl.DataFrame
) -> None:
    """The control: the outcomes of the days before are legitimate inputs of the history."""
    perturbed = _outcomes_rewritten(raw_flights, pl.col("partition_date") < DAY_3)
    after = _build(perturbed, raw_weather, planes, DAY_3, DAY_3)
    for name in ("route", "dest", "flight"):
        rates = after.get_column(f"{name}_late_rate_{features.HISTORY_DAYS}d").drop_nulls()
        assert rates.len() > 0.5 * after.height, name
        assert rates.unique().to_list() == [1.0], name


def test_the_plane_day_of_one_plane_by_hand(day_2_3: pl.DataFrame) -> None:
    """N239JB on 2013-01-02 (from the package's flights): four JetBlue departures from JFK,
    09:20 to RDU (427 mi, due 11:08), 13:55 to PWM (273 mi, due 15:10), 17:49 to IAD (228 mi,
    due 19:09) and 21:55 to RDU (427 mi, due 23:37)."""
    day = day_2_3.filter(pl.col("flight_id").is_in([
        "20130102-B61103-JFK-0920", "20130102-B6602-JFK-1355", "20130102-B61307-JFK-1749",
        "20130102-B61109-JFK-2155"])).sort("sched_dep_minute")
    got = day.select(features.PLANE_DAY_FEATURES).rows()
    # leg, legs, minutes since the previous departure, its distance and scheduled duration,
    # the plane's first departure (09:20 is minute 560).
    assert got == [
        (1, 4, None, None, None, 560),
        (2, 4, 835 - 560, 427.0, 108, 560),
        (3, 4, 1069 - 835, 273.0, 75, 560),
        (4, 4, 1315 - 1069, 228.0, 80, 560),
    ]


def test_the_plane_day_counts_only_that_plane_and_day(day_2_3: pl.DataFrame,
                                                      raw_with_ids: pl.DataFrame) -> None:
    joined = day_2_3.join(raw_with_ids.select("flight_id", "tailnum"), on="flight_id")
    legs = joined.filter(pl.col("tailnum").is_not_null()).group_by(
        "partition_date", "tailnum").agg(pl.len().alias("n"),
                                         pl.col("plane_legs_of_day").unique().alias("legs"),
                                         pl.col("plane_leg_of_day").sort().alias("order"))
    for n, legs_of_day, order in legs.select("n", "legs", "order").iter_rows():
        assert legs_of_day == [n]
        assert order == list(range(1, n + 1))
    # No tail number: no plane to follow.
    unknown = joined.filter(pl.col("tailnum").is_null())
    assert unknown.height > 0
    assert unknown.get_column("plane_leg_of_day").null_count() == unknown.height


def test_the_route_history_by_hand(day_2_3: pl.DataFrame, raw_flights: pl.DataFrame) -> None:
    """JFK to RDU on 2013-01-03: the late rate of the labelled flights of the days before
    (days 1 and 2 are all there are), never of the day itself."""
    route = raw_flights.filter((pl.col("origin") == "JFK") & (pl.col("dest") == "RDU")
                               & (pl.col("partition_date") < DAY_3))
    delays = [d for d in route.get_column("arr_delay").to_list() if d is not None]
    assert len(delays) >= 5
    rows = day_2_3.filter((pl.col("partition_date") == DAY_3) & (pl.col("origin") == "JFK")
                          & (pl.col("dest") == "RDU"))
    assert rows.height > 0
    days = features.HISTORY_DAYS
    assert rows.get_column(f"route_flights_{days}d").unique().to_list() == [len(delays)]
    assert rows.get_column(f"route_late_rate_{days}d").unique().to_list() == [
        pytest.approx(sum(d > 15 for d in delays) / len(delays))]
