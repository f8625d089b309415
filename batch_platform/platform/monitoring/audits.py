"""Audits: what must hold of a partition's data before analysts see it, and what to flag.

Each audit is a plain function of frames returning an ``Audit``: passed or not, with the
measured value and the threshold in its metadata. A failed audit of severity ``error`` blocks
publishing (write, audit, publish); a failed ``warn`` audit publishes and flags.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.ingest.validate import FileTally, ValidatedFile
from batch_platform.platform.models.objectives import Objective, objective
from batch_platform.platform.monitoring import drift
from batch_platform.platform.reports.daily import ALL_SEGMENT

ERROR = "error"
WARN = "warn"


@dataclass(frozen=True)
class Audit:
    name: str
    passed: bool
    severity: str  # ERROR: a failure blocks publishing; WARN: a failure flags only
    description: str
    metadata: dict[str, object] = field(default_factory=dict)
    # The days that failed, each with its severity, where the audit judges day by day; None:
    # the audit judges the range as a whole, and a failure is every day's.
    failed_days: Mapping[dt.date, str] | None = None

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == ERROR

    def verdict(self, day: dt.date) -> tuple[bool, str]:
        """Whether ``day`` passed, and the severity of its failure."""
        if self.passed:
            return True, self.severity
        if self.failed_days is None:
            return False, self.severity
        return (day not in self.failed_days, self.failed_days.get(day, self.severity))


@dataclass(frozen=True)
class AuditThresholds:
    """Where audits draw the line; docs/operators.md says why these defaults."""

    psi_warn: float = 0.15
    psi_error: float = 0.3
    # Below this many rows a day's PSI is noise: such days are not judged.
    psi_min_rows: int = 200
    # Scores move with the season and the day's conditions: their drift flags, never blocks.
    score_psi_warn: float = 0.25
    # Largest share of a day's input rows with a required value missing.
    max_null_fraction: float = 0.01


def blocking(audits: Sequence[Audit]) -> list[Audit]:
    return [audit for audit in audits if audit.blocks]


def _day_list(days: Sequence[dt.date], limit: int = 5) -> str:
    shown = ", ".join(day.isoformat() for day in days[:limit])
    return shown + (f" and {len(days) - limit} more" if len(days) > limit else "")


# --- raw ------------------------------------------------------------------------------------

def audit_raw_schema(source: SourceSchema, good: pl.DataFrame,
                     ignored_columns: Sequence[str]) -> Audit:
    """Every declared column is there with its declared type; extra input columns are flagged."""
    expected = source.polars_schema
    wrong = sorted(name for name, dtype in expected.items() if good.schema.get(name) != dtype)
    metadata: dict[str, object] = {"columns_expected": len(expected),
                                   "columns_wrong": len(wrong),
                                   "ignored_columns": ", ".join(ignored_columns) or "none"}
    if wrong:
        found = ", ".join(f"{name}: {good.schema.get(name, 'missing')} (expected "
                          f"{expected[name]})" for name in wrong)
        return Audit("schema", False, ERROR, f"raw.{source.name} columns do not match the "
                     f"schema: {found}", metadata)
    if ignored_columns:
        return Audit("schema", False, WARN, f"the landing files of raw.{source.name} have "
                     f"columns the schema does not know, ignored: {', '.join(ignored_columns)}",
                     metadata)
    return Audit("schema", True, ERROR, f"{len(expected)} columns as declared", metadata)


@dataclass(frozen=True)
class RowHistory:
    """A day's rows must be within ``tolerance`` (a fraction) of the median of the same weekday
    over the previous ``weeks`` weeks, of which at least ``min_weeks`` are known."""

    weeks: int = 4
    tolerance: float = 0.5
    min_weeks: int = 3

    def first_day(self, day: dt.date) -> dt.date:
        return day - dt.timedelta(weeks=self.weeks)

    def expected(self, day: dt.date, known: Mapping[dt.date, int]) -> float | None:
        """The same weekday's median rows before ``day``; None without enough history."""
        earlier = sorted(known[d] for week in range(1, self.weeks + 1)
                         if (d := day - dt.timedelta(weeks=week)) in known)
        if len(earlier) < self.min_weeks:
            return None
        middle = len(earlier) // 2
        return float(earlier[middle] if len(earlier) % 2 else
                     (earlier[middle - 1] + earlier[middle]) / 2)


