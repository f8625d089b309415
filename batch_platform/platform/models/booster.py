"""Train, evaluate, save and load LightGBM models; check a model against a feature spec.

Models live in LightGBM's own text format, named by the hash of their content. Category
levels travel inside the file, in the ``pandas_categorical`` line LightGBM itself writes and
reads, so a model file is complete on its own: nothing is pickled, nothing rides alongside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from batch_platform.platform.features.spec import FeatureSetError, FeatureSpec
from batch_platform.platform.files import write_bytes_atomic
from batch_platform.platform.models.objectives import Calibration, Evaluation, objective

if TYPE_CHECKING:  # imported where a model is trained or parsed: it brings pandas and scipy
    import lightgbm as lgb

# Defaults a declaration's model.params override; the objective comes from model.objective.
DEFAULT_PARAMS: dict[str, object] = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 20.0,
    "seed": 13,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
DEFAULT_ROUNDS = 300
VERSION_LENGTH = 16


class ModelError(ValueError):
    """A model file that cannot be used as it is; the message says which file and why."""


@dataclass(frozen=True)
class LoadedModel:
    """A booster ready to score, with what scoring needs to know about it."""

    version: str
    booster: lgb.Booster
    calibration: Calibration
    categorical_levels: dict[str, list[str]] = field(default_factory=dict)
    # The registered model file: the compiled scorer compiles (and caches by) exactly this file.
    path: Path | None = None

    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold


def category_levels(frame: pl.DataFrame, spec: FeatureSpec) -> dict[str, list[str]]:
    """The sorted values of each categorical feature seen in ``frame``."""
    return {
        c: sorted(v for v in frame.get_column(c).unique().to_list() if v is not None)
        for c in spec.categorical_columns
    }


def feature_matrix(
    frame: pl.DataFrame, spec: FeatureSpec, levels: dict[str, list[str]]
) -> tuple[np.ndarray, dict[str, int]]:
    """A C-ordered float64 matrix in the spec's column order; unknown categories become missing.

    Returns the matrix and, per categorical column, how many values were not in the levels.
    """
    exprs = []
    for name in spec.feature_columns:
        if name in spec.categorical_columns:
            codes = {value: float(i) for i, value in enumerate(levels[name])}
            exprs.append(pl.col(name).replace_strict(codes, default=None,
                                                     return_dtype=pl.Float64).alias(name))
        else:
            exprs.append(pl.col(name).cast(pl.Float64))
    encoded = frame.select(exprs)
    unknown = {
        c: int((frame.get_column(c).is_not_null() & encoded.get_column(c).is_null()).sum())
        for c in spec.categorical_columns
    }
    return np.ascontiguousarray(encoded.to_numpy(), dtype=np.float64), unknown


def labelled(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Rows whose outcome is known (a row may have none yet, or never: a cancellation)."""
    return frame.filter(pl.col(spec.label_column).is_not_null())


def train(
    train_frame: pl.DataFrame,
    spec: FeatureSpec,
    rounds: int = DEFAULT_ROUNDS,
    params: dict[str, object] | None = None,
    num_threads: int = 0,
) -> lgb.Booster:
    rows = labelled(train_frame, spec)
    if rows.height == 0:
        raise ModelError("the training window holds no rows with a known outcome")
    levels = category_levels(rows, spec)
    matrix, _ = feature_matrix(rows, spec, levels)
    import lightgbm as lgb

    dataset = lgb.Dataset(
        matrix,
        label=rows.get_column(spec.label_column).cast(pl.Float64).to_numpy(),
        feature_name=list(spec.feature_columns),
        categorical_feature=list(spec.categorical_columns),
        free_raw_data=True,
    )
    booster = lgb.train({**DEFAULT_PARAMS, **(params or {}),
                         "objective": objective(spec.objective).lightgbm_objectives[0],
                         "num_threads": num_threads}, dataset, num_boost_round=rounds)
    # LightGBM stores this list in the model file and restores it on load.
    booster.pandas_categorical = [levels[c] for c in spec.feature_columns
                                  if c in spec.categorical_columns]
    return booster


