"""Scoring: one prediction per feature row, same order, chunk-size independent, explained."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.models import booster as model
from batch_platform.platform.models import objectives
from batch_platform.platform.scoring import score as scoring
from batch_platform_tests.flights import FLIGHTS
from batch_platform_tests.platform.support import DAY_3

SCORED_AT = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def day_rows(feature_rows: pl.DataFrame) -> pl.DataFrame:
    """One day of features, shuffled so "same order" cannot pass by accident of sorting."""
    return feature_rows.filter(pl.col("partition_date") == DAY_3).sample(fraction=1.0, seed=7,
                                                                          shuffle=True)


@pytest.fixture(scope="module")
def lineage(loaded_model: model.LoadedModel) -> scoring.ScoringLineage:
    return scoring.ScoringLineage(loaded_model.version, "0.1.0+test", "run-42", SCORED_AT)


@pytest.fixture(scope="module")
def scored(day_rows: pl.DataFrame, loaded_model: model.LoadedModel,
           lineage: scoring.ScoringLineage) -> tuple[pl.DataFrame, scoring.ScoringStats]:
    return scoring.score(day_rows, loaded_model, FLIGHTS, lineage, num_threads=2)


def _contributions(loaded_model: model.LoadedModel, frame: pl.DataFrame) -> np.ndarray:
    matrix, _ = model.feature_matrix(frame, FLIGHTS, loaded_model.categorical_levels)
    return loaded_model.booster.predict(matrix, pred_contrib=True)[:, :-1]


def test_one_prediction_per_row_in_the_same_order(
    scored: tuple[pl.DataFrame, scoring.ScoringStats], day_rows: pl.DataFrame
) -> None:
    predictions, stats = scored
    assert predictions.height == day_rows.height
    assert predictions.get_column("flight_id").equals(day_rows.get_column("flight_id"))
    assert (predictions.get_column("partition_date") == DAY_3).all()
    assert stats.rows == day_rows.height
    assert stats.explained_rows == day_rows.height  # explain="all" by default
    assert stats.unknown_categories == {"carrier": 0, "origin": 0, "dest": 0}


def test_scores_are_the_booster_predictions(
    scored: tuple[pl.DataFrame, scoring.ScoringStats], day_rows: pl.DataFrame,
    loaded_model: model.LoadedModel
) -> None:
    predictions, _ = scored
    matrix, _ = model.feature_matrix(day_rows, FLIGHTS, loaded_model.categorical_levels)
    expected = loaded_model.booster.predict(matrix)
    np.testing.assert_array_equal(predictions.get_column("score").to_numpy(), expected)
    assert predictions.get_column("score").n_unique() > 10


def test_chunked_scoring_gives_the_same_predictions(
    day_rows: pl.DataFrame, loaded_model: model.LoadedModel, lineage: scoring.ScoringLineage
) -> None:
    rows = day_rows.head(151)  # 21 full chunks of 7 and a short one
    whole, whole_stats = scoring.score(rows, loaded_model, FLIGHTS, lineage, num_threads=2)
    chunked, chunked_stats = scoring.score(rows, loaded_model, FLIGHTS, lineage,
                                           chunk_rows=7, num_threads=2)
    assert_frame_equal(chunked, whole)
    assert chunked_stats == whole_stats


def test_label_and_risk_band_follow_the_threshold(
    scored: tuple[pl.DataFrame, scoring.ScoringStats], loaded_model: model.LoadedModel
) -> None:
    predictions, _ = scored
    threshold = loaded_model.threshold
    for score, label, band in predictions.select("score", "label", "risk_band").iter_rows():
        assert label == (score >= threshold)
        if score < threshold / 2:
            assert band == "low"
        elif score < threshold:
            assert band == "medium"
        elif score < (1 + threshold) / 2:
            assert band == "high"
        else:
            assert band == "very_high"
    # The threshold is the median score: both labels occur.
    assert predictions.get_column("label").n_unique() == 2


@pytest.mark.parametrize(
    ("score", "band"),
    [(0.1, "low"), (0.199, "low"), (0.2, "medium"), (0.3, "medium"), (0.4, "high"),
     (0.5, "high"), (0.7, "very_high"), (0.8, "very_high"), (1.0, "very_high")],
)
def test_risk_band_boundaries(score: float, band: str) -> None:
    # Threshold 0.4: low below 0.2, medium below 0.4, high below 0.7, very high above.
    frame = pl.DataFrame({"score": [score]})
    assert frame.select(objectives.risk_band(pl.col("score"), 0.4)).item() == band


def test_lineage_columns(scored: tuple[pl.DataFrame, scoring.ScoringStats],
                         loaded_model: model.LoadedModel) -> None:
    predictions, _ = scored
    assert predictions.columns == [
        "flight_id", "partition_date", "score", "label", "risk_band",
        "reason_1", "reason_1_contribution", "reason_2", "reason_2_contribution",
        "reason_3", "reason_3_contribution",
        "model_version", "scorer", "code_version", "run_id", "scored_at",
    ]
    assert predictions.get_column("model_version").unique().to_list() == [loaded_model.version]
    assert predictions.get_column("scorer").unique().to_list() == ["lightgbm"]
    assert predictions.get_column("code_version").unique().to_list() == ["0.1.0+test"]
    assert predictions.get_column("run_id").unique().to_list() == ["run-42"]
    assert predictions.schema["scored_at"] == pl.Datetime("us", "UTC")
    assert predictions.get_column("scored_at").unique().to_list() == [SCORED_AT]


def test_explain_all_names_the_features_that_pushed_up(
    scored: tuple[pl.DataFrame, scoring.ScoringStats], day_rows: pl.DataFrame,
    loaded_model: model.LoadedModel
) -> None:
    predictions, _ = scored
    contributions = _contributions(loaded_model, day_rows)
    names = list(FLIGHTS.feature_columns)
    reasons = predictions.select("reason_1", "reason_1_contribution", "reason_2").rows()
    explained = 0
    for row, (reason, contribution, second) in zip(contributions, reasons, strict=True):
        top = int(np.argmax(row))
        if row[top] > 0:
            explained += 1
            assert reason == names[top]
            assert contribution == pytest.approx(row[top])
            if second is not None:
                assert second != reason
                assert row[names.index(second)] <= row[top]
        else:
            assert reason is None
            assert np.isnan(contribution)
    assert explained > 0


def test_explain_none_leaves_reasons_empty(day_rows: pl.DataFrame,
                                           loaded_model: model.LoadedModel,
                                           lineage: scoring.ScoringLineage,
                                           scored: tuple[pl.DataFrame, scoring.ScoringStats]
                                           ) -> None:
    predictions, stats = scoring.score(day_rows, loaded_model, FLIGHTS, lineage, explain="none",
                                       num_threads=2)
    assert stats.explained_rows == 0
    for i in (1, 2, 3):
        assert predictions.get_column(f"reason_{i}").null_count() == predictions.height
    # Explaining never changes the scores.
    assert predictions.get_column("score").equals(scored[0].get_column("score"))


def test_explain_predicted_late_explains_exactly_the_late_rows(
    day_rows: pl.DataFrame, loaded_model: model.LoadedModel, lineage: scoring.ScoringLineage,
    scored: tuple[pl.DataFrame, scoring.ScoringStats]
) -> None:
    predictions, stats = scoring.score(day_rows, loaded_model, FLIGHTS, lineage,
                                       explain="predicted_positive", chunk_rows=50, num_threads=2)
    late = predictions.get_column("label")
    assert stats.explained_rows == late.sum()
    assert 0 < stats.explained_rows < predictions.height
    assert predictions.filter(~late).get_column("reason_1").null_count() == (~late).sum()
    # On the late rows the reasons are the ones a full explanation gives.
    all_reasons = scored[0].filter(late).select("flight_id", "reason_1", "reason_2", "reason_3")
    assert_frame_equal(
        predictions.filter(late).select("flight_id", "reason_1", "reason_2", "reason_3"),
        all_reasons,
    )


def test_unknown_categories_are_counted_and_still_scored(
    day_rows: pl.DataFrame, loaded_model: model.LoadedModel, lineage: scoring.ScoringLineage
) -> None:
    # One unknown destination in each of three chunks: the counts add up across chunks.
    changed = day_rows.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([0, 150, 300])).then(pl.lit("ZZZ"))
        .otherwise(pl.col("dest")).alias("dest"))
    predictions, stats = scoring.score(changed, loaded_model, FLIGHTS, lineage, chunk_rows=100,
                                       explain="none", num_threads=2)
    assert stats.unknown_categories == {"carrier": 0, "origin": 0, "dest": 3}
    assert predictions.height == day_rows.height
    assert predictions.get_column("score").is_not_null().all()


def test_scoring_no_rows_gives_an_empty_frame(day_rows: pl.DataFrame,
                                              loaded_model: model.LoadedModel,
                                              lineage: scoring.ScoringLineage,
                                              scored: tuple[pl.DataFrame, scoring.ScoringStats]
                                              ) -> None:
    predictions, stats = scoring.score(day_rows.head(0), loaded_model, FLIGHTS, lineage)
    assert predictions.height == 0
    assert predictions.schema == scored[0].schema
    assert stats.rows == 0


def test_top_reasons_of_a_hand_made_matrix() -> None:
    contributions = np.array([
        [0.5, -0.2, 0.1, 0.3],
        [-0.1, -0.2, -0.3, -0.4],
        [0.0, 0.2, 0.0, 0.0],
        [0.1, 0.1, 0.05, 0.0],
    ])
    reasons = scoring.top_reasons(contributions, ("a", "b", "c", "d"), k=3)
    assert reasons["reason_1"] == ["a", None, "b", "a"]
    assert reasons["reason_2"] == ["d", None, None, "b"]  # ties keep feature order
    assert reasons["reason_3"] == ["c", None, None, "c"]
    assert reasons["reason_1_contribution"][:1] == [0.5]
    assert np.isnan(reasons["reason_1_contribution"][1])
    assert reasons["reason_2_contribution"][0] == 0.3
    assert reasons["reason_3_contribution"][3] == 0.05
    assert np.isnan(reasons["reason_2_contribution"][2])  # zero is not a push up


def test_check_features_accepts_the_feature_table(day_rows: pl.DataFrame) -> None:
    scoring.check_features(day_rows, FLIGHTS, "features.flights 2013-01-03")
    # An all-missing numeric column is still usable.
    scoring.check_features(day_rows.with_columns(pl.lit(None).alias("wind_gust")), FLIGHTS, "x")


def test_check_features_names_a_missing_column(day_rows: pl.DataFrame) -> None:
    with pytest.raises(scoring.FeatureMismatchError) as raised:
        scoring.check_features(day_rows.drop("plane_age", "flight_id"), FLIGHTS,
                               "features.flights 2013-01-03")
    assert str(raised.value) == ("features.flights 2013-01-03: feature column(s) "
                                 "['flight_id', 'plane_age'] are missing")


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("distance", pl.lit("far"), "numeric feature 'distance' must be a number, found String"),
        ("carrier", pl.lit(1), "categorical feature 'carrier' must be text, found Int32"),
    ],
)
def test_check_features_names_a_wrong_dtype(day_rows: pl.DataFrame, column: str,
                                            value: pl.Expr, fragment: str) -> None:
    with pytest.raises(scoring.FeatureMismatchError) as raised:
        scoring.check_features(day_rows.with_columns(value.alias(column)), FLIGHTS, "here")
    assert str(raised.value) == f"here: {fragment}"


def test_explain_riskiest_explains_the_top_rows_of_each_day(
    feature_rows: pl.DataFrame, loaded_model: model.LoadedModel,
    lineage: scoring.ScoringLineage
) -> None:
    # Two days, shuffled together, scored in chunks that split both days.
    rows = feature_rows.filter(pl.col("partition_date") > feature_rows["partition_date"].min())
    rows = rows.sample(fraction=1.0, seed=3, shuffle=True)
    everything, _ = scoring.score(rows, loaded_model, FLIGHTS, lineage, chunk_rows=97,
                                  num_threads=2)
    riskiest, stats = scoring.score(rows, loaded_model, FLIGHTS, lineage, explain="riskiest",
                                    explain_max_rows=5, chunk_rows=97, num_threads=2)
    whole, whole_stats = scoring.score(rows, loaded_model, FLIGHTS, lineage, explain="riskiest",
                                       explain_max_rows=5, chunk_rows=rows.height + 1,
                                       num_threads=2)
    assert_frame_equal(riskiest, whole)
    assert stats == whole_stats
    assert stats.explained_rows == 10  # five per day
    # Equal scores go to the smaller flight id, whatever the row order or chunking.
    top = (everything.sort("partition_date", "score", "flight_id", descending=[False, True, False])
           .group_by("partition_date", maintain_order=True).head(5)
           .get_column("flight_id").sort())
    reason_columns = [c for c in everything.columns if c.startswith("reason_")]
    explained = riskiest.filter(pl.col("flight_id").is_in(top.implode()))
    assert explained.height == 10
    assert_frame_equal(
        explained.select("flight_id", *reason_columns).sort("flight_id"),
        everything.filter(pl.col("flight_id").is_in(top.implode()))
        .select("flight_id", *reason_columns).sort("flight_id"))
    assert explained.get_column("reason_1").null_count() < 10
    rest = riskiest.filter(~pl.col("flight_id").is_in(top.implode()))
    assert rest.get_column("reason_1").null_count() == rest.height
    # Scores and row order are untouched by what gets explained.
    assert riskiest.select("flight_id", "score").equals(everything.select("flight_id", "score"))
