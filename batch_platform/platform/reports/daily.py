"""Per-day aggregates of predictions for analysts and monitoring.

A report row is a group: a day and a segment (the whole day, or one value of a segment
column). Its median, p90 and AUC are exact, so they need every score of the group at once.
To keep memory bounded however large a day grows, the report is computed from *segment rows*
(one per flight and segment type) sorted by group, read chunk by chunk: complete groups of a
chunk are aggregated at once, and only the group still open at the chunk's end is carried on,
as three narrow columns (score, label, outcome) and the model version. The warehouse produces
the sorted segment rows with ``segment_rows_sql`` (DuckDB joins and sorts out of core); a
frame in memory goes through ``segment_rows``. Both are aggregated by the same code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.booster import auc_expr

ALL_SEGMENT = "all"
_RUN = "__group_run"
GROUP = ("partition_date", "segment_type", "segment")
# What a report needs of each table; ``flight_id`` joins them.
PREDICTION_COLUMNS = ("partition_date", "score", "label", "model_version")
# Segment rows' text columns of a few distinct values: read as categoricals, they cost 4 bytes
# a row while a group is carried from chunk to chunk.
CATEGORICAL_COLUMNS = ("segment_type", "segment", "model_version")


def daily_report(predictions: pl.DataFrame, features: pl.DataFrame, spec: FeatureSpec,
                 reported_at: dt.datetime) -> pl.DataFrame:
    """One row per day and segment (the whole day, and each value of each segment column).

    ``features`` supplies the segment columns and the realised outcome, where known.
    """
    rows = segment_rows(predictions, features, spec).sort(*GROUP, "score", spec.id_column,
                                                          nulls_last=True)
    return report_of_sorted_rows([rows], spec, reported_at)


def segment_rows(predictions: pl.DataFrame, features: pl.DataFrame, spec: FeatureSpec
                 ) -> pl.DataFrame:
    """Each prediction once per segment type, with its segment and realised outcome; sorted by
    group, score and id they are what ``report_of_sorted_rows`` reads."""
    joined = predictions.select(spec.id_column, *PREDICTION_COLUMNS).join(
        features.select(spec.id_column, *spec.segment_columns, spec.label_column),
        on=spec.id_column, how="left", validate="1:1")
    segments = [(pl.lit(ALL_SEGMENT), pl.lit(ALL_SEGMENT))] + [
        (pl.lit(column), pl.col(column).cast(pl.String)) for column in spec.segment_columns]
    return pl.concat([
        joined.select("partition_date", kind.alias("segment_type"), value.alias("segment"),
                      "score", "label", spec.label_column, "model_version", spec.id_column)
        for kind, value in segments])


def segment_rows_sql(spec: FeatureSpec) -> str:
    """``segment_rows`` of the warehouse's partitions $start..$end, sorted as the report reads
    them, in one pass of DuckDB: a join, a cross join with the segment types, and a sort, each
    of which spills to disk rather than exceed DuckDB's memory limit."""

    def quoted(column: str) -> str:
        return f'"{column}"'

    window = "partition_date BETWEEN $start AND $end"
    key = quoted(spec.id_column)
    kinds = [ALL_SEGMENT, *spec.segment_columns]
    segment = " ".join(f"WHEN '{column}' THEN CAST(f.{quoted(column)} AS VARCHAR)"
                       for column in spec.segment_columns)
    segment_types = ", ".join(f"('{kind}')" for kind in kinds)
    return (
        f"SELECT p.partition_date, s.segment_type, CASE s.segment_type WHEN '{ALL_SEGMENT}' "
        f"THEN '{ALL_SEGMENT}' {segment} END AS segment, p.score, p.label, "
        f"f.{quoted(spec.label_column)}, p.model_version, p.{key} "
        f"FROM (SELECT {key}, {', '.join(PREDICTION_COLUMNS)} FROM predictions.{spec.use_case} "
        f"WHERE {window}) p "
        f"LEFT JOIN (SELECT {key}, {', '.join(quoted(c) for c in spec.segment_columns)}, "
        f"{quoted(spec.label_column)} FROM features.{spec.use_case} WHERE {window}) f "
        f"ON p.{key} = f.{key} "
        f"CROSS JOIN (VALUES {segment_types}) s(segment_type) "
        # Scores in a fixed order within a group: a mean's float sum depends on the order.
        f"ORDER BY {', '.join(GROUP)}, score, {key} NULLS LAST"
    )


def report_of_sorted_rows(chunks: Iterable[pl.DataFrame], spec: FeatureSpec,
                          reported_at: dt.datetime) -> pl.DataFrame:
    """The report of segment rows arriving sorted by group, a chunk at a time."""
    values = ("score", "label", spec.label_column, "model_version")
    aggregations = _aggregations(spec)
    done: list[pl.DataFrame] = []
    open_key: tuple | None = None
    open_rows: list[pl.DataFrame] = []

    def close_open_group() -> None:
        if open_rows:
            rows = pl.concat(open_rows, rechunk=False).with_columns(
                pl.lit(0, pl.UInt32).alias(_RUN))
            done.append(rows.group_by(_RUN).agg(aggregations).select(
                *(pl.lit(v).alias(k) for k, v in zip(GROUP, open_key, strict=True)),
                pl.exclude(_RUN)))
            open_rows.clear()

    for chunk in chunks:
        if chunk.height == 0:
            continue
        # Every group is aggregated by a group_by on its run number, the open one included:
        # the same summation whatever the chunking, so the same floats.
        runs = chunk.with_columns(pl.struct(GROUP).rle_id().alias(_RUN))
        last = runs.item(-1, _RUN)
        first_key = chunk.select(GROUP).row(0)
        if first_key != open_key:
            close_open_group()
            open_key = first_key
        open_rows.append(runs.filter(pl.col(_RUN) == 0).select(values))
        if last == 0:
            continue  # the whole chunk belongs to the open group
        close_open_group()
        complete = runs.filter(pl.col(_RUN).is_between(1, last - 1))
        if complete.height:
            done.append(complete.group_by(_RUN).agg(*(pl.col(k).first() for k in GROUP),
                                                    *aggregations).drop(_RUN))
        open_key = chunk.select(GROUP).row(-1)
        open_rows.append(runs.filter(pl.col(_RUN) == last).select(values))
    close_open_group()
    columns = [*GROUP, *(aggregation.meta.output_name() for aggregation in aggregations)]
    schema = {"partition_date": pl.Date(), "segment_type": pl.String(), "segment": pl.String()}
    report = (pl.concat([part.select(columns).cast(schema) for part in done])
              if done else _empty(columns, spec))
    return (report.with_columns(pl.lit(reported_at).cast(pl.Datetime("us", "UTC"))
                                .alias("reported_at"))
            .sort(GROUP))


def _aggregations(spec: FeatureSpec) -> list[pl.Expr]:
    outcome = pl.col(spec.label_column)
    return [
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
        # Unique first: the column may be categorical (a few versions, 4 bytes a row).
        pl.col("model_version").unique().cast(pl.String).sort().str.join(",")
        .alias("model_version"),
    ]


def _empty(columns: list[str], spec: FeatureSpec) -> pl.DataFrame:
    rows = pl.DataFrame(schema={"partition_date": pl.Date(), "segment_type": pl.String(),
                                "segment": pl.String(), "score": pl.Float64(),
                                "label": pl.Boolean(), spec.label_column: pl.Boolean(),
                                "model_version": pl.String()})
    return rows.group_by(GROUP).agg(_aggregations(spec)).select(columns)
