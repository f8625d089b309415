"""What a model's objective decides: how it is trained, judged, post-processed and reported.

Everything that differs between a probability and a predicted value lives here, behind one
``Objective`` interface, so training, scoring, audits, drift and reports ask the objective and
never test its name. A new objective (multiclass: a score per class, a label, top classes) is
one more class here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl

RISK_BANDS = ("low", "medium", "high", "very_high")


@dataclass(frozen=True)
class Calibration:
    """What post-processing needs besides the booster, chosen on the validation window."""

    threshold: float | None = None  # binary: score >= threshold is a positive label
    band: tuple[float, float] | None = None  # regression: residual quantiles around a value


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float | None]
    calibration: Calibration
    rows: int
    # The validation predictions: the reference of the output-drift check.
    outputs: np.ndarray = field(compare=False, repr=False, default_factory=lambda: np.empty(0))


def auc_expr(score: str = "score", label: str = "label") -> pl.Expr:
    """Area under the ROC curve over rows with a known label (Mann-Whitney); null if one class."""
    known = pl.col(label).is_not_null() & pl.col(score).is_not_null()
    y = pl.col(label).filter(known).cast(pl.Float64)
    ranks = pl.col(score).filter(known).rank("average")
    positives = y.sum()
    negatives = y.count() - positives
    value = ((ranks * y).sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return pl.when((positives > 0) & (negatives > 0)).then(value)


def brier_expr(score: str = "score", label: str = "label") -> pl.Expr:
    """Mean squared error of a probability against a known label; null without one."""
    known = pl.col(label).is_not_null() & pl.col(score).is_not_null()
    return (pl.col(score).filter(known) - pl.col(label).filter(known).cast(pl.Float64)
            ).pow(2).mean()


def mae_expr(prediction: str = "prediction", outcome: str = "outcome") -> pl.Expr:
    """Mean absolute error over rows with a known outcome."""
    return (pl.col(prediction) - pl.col(outcome)).abs().mean()


def rmse_expr(prediction: str = "prediction", outcome: str = "outcome") -> pl.Expr:
    """Root mean squared error over rows with a known outcome."""
    return (pl.col(prediction) - pl.col(outcome)).pow(2).mean().sqrt()


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class Objective:
    name: ClassVar[str]
    # The LightGBM objectives whose models this objective can score.
    lightgbm_objectives: ClassVar[tuple[str, ...]]
    # The column drift, "riskiest" and summaries look at.
    output: ClassVar[str]
    # The warehouse columns of the outputs, in order (reasons and lineage follow them).
    output_schema: ClassVar[dict[str, pl.DataType]]
    # The checks on the predictions this objective adds, with what each guards.
    output_check: ClassVar[tuple[str, str]]

    def evaluate(self, labels: np.ndarray, outputs: np.ndarray, policy: str,
                 policy_value: float | None, band_quantiles: tuple[float, float]
                 ) -> Evaluation:
        raise NotImplementedError

    def postprocess(self, outputs: np.ndarray, calibration: Calibration) -> pl.DataFrame:
        raise NotImplementedError

    def invalid(self, values: pl.Series) -> pl.Series:
        """Which outputs are unusable (missing, not finite, out of range)."""
        raise NotImplementedError

    def explain_mask(self, outputs: np.ndarray, calibration: Calibration, explain: str
                     ) -> np.ndarray:
        if explain == "all":
            return np.ones(len(outputs), dtype=bool)
        return np.zeros(len(outputs), dtype=bool)

    # --- reports: values carried per segment row, and the aggregates of a group ----------
    report_values: ClassVar[tuple[str, ...]]

    def report_aggregations(self, outcome: str) -> list[pl.Expr]:
        raise NotImplementedError

    # Report columns that must add up to the predictions per day and segment type.
    reconciled: ClassVar[dict[str, pl.Expr]]

    # --- realised quality, on which a challenger is judged against the champion ---------
    # (metric, higher is better); the first is the promotion gate's primary metric.
    realised_metrics: ClassVar[tuple[tuple[str, bool], ...]]

    def realised_metric_exprs(self, output: str, outcome: str) -> dict[str, pl.Expr]:
        """Each realised metric of ``output`` against ``outcome``, as an aggregation."""
        raise NotImplementedError


class Binary(Objective):
    name = "binary"
    lightgbm_objectives = ("binary", "cross_entropy")
    output = "score"
    output_schema: ClassVar[dict[str, pl.DataType]] = {
        "score": pl.Float64(), "label": pl.Boolean(), "risk_band": pl.String()}
    output_check = ("scores_in_unit_interval",
                    "Every score a probability in [0, 1]; blocks publishing.")
    report_values = ("score", "label")
    reconciled: ClassVar[dict[str, pl.Expr]] = {
        "rows": pl.len().cast(pl.Int64),
        "predicted_positive": pl.col("label").sum().cast(pl.Int64)}

    def evaluate(self, labels, outputs, policy, policy_value, band_quantiles):
        y = labels.astype(np.float64)
        clipped = np.clip(outputs, 1e-15, 1 - 1e-15)
        threshold = choose_threshold(labels, outputs, policy, policy_value)
        auc = pl.DataFrame({"label": labels.astype(bool), "score": outputs}).select(
            auc_expr()).item()
        metrics = {
            "auc": finite_or_none(auc),
            "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
            "brier": float(np.mean((outputs - y) ** 2)),
            "positive_rate": float(y.mean()),
            "predicted_positive_rate": float((outputs >= threshold).mean()),
        }
        return Evaluation(metrics, Calibration(threshold=threshold), len(y), outputs)

    realised_metrics = (("auc", True), ("brier", False))

    def realised_metric_exprs(self, output, outcome):
        return {"auc": auc_expr(output, outcome), "brier": brier_expr(output, outcome)}

    def postprocess(self, outputs, calibration):
        threshold = calibration.threshold
        assert threshold is not None
        score = pl.Series("score", outputs, dtype=pl.Float64)
        return pl.DataFrame([score]).with_columns(
            (pl.col("score") >= threshold).alias("label"),
            risk_band(pl.col("score"), threshold).alias("risk_band"))

    def invalid(self, values):
        return values.is_null() | values.is_nan() | (values < 0) | (values > 1)

    def explain_mask(self, outputs, calibration, explain):
        if explain == "predicted_positive":
            return outputs >= (calibration.threshold or 0.0)
        return super().explain_mask(outputs, calibration, explain)

    def report_aggregations(self, outcome):
        known = pl.col(outcome)
        return [
            pl.col("score").mean().alias("mean_score"),
            pl.col("score").median().alias("median_score"),
            pl.col("score").quantile(0.9, interpolation="linear").alias("p90_score"),
            pl.col("label").sum().cast(pl.Int64).alias("predicted_positive"),
            pl.col("label").mean().alias("predicted_positive_rate"),
            known.is_not_null().sum().cast(pl.Int64).alias("outcomes_known"),
            known.sum().cast(pl.Int64).alias("realised_positive"),
            known.cast(pl.Float64).mean().alias("realised_positive_rate"),
            auc_expr("score", outcome).alias("auc"),
        ]


class Regression(Objective):
    name = "regression"
    lightgbm_objectives = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
    output = "prediction"
    output_schema: ClassVar[dict[str, pl.DataType]] = {
        "prediction": pl.Float64(), "prediction_low": pl.Float64(),
        "prediction_high": pl.Float64()}
    output_check = ("predictions_finite", "Every prediction a finite number; blocks publishing.")
    report_values = ("prediction",)
    reconciled: ClassVar[dict[str, pl.Expr]] = {"rows": pl.len().cast(pl.Int64)}

    def evaluate(self, labels, outputs, policy, policy_value, band_quantiles):
        y = labels.astype(np.float64)
        residuals = y - outputs
        low, high = (float(q) for q in np.quantile(residuals, band_quantiles))
        metrics = {"mae": float(np.mean(np.abs(residuals))),
                   "rmse": float(np.sqrt(np.mean(residuals ** 2))),
                   "bias": float(np.mean(outputs - y)),
                   "outcome_mean": float(y.mean())}
        return Evaluation(metrics, Calibration(band=(low, high)), len(y), outputs)

    realised_metrics = (("mae", False), ("rmse", False))

    def realised_metric_exprs(self, output, outcome):
        return {"mae": mae_expr(output, outcome), "rmse": rmse_expr(output, outcome)}

    def postprocess(self, outputs, calibration):
        low, high = calibration.band or (0.0, 0.0)
        value = pl.Series("prediction", outputs, dtype=pl.Float64)
        return pl.DataFrame([value]).with_columns(
            (pl.col("prediction") + low).alias("prediction_low"),
            (pl.col("prediction") + high).alias("prediction_high"))

    def invalid(self, values):
        return values.is_null() | ~values.is_finite()

    def report_aggregations(self, outcome):
        error = pl.col("prediction") - pl.col(outcome)
        return [
            pl.col("prediction").mean().alias("mean_prediction"),
            pl.col("prediction").median().alias("median_prediction"),
            pl.col("prediction").quantile(0.9, interpolation="linear").alias("p90_prediction"),
            pl.col(outcome).is_not_null().sum().cast(pl.Int64).alias("outcomes_known"),
            pl.col(outcome).cast(pl.Float64).mean().alias("mean_outcome"),
            mae_expr("prediction", outcome).alias("mae"),
            rmse_expr("prediction", outcome).alias("rmse"),
            error.mean().alias("bias"),
        ]


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (Binary(), Regression())}


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}: one of {', '.join(OBJECTIVES)}") from None


def risk_band(score: pl.Expr, threshold: float) -> pl.Expr:
    """Bands anchored on the decision threshold: below half of it, below it, above, far above."""
    return (
        pl.when(score < threshold / 2).then(pl.lit(RISK_BANDS[0]))
        .when(score < threshold).then(pl.lit(RISK_BANDS[1]))
        .when(score < (1 + threshold) / 2).then(pl.lit(RISK_BANDS[2]))
        .otherwise(pl.lit(RISK_BANDS[3]))
    )


def choose_threshold(labels: np.ndarray, scores: np.ndarray, policy: str = "f1",
                     value: float | None = None) -> float:
    """The decision threshold by ``policy``, from a 0.01 grid on the validation window:
    ``f1`` maximises F1; ``fixed`` is ``value``; ``precision`` is the lowest threshold whose
    precision reaches ``value``; ``positive_rate`` the one whose predicted positive rate is
    closest to ``value``."""
    if policy == "fixed":
        assert value is not None
        return float(value)
    y = labels.astype(bool)
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    best_threshold, best = 0.5, -math.inf
    for threshold in grid:
        predicted = scores >= threshold
        tp = int(np.sum(predicted & y))
        fp = int(np.sum(predicted & ~y))
        fn = int(np.sum(~predicted & y))
        if policy == "f1":
            quality = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        elif policy == "precision":
            assert value is not None
            precision = tp / (tp + fp) if tp + fp else 0.0
            if precision >= value:
                return float(threshold)
            continue
        elif policy == "positive_rate":
            assert value is not None
            quality = -abs(float(predicted.mean()) - value)
        else:
            raise ValueError(f"unknown threshold policy {policy!r}")
        if quality > best:
            best_threshold, best = float(threshold), quality
    if policy == "precision":
        return 0.99  # no threshold reaches the precision: flag (almost) nothing
    return best_threshold
