"""Metadata a person looks at on a materialization, in Dagster's own keys where they exist."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import polars as pl

from batch_platform.core.scoring import RISK_BANDS

# What the columns of the analyst contract mean, shown beside the schema in the UI.
COLUMN_DESCRIPTIONS = {
    "partition_date": "the day (local scheduled date) this row belongs to",
    "_source_file": "landing file the row came from",
    "_ingested_at": "when the row was loaded (UTC)",
    "_run_id": "Dagster run that loaded the row",
    "_line_number": "line of the landing file (the header is line 1)",
    "reason": "why the row was rejected; several reasons are separated by '; '",
    "flight_id": "date-carrier+flight-origin-scheduled departure; stable across reruns",
    "arrived_late": "label: arrived more than 15 minutes late; null if it did not arrive",
    "score": "probability of arriving more than 15 minutes late",
    "label": "score >= the model's threshold",
    "risk_band": "low < threshold/2 <= medium < threshold <= high < (1+threshold)/2 <= very_high",
    "reason_1": "feature that pushed the score up most (SHAP contribution)",
    "reason_2": "second feature that pushed the score up",
    "reason_3": "third feature that pushed the score up",
    "model_version": "content hash of the LightGBM model file (models.registry)",
    "code_version": "batch_platform release + hash of its source",
    "run_id": "Dagster run that scored the row",
    "scored_at": "when the row was scored (UTC)",
    "segment_type": "all, carrier or origin",
    "segment": "the carrier or origin code; 'all' for the whole day",
    "outcomes_known": "flights whose arrival delay is known",
    "realised_late_rate": "share of flights with a known outcome that arrived late",
    "auc": "ROC AUC of score against the realised outcome; null with one class",
}


def table_metadata(frame: pl.DataFrame) -> dict[str, object]:
    # TableMetadataSet is not exported in dagster 1.13: the literal keys are the API.
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=[
            dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
            for name, dtype in frame.schema.items()
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
    counts = dict(predictions.group_by("risk_band").len().iter_rows())
    table = "| risk band | flights |\n|---|---|\n" + "\n".join(
        f"| {band} | {counts.get(band, 0)} |" for band in RISK_BANDS)
    return {
        "mean_score": round(float(predictions.get_column("score").mean()), 4),
        "positive_rate": round(float(predictions.get_column("label").mean()), 4),
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
