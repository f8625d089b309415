"""Landing files of any size for one day: the real flights of its season, resampled.

A benchmark at a million rows should run exactly the production path, so the rows are real
flights of the same month (schedules, carriers, routes, planes, outcomes), moved to the chosen
day with their local hour kept, and given fresh flight numbers so every flight id is new and
unique. The day's real weather and the previous day's real flights are landed alongside, so
weather joins and previous-day features work as they do on real data.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest.completeness import land_csv
from batch_platform.use_cases.flights import landing as flights_landing

LOCAL_TIMEZONE = "America/New_York"

MAX_FLIGHT_NUMBER = 99_999


def scaled_flights(day: dt.date, rows: int, seed: int = 2013,
                   package_data_dir: Path | None = None) -> pl.DataFrame:
    """``rows`` flights for ``day``, drawn with replacement from the real flights of its month."""
    if rows < 1:
        raise ValueError("rows must be positive")
    source = flights_landing.read_source_text("flights", package_data_dir)
    season = source.filter(pl.col("month") == str(day.month))
    if season.height == 0:
        raise ValueError(f"no real flights in month {day.month} to resample")
    local_hour = pl.datetime(day.year, day.month, day.day, pl.col("hour").cast(pl.Int32),
                             time_zone=LOCAL_TIMEZONE, ambiguous="earliest")
    # A fresh number per (carrier, origin, departure): the schema's key and the flight id
    # (date, carrier, number, origin, departure) are unique however many rows are drawn.
    number = pl.int_range(1, pl.len() + 1).over("carrier", "origin", "sched_dep_time")
    scaled = season.sample(n=rows, with_replacement=True, seed=seed, shuffle=True).with_columns(
        pl.lit(str(day.year)).alias("year"),
        pl.lit(str(day.month)).alias("month"),
        pl.lit(str(day.day)).alias("day"),
        number.cast(pl.String).alias("flight"),
        local_hour.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("time_hour"),
    ).select(source.columns)
    largest = int(scaled.get_column("flight").cast(pl.Int64).max() or 0)
    if largest > MAX_FLIGHT_NUMBER:
        raise ValueError(f"{rows} rows need flight number {largest}, above the schema's "
                         f"{MAX_FLIGHT_NUMBER}: too many flights for one day's schedule")
    return scaled


def land_scaled(landing_dir: Path, day: dt.date, rows: int, seed: int = 2013) -> Path:
    """Land ``rows`` flights for ``day``, with the real context the features need."""
    previous = day - dt.timedelta(days=1)
    # Real weather, the previous day and the reference files.
    flights_landing.land(landing_dir, [previous, day])
    path = landing.landing_file(landing_dir, "flights", day)
    land_csv(scaled_flights(day, rows, seed), path)  # with its manifest, as the lander
    return path
