"""Features of the flights use case: one function serves training and scoring.

Only what is known before departure goes in: the schedule, carrier and route, the plane, the
weather observed at the origin at the scheduled hour (standing in for a forecast), how busy
the origin is scheduled to be, the plane's scheduled departures that day, and delay statistics
of earlier days (the previous day; the week before by route, destination and flight number).
Of the day itself only schedules are read; outcomes come from earlier days only. What happens
to the flight itself (the declaration's ``outcomes``) is never a feature; ``arr_delay`` only
makes the label. The platform calls ``flight_context`` once per range, then ``flight_rows`` chunk
by chunk (``defs.yaml``, ``features``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

LATE_MINUTES = 15
ID_COLUMN = "flight_id"
LABEL_COLUMN = "arrived_late"


WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip",
                    "pressure", "visib")
PREVIOUS_DAY_FEATURES = ("prev_day_origin_late_rate", "prev_day_origin_mean_dep_delay",
                         "prev_day_origin_cancelled_rate", "prev_day_carrier_late_rate")
# The plane's New York departures scheduled that day (the data hold no other airport's).
PLANE_DAY_FEATURES = ("plane_leg_of_day", "plane_legs_of_day", "plane_minutes_since_prev_dep",
                      "plane_prev_leg_distance", "plane_prev_leg_sched_duration",
                      "plane_first_dep_minute")
# Late rates (and labelled flights) of the HISTORY_DAYS days before, by route, destination
# and flight number: earlier days' outcomes only (the declaration's lookback_days).
HISTORY_DAYS = 7
HISTORY_KEYS: dict[str, tuple[str, ...]] = {
    "route": ("origin", "dest"),
    "dest": ("dest",),
    "flight": ("carrier", "flight", "origin"),
}
HISTORY_FEATURES = tuple(f"{name}_{measure}_{HISTORY_DAYS}d" for name in HISTORY_KEYS
                         for measure in ("late_rate", "flights"))

# What flight_rows produces besides the id, the date and the label.
FEATURE_COLUMNS = (
    "carrier", "origin", "dest",
    "month", "day_of_week", "sched_dep_minute", "sched_arr_minute", "sched_duration_minutes",
    "distance",
    "plane_age", "plane_seats", "plane_engines",
    *WEATHER_FEATURES,
    "origin_flights_scheduled_hour", "origin_flights_scheduled_day",
    *PREVIOUS_DAY_FEATURES,
    *PLANE_DAY_FEATURES,
    *HISTORY_FEATURES,
)


def flight_context(sources: Mapping[str, pl.LazyFrame], references: Mapping[str, pl.DataFrame],
                   start: dt.date, end: dt.date) -> FlightFeatureContext:
    """The platform's entry point: ``sources`` hold the raw rows from ``HISTORY_DAYS`` days
    before ``start`` (``lookback_days``) to ``end``."""
    return flight_feature_context(sources["flights"], sources["weather"], references["planes"],
                                  start, end)


def flight_rows(chunk: pl.DataFrame, context: FlightFeatureContext) -> pl.DataFrame:
    """The platform's entry point: a chunk of raw flights of the window -> their features."""
    return flight_features_chunk(chunk, context)


def flight_id() -> pl.Expr:
    """Stable across reruns: date, carrier, flight number, origin and scheduled departure."""
    return pl.format(
        "{}-{}{}-{}-{}",
        pl.col("partition_date").dt.strftime("%Y%m%d"),
        pl.col("carrier"),
        pl.col("flight"),
        pl.col("origin"),
        pl.col("sched_dep_time").cast(pl.String).str.zfill(4),
    ).alias("flight_id")