def model_text(booster: lgb.Booster) -> str:
    return booster.model_to_string()


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]


def save(text: str, models_dir: Path) -> tuple[str, Path]:
    """Write the model text under its content hash; the same model always lands on one file."""
    version = version_of(text)
    path = models_dir / f"{version}.txt"
    if not path.exists() or version_of(path.read_text()) != version:
        write_bytes_atomic(path, text.encode())
    return version, path


def read_model_text(path: Path) -> str:
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    payload = path.read_bytes()
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(
            f"model file {path} is not a LightGBM text model (it is binary: pickled or "
            "another format?); save it with Booster.save_model()"
        ) from None
    if not text.startswith("tree\n") or "end of trees" not in text:
        raise ModelError(f"model file {path} is not a complete LightGBM text model "
                         "(missing 'tree' header or 'end of trees': truncated or another format?)")
    return text


def parse(text: str, source: str) -> lgb.Booster:
    import lightgbm as lgb

    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as err:
        raise ModelError(f"model {source} cannot be loaded by LightGBM: {err}") from None


def read_brought_model(path: Path, specs: FeatureSpec | Sequence[FeatureSpec]
                       ) -> tuple[str, lgb.Booster, dict[str, list[str]], FeatureSpec]:
    """A model file a user brings, checked against the use case's features before anything is
    built from it: its text, the booster, its category levels and the spec it matches.

    ``specs``: the feature sets the use case declares, the one asked for first; the model
    must use exactly one of them. A model that matches none is refused with what it lacks
    against the first.
    """
    text = read_model_text(path)
    origin = f"file {path}"
    booster = parse(text, origin)
    candidates = [specs] if isinstance(specs, FeatureSpec) else list(specs)
    for spec in candidates[1:]:
        if booster.feature_name() == list(spec.feature_columns):
            return text, booster, levels_from_model(booster, spec, origin), spec
    return text, booster, levels_from_model(booster, candidates[0], origin), candidates[0]


def load(path: Path, expected_version: str | None = None) -> lgb.Booster:
    """Load a LightGBM text model; with ``expected_version``, prove the file is that version."""
    text = read_model_text(path)
    if expected_version is not None:
        check_version(path, text, expected_version)
    return parse(text, f"file {path}")


def registered_path(data_dir: Path, models_dir: Path, model_path: str) -> Path:
    """Where a registry row's model file is; refused unless under the model directory."""
    path = (data_dir / model_path).resolve()
    if not path.is_relative_to(models_dir.resolve()):
        raise ModelError(f"registered model path {path} is outside the model directory "
                         f"{models_dir}")
    return path


def check_registered(data_dir: Path, models_dir: Path, model_path: str, version: str) -> Path:
    """Prove a registry row's file is there, under the model directory, and is ``version``."""
    path = registered_path(data_dir, models_dir, model_path)
    check_version(path, read_model_text(path), version)
    return path


def check_version(path: Path, text: str, expected_version: str) -> None:
    if version_of(text) != expected_version:
        raise ModelError(
            f"model file {path} does not match its registered version {expected_version} "
            f"(content hash {version_of(text)}): it was changed or corrupted after registration"
        )


def load_registered(data_dir: Path, models_dir: Path, model_path: str, version: str,
                    calibration: Calibration, spec: FeatureSpec) -> LoadedModel:
    """The registered model, loaded only from the model directory and proven to be ``version``,
    with its features (by name) among ``spec``'s."""
    path = registered_path(data_dir, models_dir, model_path)
    booster = load(path, version)
    spec = model_spec(spec, booster.feature_name(), str(path))
    return LoadedModel(version=version, booster=booster, calibration=calibration,
                       categorical_levels=levels_from_model(booster, spec, str(path)), path=path)


