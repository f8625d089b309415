"""Session fixtures: three real days landed, ingested, featured, and a tiny model trained once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from batch_platform.platform.ingest import landing
from batch_platform.platform.models import booster as model
from batch_platform.platform.models.objectives import Calibration
from batch_platform.use_cases.flights import features
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.flights import FLIGHTS, FLIGHTS_SOURCE, PLANES, WEATHER
from batch_platform_tests.platform.support import DAY_1, DAY_3, DAYS, raw_rows, validate_file

TINY_ROUNDS = 20


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB (a module may give ``con`` a lake of its own instead)."""
    connection = duckdb.connect()
    try:
        yield connection
    finally:
        connection.close()


@dataclass(frozen=True)
class TrainedModel:
    booster: lgb.Booster
    text: str
    version: str
    levels: dict[str, list[str]]
    train_frame: pl.DataFrame


@pytest.fixture(scope="session")
def landing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flights, weather and reference files of 2013-01-01..03. Tests must not modify them."""
    folder = tmp_path_factory.mktemp("shared") / "landing"
    flights_landing.land(folder, DAYS)
    return folder


@pytest.fixture(scope="session")
def raw_flights(landing_dir: Path) -> pl.DataFrame:
    return raw_rows(landing_dir, FLIGHTS_SOURCE, DAYS)


@pytest.fixture(scope="session")
def raw_weather(landing_dir: Path) -> pl.DataFrame:
    return raw_rows(landing_dir, WEATHER, DAYS)


@pytest.fixture(scope="session")
def planes(landing_dir: Path) -> pl.DataFrame:
    validated = validate_file(landing.reference_file(landing_dir, "planes"), PLANES, None)
    assert validated.rejected.height == 0
    return validated.good


@pytest.fixture(scope="session")
def feature_rows(raw_flights: pl.DataFrame, raw_weather: pl.DataFrame,
                 planes: pl.DataFrame) -> pl.DataFrame:
    """Features of the three days, sorted by flight id so every use sees one fixed order."""
    built = features.build_flight_features(raw_flights, raw_weather, planes, DAY_1, DAY_3)
    return built.sort("partition_date", "flight_id")


@pytest.fixture(scope="session")
def trained(feature_rows: pl.DataFrame) -> TrainedModel:
    booster = model.train(feature_rows, FLIGHTS, rounds=TINY_ROUNDS, num_threads=2)
    text = model.model_text(booster)
    levels = model.category_levels(model.labelled(feature_rows, FLIGHTS),
                                   FLIGHTS)
    return TrainedModel(booster, text, model.version_of(text), levels, feature_rows)


@pytest.fixture(scope="session")
def loaded_model(trained: TrainedModel) -> model.LoadedModel:
    """The trained model as scoring gets it: reloaded from text, threshold at the median score."""
    booster = lgb.Booster(model_str=trained.text)
    levels = model.levels_from_model(booster, FLIGHTS, "test model")
    matrix, _ = model.feature_matrix(trained.train_frame, FLIGHTS, levels)
    threshold = float(np.round(np.median(booster.predict(matrix)), 2))
    return model.LoadedModel(trained.version, booster, Calibration(threshold=threshold), levels)
