"""Metadata a person looks at on a materialization, in Dagster's own keys where they exist."""

from __future__ import annotations

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
