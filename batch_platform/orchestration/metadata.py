"""Metadata a person looks at on a materialization, in Dagster's own keys where they exist."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping

import dagster as dg
import numpy as np
import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.reports.daily import ALL_SEGMENT
from batch_platform.platform.scoring.score import RISK_BANDS
from batch_platform.platform.storage.staging import StagedTable

TOP_SEGMENTS = 5
# A segment needs this many flights to be ranked: tiny segments top every list by chance.
MIN_SEGMENT_FLIGHTS = 20

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
    "scorer": "what computed the score: lightgbm, or compiled (the model as native code)",
    "code_version": "batch_platform release + hash of its source",
    "run_id": "Dagster run that scored the row",
    "scored_at": "when the row was scored (UTC)",
    "segment_type": "all, carrier or origin",
    "segment": "the carrier or origin code; 'all' for the whole day",
    "outcomes_known": "flights whose arrival delay is known",
    "realised_late_rate": "share of flights with a known outcome that arrived late",
    "auc": "ROC AUC of score against the realised outcome; null with one class",
    "reported_at": "when the report row was computed (UTC)",
}


def table_metadata(rows: pl.DataFrame | StagedTable) -> dict[str, object]:
    schema = rows.empty().schema if isinstance(rows, StagedTable) else rows.schema
    count = rows.rows if isinstance(rows, StagedTable) else rows.height
    # TableMetadataSet is not exported in dagster 1.13: the literal keys are the API.
    return {
        "dagster/row_count": dg.MetadataValue.int(count),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=[
            dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
            for name, dtype in schema.items()
        ])),
    }


def timing_metadata(rows: int, started: float, publish_seconds: float) -> dict[str, object]:
    seconds = time.perf_counter() - started
    return {
        "wall_seconds": round(seconds, 3),
        "publish_seconds": round(publish_seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
    }


AUC_BINS = 100_000  # the realised AUC in metadata is exact to about 1e-5


class PredictionSummary:
    """What the predictions' metadata shows, added up chunk by chunk: score distribution, risk
    bands, the riskiest segments and the realised AUC, in memory independent of the rows."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.score_sum = 0.0
        self.labelled = 0
        self.bands: dict[str, int] = dict.fromkeys(RISK_BANDS, 0)
        self.histogram = np.zeros(10, dtype=np.int64)
        self.segments: dict[str, pl.DataFrame] = {}
        self.late = np.zeros(AUC_BINS, dtype=np.int64)
        self.on_time = np.zeros(AUC_BINS, dtype=np.int64)

    def add(self, predictions: pl.DataFrame, features: pl.DataFrame) -> PredictionSummary:
        spec = self.spec
        rows = predictions.join(
            features.select(spec.id_column, *spec.segment_columns, spec.label_column),
            on=spec.id_column, how="left")
        score = rows.get_column("score")
        self.rows += rows.height
        self.score_sum += float(score.sum())
        self.labelled += int(rows.get_column("label").sum())
        for band, count in rows.group_by("risk_band").len().iter_rows():
            self.bands[band] = self.bands.get(band, 0) + count
        self.histogram += np.bincount(
            (score.clip(0.0, 0.999999) * 10).floor().cast(pl.Int64).to_numpy(), minlength=10)
        for column in spec.segment_columns:
            partial = rows.group_by(column).agg(
                pl.len().alias("flights"), pl.col("score").sum().alias("score_sum"),
                pl.col("label").cast(pl.Int64).sum().alias("label_sum"))
            previous = self.segments.get(column)
            self.segments[column] = partial if previous is None else (
                pl.concat([previous, partial]).group_by(column).agg(pl.all().sum()))
        known = rows.filter(pl.col(spec.label_column).is_not_null())
        bins = (known.get_column("score").clip(0.0, 1.0) * (AUC_BINS - 1)).cast(pl.Int64)
        late = known.get_column(spec.label_column).to_numpy().astype(bool)
        self.late += np.bincount(bins.to_numpy()[late], minlength=AUC_BINS)
        self.on_time += np.bincount(bins.to_numpy()[~late], minlength=AUC_BINS)
        return self

    def realised_auc(self) -> float | None:
        """Mann-Whitney over score bins; ties within a bin count half."""
        positives, negatives = int(self.late.sum()), int(self.on_time.sum())
        if not positives or not negatives:
            return None
        below = np.cumsum(self.on_time) - self.on_time
        wins = float((self.late * below).sum() + 0.5 * (self.late * self.on_time).sum())
        return wins / (positives * negatives)


def score_summary(summary: PredictionSummary) -> dict[str, object]:
    if summary.rows == 0:
        return {"mean_score": 0.0, "positive_rate": 0.0}
    table = "| risk band | flights |\n|---|---|\n" + "\n".join(
        f"| {band} | {summary.bands.get(band, 0)} |" for band in RISK_BANDS)
    return {
        "mean_score": round(summary.score_sum / summary.rows, 4),
        "positive_rate": round(summary.labelled / summary.rows, 4),
        "risk_bands": dg.MetadataValue.md(table),
    }


