"""Per-day aggregates of predictions for analysts and monitoring."""

from __future__ import annotations

import datetime as dt

import polars as pl

from batch_platform.core.features import FeatureSpec
from batch_platform.core.model import auc_expr

ALL_SEGMENT = "all"


def daily_report(predictions: pl.DataFrame, features: pl.DataFrame, spec: FeatureSpec,
                 reported_at: dt.datetime) -> pl.DataFrame:
    """One row per day and segment (the whole day, and each value of each segment column).

    ``features`` supplies the segment columns and the realised outcome, where known.
    """
    joined = predictions.join(
        features.select(spec.id_column, *spec.segment_columns, spec.label_column),
        on=spec.id_column,
        how="left",
        validate="1:1",
    )
    segments = [joined.with_columns(pl.lit(ALL_SEGMENT).alias("segment_type"),
                                    pl.lit(ALL_SEGMENT).alias("segment"))]
    segments += [
        joined.with_columns(pl.lit(column).alias("segment_type"),
                            pl.col(column).alias("segment"))
        for column in spec.segment_columns
    ]
    outcome = pl.col(spec.label_column)
    return (
        pl.concat(segments)
        .group_by("partition_date", "segment_type", "segment")
        .agg(
            pl.len().cast(pl.Int64).alias("flights"),
            pl.col("score").mean().alias("mean_score"),
            pl.col("score").median().alias("median_score"),
            pl.col("score").quantile(0.9, interpolation="linear").alias("p90_score"),
            pl.col("label").sum().cast(pl.Int64).alias("predicted_late"),
            pl.col("label").mean().alias("predicted_late_rate"),
            outcome.is_not_null().sum().cast(pl.Int64).alias("outcomes_known"),
            outcome.sum().cast(pl.Int64).alias("realised_late"),
            outcome.cast(pl.Float64).mean().alias("realised_late_rate"),
            auc_expr("score", spec.label_column).alias("auc"),
            pl.col("model_version").unique().sort().str.join(",").alias("model_version"),
        )
        .with_columns(pl.lit(reported_at).cast(pl.Datetime("us", "UTC")).alias("reported_at"))
        .sort("partition_date", "segment_type", "segment")
    )
