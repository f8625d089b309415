"""The contract between a use case and the platform: what a declaration resolves to.

A use case is declared (``use_cases/<name>/defs.yaml``, read by ``batch_platform.components``)
and arrives here as plain data: its partitions, landing sources, reference tables, feature
functions and spec, model, scoring options, check thresholds and automation switches. Every
table, asset, job and schedule name is derived from it here, and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.monitoring.audits import AuditThresholds, RowHistory

# feature_context(sources, references, start, end) -> whatever feature_rows needs
FeatureContext = Callable[[Mapping[str, pl.LazyFrame], Mapping[str, pl.DataFrame], dt.date,
                           dt.date], Any]
# feature_rows(chunk of the rows source, context) -> feature rows
FeatureRows = Callable[[pl.DataFrame, Any], pl.DataFrame]
# land(landing_dir, days) -> a summary: lays a use case's demo data out as landing files
Lander = Callable[[Path, Iterable[dt.date]], Any]


@dataclass(frozen=True)
class Partitions:
    start: dt.date
    end: dt.date | None  # the last day; None: open-ended, up to today
    timezone: str
    nightly_cron: str = "30 2 * * *"

    def last_day(self, today: dt.date | None = None) -> dt.date:
        return self.end or (today or dt.date.today())


@dataclass(frozen=True)
class LandingSource:
    """A daily landing source: one file a partition at ``landing_dir / path``."""

    schema: SourceSchema
    path: str  # relative to the landing directory; "{date}" is the partition's day
    expected_rows_per_day: tuple[int, int] = (0, 2**31 - 1)
    # How the feed says a file is whole (ingest/completeness.py): renamed, manifest or settled.
    complete_when: str = "renamed"
    # A day's rows against the same weekday's recent history; None: no such check.
    rows_vs_history: RowHistory | None = None

    @property
    def folder(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass(frozen=True)
class ReferenceSource:
    """A reference table: one file, replaced whole."""

    schema: SourceSchema
    path: str


@dataclass(frozen=True)
class Features:
    spec: FeatureSpec
    rows: FeatureRows
    context: FeatureContext | None
    rows_from: str  # the daily source whose rows become feature rows
    lookback_days: int = 0  # earlier days of every source the context may read
    references: tuple[str, ...] = ()
    module: str = ""  # where the functions come from, for messages


@dataclass(frozen=True)
class ThresholdPolicy:
    """How a binary model's decision threshold is chosen on the validation window."""

    policy: str = "f1"  # f1 | fixed | precision | positive_rate
    value: float | None = None


