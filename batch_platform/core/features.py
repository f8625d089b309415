"""Features of the flights use case: one function serves training and scoring.

Only what is known before departure goes in: the schedule, carrier and route, the plane, the
weather observed at the origin at the scheduled hour (standing in for a forecast), how busy
the origin is scheduled to be, and delay statistics of the previous day. What happens to the
flight itself (``OUTCOME_COLUMNS``) is never a feature; ``arr_delay`` only makes the label.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

# Observed about the flight itself: using any of them as a feature is target leakage.
OUTCOME_COLUMNS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")
LATE_MINUTES = 15


@dataclass(frozen=True)
class FeatureSpec:
    """What a model of a use case consumes: the contract between features, training and scoring."""

    use_case: str
    id_column: str
    label_column: str
    feature_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    # Columns of the features table that reports segment by.
    segment_columns: tuple[str, ...]
    # Per-row features whose distribution over one day is comparable with the training window:
    # the ones a drift check can compare. Day-level features (the calendar, the day's weather,
    # yesterday's statistics) take one or a few values a day, so any single day "drifts".
    drift_columns: tuple[str, ...] = ()

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.feature_columns if c not in self.categorical_columns)


WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip",
                    "pressure", "visib")
PREVIOUS_DAY_FEATURES = ("prev_day_origin_late_rate", "prev_day_origin_mean_dep_delay",
                         "prev_day_origin_cancelled_rate", "prev_day_carrier_late_rate")

FLIGHTS = FeatureSpec(
    use_case="flights",
    id_column="flight_id",
    label_column="arrived_late",
    feature_columns=(
        "carrier", "origin", "dest",
        "month", "day_of_week", "sched_dep_minute", "sched_arr_minute", "sched_duration_minutes",
        "distance",
        "plane_age", "plane_seats", "plane_engines",
        *WEATHER_FEATURES,
        "origin_flights_scheduled_hour", "origin_flights_scheduled_day",
        *PREVIOUS_DAY_FEATURES,
    ),
    categorical_columns=("carrier", "origin", "dest"),
    segment_columns=("carrier", "origin"),
    drift_columns=("carrier", "origin", "dest", "sched_dep_minute", "sched_arr_minute",
                   "sched_duration_minutes", "distance", "plane_age", "plane_seats",
                   "plane_engines"),
)


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

    ``flights`` must hold the raw rows of the day before ``start`` too: they feed the
    previous-day statistics. One output row per input flight of the window, ordered by day
    and flight id, so the same input always gives the same frame (and the same model).
    """
    window = flights.filter(pl.col("partition_date").is_between(start, end))
    previous = _previous_day_statistics(flights)

    weather_at_hour = weather.select(
        "origin", "time_hour", *(pl.col(c).cast(pl.Float64) for c in WEATHER_FEATURES)
    ).unique(subset=["origin", "time_hour"], keep="first")
    plane_facts = planes.select(
        "tailnum",
        pl.col("year").alias("plane_year"),
        pl.col("seats").cast(pl.Float64).alias("plane_seats"),
        pl.col("engines").cast(pl.Float64).alias("plane_engines"),
    ).unique(subset=["tailnum"], keep="first")

    return (
        window.lazy()
        .with_columns(
            flight_id(),
            pl.col("partition_date").dt.month().cast(pl.Int32).alias("month"),
            pl.col("partition_date").dt.weekday().cast(pl.Int32).alias("day_of_week"),
            _minute_of_day("sched_dep_time").cast(pl.Int32).alias("sched_dep_minute"),
            _minute_of_day("sched_arr_time").cast(pl.Int32).alias("sched_arr_minute"),
            ((_minute_of_day("sched_arr_time") - _minute_of_day("sched_dep_time")) % 1440)
            .cast(pl.Int32).alias("sched_duration_minutes"),
            pl.len().over("partition_date", "origin", "hour").cast(pl.Int32)
            .alias("origin_flights_scheduled_hour"),
            pl.len().over("partition_date", "origin").cast(pl.Int32)
            .alias("origin_flights_scheduled_day"),
            (pl.col("arr_delay") > LATE_MINUTES).alias(FLIGHTS.label_column),
        )
        .join(weather_at_hour.lazy(), on=["origin", "time_hour"], how="left")
        .join(plane_facts.lazy(), on="tailnum", how="left")
        .with_columns((pl.col("partition_date").dt.year() - pl.col("plane_year"))
                      .cast(pl.Float64).alias("plane_age"))
        .join(previous.origin.lazy(), on=["partition_date", "origin"], how="left")
        .join(previous.carrier.lazy(), on=["partition_date", "carrier"], how="left")
        .select(
            FLIGHTS.id_column,
            "partition_date",
            *(pl.col(c) for c in FLIGHTS.feature_columns),
            FLIGHTS.label_column,
        )
        .sort("partition_date", FLIGHTS.id_column)
        .collect()
    )


@dataclass(frozen=True)
class _PreviousDay:
    origin: pl.DataFrame
    carrier: pl.DataFrame


def _previous_day_statistics(flights: pl.DataFrame) -> _PreviousDay:
    """Delay statistics of each day, keyed by the day after it: known before that day starts."""
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
    return _PreviousDay(origin=origin, carrier=carrier)
