"""models.registry: one row per model version and exactly one champion per use case."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from batch_platform.platform.models import registry
from batch_platform.platform.storage.warehouse import MissingDataError

V1 = "0123456789abcdef"
V2 = "fedcba9876543210"
V3 = "00000000000000aa"


def _record(version: str, use_case: str = "flights", auc: float = 0.7) -> registry.ModelRecord:
    return registry.ModelRecord(
        model_version=version, use_case=use_case, objective="binary", status="candidate",
        source="trained",
        trained_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        train_start=dt.date(2013, 1, 1), train_end=dt.date(2013, 8, 31),
        valid_start=dt.date(2013, 9, 1), valid_end=dt.date(2013, 9, 30),
        train_rows=1000, valid_rows=100, auc=auc, log_loss=0.5, brier=0.2, positive_rate=0.2,
        predicted_positive_rate=0.25, mae=None, rmse=None, bias=None, threshold=0.3,
        band_low=None, band_high=None, feature_list=["carrier", "origin"],
        num_trees=20, model_path=f"models/{use_case}/{version}.txt",
        code_version="0.1.0+test", run_id="run-1",
    )


def _statuses(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return sorted(con.execute(
        "SELECT use_case, model_version, status FROM models.registry").fetchall())


def test_registered_model_becomes_champion_whatever_its_status(
    con: duckdb.DuckDBPyConnection
) -> None:
    registry.register_champion(con, _record(V1))
    assert _statuses(con) == [("flights", V1, "champion")]
    row = registry.resolve(con, "flights", None)
    assert row["model_version"] == V1
    assert row["threshold"] == 0.3
    assert row["feature_list"] == ["carrier", "origin"]
    assert row["train_start"] == dt.date(2013, 1, 1)
    assert row["model_path"] == f"models/flights/{V1}.txt"


def test_a_new_champion_retires_the_old_one(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1))
    registry.register_champion(con, _record(V2))
    assert _statuses(con) == [("flights", V1, "retired"), ("flights", V2, "champion")]
    assert registry.resolve(con, "flights", None)["model_version"] == V2
    registry.register_champion(con, _record(V3))
    assert _statuses(con) == [("flights", V3, "champion"), ("flights", V1, "retired"),
                              ("flights", V2, "retired")]


def test_registering_the_same_version_again_keeps_one_row(con: duckdb.DuckDBPyConnection
                                                          ) -> None:
    registry.register_champion(con, _record(V1, auc=0.7))
    registry.register_champion(con, _record(V1, auc=0.75))
    assert _statuses(con) == [("flights", V1, "champion")]
    assert registry.resolve(con, "flights", None)["auc"] == 0.75  # the row was replaced


def test_an_old_version_can_be_made_champion_again(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1))
    registry.register_champion(con, _record(V2))
    registry.register_champion(con, _record(V1))
    assert _statuses(con) == [("flights", V1, "champion"), ("flights", V2, "retired")]


def test_use_cases_have_their_own_champion(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1, use_case="flights"))
    registry.register_champion(con, _record(V2, use_case="trains"))
    assert _statuses(con) == [("flights", V1, "champion"), ("trains", V2, "champion")]
    assert registry.resolve(con, "trains", None)["model_version"] == V2


def test_resolve_a_pinned_version(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1))
    registry.register_champion(con, _record(V2))
    pinned = registry.resolve(con, "flights", V1)
    assert (pinned["model_version"], pinned["status"]) == (V1, "retired")


def test_resolve_an_unknown_pinned_version(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1))
    with pytest.raises(MissingDataError) as raised:
        registry.resolve(con, "flights", V2)
    assert str(raised.value) == (f"pinned model version {V2} is not in models.registry "
                                 "for use case flights")
    # A version of another use case does not count either.
    with pytest.raises(MissingDataError, match=f"pinned model version {V1} is not in"):
        registry.resolve(con, "trains", V1)


def test_resolve_without_a_registry(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(MissingDataError) as raised:
        registry.resolve(con, "flights", None)
    assert "models.registry is empty: train a model first" in str(raised.value)
    with pytest.raises(MissingDataError, match=r"models\.registry is empty"):
        registry.resolve(con, "flights", V1)


def test_resolve_without_a_champion_for_the_use_case(con: duckdb.DuckDBPyConnection) -> None:
    registry.register_champion(con, _record(V1, use_case="trains"))
    with pytest.raises(MissingDataError, match="no champion model for use case flights"):
        registry.resolve(con, "flights", None)

