"""Score feature rows with a loaded model and post-process: label, risk band, top reasons.

A pure function over a Polars frame and a booster, so the same code can run in a Dagster
step, a benchmark or a distributed engine. Rows are scored in chunks with one booster, so
memory follows the chunk size, not the partition size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.booster import LoadedModel, feature_matrix, model_spec
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.scoring import compiled
from batch_platform.platform.scoring.compiled import LIGHTGBM, Scorer, ScorerReport

TOP_REASONS = 3


class FeatureMismatchError(ValueError):
    """The features to score do not match what the model consumes."""


@dataclass(frozen=True)
class ScoringLineage:
    model_version: str
    code_version: str
    run_id: str
    scored_at: dt.datetime


@dataclass(frozen=True)
class ScoringStats:
    rows: int
    unknown_categories: dict[str, int]
    explained_rows: int
    scorer: ScorerReport


def check_features(frame: pl.DataFrame, spec: FeatureSpec, where: str) -> None:
    """Fail before scoring if a feature column is missing or of the wrong kind."""
    missing = [c for c in (spec.id_column, "partition_date", *spec.feature_columns)
               if c not in frame.columns]
    if missing:
        raise FeatureMismatchError(f"{where}: feature column(s) {missing} are missing")
    for name in spec.feature_columns:
        dtype = frame.schema[name]
        if name in spec.categorical_columns and dtype != pl.String:
            raise FeatureMismatchError(
                f"{where}: categorical feature '{name}' must be text, found {dtype}")
        if name not in spec.categorical_columns and not (dtype.is_numeric() or dtype == pl.Null):
            raise FeatureMismatchError(
                f"{where}: numeric feature '{name}' must be a number, found {dtype}")


def own_features(spec: FeatureSpec, model: LoadedModel) -> FeatureSpec:
    """``spec`` narrowed to the model's own features, by name: a use case's features table
    may hold more columns than one model uses (another model's)."""
    return model_spec(spec, model.booster.feature_name(), model.version)


def top_reasons(contributions: np.ndarray, names: tuple[str, ...], k: int = TOP_REASONS
                ) -> dict[str, list]:
    """The ``k`` features that pushed each row's score up most; none where nothing pushed up."""
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contributions, order, axis=1)
    labels = np.asarray(names, dtype=object)[order]
    columns: dict[str, list] = {}
    for i in range(k):
        positive = values[:, i] > 0
        columns[f"reason_{i + 1}"] = np.where(positive, labels[:, i], None).tolist()
        columns[f"reason_{i + 1}_contribution"] = np.where(positive, values[:, i], np.nan).tolist()
    return columns


