"""Per-day aggregates of predictions for analysts and monitoring.

A report row is a group: a day and a segment (the whole day, or one value of a segment
column). Its columns are the objective's (``models/objectives.py``): score statistics,
predicted and realised positives and AUC for a probability; prediction statistics, MAE, RMSE
and bias for a value. Its median, p90 and AUC are exact, so they need every output of the
group at once.
To keep memory bounded however large a day grows, the report is computed from *segment rows*
(one per row and segment type) sorted by group, read chunk by chunk: complete groups of a
chunk are aggregated at once, and only the group still open at the chunk's end is carried on,
as a few narrow columns (the outputs, the outcome) and the model version. The warehouse produces
the sorted segment rows with ``segment_rows_sql`` (DuckDB joins and sorts out of core); a
frame in memory goes through ``segment_rows``. Both are aggregated by the same code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.objectives import Objective, objective

ALL_SEGMENT = "all"
_RUN = "__group_run"
GROUP = ("partition_date", "segment_type", "segment")


def prediction_columns(kind: Objective) -> tuple[str, ...]:
    """What a report needs of the predictions table; the row id joins it to the features."""
    return ("partition_date", *kind.report_values, "model_version")

# Segment rows' text columns of a few distinct values: read as categoricals, they cost 4 bytes
# a row while a group is carried from chunk to chunk.
CATEGORICAL_COLUMNS = ("segment_type", "segment", "model_version")


def daily_report(predictions: pl.DataFrame, features: pl.DataFrame, spec: FeatureSpec,
                 reported_at: dt.datetime) -> pl.DataFrame:
    """One row per day and segment (the whole day, and each value of each segment column).

    ``features`` supplies the segment columns and the realised outcome, where known.
    """
    rows = segment_rows(predictions, features, spec).sort(
        *GROUP, objective(spec.objective).output, spec.id_column, nulls_last=True)
    return report_of_sorted_rows([rows], spec, reported_at)


def segment_rows(predictions: pl.DataFrame, features: pl.DataFrame, spec: FeatureSpec
                 ) -> pl.DataFrame:
    """Each prediction once per segment type, with its segment and realised outcome; sorted by
    group, score and id they are what ``report_of_sorted_rows`` reads."""
    kind = objective(spec.objective)
    joined = predictions.select(spec.id_column, *prediction_columns(kind)).join(
        features.select(spec.id_column, *spec.segment_columns, spec.label_column),
        on=spec.id_column, how="left", validate="1:1")
    segments = [(pl.lit(ALL_SEGMENT), pl.lit(ALL_SEGMENT))] + [
        (pl.lit(column), pl.col(column).cast(pl.String)) for column in spec.segment_columns]
    return pl.concat([
        joined.select("partition_date", segment_type.alias("segment_type"),
                      value.alias("segment"), *kind.report_values, spec.label_column,
                      "model_version", spec.id_column)
        for segment_type, value in segments])


def segment_rows_sql(spec: FeatureSpec) -> str:
    """``segment_rows`` of the warehouse's partitions $start..$end, sorted as the report reads
    them and without the id (the report does not read it), in one pass of DuckDB: a join
    that numbers the rows by day, score and id, a cross join with the segment types, and a
    sort by day, segment type, segment and that number, each of which spills to disk rather
    than exceed DuckDB's memory limit. Sorting a row's three copies by one number costs less
    than by its score and id again, and gives the same order."""

    def quoted(column: str) -> str:
        return f'"{column}"'

    window = "partition_date BETWEEN $start AND $end"
    kind = objective(spec.objective)
    key = quoted(spec.id_column)
    # Numbered in the order of their names, so that sorting by number sorts by name.
    kinds = sorted([ALL_SEGMENT, *spec.segment_columns])
    segment = " ".join(f"WHEN '{column}' THEN CAST(j.{quoted(column)} AS VARCHAR)"
                       for column in spec.segment_columns)
    segment_types = ", ".join(f"({number}, '{kind}')" for number, kind in enumerate(kinds))
    return (
        f"WITH j AS (SELECT p.*, "
        f"{', '.join(f'f.{quoted(c)}' for c in (*spec.segment_columns, spec.label_column))}, "
        # Scores in a fixed order within a group: a mean's float sum depends on the order.
        # Numbered once per day by score and id, a row's segment rows sort by that number.
        f"row_number() OVER (PARTITION BY p.partition_date ORDER BY p.{kind.output}, "
        f"p.{key} NULLS LAST) AS __rank "
        f"FROM (SELECT {key}, {', '.join(prediction_columns(kind))} "
        f"FROM predictions.{spec.use_case} "
        f"WHERE {window}) p "
        f"LEFT JOIN (SELECT {key}, {', '.join(quoted(c) for c in spec.segment_columns)}, "
        f"{quoted(spec.label_column)} FROM features.{spec.use_case} WHERE {window}) f "
        f"ON p.{key} = f.{key}) "
        f"SELECT j.partition_date, s.segment_type, CASE s.segment_type WHEN '{ALL_SEGMENT}' "
        f"THEN '{ALL_SEGMENT}' {segment} END AS segment, "
        f"{', '.join(f'j.{quoted(c)}' for c in kind.report_values)}, "
        f"j.{quoted(spec.label_column)}, j.model_version "
        f"FROM j CROSS JOIN (VALUES {segment_types}) s(number, segment_type) "
        f"ORDER BY j.partition_date, s.number, segment, j.__rank"
    )


def report_of_sorted_rows(chunks: Iterable[pl.DataFrame], spec: FeatureSpec,
                          reported_at: dt.datetime) -> pl.DataFrame:
    """The report of segment rows arriving sorted by group, a chunk at a time."""
    values = (*objective(spec.objective).report_values, spec.label_column, "model_version")
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
    return [
        pl.len().cast(pl.Int64).alias("rows"),
        *objective(spec.objective).report_aggregations(spec.label_column),
        # Unique first: the column may be categorical (a few versions, 4 bytes a row).
        pl.col("model_version").unique().cast(pl.String).sort().str.join(",")
        .alias("model_version"),
    ]


def _empty(columns: list[str], spec: FeatureSpec) -> pl.DataFrame:
    kind = objective(spec.objective)
    rows = pl.DataFrame(schema={"partition_date": pl.Date(), "segment_type": pl.String(),
                                "segment": pl.String(),
                                **{c: kind.output_schema[c] for c in kind.report_values},
                                spec.label_column: pl.Boolean() if spec.is_binary
                                else pl.Float64(), "model_version": pl.String()})
    return rows.group_by(GROUP).agg(_aggregations(spec)).select(columns)
