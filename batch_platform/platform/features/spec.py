"""The feature spec: what a model of a use case consumes, shared by features, training and
scoring. The feature functions themselves belong to each use case (``use_cases/<name>/``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

BINARY = "binary"
REGRESSION = "regression"
OBJECTIVES = (BINARY, REGRESSION)


class FeatureSetError(ValueError):
    """A model's features that are not all columns of its use case's features table."""


@dataclass(frozen=True)
class FeatureSpec:
    """What a model of a use case consumes: the contract between features, training and scoring."""

    use_case: str
    id_column: str
    label_column: str
    feature_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    # Columns of the features table that reports segment by.
    segment_columns: tuple[str, ...]
    # Per-row features whose distribution over one day is comparable with the training window:
    # the ones a drift check can compare. Day-level features (the calendar, the day's conditions,
    # yesterday's statistics) take one or a few values a day, so any single day "drifts".
    drift_columns: tuple[str, ...] = ()
    # binary (a probability, a label at a threshold) or regression (a value and its band).
    objective: str = "binary"
    # Observed about the row itself: never a feature (target leakage), kept out by the factory.
    outcome_columns: tuple[str, ...] = ()

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.feature_columns if c not in self.categorical_columns)

    @property
    def is_binary(self) -> bool:
        return self.objective == BINARY

    @property
    def table_columns(self) -> tuple[str, ...]:
        """The columns of ``features.<use case>``, in order."""
        extra = tuple(c for c in self.segment_columns if c not in self.feature_columns)
        return (self.id_column, "partition_date", *self.feature_columns, *extra,
                self.label_column)

    def for_model(self, columns: Sequence[str]) -> FeatureSpec:
        """The spec of a model that uses ``columns`` of the features table, in that order: the
        table holds every declared feature, a model (the champion, a challenger) uses its own
        set of them, recorded in the registry and selected by name when it scores."""
        unknown = [c for c in columns if c not in self.feature_columns]
        if unknown:
            raise FeatureSetError(
                f"features {unknown} are not columns of features.{self.use_case} "
                f"({', '.join(self.feature_columns)}): declare them in features.columns")
        chosen = tuple(columns)
        return replace(self, feature_columns=chosen,
                       categorical_columns=tuple(c for c in self.categorical_columns
                                                 if c in chosen),
                       drift_columns=tuple(c for c in self.drift_columns if c in chosen))
