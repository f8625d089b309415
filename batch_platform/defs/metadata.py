"""Metadata a person looks at on a materialization, in Dagster's own keys where they exist."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import polars as pl


def table_metadata(frame: pl.DataFrame) -> dict[str, object]:
    # TableMetadataSet is not exported in dagster 1.13: the literal keys are the API.
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=[
            dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()
        ])),
    }


def timing_metadata(rows: int, started: float, publish_seconds: float) -> dict[str, object]:
    seconds = time.perf_counter() - started
    return {
        "wall_seconds": round(seconds, 3),
        "publish_seconds": round(publish_seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
    }


def score_summary(predictions: pl.DataFrame) -> dict[str, object]:
    if predictions.height == 0:
        return {"mean_score": 0.0, "positive_rate": 0.0}
    bands = predictions.group_by("risk_band").len().sort("risk_band")
    table = "| risk band | flights |\n|---|---|\n" + "\n".join(
        f"| {band} | {count} |" for band, count in bands.iter_rows())
    return {
        "mean_score": float(predictions.get_column("score").mean()),
        "positive_rate": float(predictions.get_column("label").mean()),
        "risk_bands": dg.MetadataValue.md(table),
    }


# Counts that add up over days; in a range run they are the range's totals.
_ADDITIVE = {"dagster/row_count", "rows_in", "rows_rejected", "rows_with_outcome",
             "rows_without_weather", "rows_without_plane", "rows_explained", "unknown_categories",
             "flights", "predicted_late"}


def scoped_to_partitions(metadata: dict[str, object], days: list[dt.date],
                         frame: pl.DataFrame) -> dict[str, object]:
    """Say what the metadata of a materialization covers.

    Dagster 1.13 copies a range run's metadata to every partition of the range (one
    materialization cannot carry per-partition values), so there the counts are renamed
    ``range_*`` and broken down by day, and the per-day series Dagster plots stay per day.
    """
    if len(days) == 1:
        return metadata
    scoped: dict[str, object] = {
        "range": f"{days[0]}..{days[-1]} ({len(days)} partitions): counts are range totals",
    }
    for key, value in metadata.items():
        name = key.removeprefix("dagster/")
        scoped[f"range_{name}" if key in _ADDITIVE else key] = value
    per_day = frame.group_by("partition_date").len().sort("partition_date")
    scoped["rows_by_partition"] = dg.MetadataValue.json(
        {day.isoformat(): count for day, count in per_day.iter_rows()})
    return scoped
