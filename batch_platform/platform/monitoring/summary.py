"""What the predictions' metadata shows, added up chunk by chunk in memory independent of the
rows: the output's distribution, bands, segments and the realised quality where outcomes are
known."""

from __future__ import annotations

import numpy as np
import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.objectives import RISK_BANDS, objective

AUC_BINS = 100_000  # the realised AUC in metadata is exact to about 1e-5


class PredictionSummary:
    """Output distribution (a histogram of ten bins over [0, 1] for a probability, over the
    validation range for a value), risk bands, segments and the realised AUC or MAE."""

    def __init__(self, spec: FeatureSpec, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.spec = spec
        self.output = objective(spec.objective).output
        self.value_range = value_range
        self.abs_error_sum = 0.0
        self.known = 0
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
        score = rows.get_column(self.output)
        self.rows += rows.height
        self.score_sum += float(score.sum())
        low, high = self.value_range
        width = (high - low) or 1.0
        self.histogram += np.bincount(
            (((score - low) / width).clip(0.0, 0.999999) * 10).floor().cast(pl.Int64)
            .to_numpy(), minlength=10)
        if not spec.is_binary:
            known = rows.filter(pl.col(spec.label_column).is_not_null())
            self.known += known.height
            self.abs_error_sum += float((known.get_column(self.output)
                                         - known.get_column(spec.label_column)).abs().sum())
            for column in spec.segment_columns:
                partial = rows.group_by(column).agg(
                    pl.len().alias("rows"), pl.col(self.output).sum().alias("score_sum"),
                    pl.lit(0, pl.Int64).alias("label_sum"))
                previous = self.segments.get(column)
                self.segments[column] = partial if previous is None else (
                    pl.concat([previous, partial]).group_by(column).agg(pl.all().sum()))
            return self
        self.labelled += int(rows.get_column("label").sum())
        for band, count in rows.group_by("risk_band").len().iter_rows():
            self.bands[band] = self.bands.get(band, 0) + count
        for column in spec.segment_columns:
            partial = rows.group_by(column).agg(
                pl.len().alias("rows"), pl.col("score").sum().alias("score_sum"),
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

    def realised_mae(self) -> float | None:
        return self.abs_error_sum / self.known if self.known else None

    def realised_auc(self) -> float | None:
        """Mann-Whitney over score bins; ties within a bin count half."""
        positives, negatives = int(self.late.sum()), int(self.on_time.sum())
        if not positives or not negatives:
            return None
        below = np.cumsum(self.on_time) - self.on_time
        wins = float((self.late * below).sum() + 0.5 * (self.late * self.on_time).sum())
        return wins / (positives * negatives)


