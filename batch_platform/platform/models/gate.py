"""The promotion gate: does a challenger beat the champion on realised outcomes, beyond noise?

Both models score the same rows; once the outcomes are known, each day gives one paired
difference of the objective's primary metric (AUC for binary, MAE for regression), oriented so
that positive means the challenger did better. The statistic is the mean of those per-day
differences, each day counting once whatever its volume: the day is the unit that is
resampled, days differ by regime (a season, a holiday) more than by size, and weighting by rows
would let a few busy days speak for the rest. A paired bootstrap over days (days drawn with
replacement, a fixed seed, so one set of outcomes always gives one verdict) gives the
statistic's one-sided lower bound; the challenger passes only if that bound clears the margin
and enough days are known.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import polars as pl

from batch_platform.platform.models.objectives import Objective

CHAMPION_ROLE = "champion"
CHALLENGER_ROLE = "challenger"
ROLES = (CHAMPION_ROLE, CHALLENGER_ROLE)


class GateInputError(ValueError):
    """Predictions or per-day metrics the gate cannot judge; the message says which and why."""


@dataclass(frozen=True)
class GateThresholds:
    """What a challenger must show; the settings fill these."""

    min_days: int = 14  # days whose outcomes are known for both models
    min_margin: float = 0.0  # in the primary metric, oriented: challenger better is positive
    confidence: float = 0.95  # of the one-sided lower bound
    resamples: int = 2000
    seed: int = 13

    def __post_init__(self) -> None:
        if self.min_days < 1:
            raise ValueError(f"gate min_days must be at least 1, got {self.min_days}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"gate confidence must be in [0.5, 1), got {self.confidence}")
        if self.resamples < 100:
            raise ValueError(f"gate resamples must be at least 100, got {self.resamples}")


@dataclass(frozen=True)
class Verdict:
    """The gate's answer with the figures behind it; ``evidence()`` is what a promotion records."""

    allowed: bool
    champion: str
    challenger: str
    objective: str
    primary_metric: str
    days: int  # days with the primary metric known for both models
    rows: int  # rows with a known outcome on those days
    days_won: int  # days the challenger did strictly better on the primary metric
    first_day: dt.date | None
    last_day: dt.date | None
    mean_improvement: float | None  # mean per-day difference, challenger better is positive
    lower_bound: float | None  # one-sided, at ``thresholds.confidence``
    upper_bound: float | None  # the same quantile from above, for the interval's other side
    share_not_better: float | None  # share of resamples whose mean is <= the margin
    # Per metric and role, the value over all those rows (see ``cumulated_metrics``).
    cumulated: dict[str, dict[str, float | None]]
    thresholds: GateThresholds
    summary: str = field(default="")

    def evidence(self) -> dict:
        """JSON-ready figures, as ``models.promotions`` stores them."""
        figures = asdict(self)
        for key in ("first_day", "last_day"):
            figures[key] = figures[key].isoformat() if figures[key] else None
        return figures


def paired_outcomes(champion: pl.DataFrame, challenger: pl.DataFrame, outcomes: pl.DataFrame,
                    *, id_column: str, output: str, outcome: str, champion_version: str,
                    challenger_version: str) -> pl.DataFrame:
    """One row per scored row whose outcome is known: partition_date, the id, the champion's
    and the challenger's ``output`` and the outcome.

    ``champion`` and ``challenger`` are predictions frames (``partition_date``, the id,
    ``output``, ``model_version``); rows scored by other versions are not evidence and are left
    out. On each day both models must have scored the same rows: a comparison on different
    rows is refused, naming the day.
    """
    sides = []
    for role, frame, version in ((CHAMPION_ROLE, champion, champion_version),
                                 (CHALLENGER_ROLE, challenger, challenger_version)):
        _require_columns(frame, f"{role} predictions",
                         ("partition_date", id_column, output, "model_version"))
        sides.append(frame.filter(pl.col("model_version") == version)
                     .select("partition_date", id_column, pl.col(output).alias(role)))
    _require_columns(outcomes, "outcomes", ("partition_date", id_column, outcome))
    days = sorted(set(sides[0]["partition_date"]) & set(sides[1]["partition_date"]))
    champion_rows, challenger_rows = (side.filter(pl.col("partition_date").is_in(days))
                                      for side in sides)
    unmatched = (champion_rows.join(challenger_rows, on=["partition_date", id_column],
                                    how="full", coalesce=True)
                 .filter(pl.col(CHAMPION_ROLE).is_null() | pl.col(CHALLENGER_ROLE).is_null()))
    if unmatched.height:
        day = unmatched["partition_date"].min()
        count = unmatched.filter(pl.col("partition_date") == day).height
        raise GateInputError(
            f"champion {champion_version} and challenger {challenger_version} did not score "
            f"the same rows on {day}: {count} row(s) by one only (or a null {output}); the gate "
            "compares models on the same rows: rescore that day with both")
    return (champion_rows.join(challenger_rows, on=["partition_date", id_column])
            .join(outcomes.select("partition_date", id_column, outcome),
                  on=["partition_date", id_column])
            .filter(pl.col(outcome).is_not_null())
            .sort("partition_date", id_column))