def _minute_of_day(hhmm: str) -> pl.Expr:
    return (pl.col(hhmm) // 100) * 60 + pl.col(hhmm) % 100


def build_flight_features(
    flights: pl.DataFrame,
    weather: pl.DataFrame,
    planes: pl.DataFrame,
    start: dt.date,
    end: dt.date,
) -> pl.DataFrame:
    """Features of every flight scheduled from ``start`` to ``end``.

    ``flights`` must hold the raw rows of the ``HISTORY_DAYS`` days before ``start`` too: they
    feed the statistics of earlier days. One output row per input flight of the window,
    ordered by day and flight id, so the same input always gives the same frame (and the same
    model).
    The whole-frame form of :func:`flight_feature_context` plus :func:`flight_features_chunk`.
    """
    context = flight_feature_context(flights.lazy(), weather.lazy(), planes, start, end)
    return flight_features_chunk(flights, context).sort("partition_date", ID_COLUMN)


@dataclass(frozen=True)
class FlightFeatureContext:
    """What the features of any chunk of a window's flights need beyond the chunk's own rows.

    Narrow tables: their heights grow with days x origins (x hours), days x carriers, days x
    routes and flight numbers, the weather observations and the planes; only ``plane_day`` has
    one row per scheduled departure of a plane (a few small columns), so a stage can hold the
    context while it streams a partition chunk by chunk.
    """

    # Flights scheduled per (partition_date, origin, hour) and per (partition_date, origin),
    # over every flight of the window: a chunk alone sees only part of its day.
    scheduled_hour: pl.DataFrame
    scheduled_day: pl.DataFrame
    # Delay statistics of a day, keyed by the day after it (the day they apply to).
    previous_origin: pl.DataFrame
    previous_carrier: pl.DataFrame
    # Per (partition_date, tailnum, sched_dep_time): the plane's schedule that day.
    plane_day: pl.DataFrame
    # Per HISTORY_KEYS name: late rates of the days before, keyed by the day they apply to.
    history: Mapping[str, pl.DataFrame]
    weather_at_hour: pl.DataFrame
    plane_facts: pl.DataFrame
    start: dt.date
    end: dt.date


def flight_feature_context(
    flights: pl.LazyFrame,
    weather: pl.LazyFrame,
    planes: pl.LazyFrame | pl.DataFrame,
    start: dt.date,
    end: dt.date,
) -> FlightFeatureContext:
    """The aggregates of the raw flights from ``HISTORY_DAYS`` days before ``start`` to ``end``.

    ``flights`` is lazy (e.g. ``pl.scan_parquet``): only the aggregates are collected, with the
    streaming engine, so a partition of millions of flights is never held whole.
    """
    window = flights.filter(pl.col("partition_date").is_between(start, end))
    applies_in_window = pl.col("partition_date").is_between(start, end)
    scheduled_hour, scheduled_day, previous_origin, previous_carrier, *history = (
        pl.collect_all(
            [
                window.group_by("partition_date", "origin", "hour")
                .agg(pl.len().cast(pl.Int32).alias("origin_flights_scheduled_hour")),
                window.group_by("partition_date", "origin")
                .agg(pl.len().cast(pl.Int32).alias("origin_flights_scheduled_day")),
                *(table.filter(applies_in_window) for table in _previous_day_statistics(flights)),
                *(_history_statistics(flights, name, keys, start, end)
                  for name, keys in HISTORY_KEYS.items()),
            ],
            engine="streaming",
        ))
    # Window functions over each plane's day: the in-memory engine (small, narrow columns).
    plane_day = _plane_day(window).collect(engine="in-memory")
    # Small inputs, collected in memory: keep="first" must see the weather in its given order.
    weather_at_hour = weather.select(
        "origin", "time_hour", *(pl.col(c).cast(pl.Float64) for c in WEATHER_FEATURES)
    ).unique(subset=["origin", "time_hour"], keep="first", maintain_order=True).collect(
        engine="in-memory")
    plane_facts = planes.lazy().select(
        "tailnum",
        pl.col("year").alias("plane_year"),
        pl.col("seats").cast(pl.Float64).alias("plane_seats"),
        pl.col("engines").cast(pl.Float64).alias("plane_engines"),
    ).unique(subset=["tailnum"], keep="first", maintain_order=True).collect(
        engine="in-memory")
    return FlightFeatureContext(
        scheduled_hour=scheduled_hour,
        scheduled_day=scheduled_day,
        previous_origin=previous_origin,
        previous_carrier=previous_carrier,
        plane_day=plane_day,
        history=dict(zip(HISTORY_KEYS, history, strict=True)),
        weather_at_hour=weather_at_hour,
        plane_facts=plane_facts,
        start=start,
        end=end,
    )


def flight_features_chunk(chunk: pl.DataFrame, context: FlightFeatureContext) -> pl.DataFrame:
    """Features of the chunk's flights scheduled in the context's window, in the chunk's order.

    Rows of other days (the previous day's, read for its statistics) are dropped; a chunk of
    only such rows gives an empty frame with the features' schema.
    """
    # Every join keeps the chunk's order, so the caller decides whether (and how) to sort.
    join = {"how": "left", "maintain_order": "left"}
    featured = (
        chunk.lazy()
        .filter(pl.col("partition_date").is_between(context.start, context.end))
        .with_columns(
            flight_id(),
            pl.col("partition_date").dt.month().cast(pl.Int32).alias("month"),
            pl.col("partition_date").dt.weekday().cast(pl.Int32).alias("day_of_week"),
            _minute_of_day("sched_dep_time").cast(pl.Int32).alias("sched_dep_minute"),
            _minute_of_day("sched_arr_time").cast(pl.Int32).alias("sched_arr_minute"),
            ((_minute_of_day("sched_arr_time") - _minute_of_day("sched_dep_time")) % 1440)
            .cast(pl.Int32).alias("sched_duration_minutes"),
            (pl.col("arr_delay") > LATE_MINUTES).alias(LABEL_COLUMN),
        )
        # The counts were a window function over the whole window: null keys form a group there.
        .join(context.scheduled_hour.lazy(), on=["partition_date", "origin", "hour"],
              nulls_equal=True, **join)
        .join(context.scheduled_day.lazy(), on=["partition_date", "origin"],
              nulls_equal=True, **join)
        .join(context.weather_at_hour.lazy(), on=["origin", "time_hour"], **join)
        .join(context.plane_facts.lazy(), on="tailnum", **join)
        .with_columns((pl.col("partition_date").dt.year() - pl.col("plane_year"))
                      .cast(pl.Float64).alias("plane_age"))
        .join(context.previous_origin.lazy(), on=["partition_date", "origin"], **join)
        .join(context.previous_carrier.lazy(), on=["partition_date", "carrier"], **join)
        .join(context.plane_day.lazy(), on=["partition_date", "tailnum", "sched_dep_time"],
              **join)
    )
    for name, keys in HISTORY_KEYS.items():
        featured = featured.join(context.history[name].lazy(), on=["partition_date", *keys],
                                 **join)
    return (
        featured.select(
            ID_COLUMN,
            "partition_date",
            *(pl.col(c) for c in FEATURE_COLUMNS),
            LABEL_COLUMN,
        )
        # The chunk is in memory already. Polars 2.1.0's default (streaming) engine panics in
        # pl.format (flight_id) on a filtered frame of several chunks ("i < self.len()").
        .collect(engine="in-memory")
    )


def _previous_day_statistics(flights: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Delay statistics of each day by origin and by carrier, keyed by the day after it: known
    before that day starts."""
    late = (pl.col("arr_delay") > LATE_MINUTES).cast(pl.Float64)
    next_day = (pl.col("partition_date") + pl.duration(days=1)).alias("partition_date")
    origin = flights.group_by("partition_date", "origin").agg(
        late.mean().alias("prev_day_origin_late_rate"),
        pl.col("dep_delay").mean().alias("prev_day_origin_mean_dep_delay"),
        pl.col("dep_time").is_null().mean().alias("prev_day_origin_cancelled_rate"),
    ).with_columns(next_day)
    carrier = flights.group_by("partition_date", "carrier").agg(
        late.mean().alias("prev_day_carrier_late_rate"),
    ).with_columns(next_day)
    return origin, carrier


def _plane_day(flights: pl.LazyFrame) -> pl.LazyFrame:
    """Each plane's New York departures of each day, from the schedule alone: per departure,
    its leg number, the day's legs, the minutes since the previous one and that leg's
    scheduled distance and duration, and when the plane's first departure is.

    One row per (partition_date, tailnum, sched_dep_time): two flights of a plane at the same
    scheduled minute (a data error) share one row, so the join never duplicates a flight.
    """
    legs = (flights.filter(pl.col("tailnum").is_not_null())
            .with_columns(_minute_of_day("sched_dep_time").alias("_dep"),
                          ((_minute_of_day("sched_arr_time") - _minute_of_day("sched_dep_time"))
                           % 1440).alias("_duration"))
            .group_by("partition_date", "tailnum", "sched_dep_time")
            .agg(pl.col("_dep").first(), pl.col("distance").max().alias("_distance"),
                 pl.col("_duration").max())
            .sort("partition_date", "tailnum", "_dep"))
    plane = ["partition_date", "tailnum"]
    return legs.select(
        "partition_date", "tailnum", "sched_dep_time",
        pl.col("_dep").rank("ordinal").over(plane).cast(pl.Int32).alias("plane_leg_of_day"),
        pl.len().over(plane).cast(pl.Int32).alias("plane_legs_of_day"),
        (pl.col("_dep") - pl.col("_dep").shift(1).over(plane)).cast(pl.Int32)
        .alias("plane_minutes_since_prev_dep"),
        pl.col("_distance").shift(1).over(plane).cast(pl.Float64)
        .alias("plane_prev_leg_distance"),
        pl.col("_duration").shift(1).over(plane).cast(pl.Int32)
        .alias("plane_prev_leg_sched_duration"),
        pl.col("_dep").min().over(plane).cast(pl.Int32).alias("plane_first_dep_minute"),
    )


def _history_statistics(flights: pl.LazyFrame, name: str, keys: tuple[str, ...],
                        start: dt.date, end: dt.date) -> pl.LazyFrame:
    """The late rate and the labelled flights of the ``HISTORY_DAYS`` days before each day of
    ``start``..``end``, by ``keys``: each day's counts are added to each of the days after it,
    never its own; only days of the window are kept (before the sums: a large last day adds
    nothing to sum)."""
    late = (pl.col("arr_delay") > LATE_MINUTES).cast(pl.Int64)
    daily = (flights.filter(pl.col("arr_delay").is_not_null())
             .group_by("partition_date", *keys)
             .agg(late.sum().alias("_late"), pl.len().cast(pl.Int64).alias("_flights")))
    later = pl.concat([daily.with_columns(pl.col("partition_date") + pl.duration(days=offset))
                       .filter(pl.col("partition_date").is_between(start, end))
                       for offset in range(1, HISTORY_DAYS + 1)])
    return later.group_by("partition_date", *keys).agg(
        (pl.col("_late").sum() / pl.col("_flights").sum()).alias(
            f"{name}_late_rate_{HISTORY_DAYS}d"),
        pl.col("_flights").sum().cast(pl.Int32).alias(f"{name}_flights_{HISTORY_DAYS}d"),
    )
