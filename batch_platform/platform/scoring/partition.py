"""Score a partition's staged features into staged predictions, chunk by chunk.

The predictions stage without Dagster: one booster scores chunk after chunk (or a Ray cluster
scores, with ``engine="ray"``); audits, drift and the summary are tallied as chunks go by;
with ``explain="riskiest"`` a second pass explains the chosen rows. Nothing holds the
partition whole on the local engine.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.booster import LoadedModel
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.monitoring import audits, drift
from batch_platform.platform.monitoring.summary import PredictionSummary
from batch_platform.platform.scoring import engines
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.storage.staging import StagedTable, Staging, chunks, row_count
from batch_platform.settings import Settings

Warn = Callable[[str], None]


@dataclass
class StagedScores:
    """A partition's predictions, staged as Parquet, and what was tallied on the way."""

    predictions: StagedTable
    stats: scoring.ScoringStats
    counts: Counter[str]
    scores: audits.ScoreRange
    drift: drift.DriftCounter
    summary: PredictionSummary
    rows_by_day: Counter[dt.date]
    seconds: float
    engine: engines.EngineReport


def score_staged(settings: Settings, spec: FeatureSpec, staging: Staging, features_file: Path,
                 loaded: LoadedModel, profile: drift.ModelProfile | None,
                 lineage: scoring.ScoringLineage, where: str,
                 scope: tuple[str, dt.date, dt.date], warn: Warn,
                 on_chunk: Callable[[int], None] = lambda rows: None,
                 value_range: tuple[float, float] = (0.0, 1.0),
                 name: str = "predictions") -> StagedScores:
    """Score the staged features with ``settings`` (resolved for the use case); the rows are
    staged as ``name`` (another model scoring the same features takes another name). The model
    reads its own features by name: the table may hold more (another model's)."""
    started = time.perf_counter()
    spec = scoring.own_features(spec, loaded)
    kind = objective(spec.objective)
    feature_rows = row_count(features_file)
    predictions = staging.table(name)
    counts: Counter[str] = Counter()
    scores = audits.ScoreRange(kind)
    score_drift = drift.DriftCounter(profile.scores if profile else None)
    summary = PredictionSummary(spec, value_range)
    rows_by_day: Counter[dt.date] = Counter()
    if settings.engine == "ray" and feature_rows:
        engine_run: _LocalScoring | _EngineScoring = _score_on_engine(
            settings, spec, features_file, loaded, lineage, where, scope, warn)
        scored_chunks, riskiest = engine_run.chunks, None
    else:
        engine_run = _LocalScoring(settings, spec, loaded, lineage, where, warn)
        scored_chunks = engine_run.score(chunks([features_file], settings.chunk_rows))
        riskiest = engine_run.riskiest
    for chunk, rows in scored_chunks:
        counts += audits.prediction_row_counts(rows, chunk, spec.id_column)
        scores.add(rows)
        score_drift.add(rows)
        summary.add(rows, chunk)
        rows_by_day.update(dict(rows.group_by("partition_date").len().iter_rows()))
        if riskiest is not None:
            riskiest.add(rows)
        predictions.write(rows)
        on_chunk(chunk.height)
    report = engine_run.report
    assert report is not None
    if predictions.schema is None:
        predictions.write(scoring.with_lineage(scoring.empty_predictions(spec), lineage,
                                               report.used))
    predictions.close()
    explained = engine_run.explained
    if riskiest is not None:
        # A second pass: explain the chosen rows, then fill their reasons into the staged parts.
        reasons = riskiest.explain(chunks([features_file], settings.chunk_rows), loaded, spec,
                                   settings.scoring_threads)
        explained = reasons.height
        filled = staging.table(f"{name}_explained")
        for part in chunks(predictions.files, settings.chunk_rows):
            filled.write(scoring.fill_reasons(part, reasons, spec.id_column))
        predictions = filled.close()
    for column, count in engine_run.unknown.items():
        if count:
            warn(f"{count} row(s) have a {column} the model has not seen; scored with that "
                 "feature missing")
    stats = scoring.ScoringStats(predictions.rows, engine_run.unknown, explained, report)
    return StagedScores(predictions, stats, counts, scores, score_drift, summary, rows_by_day,
                        time.perf_counter() - started, engine_run.engine)


class _LocalScoring:
    """The local engine: chunk after chunk in this process, with one booster."""

    def __init__(self, settings: Settings, spec: FeatureSpec, loaded: LoadedModel,
                 lineage: scoring.ScoringLineage, where: str, warn: Warn) -> None:
        self.settings, self.spec, self.loaded = settings, spec, loaded
        self.lineage, self.where, self.warn = lineage, where, warn
        assert settings.explain_max_rows is not None, "resolve the settings first"
        self.riskiest = (scoring.Riskiest(settings.explain_max_rows, spec.id_column,
                                          objective(spec.objective).output)
                         if settings.explain == "riskiest" else None)
        self.unknown = dict.fromkeys(spec.categorical_columns, 0)
        self.explained = 0
        self.report: scoring.ScorerReport | None = None
        self.engine = engines.EngineReport("local", 1)

    def score(self, feature_chunks: Iterator[pl.DataFrame]
              ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        settings, spec, chosen = self.settings, self.spec, None
        explain = "none" if self.riskiest else (settings.explain or "none")
        for chunk in feature_chunks:
            if chosen is None:
                scoring.check_features(chunk, spec, f"features.{spec.use_case} {self.where}")
                # The parity check of a compiled scorer samples the first chunk.
                chosen, self.report = scoring.choose_scorer(
                    chunk, self.loaded, spec, settings.scorer or "lightgbm",
                    settings.scoring_threads, self.warn)
            if chunk.height == 0:
                continue
            result = scoring.score_chunk(chunk, self.loaded, spec, chosen, explain,
                                         settings.scoring_threads)
            for name, count in result.unknown_categories.items():
                self.unknown[name] += count
            self.explained += result.explained_rows
            yield chunk, scoring.with_lineage(result.predictions, self.lineage, self.report.used)


@dataclass
class _EngineScoring:
    chunks: Iterator[tuple[pl.DataFrame, pl.DataFrame]]
    report: scoring.ScorerReport
    unknown: dict[str, int]
    explained: int
    engine: engines.EngineReport


def _score_on_engine(settings: Settings, spec: FeatureSpec, features_file: Path,
                     loaded: LoadedModel, lineage: scoring.ScoringLineage, where: str,
                     scope: tuple[str, dt.date, dt.date], warn: Warn) -> _EngineScoring:
    """Score on the configured cluster engine. The driver holds the range's features and
    predictions (the cluster scores them); they are tallied chunk by chunk afterwards."""
    features = pl.read_parquet(features_file)
    scoring.check_features(features, spec, f"features.{spec.use_case} {where}")
    predictions, stats, engine = engines.score(features, loaded, spec, lineage, settings,
                                               scope, warn=warn)
    step = settings.chunk_rows
    aligned = ((features.slice(offset, step), predictions.slice(offset, step))
               for offset in range(0, features.height, step))
    return _EngineScoring(aligned, stats.scorer, stats.unknown_categories, stats.explained_rows,
                          engine)