def daily_metrics(paired: pl.DataFrame, kind: Objective, outcome: str) -> pl.DataFrame:
    """Per day: ``rows`` and, per realised metric of the objective and role,
    ``<role>_<metric>`` (e.g. ``champion_auc``, ``challenger_brier``)."""
    _require_columns(paired, "paired predictions", ("partition_date", *ROLES, outcome))
    aggregations = [pl.len().cast(pl.Int64).alias("rows")]
    for role in ROLES:
        for name, expr in kind.realised_metric_exprs(role, outcome).items():
            aggregations.append(expr.cast(pl.Float64).alias(f"{role}_{name}"))
    return paired.group_by("partition_date").agg(aggregations).sort("partition_date")


def cumulated_metrics(daily: pl.DataFrame, kind: Objective) -> dict[str, dict[str, float | None]]:
    """Per metric and role, the value over every row of ``daily``'s days, from the per-day
    figures: MAE and Brier score exactly (row-weighted means), RMSE exactly (the root of the
    row-weighted mean square); AUC, which does not add up across days, as the row-weighted
    mean of the daily AUCs."""
    result: dict[str, dict[str, float | None]] = {}
    for name, _ in kind.realised_metrics:
        result[name] = {}
        for role in ROLES:
            column = f"{role}_{name}"
            known = daily.filter(pl.col(column).is_not_null())
            if known.height == 0:
                result[name][role] = None
                continue
            weights = known["rows"].cast(pl.Float64)
            values = known[column]
            if name == "rmse":
                value = math.sqrt(float((values.pow(2) * weights).sum() / weights.sum()))
            else:
                value = float((values * weights).sum() / weights.sum())
            result[name][role] = value
    return result


def judge(daily: pl.DataFrame, kind: Objective, champion: str, challenger: str,
          thresholds: GateThresholds) -> Verdict:
    """The verdict on ``daily`` (one row per day, as ``daily_metrics`` gives)."""
    primary, higher_is_better = kind.realised_metrics[0]
    columns = ("partition_date", "rows", *(f"{role}_{name}" for name, _ in
                                           kind.realised_metrics for role in ROLES))
    _require_columns(daily, "per-day metrics", columns)
    repeated = daily.filter(pl.col("partition_date").is_duplicated())
    if repeated.height:
        raise GateInputError(f"per-day metrics list {repeated['partition_date'].min()} more "
                             "than once: one row per day")
    known = daily.filter(pl.col(f"{CHAMPION_ROLE}_{primary}").is_not_null()
                         & pl.col(f"{CHALLENGER_ROLE}_{primary}").is_not_null()
                         ).sort("partition_date")
    sign = 1.0 if higher_is_better else -1.0
    improvements = sign * (known[f"{CHALLENGER_ROLE}_{primary}"]
                           - known[f"{CHAMPION_ROLE}_{primary}"]).to_numpy()
    days = len(improvements)
    mean = lower = upper = share = None
    if days:
        means = bootstrap_means(improvements, thresholds.resamples, thresholds.seed)
        mean = float(improvements.mean())
        lower = float(np.quantile(means, 1 - thresholds.confidence))
        upper = float(np.quantile(means, thresholds.confidence))
        share = float(np.mean(means <= thresholds.min_margin))
    enough_days = days >= thresholds.min_days
    allowed = bool(enough_days and lower is not None and lower > thresholds.min_margin)
    verdict = Verdict(
        allowed=allowed, champion=champion, challenger=challenger, objective=kind.name,
        primary_metric=primary, days=days, rows=int(known["rows"].sum()),
        days_won=int((improvements > 0).sum()),
        first_day=known["partition_date"].min() if days else None,
        last_day=known["partition_date"].max() if days else None,
        mean_improvement=mean, lower_bound=lower, upper_bound=upper, share_not_better=share,
        cumulated=cumulated_metrics(known, kind), thresholds=thresholds)
    return replace(verdict, summary=summarise(verdict))


def bootstrap_means(differences: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The mean of ``differences`` over ``resamples`` draws of as many days with replacement;
    the days stay paired (each draw takes a day's champion and challenger together)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    return differences[draws].mean(axis=1)


def summarise(verdict: Verdict) -> str:
    """One line with the figures, as a refusal or an approval shows them."""
    t = verdict.thresholds
    metric = verdict.primary_metric.upper()
    word = "allowed" if verdict.allowed else "refused"
    head = f"{word}: challenger {verdict.challenger} vs champion {verdict.champion}"
    if verdict.days == 0:
        return (f"{head}: no day with outcomes known for both; need >= {t.min_days} days "
                "of realised outcomes")
    assert verdict.mean_improvement is not None and verdict.lower_bound is not None
    compare = ">" if verdict.lower_bound > t.min_margin else "<="
    others = "; ".join(
        f"{name} {_figure(values[CHAMPION_ROLE])} -> {_figure(values[CHALLENGER_ROLE])}"
        for name, values in verdict.cumulated.items())
    span = f"{verdict.first_day}..{verdict.last_day}"
    text = (f"{head}: better on {verdict.days_won} of {verdict.days} days ({span}, "
            f"{verdict.rows:,} rows), mean {metric} improvement {verdict.mean_improvement:+.4f}, "
            f"{t.confidence:.0%} lower bound {verdict.lower_bound:+.4f} {compare} margin "
            f"{t.min_margin:+.4f} ({t.resamples} paired bootstrap resamples of days, "
            f"{verdict.share_not_better:.1%} not better); cumulated {others}")
    if verdict.days < t.min_days:
        text += f"; need >= {t.min_days} days of realised outcomes, have {verdict.days}"
    return text


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _require_columns(frame: pl.DataFrame, what: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise GateInputError(f"{what} lack column(s) {missing} (they have {frame.columns})")