def _score_histogram(counts: np.ndarray) -> str:
    total = max(int(counts.sum()), 1)
    return "| score | flights | share |\n|---|---:|---|\n" + "\n".join(
        f"| {i / 10:.1f}–{(i + 1) / 10:.1f} | {count:,} | {'█' * round(40 * count / total)} "
        f"{count / total:.1%} |" for i, count in enumerate(counts.tolist()))


def _top_segments(segments: pl.DataFrame, column: str) -> str:
    top = (segments.with_columns((pl.col("score_sum") / pl.col("flights")).alias("mean_score"),
                                 (pl.col("label_sum") / pl.col("flights"))
                                 .alias("predicted_late_rate"))
           .filter(pl.col("flights") >= MIN_SEGMENT_FLIGHTS)
           .sort("predicted_late_rate", "flights", descending=True).head(TOP_SEGMENTS))
    return (f"| {column} | flights | mean score | predicted late |\n|---|---:|---:|---:|\n"
            + "\n".join(f"| {r[column]} | {r['flights']:,} | {r['mean_score']:.3f} | "
                         f"{r['predicted_late_rate']:.1%} |" for r in top.iter_rows(named=True)))


def prediction_summary(summary: PredictionSummary) -> dict[str, object]:
    """The score distribution and the riskiest segments, and the realised AUC where known."""
    if summary.rows == 0:
        return {}
    sections = [f"**{summary.rows:,} flights scored**, mean score "
                f"{summary.score_sum / summary.rows:.3f}, predicted late "
                f"{summary.labelled / summary.rows:.1%}",
                "### Score distribution", _score_histogram(summary.histogram)]
    for column, segments in summary.segments.items():
        sections += [f"### Riskiest {column}s (at least {MIN_SEGMENT_FLIGHTS} flights)",
                     _top_segments(segments, column)]
    metadata: dict[str, object] = {"summary": dg.MetadataValue.md("\n\n".join(sections))}
    auc = summary.realised_auc()
    if auc is not None:
        metadata["realised_auc"] = round(auc, 4)
    return metadata


def report_summary(report: pl.DataFrame) -> dict[str, object]:
    """The day(s) at a glance and the segments with the highest predicted late rate."""
    overall = report.filter(pl.col("segment_type") == ALL_SEGMENT).sort("partition_date")
    segments = (report.filter((pl.col("segment_type") != ALL_SEGMENT)
                              & (pl.col("flights") >= MIN_SEGMENT_FLIGHTS))
                .sort("predicted_late_rate", "flights", descending=True).head(TOP_SEGMENTS))
    days = ("| day | flights | mean score | predicted late | realised late | AUC |\n"
            "|---|---:|---:|---:|---:|---:|\n" + "\n".join(
                f"| {r['partition_date']} | {r['flights']:,} | {r['mean_score']:.3f} | "
                f"{r['predicted_late_rate']:.1%} | {_share(r['realised_late_rate'])} | "
                f"{_number(r['auc'])} |" for r in overall.tail(31).iter_rows(named=True)))
    top = ("| day | segment | flights | predicted late | realised late |\n"
           "|---|---|---:|---:|---:|\n" + "\n".join(
               f"| {r['partition_date']} | {r['segment_type']} {r['segment']} | {r['flights']:,} "
               f"| {r['predicted_late_rate']:.1%} | {_share(r['realised_late_rate'])} |"
               for r in segments.iter_rows(named=True)))
    shown = "" if overall.height <= 31 else " (last 31 days)"
    return {"summary": dg.MetadataValue.md(
        f"### Days{shown}\n\n{days}\n\n### Highest predicted late rate "
        f"(segments of at least {MIN_SEGMENT_FLIGHTS} flights)\n\n{top}")}


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# Counts that add up over days; in a range run they are the range's totals.
_ADDITIVE = {"dagster/row_count", "rows_in", "rows_rejected", "rows_with_outcome", "rows_scored",
             "rows_without_weather", "rows_without_plane", "rows_explained", "unknown_categories",
             "flights", "predicted_late"}


def scoped_to_partitions(metadata: dict[str, object], days: list[dt.date],
                         rows_by_day: pl.DataFrame | Mapping[dt.date, int]) -> dict[str, object]:
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
    if isinstance(rows_by_day, pl.DataFrame):
        rows_by_day = dict(rows_by_day.group_by("partition_date").len().iter_rows())
    scoped["rows_by_partition"] = dg.MetadataValue.json(
        {day.isoformat(): count for day, count in sorted(rows_by_day.items())})
    return scoped