def _chunks(frame: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    for offset in range(0, frame.height, rows):
        yield frame.slice(offset, rows)


def score(
    features: pl.DataFrame,
    model: LoadedModel,
    spec: FeatureSpec,
    lineage: ScoringLineage,
    chunk_rows: int = 100_000,
    explain: str = "all",
    num_threads: int = 0,
    scorer: str = LIGHTGBM,
    warn: Callable[[str], None] | None = None,
    explain_max_rows: int = 1_000,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[pl.DataFrame, ScoringStats]:
    """One prediction row per feature row, in the same order, for a frame in memory.

    ``scorer="compiled"`` scores with the model compiled to native code once it passed a
    parity check on a sample of ``features``; otherwise (and on any failure, reported through
    ``warn``) LightGBM scores. Explanations always come from LightGBM's ``pred_contrib``.
    ``explain="riskiest"`` explains the ``explain_max_rows`` highest scores of each day, after
    every chunk is scored, so its cost is bounded however large the partition.
    ``on_chunk`` is called with the rows of each chunk once it is scored (progress).
    The streaming path (a partition too large for memory) uses the same pieces:
    ``choose_scorer``, ``score_chunk``, ``Riskiest`` and ``fill_reasons``.
    """
    spec = own_features(spec, model)
    chosen, report = choose_scorer(features, model, spec, scorer, num_threads, warn)
    riskiest = (Riskiest(explain_max_rows, spec.id_column, objective(spec.objective).output)
                if explain == "riskiest" else None)
    parts = []
    unknown = dict.fromkeys(spec.categorical_columns, 0)
    explained = 0
    for chunk in _chunks(features, chunk_rows):
        scored = score_chunk(chunk, model, spec, chosen, explain, num_threads)
        for name, count in scored.unknown_categories.items():
            unknown[name] += count
        explained += scored.explained_rows
        parts.append(scored.predictions)
        if riskiest is not None:
            riskiest.add(scored.predictions)
        if on_chunk is not None:
            on_chunk(chunk.height)
    predictions = pl.concat(parts) if parts else empty_predictions(spec)
    if riskiest is not None:
        reasons = riskiest.explain(_chunks(features, chunk_rows), model, spec, num_threads)
        predictions, explained = fill_reasons(predictions, reasons, spec.id_column), reasons.height
    return (with_lineage(predictions, lineage, report.used),
            ScoringStats(features.height, unknown, explained, report))


@dataclass(frozen=True)
class ScoredChunk:
    predictions: pl.DataFrame  # without the lineage columns: see ``with_lineage``
    unknown_categories: dict[str, int]
    explained_rows: int


def score_chunk(chunk: pl.DataFrame, model: LoadedModel, spec: FeatureSpec, chosen: Scorer,
                explain: str, num_threads: int) -> ScoredChunk:
    """Score and post-process one chunk (a probability, label and band; or a value and its
    band) and, per ``explain`` (never for "riskiest"), explain it."""
    spec = own_features(spec, model)
    matrix, unknown = feature_matrix(chunk, spec, model.categorical_levels)
    outputs = chosen.predict(matrix, num_threads)
    kind = objective(spec.objective)
    mask = kind.explain_mask(outputs, model.calibration, explain)
    reasons = _explain(model, matrix, mask, spec, num_threads)
    predictions = (
        chunk.select(spec.id_column, "partition_date")
        .hstack(kind.postprocess(outputs, model.calibration))
        .hstack(reasons)
    )
    return ScoredChunk(predictions, unknown, int(mask.sum()))


def with_lineage(predictions: pl.DataFrame, lineage: ScoringLineage, scorer: str
                 ) -> pl.DataFrame:
    """Which model, scorer, code and run produced each row, and when."""
    return predictions.with_columns(
        pl.lit(lineage.model_version).alias("model_version"),
        pl.lit(scorer).alias("scorer"),
        pl.lit(lineage.code_version).alias("code_version"),
        pl.lit(lineage.run_id).alias("run_id"),
        pl.lit(lineage.scored_at).cast(pl.Datetime("us", "UTC")).alias("scored_at"),
    )


def choose_scorer(features: pl.DataFrame, model: LoadedModel, spec: FeatureSpec,
                  requested: str, num_threads: int, warn: Callable[[str], None] | None = None
                  ) -> tuple[Scorer, ScorerReport]:
    """The scorer for these rows: the compiled one only if it passed parity on a sample of
    ``features`` (a chunk of the partition is sample enough)."""
    spec = own_features(spec, model)
    sample = np.empty((0, len(spec.feature_columns)))
    if requested != LIGHTGBM and features.height:
        rows = features[compiled.stride_rows(features.height)]
        sample, _ = feature_matrix(rows, spec, model.categorical_levels)
    categorical = [i for i, c in enumerate(spec.feature_columns) if c in spec.categorical_columns]
    return compiled.choose_scorer(requested, model.booster, model.path, model.version, sample,
                                  categorical, num_threads, **({"warn": warn} if warn else {}))


class Riskiest:
    """The ``per_day`` highest outputs (scores, predicted values) of each day, over chunks
    scored one after another.

    Ties go to the smaller id, so the choice does not depend on how rows were chunked.
    """

    def __init__(self, per_day: int, id_column: str, output: str = "score") -> None:
        self.per_day, self.id_column, self.output = per_day, id_column, output
        self.best: pl.DataFrame | None = None

    def add(self, predictions: pl.DataFrame) -> None:
        rows = predictions.select("partition_date", self.id_column, self.output)
        merged = rows if self.best is None else pl.concat([self.best, rows])
        self.best = (merged.sort("partition_date", self.output, self.id_column,
                                 descending=[False, True, False])
                     .group_by("partition_date", maintain_order=True).head(self.per_day))

    def ids(self) -> pl.Series:
        if self.best is None:
            return pl.Series(self.id_column, [], dtype=pl.String)
        return self.best.get_column(self.id_column)

    def explain(self, feature_chunks: Iterable[pl.DataFrame], model: LoadedModel,
                spec: FeatureSpec, num_threads: int) -> pl.DataFrame:
        """The reasons of the chosen rows, keyed by id: a second pass over the features."""
        spec = own_features(spec, model)
        chosen = self.ids().implode()
        parts = []
        for chunk in feature_chunks:
            rows = chunk.filter(pl.col(spec.id_column).is_in(chosen))
            if rows.height:
                matrix, _ = feature_matrix(rows, spec, model.categorical_levels)
                every = np.ones(len(matrix), dtype=bool)
                parts.append(rows.select(spec.id_column).hstack(
                    _explain(model, matrix, every, spec, num_threads)))
        if not parts:
            return pl.DataFrame(schema={spec.id_column: pl.String(), **_reason_schema()})
        return pl.concat(parts)


def fill_reasons(predictions: pl.DataFrame, reasons: pl.DataFrame, id_column: str
                 ) -> pl.DataFrame:
    """``predictions`` with the reasons of the rows in ``reasons`` filled in, order kept."""
    if reasons.height == 0:
        return predictions
    names = list(_reason_schema())
    return (predictions.join(reasons, on=id_column, how="left", suffix="__new",
                             maintain_order="left")
            .with_columns(pl.when(pl.col(f"{names[0]}__new").is_not_null()
                                  | pl.col(f"{names[1]}__new").is_not_nan())
                          .then(pl.col(f"{c}__new")).otherwise(pl.col(c)).alias(c)
                          for c in names)
            .select(predictions.columns))


def _explain(model: LoadedModel, matrix: np.ndarray, mask: np.ndarray, spec: FeatureSpec,
             num_threads: int) -> pl.DataFrame:
    if not mask.any():  # skip building and sorting an all-zero matrix: same empty reasons
        return pl.select(
            (pl.repeat(None, len(mask), dtype=pl.String) if dtype == pl.String()
             else pl.repeat(float("nan"), len(mask), dtype=pl.Float64)).alias(name)
            for name, dtype in _reason_schema().items())
    contributions = np.zeros((len(mask), len(spec.feature_columns)))
    explained = model.booster.predict(matrix[mask], pred_contrib=True, num_threads=num_threads)
    contributions[mask] = explained[:, :-1]  # the last column is the expected value
    return pl.DataFrame(top_reasons(contributions, spec.feature_columns), schema=_reason_schema())


def _reason_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {}
    for i in range(1, TOP_REASONS + 1):
        schema[f"reason_{i}"] = pl.String()
        schema[f"reason_{i}_contribution"] = pl.Float64()
    return schema


def empty_predictions(spec: FeatureSpec) -> pl.DataFrame:
    return pl.DataFrame(schema={
        spec.id_column: pl.String(), "partition_date": pl.Date(),
        **objective(spec.objective).output_schema, **_reason_schema(),
    })