def audit_row_counts(source: str, rows_by_day: Mapping[dt.date, int],
                     expected: tuple[int, int], history: RowHistory | None = None,
                     known: Mapping[dt.date, int] | None = None) -> Audit:
    """Rows per day: outside the declared range warns; far from the day's own history (the
    same weekday in the previous weeks, ``known`` before the run and this run's earlier days)
    is an error: a feed that delivered part of a day."""
    low, high = expected
    outside = sorted(day for day, rows in rows_by_day.items() if not low <= rows <= high)
    counts = list(rows_by_day.values())
    metadata: dict[str, object] = {"rows_min": min(counts, default=0),
                                   "rows_max": max(counts, default=0),
                                   "expected_min": low, "expected_max": high,
                                   "days_outside": len(outside)}
    failed: dict[dt.date, str] = dict.fromkeys(outside, WARN)
    problems = []
    if history is not None:
        seen = dict(known or {}) | dict(rows_by_day)
        far = {}
        for day, rows in sorted(rows_by_day.items()):
            median = history.expected(day, seen)
            if median is not None and abs(rows - median) > history.tolerance * median:
                far[day] = median
        metadata |= {"history_weeks": history.weeks, "history_tolerance": history.tolerance,
                     "days_far_from_history": len(far)}
        failed |= dict.fromkeys(far, ERROR)
        problems += [f"{day} has {rows_by_day[day]:,} rows, expected about {median:,.0f} (the "
                     f"median of the same weekday over the previous {history.weeks} weeks, "
                     f"±{history.tolerance:.0%}): a partial or duplicated delivery?"
                     for day, median in far.items()]
    if outside:
        problems.append("rows per day outside the expected " f"{low}..{high}: " + ", ".join(
            f"{day} has {rows_by_day[day]}" for day in outside[:5]))
    if problems:
        severity = ERROR if ERROR in failed.values() else WARN
        return Audit("row_count", False, severity, f"{source}: " + "; ".join(problems[:5]),
                     metadata, failed)
    return Audit("row_count", True, ERROR if history else WARN,
                 f"rows per day within {low}..{high}"
                 + (" and their history" if history else ""), metadata)


def audit_required_nulls(source: SourceSchema,
                         validated_by_day: Mapping[dt.date, ValidatedFile | FileTally],
                         thresholds: AuditThresholds) -> Audit:
    """Share of each day's input rows missing a required value (those rows are quarantined)."""
    worst = (0.0, "", None)
    limit = thresholds.max_null_fraction
    over: dict[dt.date, str] = {}
    for day, validated in validated_by_day.items():
        tally = validated.tally() if isinstance(validated, ValidatedFile) else validated
        if not tally.rows_in:
            continue
        for column in source.columns:
            if not column.required:
                continue
            fraction = tally.missing_required[column.name] / tally.rows_in
            if fraction > limit:
                over[day] = ERROR
            if fraction > worst[0]:
                worst = (fraction, column.name, day)
    fraction, column, day = worst
    metadata: dict[str, object] = {"max_null_fraction": round(fraction, 6),
                                   "threshold": limit, "worst_column": column or "none"}
    if fraction > limit:
        return Audit("required_values", False, ERROR,
                     f"{source.name} {day}: required column {column} is missing in "
                     f"{fraction:.1%} of the rows, above the limit of {limit:.1%}", metadata,
                     over)
    return Audit("required_values", True, ERROR,
                 f"required values missing in at most {fraction:.2%} of a day's rows "
                 f"(limit {limit:.1%})", metadata)


# --- features and scores: drift -------------------------------------------------------------

def _drift(name: str, data: pl.DataFrame | drift.DriftCounter, profile: drift.Profile | None,
           warn: float, error: float, min_rows: int, error_severity: str) -> Audit:
    if profile is None:
        return Audit(name, True, error_severity, "no reference profile yet (no model is "
                     "registered with one): nothing to compare against", {"max_psi": 0.0})
    counter = (data if isinstance(data, drift.DriftCounter)
               else drift.DriftCounter(profile).add(data))
    worst = (0.0, "", None)
    judged, too_small = 0, []
    by_column: dict[str, float] = {}
    failed: dict[dt.date, str] = {}
    for day, psi_by_column in counter.psi_by_day().items():
        if counter.rows[day] < min_rows:
            too_small.append(day)
            continue
        judged += 1
        day_worst = max(psi_by_column.values(), default=0.0)
        if day_worst > warn:
            failed[day] = error_severity if day_worst > error else WARN
        for column, value in psi_by_column.items():
            by_column[column] = max(by_column.get(column, 0.0), value)
            if value > worst[0]:
                worst = (value, column, day)
    value, column, day = worst
    metadata: dict[str, object] = {
        "max_psi": round(value, 4), "max_psi_column": column or "none",
        "warn_threshold": warn, "error_threshold": error, "min_rows": min_rows,
        "days_judged": judged, "days_too_small": len(too_small),
        "reference": f"{profile.window} ({profile.rows} rows)",
        "psi_by_column": {name: round(v, 4) for name, v in sorted(by_column.items())},
    }
    small = (f"; {len(too_small)} day(s) under {min_rows} rows not judged "
             f"({_day_list(too_small)})" if too_small else "")
    if value > error:
        return Audit(name, False, error_severity, f"{day}: {column} drifted from "
                     f"{profile.window}: PSI {value:.3f} above {error}{small}", metadata, failed)
    if value > warn:
        return Audit(name, False, WARN, f"{day}: {column} drifted from {profile.window}: "
                     f"PSI {value:.3f} above the warning level {warn}{small}", metadata, failed)
    return Audit(name, True, error_severity,
                 f"max PSI {value:.3f} ({column or 'n/a'}) within {warn}{small}", metadata)