@dataclass(frozen=True)
class FeatureSet:
    """What one kind of model trains on: columns of the features table, rounds, parameters."""

    columns: tuple[str, ...] = ()  # in the model's order; empty: every feature column
    rounds: int = 300
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Training:
    """A model to train: the spec of its features, its rounds and LightGBM parameters."""

    spec: FeatureSpec
    rounds: int
    params: Mapping[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    objective: str
    train: tuple[dt.date, dt.date]
    validation: tuple[dt.date, dt.date]
    rounds: int = 300
    params: Mapping[str, Any] = field(default_factory=dict)
    threshold: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    # The features a trained champion uses; empty: every feature column.
    columns: tuple[str, ...] = ()
    # What `train --challenger` trains; None: the same as a champion.
    challenger: FeatureSet | None = None


@dataclass(frozen=True)
class Scoring:
    explain: str = "all"
    explain_max_rows: int = 1_000
    scorer: str = "lightgbm"
    engine: str = "local"
    # Regression: the band around a prediction, as quantiles of the validation residuals.
    band_quantiles: tuple[float, float] = (0.1, 0.9)


@dataclass(frozen=True)
class Checks:
    max_reject_fraction: float = 0.05
    thresholds: AuditThresholds = field(default_factory=AuditThresholds)
    freshness_lag_minutes: float = 60.0


@dataclass(frozen=True)
class Retraining:
    """A challenger trained on a cron, on a trailing window ending at the last day with outcomes:
    ``window_days`` in all, the last ``validation_days`` of them for validation."""

    cron: str = "0 4 1 * *"  # 04:00 on the first of every month, in the use case's time zone
    window_days: int = 240
    validation_days: int = 30
    rounds: int | None = None  # unset: the declaration's training.rounds


@dataclass(frozen=True)
class Automation:
    landing_sensor: bool = True
    nightly_schedule: bool = True
    freshness_schedule: bool = True
    reports_follow_predictions: bool = True
    # After a change of champion, rescore the days it should score (platform/models/rescoring.py).
    rescore_after_champion_change: bool = True
    # After a day is loaded again, rerun the days whose features look back at it
    # (platform/features/lookback.py).
    rerun_days_looking_back: bool = True
    retraining_schedule: bool = False
    retraining: Retraining = field(default_factory=Retraining)


@dataclass(frozen=True)
class UseCase:
    name: str
    description: str
    partitions: Partitions
    sources: Mapping[str, LandingSource]
    references: Mapping[str, ReferenceSource]
    features: Features
    model: ModelSpec
    scoring: Scoring = field(default_factory=Scoring)
    checks: Checks = field(default_factory=Checks)
    automation: Automation = field(default_factory=Automation)
    lander: Lander | None = None
    demo_score: tuple[dt.date, dt.date] | None = None
    declared_in: Path | None = None

    # --- names: every table, asset and job of a use case is named here -------------------
    @property
    def spec(self) -> FeatureSpec:
        return self.features.spec

    def training(self, challenger: bool = False) -> Training:
        """What a champion (or, with ``challenger``, a challenger) is trained on."""
        model = self.model
        chosen = (model.challenger if challenger and model.challenger is not None
                  else FeatureSet(model.columns, model.rounds, model.params))
        return Training(self.spec.for_model(chosen.columns or self.spec.feature_columns),
                        chosen.rounds, chosen.params)

    def feature_sets(self, challenger: bool = False) -> list[FeatureSpec]:
        """The specs of the declared feature sets, the champion's and the challenger's, the
        one of ``challenger`` first."""
        sets = [self.training(challenger).spec, self.training(not challenger).spec]
        return sets if sets[0] != sets[1] else sets[:1]

    @property
    def group(self) -> str:
        return self.name

    @property
    def features_table(self) -> str:
        return f"features.{self.name}"

    @property
    def predictions_table(self) -> str:
        return f"predictions.{self.name}"

    @property
    def shadow_table(self) -> str:
        """The challenger's predictions of the days it was scored beside the champion."""
        return f"predictions.{self.name}_shadow"

    @property
    def report_table(self) -> str:
        return f"reports.{self.name}_daily"

    @property
    def shadow_comparison_table(self) -> str:
        """Champion against challenger on realised outcomes, per day and cumulated."""
        return f"reports.{self.name}_shadow_comparison"

    @property
    def models_dir_name(self) -> str:
        return self.name

    @staticmethod
    def raw_table(source: str) -> str:
        return f"raw.{source}"

    @staticmethod
    def quarantine_table(source: str) -> str:
        return f"quarantine.{source}"

    @staticmethod
    def refused_table(source: str) -> str:
        """Every rejected row of a day refused for rejecting too many (until it is published)."""
        return f"quarantine.{source}_refused"

    def job_name(self, what: str) -> str:
        """``daily``, ``features``, ``train``, ``predict``, ``freshness``, ``promote``,
        ``rollback``: ``<name>_<what>``."""
        return f"{self.name}_{what}"

    def tables(self) -> list[str]:
        """Every warehouse table this use case writes (``models.registry`` is shared)."""
        return [
            *(self.raw_table(s) for s in self.sources),
            *(self.quarantine_table(s) for s in self.sources),
            *(self.refused_table(s) for s in self.sources),
            *(self.raw_table(r) for r in self.references),
            self.features_table, self.predictions_table, self.shadow_table, self.report_table,
            self.shadow_comparison_table,
        ]

    def landing_folders(self) -> list[str]:
        return sorted({s.folder for s in self.sources.values()})


