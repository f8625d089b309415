"""The model asset: bring your own model, pin a version, refuse a model that does not fit.

Every test registers or scores on its own copy of the platform (``own_platform``)."""

import dataclasses
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from batch_platform.platform.models.booster import train
from batch_platform_tests.conftest import TRAIN, WEEK, Platform, failure_messages, model_config
from batch_platform_tests.flights import FLIGHTS


def champion(platform: Platform) -> dict:
    return platform.query("SELECT * FROM models.registry WHERE status = 'champion'").row(
        0, named=True)


def registry_rows(platform: Platform) -> list[tuple]:
    return platform.query("SELECT model_version, status FROM models.registry ORDER BY 1").rows()


def test_a_user_model_file_is_registered_and_scores(own_platform: Platform,
                                                    tmp_path: Path) -> None:
    features = own_platform.query("SELECT * FROM features.flights "
                                  "WHERE partition_date BETWEEN ? AND ?", list(TRAIN))
    booster = train(features, FLIGHTS, rounds=25)
    user_file = tmp_path / "my_model.txt"
    booster.save_model(str(user_file))

    own_platform.run("flights_train", run_config=model_config(model_file=str(user_file)))
    record = champion(own_platform)
    assert record["source"] == "user_file"
    assert record["num_trees"] == 25
    assert record["train_start"] is None
    stored = own_platform.settings.data_dir / record["model_path"]
    assert stored.parent == own_platform.settings.models_dir / "flights"
    assert stored.read_text() == user_file.read_text()

    day = WEEK[0]
    own_platform.run("flights_predict", day)
    versions = own_platform.query("SELECT DISTINCT model_version FROM predictions.flights "
                                  "WHERE partition_date = ?", [day])
    assert versions["model_version"].to_list() == [record["model_version"]]


def test_a_pinned_version_overrides_the_champion(own_platform: Platform) -> None:
    trained = champion(own_platform)["model_version"]
    own_platform.run("flights_train", run_config=model_config(rounds=20))
    assert champion(own_platform)["model_version"] != trained
    pinned = dataclasses.replace(own_platform.settings, model_version=trained)
    day = WEEK[1]
    own_platform.run("flights_predict", day, settings=pinned)
    versions = own_platform.query("SELECT DISTINCT model_version FROM predictions.flights "
                                  "WHERE partition_date = ?", [day])
    assert versions["model_version"].to_list() == [trained]


@pytest.mark.parametrize(
    ("write_model", "message"),
    [
        pytest.param(lambda path: path.write_bytes(b"\x80\x04\x95\x10\x00pickled booster"),
                     "is not a LightGBM text model", id="pickle"),
        pytest.param(lambda path: path.write_text("tree\nversion=v4\nnum_class=1\n"),
                     "not a complete LightGBM text model", id="truncated"),
        pytest.param(lambda path: _model_with_other_features(path),
                     "missing features", id="other features"),
        pytest.param(lambda path: _model_with_other_features(path, objective="regression"),
                     "the flights use case is binary: train with objective 'binary'",
                     id="regression model"),
    ],
)
def test_a_model_file_that_does_not_fit_is_refused(own_platform: Platform, tmp_path: Path,
                                                   write_model, message: str) -> None:
    before = registry_rows(own_platform)
    user_file = tmp_path / "bad_model.txt"
    write_model(user_file)
    result = own_platform.run("flights_train", run_config=model_config(model_file=str(user_file)),
                              raise_on_error=False)
    assert not result.success
    assert message in failure_messages(result)
    assert str(user_file) in failure_messages(result)
    assert registry_rows(own_platform) == before


def test_a_corrupted_registered_model_is_not_used(own_platform: Platform) -> None:
    record = champion(own_platform)
    path = own_platform.settings.data_dir / record["model_path"]
    path.write_text(path.read_text().replace("learning_rate", "learning_rates", 1))
    result = own_platform.run("flights_predict", WEEK[0], raise_on_error=False)
    assert not result.success
    assert f"does not match its registered version {record['model_version']}" in (
        failure_messages(result))


def _model_with_other_features(path: Path, objective: str = "binary") -> None:
    rows = np.random.default_rng(0).random((200, 2))
    booster = lgb.train({"objective": objective, "verbose": -1, "min_data_in_leaf": 5},
                        lgb.Dataset(rows, label=(rows[:, 0] > 0.5).astype(float),
                                    feature_name=["a", "b"]), num_boost_round=3)
    booster.save_model(str(path))