def audit_feature_drift(features: pl.DataFrame | drift.DriftCounter,
                        profile: drift.ModelProfile | None, thresholds: AuditThresholds) -> Audit:
    """Each drift column of each day against the champion's training window."""
    return _drift("feature_drift", features, profile.features if profile else None,
                  thresholds.psi_warn, thresholds.psi_error, thresholds.psi_min_rows, ERROR)


def audit_score_drift(predictions: pl.DataFrame | drift.DriftCounter,
                      profile: drift.ModelProfile | None, thresholds: AuditThresholds) -> Audit:
    """Each day's scores against the model's scores on its validation window (flag only)."""
    return _drift("score_drift", predictions, profile.scores if profile else None,
                  thresholds.score_psi_warn, float("inf"), thresholds.psi_min_rows, WARN)


# --- predictions ----------------------------------------------------------------------------

def audit_one_prediction_per_row(predictions: pl.DataFrame, features: pl.DataFrame,
                                 id_column: str) -> Audit:
    return audit_prediction_counts(prediction_row_counts(predictions, features, id_column))


def prediction_row_counts(predictions: pl.DataFrame, features: pl.DataFrame,
                          id_column: str) -> Counter[str]:
    """Feature rows, predictions, and predictions missing, duplicated or without a feature row:
    counts that add up over chunks scored one after another."""
    expected = features.get_column(id_column)
    scored = predictions.get_column(id_column)
    return Counter({"feature_rows": expected.len(), "prediction_rows": scored.len(),
                    "missing": int((~expected.is_in(scored.implode())).sum()),
                    "duplicated": scored.len() - scored.n_unique(),
                    "extra": int((~scored.is_in(expected.implode())).sum())})


def audit_prediction_counts(counts: Counter[str]) -> Audit:
    metadata: dict[str, object] = {name: counts[name] for name in
                                   ("feature_rows", "prediction_rows", "missing", "duplicated",
                                    "extra")}
    if counts["missing"] or counts["duplicated"] or counts["extra"]:
        return Audit("one_per_feature_row", False, ERROR,
                     f"{counts['feature_rows']} feature rows but {counts['prediction_rows']} "
                     f"predictions: {counts['missing']} missing, {counts['duplicated']} "
                     f"duplicated, {counts['extra']} without a feature row", metadata)
    return Audit("one_per_feature_row", True, ERROR,
                 f"{counts['prediction_rows']} predictions, one per feature row", metadata)


@dataclass
class ScoreRange:
    """Unusable outputs and the range of the valid ones, added up chunk by chunk."""

    kind: Objective
    invalid: int = 0
    low: float = float("inf")
    high: float = float("-inf")
    versions: set[str] = field(default_factory=set)

    def add(self, predictions: pl.DataFrame) -> ScoreRange:
        values = predictions.get_column(self.kind.output)
        self.invalid += int(self.kind.invalid(values).sum())
        if predictions.height:
            self.low = min(self.low, float(values.min()))  # type: ignore[arg-type]
            self.high = max(self.high, float(values.max()))  # type: ignore[arg-type]
        self.versions.update(predictions.get_column("model_version").unique().to_list())
        return self


def audit_scores_valid(predictions: pl.DataFrame | ScoreRange, kind: Objective | None = None
                       ) -> Audit:
    """Every output usable: a probability in [0, 1], or a finite value (per the objective)."""
    scores = (predictions if isinstance(predictions, ScoreRange)
              else ScoreRange(kind or objective("binary")).add(predictions))
    name, guard = scores.kind.output_check
    column = scores.kind.output
    metadata: dict[str, object] = {
        f"invalid_{column}s": scores.invalid,
        f"min_{column}": scores.low if scores.low != float("inf") else 0.0,
        f"max_{column}": scores.high if scores.high != float("-inf") else 0.0}
    if scores.invalid:
        return Audit(name, False, ERROR, f"{scores.invalid} {column}(s) unusable: "
                     f"{guard.split(';')[0].lower()} fails", metadata)
    return Audit(name, True, ERROR, guard.split(";")[0], metadata)


