"""Metadata a person looks at on a materialization, in Dagster's own keys where they exist."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping

import dagster as dg
import numpy as np
import polars as pl

from batch_platform.platform.models.objectives import RISK_BANDS, Objective
from batch_platform.platform.monitoring.summary import PredictionSummary
from batch_platform.platform.reports.daily import ALL_SEGMENT
from batch_platform.platform.reports.shadow_comparison import CUMULATED
from batch_platform.platform.scoring.shadow import ShadowOutcome
from batch_platform.platform.storage.staging import StagedTable

TOP_SEGMENTS = 5
# A segment needs this many rows to be ranked: tiny segments top every list by chance.
MIN_SEGMENT_ROWS = 20

# What the platform's columns of the analyst contract mean, shown beside the schema in the UI.
COLUMN_DESCRIPTIONS = {
    "partition_date": "the day (in the use case's time zone) this row belongs to",
    "_source_file": "landing file the row came from",
    "_ingested_at": "when the row was loaded (UTC)",
    "_run_id": "Dagster run that loaded the row",
    "_line_number": "line of the landing file (the header is line 1)",
    "reason": "why the row was rejected; several reasons are separated by '; '",
    "score": "the model's probability of the positive outcome",
    "label": "score >= the model's threshold",
    "risk_band": "low < threshold/2 <= medium < threshold <= high < (1+threshold)/2 <= very_high",
    "prediction": "the model's predicted value",
    "prediction_low": "prediction + the 10% quantile of the validation residuals",
    "prediction_high": "prediction + the 90% quantile of the validation residuals",
    "reason_1": "feature that pushed the output up most (SHAP contribution)",
    "reason_2": "second feature that pushed the output up",
    "reason_3": "third feature that pushed the output up",
    "model_version": "content hash of the LightGBM model file (models.registry)",
    "scorer": "what computed the output: lightgbm, or compiled (the model as native code)",
    "code_version": "batch_platform release + hash of its source",
    "run_id": "Dagster run that scored the row",
    "scored_at": "when the row was scored (UTC)",
    "segment_type": "all, or the name of a segment column",
    "segment": "the segment column's value; 'all' for the whole day",
    "rows": "rows scored in the group",
    "outcomes_known": "rows whose outcome is known",
    "realised_positive_rate": "share of rows with a known outcome that were positive",
    "auc": "ROC AUC of score against the realised outcome; null with one class",
    "mae": "mean absolute error against the realised outcome",
    "rmse": "root mean squared error against the realised outcome",
    "bias": "mean of prediction minus outcome",
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


def timing_metadata(rows: int, started: float, commit_seconds: float) -> dict[str, object]:
    seconds = time.perf_counter() - started
    return {
        "wall_seconds": round(seconds, 3),
        "commit_seconds": round(commit_seconds, 3),  # on the writer lock
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
    }


def score_summary(summary: PredictionSummary) -> dict[str, object]:
    mean = round(summary.score_sum / summary.rows, 4) if summary.rows else 0.0
    if not summary.spec.is_binary:
        return {"mean_prediction": mean}
    if summary.rows == 0:
        return {"mean_score": 0.0, "positive_rate": 0.0}
    table = "| risk band | rows |\n|---|---|\n" + "\n".join(
        f"| {band} | {summary.bands.get(band, 0)} |" for band in RISK_BANDS)
    return {
        "mean_score": mean,
        "positive_rate": round(summary.labelled / summary.rows, 4),
        "risk_bands": dg.MetadataValue.md(table),
    }


def _histogram(counts: np.ndarray, low: float, high: float, what: str) -> str:
    total = max(int(counts.sum()), 1)
    width = (high - low) / 10
    return f"| {what} | rows | share |\n|---|---:|---|\n" + "\n".join(
        f"| {low + i * width:.3g}–{low + (i + 1) * width:.3g} | {count:,} | "
        f"{'█' * round(40 * count / total)} {count / total:.1%} |"
        for i, count in enumerate(counts.tolist()))


def _top_segments(segments: pl.DataFrame, column: str, binary: bool) -> str:
    mean = (pl.col("score_sum") / pl.col("rows")).alias("mean")
    rate = (pl.col("label_sum") / pl.col("rows")).alias("positive_rate")
    top = (segments.with_columns(mean, rate).filter(pl.col("rows") >= MIN_SEGMENT_ROWS)
           .sort("positive_rate" if binary else "mean", "rows", descending=True)
           .head(TOP_SEGMENTS))
    if not binary:
        return (f"| {column} | rows | mean prediction |\n|---|---:|---:|\n"
                + "\n".join(f"| {r[column]} | {r['rows']:,} | {r['mean']:.3f} |"
                            for r in top.iter_rows(named=True)))
    return (f"| {column} | rows | mean score | predicted positive |\n|---|---:|---:|---:|\n"
            + "\n".join(f"| {r[column]} | {r['rows']:,} | {r['mean']:.3f} | "
                        f"{r['positive_rate']:.1%} |" for r in top.iter_rows(named=True)))


def prediction_summary(summary: PredictionSummary) -> dict[str, object]:
    """The output distribution and the top segments, and the realised quality where known."""
    if summary.rows == 0:
        return {}
    binary = summary.spec.is_binary
    mean = summary.score_sum / summary.rows
    headline = (f"**{summary.rows:,} rows scored**, mean score {mean:.3f}, predicted positive "
                f"{summary.labelled / summary.rows:.1%}" if binary else
                f"**{summary.rows:,} rows scored**, mean prediction {mean:.3f}")
    sections = [headline, "### Distribution",
                _histogram(summary.histogram, *summary.value_range, summary.output)]
    for column, segments in summary.segments.items():
        sections += [f"### Top {column} values (at least {MIN_SEGMENT_ROWS} rows)",
                     _top_segments(segments, column, binary)]
    metadata: dict[str, object] = {"summary": dg.MetadataValue.md("\n\n".join(sections))}
    quality = summary.realised_auc() if binary else summary.realised_mae()
    if quality is not None:
        metadata["realised_auc" if binary else "realised_mae"] = round(quality, 4)
    return metadata


def shadow_metadata(outcome: ShadowOutcome | None) -> dict[str, object]:
    """The challenger scored in the shadow, if there is one: its version and rows."""
    if outcome is None:
        return {}
    metadata: dict[str, object] = {
        "challenger_version": outcome.version,
        "shadow_rows": outcome.predictions.rows if outcome.predictions is not None else 0}
    if outcome.scores is not None:
        metadata["shadow_seconds"] = round(outcome.scores.seconds, 3)
    if outcome.withheld is not None:
        metadata["shadow_withheld"] = outcome.withheld
    return metadata


def comparison_metadata(comparison: pl.DataFrame | None, kind: Objective
                        ) -> dict[str, object]:
    """Champion against challenger, cumulated up to the last day judged, if there is one."""
    if comparison is None:
        return {}
    cumulated = comparison.filter(pl.col("span") == CUMULATED).sort("partition_date")
    metadata: dict[str, object] = {"shadow_days_judged": cumulated.height}
    if cumulated.height:
        last = cumulated.row(-1, named=True)
        metadata["challenger_version"] = last["challenger_version"]
        head = (f"Cumulated over {last['days']} day(s), {last['first_day']}.."
                f"{last['partition_date']}, {last['rows']:,} rows with outcomes")
        metadata["shadow_comparison"] = dg.MetadataValue.md(
            f"{head}\n\n| metric | champion {last['champion_version']} | challenger "
            f"{last['challenger_version']} |\n|---|---:|---:|\n" + "\n".join(
                f"| {name} | {_number(last[f'champion_{name}'])} | "
                f"{_number(last[f'challenger_{name}'])} |" for name, _ in kind.realised_metrics))
    return metadata


def report_summary(report: pl.DataFrame, binary: bool) -> dict[str, object]:
    """The day(s) at a glance."""
    overall = report.filter(pl.col("segment_type") == ALL_SEGMENT).sort("partition_date")
    if binary:
        days = ("| day | rows | mean score | predicted positive | realised positive | AUC |\n"
                "|---|---:|---:|---:|---:|---:|\n" + "\n".join(
                    f"| {r['partition_date']} | {r['rows']:,} | {_number(r['mean_score'])} | "
                    f"{_share(r['predicted_positive_rate'])} | "
                    f"{_share(r['realised_positive_rate'])} | {_number(r['auc'])} |"
                    for r in overall.tail(31).iter_rows(named=True)))
    else:
        days = ("| day | rows | mean prediction | mean outcome | MAE | RMSE |\n"
                "|---|---:|---:|---:|---:|---:|\n" + "\n".join(
                    f"| {r['partition_date']} | {r['rows']:,} | {_number(r['mean_prediction'])} "
                    f"| {_number(r['mean_outcome'])} | {_number(r['mae'])} | "
                    f"{_number(r['rmse'])} |" for r in overall.tail(31).iter_rows(named=True)))
    shown = "" if overall.height <= 31 else " (last 31 days)"
    return {"summary": dg.MetadataValue.md(f"### Days{shown}\n\n{days}")}


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# Counts that add up over days; in a range run they are the range's totals.
_ADDITIVE = {"dagster/row_count", "rows_in", "rows_rejected", "rows_with_outcome", "rows_scored",
             "rows_explained", "unknown_categories", "rows", "predicted_positive",
             "shadow_rows"}


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
