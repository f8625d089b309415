"""Run a use case's feature functions over a range of raw partitions, chunk by chunk.

The context (small, day-level aggregates) is built once from lazy scans of every source; then
each chunk of the rows source goes through the row function. What comes out is checked
against the declaration and cut to the columns of ``features.<use case>``, so a function that
raises or returns the wrong columns fails the partition with its name, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.storage.staging import chunks
from batch_platform.platform.use_case import Features


class FeatureFunctionError(ValueError):
    """A use case's feature function failed, or returned what its declaration does not say."""


def feature_chunks(features: Features, files: Mapping[str, Path],
                   references: Mapping[str, pl.DataFrame], start: dt.date, end: dt.date,
                   chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The feature rows of ``start``..``end``, one chunk at a time, in the declared columns.

    ``files`` hold each source's raw rows from ``lookback_days`` before ``start`` to ``end``.
    """
    where = f"{features.module} ({start}..{end})"
    try:
        context = (features.context({name: pl.scan_parquet(path) for name, path in files.items()},
                                    references, start, end)
                   if features.context else None)
    except Exception as err:  # the user's code: report it with its name, publish nothing
        raise FeatureFunctionError(f"{where}: {_name(features.context)} failed: "
                                   f"{type(err).__name__}: {err}") from err
    window = pl.col("partition_date").is_between(start, end)
    for chunk in chunks([files[features.rows_from]], chunk_rows):
        rows_in = chunk.filter(window)
        if rows_in.height == 0:
            continue
        try:
            rows = features.rows(rows_in, context)
        except Exception as err:
            raise FeatureFunctionError(f"{where}: {_name(features.rows)} failed: "
                                       f"{type(err).__name__}: {err}") from err
        yield conform(rows, features.spec, where, _name(features.rows))


def conform(rows: pl.DataFrame, spec: FeatureSpec, where: str, function: str) -> pl.DataFrame:
    """``rows`` cut to the columns of the features table, or an error naming what is wrong."""
    if not isinstance(rows, pl.DataFrame):
        raise FeatureFunctionError(f"{where}: {function} returned {type(rows).__name__}, not a "
                                   "polars DataFrame")
    missing = [c for c in spec.table_columns if c not in rows.columns]
    if missing:
        raise FeatureFunctionError(f"{where}: {function} returned no column(s) {missing}")
    wrong = [f"{c} ({rows.schema[c]})" for c in spec.categorical_columns
             if rows.schema[c] != pl.String]
    if wrong:
        raise FeatureFunctionError(f"{where}: {function}: categorical column(s) {wrong} must "
                                   "be text")
    return rows.select(spec.table_columns)


def _name(function: object) -> str:
    return getattr(function, "__name__", repr(function))


class FeatureTally:
    """Counts the features' metadata shows, added up chunk by chunk."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.with_outcome = 0
        self.outcome_sum = 0.0
        self.nulls: Counter[str] = Counter()
        self.rows_by_day: Counter[dt.date] = Counter()

    def add(self, rows: pl.DataFrame) -> None:
        label = rows.get_column(self.spec.label_column)
        self.rows += rows.height
        self.with_outcome += int(label.is_not_null().sum())
        self.outcome_sum += float(label.cast(pl.Float64).sum() or 0.0)
        self.nulls.update({c: int(n) for c, n in rows.select(
            pl.col(self.spec.feature_columns).null_count()).row(0, named=True).items()})
        self.rows_by_day.update(dict(rows.group_by("partition_date").len().iter_rows()))

    def metadata(self) -> dict[str, object]:
        mean = self.outcome_sum / self.with_outcome if self.with_outcome else 0.0
        missing = {c: n for c, n in sorted(self.nulls.items()) if n}
        return {
            "rows_with_outcome": self.with_outcome,
            "positive_rate" if self.spec.is_binary else "outcome_mean": mean,
            "features_missing": ", ".join(f"{c}: {n}" for c, n in missing.items()) or "none",
        }
