"""Model: metrics, threshold, training, content-addressed files and checks against the spec."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from batch_platform.platform.models import booster as model
from batch_platform.platform.models import objectives
from batch_platform.platform.models.objectives import Calibration
from batch_platform_tests.flights import FLIGHTS
from batch_platform_tests.platform.conftest import TrainedModel

# Plain LightGBM training, outside model.train, for models a user could bring.
_PLAIN_PARAMS = {"objective": "binary", "verbose": -1, "num_threads": 1, "force_row_wise": True}

# --- metrics ---------------------------------------------------------------------------------


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    return objectives.Binary().evaluate(labels, scores, "f1", None, (0.1, 0.9)).metrics


def test_auc_of_a_hand_example() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # Positive/negative pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4).
    evaluation = objectives.Binary().evaluate(labels, scores, "f1", None, (0.1, 0.9))
    metrics = evaluation.metrics
    assert metrics["auc"] == pytest.approx(3 / 4)
    assert metrics["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4)
    assert metrics["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    assert metrics["positive_rate"] == 0.5
    assert evaluation.rows == 4


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 1], [0.2, 0.9], 1.0),
        ([0, 1], [0.9, 0.2], 0.0),
        ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
        ([0, 0, 1], [0.3, 0.5, 0.5], 0.75),
    ],
)
def test_auc_edge_cases(labels: list[int], scores: list[float], expected: float) -> None:
    assert binary_metrics(np.array(labels), np.array(scores))["auc"] == pytest.approx(expected)


def test_auc_is_null_with_one_class() -> None:
    assert binary_metrics(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]))["auc"] is None
    assert binary_metrics(np.array([0, 0]), np.array([0.2, 0.5]))["auc"] is None


def test_auc_expr_skips_unknown_labels_and_scores_per_group() -> None:
    frame = pl.DataFrame({
        "group": ["a"] * 5 + ["b"] * 2,
        "label": [False, True, None, True, False, True, True],
        "score": [0.2, 0.9, 0.0, None, 0.95, 0.1, 0.2],
    })
    result = dict(frame.group_by("group").agg(objectives.auc_expr()).sort("group").iter_rows())
    # a: known pairs (0.9 vs 0.2) right, (0.9 vs 0.95) wrong; b: positives only.
    assert result == {"a": pytest.approx(0.5), "b": None}


def test_choose_threshold_separates_separable_classes() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.12, 0.2, 0.3, 0.71, 0.8, 0.95])
    threshold = objectives.choose_threshold(labels, scores)
    assert 0.3 < threshold <= 0.71
    assert ((scores >= threshold) == labels.astype(bool)).all()


def test_choose_threshold_maximises_f1() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.8])
    # At 0.61..0.70: tp=2, fp=0, fn=1 -> F1 0.8; at 0.11..0.20: tp=3, fp=1, fn=0 -> F1 6/7.
    threshold = objectives.choose_threshold(labels, scores)
    assert 0.1 < threshold <= 0.2


# --- training and files ----------------------------------------------------------------------


def test_training_needs_known_outcomes(feature_rows: pl.DataFrame) -> None:
    unlabelled = feature_rows.head(10).with_columns(pl.lit(None, pl.Boolean).alias("arrived_late"))
    with pytest.raises(model.ModelError, match="no rows with a known outcome"):
        model.train(unlabelled, FLIGHTS, rounds=1)


def test_trained_model_has_the_spec_features(trained: TrainedModel) -> None:
    assert trained.booster.feature_name() == list(FLIGHTS.feature_columns)
    assert trained.booster.num_trees() == 20
    matrix, _ = model.feature_matrix(trained.train_frame, FLIGHTS, trained.levels)
    scores = trained.booster.predict(matrix)
    assert ((scores > 0) & (scores < 1)).all()
    # It learnt something about its own training rows.
    rows = model.labelled(trained.train_frame, FLIGHTS)
    labelled_matrix, _ = model.feature_matrix(rows, FLIGHTS, trained.levels)
    auc = binary_metrics(rows.get_column("arrived_late").to_numpy(),
                         trained.booster.predict(labelled_matrix))["auc"]
    assert auc > 0.6


def test_save_is_content_addressed_and_idempotent(trained: TrainedModel, tmp_path: Path) -> None:
    models_dir = tmp_path / "models" / "flights"
    version, path = model.save(trained.text, models_dir)
    assert version == hashlib.sha256(trained.text.encode()).hexdigest()[:16]
    assert path == models_dir / f"{version}.txt"
    assert path.read_text() == trained.text
    mtime = path.stat().st_mtime_ns
    again_version, again_path = model.save(trained.text, models_dir)
    assert (again_version, again_path) == (version, path)
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in models_dir.iterdir()] == [f"{version}.txt"]


def test_save_repairs_a_corrupted_file(trained: TrainedModel, tmp_path: Path) -> None:
    version, path = model.save(trained.text, tmp_path)
    path.write_text(trained.text[:100])
    assert model.save(trained.text, tmp_path) == (version, path)
    assert path.read_text() == trained.text


def test_load_checks_the_registered_version(trained: TrainedModel, tmp_path: Path) -> None:
    version, path = model.save(trained.text, tmp_path)
    booster = model.load(path, version)
    matrix, _ = model.feature_matrix(trained.train_frame.head(50), FLIGHTS, trained.levels)
    np.testing.assert_allclose(booster.predict(matrix), trained.booster.predict(matrix))
    with pytest.raises(model.ModelError) as raised:
        model.load(path, "0" * 16)
    message = str(raised.value)
    assert str(path) in message
    assert f"does not match its registered version {'0' * 16}" in message
    assert f"content hash {version}" in message


def test_load_detects_a_file_changed_after_registration(trained: TrainedModel,
                                                        tmp_path: Path) -> None:
    version, path = model.save(trained.text, tmp_path)
    path.write_text(trained.text.replace("learning_rate: 0.05", "learning_rate: 0.5"))
    with pytest.raises(model.ModelError, match="does not match"):
        model.load(path, version)


def test_truncated_model_file(trained: TrainedModel, tmp_path: Path) -> None:
    path = tmp_path / "half.txt"
    path.write_text(trained.text[: len(trained.text) // 2])
    with pytest.raises(model.ModelError) as raised:
        model.read_model_text(path)
    assert str(path) in str(raised.value)
    assert "not a complete LightGBM text model" in str(raised.value)
    with pytest.raises(model.ModelError, match="not a complete LightGBM text model"):
        model.load(path)


def test_pickled_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x08lightgbm\x94.")
    with pytest.raises(model.ModelError) as raised:
        model.read_model_text(path)
    assert str(path) in str(raised.value)
    assert "is not a LightGBM text model" in str(raised.value)


def test_text_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"trees": []}')
    with pytest.raises(model.ModelError, match="missing 'tree' header"):
        model.read_model_text(path)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(model.ModelError, match="does not exist"):
        model.read_model_text(tmp_path / "nope.txt")


def test_round_trip_keeps_category_levels(trained: TrainedModel, tmp_path: Path) -> None:
    version, path = model.save(trained.text, tmp_path)
    loaded = model.load(path, version)
    levels = model.levels_from_model(loaded, FLIGHTS, str(path))
    assert levels == trained.levels
    assert list(levels) == list(FLIGHTS.categorical_columns)
    assert levels["origin"] == ["EWR", "JFK", "LGA"]
    assert loaded.pandas_categorical == [trained.levels[c] for c in FLIGHTS.categorical_columns]


# --- checks against the spec -----------------------------------------------------------------


def _train_with(frame: pl.DataFrame, spec: model.FeatureSpec) -> lgb.Booster:
    booster = model.train(frame, spec, rounds=3, num_threads=1)
    return lgb.Booster(model_str=model.model_text(booster))


def test_model_of_another_feature_list_is_refused(trained: TrainedModel) -> None:
    fewer = dataclasses.replace(FLIGHTS, feature_columns=tuple(
        c for c in FLIGHTS.feature_columns if c not in ("plane_age", "visib")))
    booster = _train_with(trained.train_frame, fewer)
    with pytest.raises(model.ModelError) as raised:
        model.levels_from_model(booster, FLIGHTS, "their.txt")
    message = str(raised.value)
    assert "model their.txt does not match the flights feature spec" in message
    assert "missing features ['plane_age', 'visib']" in message


def test_model_with_unknown_features_is_refused(trained: TrainedModel) -> None:
    frame = trained.train_frame.with_columns(pl.lit(1.0).alias("secret"))
    more = dataclasses.replace(FLIGHTS, feature_columns=(*FLIGHTS.feature_columns, "secret"))
    with pytest.raises(model.ModelError, match=r"unknown features \['secret'\]"):
        model.levels_from_model(_train_with(frame, more), FLIGHTS, "their.txt")


def test_model_with_features_in_another_order_is_refused(trained: TrainedModel) -> None:
    swapped = dataclasses.replace(FLIGHTS, feature_columns=(
        "origin", "carrier", *FLIGHTS.feature_columns[2:]))
    with pytest.raises(model.ModelError, match="features in another order"):
        model.levels_from_model(_train_with(trained.train_frame, swapped), FLIGHTS, "their.txt")


def test_model_with_categories_as_numbers_is_refused(trained: TrainedModel) -> None:
    rows = model.labelled(trained.train_frame, FLIGHTS)
    matrix, _ = model.feature_matrix(rows, FLIGHTS, trained.levels)
    dataset = lgb.Dataset(matrix, label=rows.get_column("arrived_late").cast(pl.Float64).to_numpy(),
                          feature_name=list(FLIGHTS.feature_columns), categorical_feature=[])
    booster = lgb.train(_PLAIN_PARAMS, dataset, num_boost_round=2)
    with pytest.raises(model.ModelError) as raised:
        model.levels_from_model(booster, FLIGHTS, "their.txt")
    assert "treats categorical feature(s) ['carrier', 'origin', 'dest'] as numbers" in str(
        raised.value)


def test_model_without_category_levels_is_refused(trained: TrainedModel) -> None:
    rows = model.labelled(trained.train_frame, FLIGHTS)
    matrix, _ = model.feature_matrix(rows, FLIGHTS, trained.levels)
    dataset = lgb.Dataset(matrix, label=rows.get_column("arrived_late").cast(pl.Float64).to_numpy(),
                          feature_name=list(FLIGHTS.feature_columns),
                          categorical_feature=list(FLIGHTS.categorical_columns))
    booster = lgb.train(_PLAIN_PARAMS, dataset, num_boost_round=2)
    reloaded = lgb.Booster(model_str=booster.model_to_string())
    with pytest.raises(model.ModelError, match="carries category levels for 0 feature"):
        model.levels_from_model(reloaded, FLIGHTS, "their.txt")


def test_model_trained_on_one_origin_is_usable(feature_rows: pl.DataFrame) -> None:
    one_origin = feature_rows.filter(pl.col("origin") == "EWR")
    booster = _train_with(one_origin, FLIGHTS)
    assert model.levels_from_model(booster, FLIGHTS, "ewr.txt")["origin"] == ["EWR"]


def test_feature_matrix_maps_unknown_categories_to_missing() -> None:
    levels = {"carrier": ["AA", "UA"], "origin": ["EWR", "JFK", "LGA"], "dest": ["BOS", "MIA"]}
    numeric = {c: [1.0, 2.0, None] for c in FLIGHTS.numeric_columns}
    frame = pl.DataFrame({
        **numeric,
        "carrier": ["UA", "ZZ", None],
        "origin": ["LGA", "EWR", "XXX"],
        "dest": ["ATL", "SFO", "BOS"],
    })
    matrix, unknown = model.feature_matrix(frame, FLIGHTS, levels)
    assert matrix.dtype == np.float64
    assert matrix.flags["C_CONTIGUOUS"]
    assert matrix.shape == (3, len(FLIGHTS.feature_columns))
    column = {name: i for i, name in enumerate(FLIGHTS.feature_columns)}
    np.testing.assert_array_equal(matrix[:, column["carrier"]], [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(matrix[:, column["origin"]], [2.0, 0.0, np.nan])
    np.testing.assert_array_equal(matrix[:, column["dest"]], [np.nan, np.nan, 0.0])
    np.testing.assert_array_equal(matrix[:, column["distance"]], [1.0, 2.0, np.nan])
    # A missing value is not an unknown category; 'ZZ', 'XXX', 'ATL' and 'SFO' are.
    assert unknown == {"carrier": 1, "origin": 1, "dest": 2}


def test_category_levels_are_sorted_and_skip_missing() -> None:
    frame = pl.DataFrame({"carrier": ["UA", None, "AA", "UA"],
                          "origin": ["LGA", "EWR", "EWR", None],
                          "dest": ["MIA", "BOS", "MIA", "ATL"]})
    assert model.category_levels(frame, FLIGHTS) == {
        "carrier": ["AA", "UA"], "origin": ["EWR", "LGA"], "dest": ["ATL", "BOS", "MIA"]}


def test_finite_or_none() -> None:
    assert objectives.finite_or_none(None) is None
    assert objectives.finite_or_none(float("nan")) is None
    assert objectives.finite_or_none(float("inf")) is None
    assert objectives.finite_or_none(0.25) == 0.25


def test_load_registered_refuses_a_path_outside_the_model_directory(
    trained: TrainedModel, tmp_path: Path
) -> None:
    version, _ = model.save(trained.text, tmp_path / "elsewhere")
    with pytest.raises(model.ModelError, match="outside the model directory"):
        model.load_registered(tmp_path, tmp_path / "models", f"elsewhere/{version}.txt",
                              version, Calibration(threshold=0.3), FLIGHTS)


def test_load_registered_gives_a_model_ready_to_score(trained: TrainedModel,
                                                      tmp_path: Path) -> None:
    version, path = model.save(trained.text, tmp_path / "models" / "flights")
    loaded = model.load_registered(tmp_path, tmp_path / "models",
                                   str(path.relative_to(tmp_path)), version,
                                   Calibration(threshold=0.3), FLIGHTS)
    assert (loaded.version, loaded.threshold) == (version, 0.3)
    assert loaded.categorical_levels == trained.levels


def test_evaluate_on_scores_only_known_outcomes(trained: TrainedModel,
                                                feature_rows: pl.DataFrame) -> None:
    evaluation = model.evaluate_on(trained.booster, feature_rows, FLIGHTS, trained.levels)
    assert evaluation.rows == model.labelled(feature_rows, FLIGHTS).height
    assert evaluation.rows < feature_rows.height  # cancelled flights are left out
    assert 0.5 < evaluation.metrics["auc"] <= 1.0
    assert 0.0 < evaluation.calibration.threshold < 1.0
    assert 0.0 < evaluation.metrics["predicted_positive_rate"] < 1.0
    unknown = feature_rows.with_columns(pl.lit(None, dtype=pl.Boolean).alias("arrived_late"))
    with pytest.raises(model.ModelError, match="no rows with a known outcome"):
        model.evaluate_on(trained.booster, unknown, FLIGHTS, trained.levels)
