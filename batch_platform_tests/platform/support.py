"""Helpers shared by the core tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.ingest.validate import validate_file

# Three consecutive real days of the 2013 data; the first has no previous day landed.
DAY_1 = dt.date(2013, 1, 1)
DAY_2 = dt.date(2013, 1, 2)
DAY_3 = dt.date(2013, 1, 3)
DAYS = (DAY_1, DAY_2, DAY_3)

LINEAGE = ingest.Lineage(run_id="test-run",
                         ingested_at=dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC))


def raw_rows(landing_dir: Path, schema: SourceSchema, days: tuple[dt.date, ...]) -> pl.DataFrame:
    """The good rows of ``days`` with lineage (and ``partition_date``), as in raw.<source>."""
    frames = []
    for day in days:
        validated = validate_file(landing.landing_file(landing_dir, schema.name, day), schema, day)
        assert validated.rejected.height == 0, validated.rejected
        frames.append(ingest.with_lineage(validated.good, validated, LINEAGE))
    return pl.concat(frames)


def source_day(frame: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """The rows of a package source (text columns) whose local date is ``day``."""
    return frame.filter(
        (pl.col("year") == str(day.year))
        & (pl.col("month") == str(day.month))
        & (pl.col("day") == str(day.day))
    )


def data_lines(path: Path) -> list[str]:
    """The lines of a CSV file after its header."""
    return path.read_text().splitlines()[1:]