def audit_model_version(predictions: pl.DataFrame | ScoreRange, loaded_version: str) -> Audit:
    scores = (predictions if isinstance(predictions, ScoreRange)
              else ScoreRange(objective("binary")).add(predictions))
    versions = sorted(scores.versions)
    metadata: dict[str, object] = {"loaded_version": loaded_version,
                                   "versions_in_rows": ", ".join(versions) or "none"}
    if any(version != loaded_version for version in versions):
        return Audit("model_version_is_loaded", False, ERROR,
                     f"rows carry model version(s) {versions}, but {loaded_version} was loaded",
                     metadata)
    return Audit("model_version_is_loaded", True, ERROR,
                 f"every row scored by {loaded_version}", metadata)


# --- reports --------------------------------------------------------------------------------

def audit_report_reconciles(report: pl.DataFrame, predictions: pl.DataFrame | pl.LazyFrame,
                            kind: Objective | None = None) -> Audit:
    """Per day: the whole-day row matches the predictions, and each segment type adds up to it
    (rows, and predicted positives for a probability)."""
    reconciled = (kind or objective("binary")).reconciled
    truth = predictions.lazy().group_by("partition_date").agg(
        expression.alias(name) for name, expression in reconciled.items()
    ).collect(engine="streaming")
    totals = report.group_by("partition_date", "segment_type").agg(
        pl.col(name).sum() for name in reconciled)
    compared = totals.join(truth, on="partition_date", how="full", suffix="_predictions",
                           coalesce=True)
    wrong = compared.filter(pl.any_horizontal(
        *((pl.col(name) != pl.col(f"{name}_predictions")) for name in reconciled),
        pl.col("rows").is_null(), pl.col("rows_predictions").is_null(),
    )).sort("partition_date", "segment_type")
    metadata: dict[str, object] = {"days": truth.height, "mismatches": wrong.height,
                                   "segment_types": totals.get_column("segment_type").n_unique()}
    if wrong.height:
        first = wrong.row(0, named=True)
        in_report = " and ".join(f"{first[name]} {name}" for name in reconciled)
        in_predictions = " and ".join(f"{first[f'{name}_predictions']}" for name in reconciled)
        return Audit("reconciles_with_predictions", False, ERROR,
                     f"{wrong.height} day/segment total(s) disagree with predictions; first: "
                     f"{first['partition_date']} {first['segment_type']}: {in_report} in the "
                     f"report, {in_predictions} in predictions", metadata,
                     dict.fromkeys(wrong.get_column("partition_date").to_list(), ERROR))
    return Audit("reconciles_with_predictions", True, ERROR,
                 f"{truth.height} day(s): totals per segment type ({ALL_SEGMENT}, ...) "
                 "match predictions", metadata)


# --- freshness ------------------------------------------------------------------------------

def audit_partition_freshness(name: str, landed_at: Mapping[dt.date, dt.datetime],
                              produced_at: Mapping[dt.date, dt.datetime], now: dt.datetime,
                              max_lag: dt.timedelta) -> Audit:
    """Every landed partition produced after its files landed, or still within ``max_lag``."""
    late: list[tuple[dt.date, dt.timedelta]] = []
    pending = 0
    limit = max_lag.total_seconds() / 60
    lags: list[float] = []
    for day, landed in sorted(landed_at.items()):
        produced = produced_at.get(day)
        if produced is not None and produced >= landed:
            lags.append((produced - landed).total_seconds())
            continue
        waiting = now - landed
        if waiting > max_lag:
            late.append((day, waiting))
        else:
            pending += 1
    metadata: dict[str, object] = {
        "partitions_landed": len(landed_at), "partitions_fresh": len(lags),
        "partitions_pending": pending, "partitions_late": len(late),
        "max_lag_minutes": round(max(lags, default=0.0) / 60, 2),
        "max_waiting_minutes": round(max((w.total_seconds() for _, w in late), default=0.0)
                                     / 60, 2),
        "lag_limit_minutes": round(max_lag.total_seconds() / 60, 2),
    }
    if not landed_at:
        return Audit(name, True, ERROR, "no landed partition is due", metadata)
    if late:
        days = [day for day, _ in late]
        return Audit(name, False, ERROR, f"{len(late)} landed partition(s) not produced within "
                     f"{limit:g} minutes of landing: {_day_list(days)}", metadata)
    return Audit(name, True, ERROR, f"{len(lags)} landed partition(s) produced, {pending} "
                 f"pending within {limit:g} minutes of landing", metadata)