def model_spec(spec: FeatureSpec, names: list[str], source: str) -> FeatureSpec:
    """The spec of a model of ``spec``'s use case that uses the features ``names``: the
    features table holds every declared feature, a model reads its own by name."""
    try:
        return spec.for_model(names)
    except FeatureSetError as err:
        raise ModelError(f"model {source} cannot score: {err}") from None


def evaluate_on(booster: lgb.Booster, frame: pl.DataFrame, spec: FeatureSpec,
                levels: dict[str, list[str]], num_threads: int = 0, policy: str = "f1",
                policy_value: float | None = None,
                band_quantiles: tuple[float, float] = (0.1, 0.9)) -> Evaluation:
    """The objective's metrics on the rows of ``frame`` with a known outcome, and its
    calibration (a threshold, a band) chosen there."""
    rows = labelled(frame, spec)
    if rows.height == 0:
        raise ModelError("the validation window holds no rows with a known outcome")
    matrix, _ = feature_matrix(rows, spec, levels)
    outputs = booster.predict(matrix, num_threads=num_threads)
    labels = rows.get_column(spec.label_column).to_numpy()
    return objective(spec.objective).evaluate(labels, outputs, policy, policy_value,
                                              band_quantiles)


def levels_from_model(booster: lgb.Booster, spec: FeatureSpec, source: str) -> dict[str, list[str]]:
    """Check ``booster`` predicts a probability from exactly the spec's features.

    Returns its category levels.
    """
    dumped = booster.dump_model(num_iteration=1)
    found = str(dumped.get("objective", "")) or "unknown"
    expected_objective = objective(spec.objective)
    if not found.startswith(expected_objective.lightgbm_objectives):
        raise ModelError(
            f"model {source} has objective '{found}'; the {spec.use_case} use case is "
            f"{spec.objective}: train with objective "
            f"{' or '.join(repr(o) for o in expected_objective.lightgbm_objectives[:2])}")
    names = booster.feature_name()
    expected = list(spec.feature_columns)
    if names != expected:
        missing = [c for c in expected if c not in names]
        extra = [c for c in names if c not in expected]
        detail = []
        if missing:
            detail.append(f"missing features {missing}")
        if extra:
            detail.append(f"unknown features {extra}")
        if not detail:
            detail.append(f"features in another order: model {names}, expected {expected}")
        raise ModelError(f"model {source} does not match the {spec.use_case} feature spec: "
                         + "; ".join(detail))
    infos = dumped.get("feature_infos", {})
    # LightGBM lists the category codes of a categorical feature and none for a numeric one;
    # a feature with a single value in training is trivial and absent from feature_infos.
    model_categorical = [c for c in names if infos.get(c, {}).get("values")]
    used_as_numbers = [c for c in spec.categorical_columns
                       if c in infos and not infos[c].get("values")]
    if used_as_numbers:
        raise ModelError(f"model {source} treats categorical feature(s) {used_as_numbers} as "
                         "numbers; train with them as categorical features")
    unexpected = [c for c in model_categorical if c not in spec.categorical_columns]
    if unexpected:
        raise ModelError(f"model {source} treats numeric feature(s) {unexpected} as categorical")
    stored = booster.pandas_categorical or []
    ordered = [c for c in names if c in spec.categorical_columns]
    if len(stored) != len(ordered):
        raise ModelError(
            f"model {source} carries category levels for {len(stored)} feature(s), expected "
            f"{len(ordered)} ({ordered}); train from a frame with category dtypes or set "
            "booster.pandas_categorical before saving"
        )
    levels = {c: [str(v) for v in values] for c, values in zip(ordered, stored, strict=True)}
    for c in ordered:
        codes = infos.get(c, {}).get("values", [])
        if codes and max(codes) >= len(levels[c]):
            raise ModelError(f"model {source} uses category code {max(codes)} for '{c}' but "
                             f"carries only {len(levels[c])} levels")
    return levels
