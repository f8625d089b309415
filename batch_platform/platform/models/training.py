"""Train (or take a brought model file), evaluate, calibrate and store a use case's model.

The model stage without Dagster: from feature frames to a model file under its content hash,
its drift profile beside it, and the ``models.registry`` row that points at both. The files are
written before the row exists, so no row ever points at a missing file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models.objectives import Evaluation, objective
from batch_platform.platform.models.registry import CHAMPION, ModelRecord
from batch_platform.platform.monitoring import drift
from batch_platform.platform.use_case import UseCase

if TYPE_CHECKING:
    import lightgbm as lgb

Window = tuple[dt.date, dt.date]


@dataclass(frozen=True)
class BuiltModel:
    record: ModelRecord
    path: Path
    booster: lgb.Booster
    evaluation: Evaluation

    def top_features(self, n: int = 10) -> list[tuple[str, float]]:
        gains = zip(self.booster.feature_name(), self.booster.feature_importance("gain"),
                    strict=True)
        return sorted(gains, key=lambda item: -item[1])[:n]


def check_windows(train: Window | None, valid: Window) -> None:
    for name, window in (("train", train), ("valid", valid)):
        if window is not None and window[1] < window[0]:
            raise ValueError(f"{name} window ends ({window[1]}) before it starts ({window[0]})")
    if train and valid[0] <= train[1]:
        raise ValueError(f"validation window starts ({valid[0]}) before the training window "
                         f"ends ({train[1]}): validation must be later data")


def build_model(use_case: UseCase, train: pl.DataFrame | None, valid: pl.DataFrame,
                train_window: Window | None, valid_window: Window, models_dir: Path,
                data_dir: Path, *, brought_file: Path | None = None, rounds: int | None = None,
                num_threads: int = 0, run_id: str, code_version: str,
                challenger: bool = False) -> BuiltModel:
    """Train on ``train`` (or read ``brought_file``), validate on ``valid``, store the files.

    ``train`` is None exactly when a model file is brought. The model uses the features
    declared for a champion, or with ``challenger`` for a challenger (``UseCase.training``);
    its registry row records them.
    """
    training = use_case.training(challenger)
    spec = training.spec
    # The text that will be saved is parsed and validated before anything is saved or registered.
    if brought_file is not None:
        source = "user_file"
        # A brought model may use either declared feature set; the registry records its own.
        text, booster, levels, spec = model_core.read_brought_model(
            brought_file, use_case.feature_sets(challenger))
    else:
        assert train is not None
        source, origin = "trained", f"trained on {use_case.features_table}"
        text = model_core.model_text(model_core.train(
            train, spec, rounds=rounds or training.rounds, params=dict(training.params),
            num_threads=num_threads))
        booster = model_core.parse(text, origin)
        levels = model_core.levels_from_model(booster, spec, origin)
    policy = use_case.model.threshold
    evaluation = model_core.evaluate_on(booster, valid, spec, levels, num_threads, policy.policy,
                                        policy.value, use_case.scoring.band_quantiles)
    kind = objective(spec.objective)
    reference = train if train is not None else valid
    reference_window = train_window or valid_window
    profile = drift.ModelProfile(
        features=drift.build_profile(reference, spec.drift_columns,
                                     f"{reference_window[0]}..{reference_window[1]}"),
        scores=drift.build_profile(pl.DataFrame({kind.output: evaluation.outputs}),
                                   [kind.output], f"{valid_window[0]}..{valid_window[1]}"),
    )
    version, path = model_core.save(text, models_dir / use_case.models_dir_name)
    drift.save_profile(profile, drift.profile_path(path))
    metrics = evaluation.metrics
    band = evaluation.calibration.band
    record = ModelRecord(
        model_version=version, use_case=use_case.name, objective=spec.objective,
        status=CHAMPION, source=source, trained_at=dt.datetime.now(dt.UTC),
        train_start=train_window[0] if train_window else None,
        train_end=train_window[1] if train_window else None,
        valid_start=valid_window[0], valid_end=valid_window[1],
        train_rows=model_core.labelled(train, spec).height if train is not None else None,
        valid_rows=evaluation.rows,
        **{name: metrics.get(name) for name in ("auc", "log_loss", "brier", "positive_rate",
                                                "predicted_positive_rate", "mae", "rmse",
                                                "bias")},
        threshold=evaluation.calibration.threshold,
        band_low=band[0] if band else None, band_high=band[1] if band else None,
        feature_list=list(spec.feature_columns), num_trees=booster.num_trees(),
        model_path=str(path.relative_to(data_dir)), code_version=code_version, run_id=run_id,
    )
    return BuiltModel(record, path, booster, evaluation)
