"""The promotion gate on real flights outcomes: January trains the models, February judges them.

Two months of real landing files are landed, validated and turned into features by the use
case's own functions; real LightGBM models are trained on January and score every February
day; each day's outcomes are the flights' own arrivals. A proper model against a much weaker
one must be allowed; the same model, or one that differs only by its random seed, refused.
The temperature use case's hourly observations judge a regression the same way, on MAE.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from batch_platform import catalog
from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.models import booster as model
from batch_platform.platform.models import evidence, gate, registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.models.training import build_model
from batch_platform.platform.storage.lake import Lake
from batch_platform.platform.storage.warehouse import MissingDataError, replace_partitions
from batch_platform.use_cases.flights import features
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform.use_cases.temperature import landing as temperature_landing
from batch_platform_tests.flights import FLIGHTS, FLIGHTS_SOURCE, PLANES, USE_CASE, WEATHER
from batch_platform_tests.platform.support import LINEAGE, validate_file
from batch_platform_tests.use_cases.test_temperature_features import build as build_temperature
from batch_platform_tests.use_cases.test_temperature_features import (
    read_raw as read_temperature,
)

TRAIN = (dt.date(2013, 1, 1), dt.date(2013, 1, 31))
JUDGED = (dt.date(2013, 2, 1), dt.date(2013, 2, 28))
FEBRUARY_DAYS = 28
LAST_WEEK = (dt.date(2013, 1, 25), dt.date(2013, 1, 31))
PROPER_ROUNDS = 100
# The weak champion: the carrier and the airport only, five rounds.
WEAK_FEATURES = ("carrier", "origin")
WEAK_ROUNDS = 5
# Better than the weak one, but not clearly worse than the proper one on one month of outcomes.
ROUTE_AND_HOUR = ("carrier", "origin", "dest", "sched_dep_minute")
ROUTE_AND_HOUR_ROUNDS = 20
# The proper model: the champion's declared features (the table holds a challenger's too).
CHAMPION_FEATURES = USE_CASE.training().spec
BINARY = objective("binary")
LABEL = FLIGHTS.label_column


def days_of(window: tuple[dt.date, dt.date]) -> list[dt.date]:
    return [window[0] + dt.timedelta(days=n) for n in range((window[1] - window[0]).days + 1)]


@dataclass(frozen=True)
class Scored:
    version: str
    predictions: pl.DataFrame  # partition_date, flight_id, score, model_version
    text: str  # the model file


@dataclass(frozen=True)
class February:
    outcomes: pl.DataFrame  # partition_date, flight_id, arrived_late
    proper: Scored
    weak: Scored
    reseeded: Scored  # the proper model's recipe with another random seed
    route_and_hour: Scored
    few_rounds: Scored  # the champion's features, five rounds: one the registry accepts
    last_week_of_january: pl.DataFrame  # features, to validate a registered model on


def good_rows(folder: Path, schema, days: list[dt.date]) -> pl.DataFrame:
    """The rows of each day's file that pass validation (the rest would be quarantined)."""
    frames = []
    for day in days:
        validated = validate_file(landing.landing_file(folder, schema.name, day), schema, day)
        frames.append(ingest.with_lineage(validated.good, validated, LINEAGE))
    return pl.concat(frames)


def train_and_score(train: pl.DataFrame, judged: pl.DataFrame, spec: FeatureSpec, rounds: int,
                    params: dict | None = None) -> Scored:
    booster = model.train(train, spec, rounds=rounds, params=params, num_threads=2)
    text = model.model_text(booster)
    reloaded = lgb.Booster(model_str=text)
    levels = model.levels_from_model(reloaded, spec, "test model")
    matrix, _ = model.feature_matrix(judged, spec, levels)
    version = model.version_of(text)
    predictions = judged.select("partition_date", spec.id_column).with_columns(
        pl.Series("score", reloaded.predict(matrix, num_threads=2)),
        pl.lit(version).alias("model_version"))
    return Scored(version, predictions, text)


@pytest.fixture(scope="module")
def february(tmp_path_factory: pytest.TempPathFactory) -> February:
    folder = tmp_path_factory.mktemp("gate") / "landing"
    days = days_of((TRAIN[0], JUDGED[1]))
    flights_landing.land(folder, days)
    planes = validate_file(landing.reference_file(folder, "planes"), PLANES, None).good
    rows = features.build_flight_features(good_rows(folder, FLIGHTS_SOURCE, days),
                                          good_rows(folder, WEATHER, days), planes,
                                          TRAIN[0], JUDGED[1])
    train = rows.filter(pl.col("partition_date") <= TRAIN[1])
    judged = rows.filter(pl.col("partition_date") >= JUDGED[0])
    return February(
        outcomes=judged.select("partition_date", FLIGHTS.id_column, LABEL),
        proper=train_and_score(train, judged, CHAMPION_FEATURES, PROPER_ROUNDS),
        weak=train_and_score(train, judged, with_features(WEAK_FEATURES), WEAK_ROUNDS),
        reseeded=train_and_score(train, judged, CHAMPION_FEATURES, PROPER_ROUNDS, {"seed": 14}),
        route_and_hour=train_and_score(train, judged, with_features(ROUTE_AND_HOUR),
                                       ROUTE_AND_HOUR_ROUNDS),
        few_rounds=train_and_score(train, judged, CHAMPION_FEATURES, WEAK_ROUNDS),
        last_week_of_january=train.filter(pl.col("partition_date") >= LAST_WEEK[0]))


def with_features(columns: tuple[str, ...]) -> FeatureSpec:
    """The flights spec cut down to ``columns``: a model that knows less."""
    return dataclasses.replace(FLIGHTS, feature_columns=columns, categorical_columns=tuple(
        c for c in FLIGHTS.categorical_columns if c in columns))


def daily(february: February, champion: Scored, challenger: Scored) -> pl.DataFrame:
    paired = gate.paired_outcomes(
        champion.predictions, challenger.predictions, february.outcomes,
        id_column=FLIGHTS.id_column, output="score", outcome=LABEL,
        champion_version=champion.version, challenger_version=challenger.version)
    return gate.daily_metrics(paired, BINARY, LABEL)


def judge(february: February, champion: Scored, challenger: Scored,
          thresholds: gate.GateThresholds | None = None) -> gate.Verdict:
    return gate.judge(daily(february, champion, challenger), BINARY, champion.version,
                      challenger.version, thresholds or gate.GateThresholds())


# --- independent oracles, for the figures ------------------------------------------------------

def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC by counting positive/negative pairs (ties half): the definition itself."""
    positives, negatives = scores[labels], scores[~labels]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((wins + ties / 2) / (len(positives) * len(negatives)))


def per_day(february: February, scored: Scored) -> dict[dt.date, tuple[int, float, float]]:
    """Per day: labelled rows, AUC and Brier score of ``scored``, computed directly."""
    joined = scored.predictions.join(february.outcomes, on=["partition_date", "flight_id"])
    result = {}
    for (day,), group in joined.filter(pl.col(LABEL).is_not_null()).group_by("partition_date"):
        labels = group[LABEL].to_numpy().astype(bool)
        scores = group["score"].to_numpy()
        result[day] = (len(labels), pairwise_auc(labels, scores),
                       float(np.mean((scores - labels) ** 2)))
    return result


# --- a clearly better challenger is allowed -----------------------------------------------------

def test_the_proper_model_beats_the_weak_champion_beyond_noise(february: February) -> None:
    verdict = judge(february, february.weak, february.proper)
    champion, challenger = per_day(february, february.weak), per_day(february, february.proper)
    days = sorted(challenger)
    improvements = np.array([challenger[d][1] - champion[d][1] for d in days])
    labelled = february.outcomes.filter(pl.col(LABEL).is_not_null()).height

    assert verdict.allowed
    assert (verdict.champion, verdict.challenger) == (february.weak.version,
                                                      february.proper.version)
    assert verdict.primary_metric == "auc"
    assert verdict.days == len(days) == FEBRUARY_DAYS
    assert (verdict.first_day, verdict.last_day) == JUDGED
    assert verdict.rows == labelled == sum(challenger[d][0] for d in days)
    assert verdict.days_won == int((improvements > 0).sum())
    assert verdict.mean_improvement == pytest.approx(improvements.mean(), abs=1e-12)
    # The documented statistic: 2,000 resamples of the days, seed 13, the 5% quantile.
    draws = np.random.default_rng(13).integers(0, len(days), size=(2000, len(days)))
    means = improvements[draws].mean(axis=1)
    assert verdict.lower_bound == pytest.approx(np.quantile(means, 0.05), abs=1e-12)
    assert verdict.upper_bound == pytest.approx(np.quantile(means, 0.95), abs=1e-12)
    assert verdict.share_not_better == float(np.mean(means <= 0.0))
    assert 0 < verdict.lower_bound < verdict.mean_improvement < verdict.upper_bound
    # Brier over all of February's rows, exactly, and the daily AUCs weighted by rows.
    for role, oracle in (("champion", champion), ("challenger", challenger)):
        rows = np.array([oracle[d][0] for d in days])
        assert verdict.cumulated["brier"][role] == pytest.approx(
            sum(oracle[d][0] * oracle[d][2] for d in days) / rows.sum(), rel=1e-9)
        assert verdict.cumulated["auc"][role] == pytest.approx(
            sum(oracle[d][0] * oracle[d][1] for d in days) / rows.sum(), rel=1e-9)
    assert verdict.cumulated["brier"]["challenger"] < verdict.cumulated["brier"]["champion"]
    assert verdict.summary.startswith(
        f"allowed: challenger {february.proper.version} vs champion {february.weak.version}: "
        f"better on {verdict.days_won} of 28 days (2013-02-01..2013-02-28, {labelled:,} rows), "
        f"mean AUC improvement {verdict.mean_improvement:+.4f}, 95% lower bound "
        f"{verdict.lower_bound:+.4f} > margin +0.0000")


def test_the_verdict_is_reproducible_and_its_evidence_is_json(february: February) -> None:
    first, again = (judge(february, february.weak, february.proper) for _ in range(2))
    assert first == again
    other_seed = judge(february, february.weak, february.proper,
                       gate.GateThresholds(seed=99))
    assert other_seed.mean_improvement == first.mean_improvement
    assert other_seed.lower_bound != first.lower_bound
    evidence = json.loads(json.dumps(first.evidence()))
    assert evidence["days"] == FEBRUARY_DAYS
    assert evidence["lower_bound"] == first.lower_bound
    assert evidence["first_day"] == "2013-02-01"
    assert evidence["thresholds"]["resamples"] == 2000


def test_too_few_days_or_too_high_a_margin_refuses_the_same_figures(february: February
                                                                   ) -> None:
    allowed = judge(february, february.weak, february.proper)
    short = judge(february, february.weak, february.proper, gate.GateThresholds(min_days=29))
    assert not short.allowed
    assert (short.days, short.mean_improvement, short.lower_bound) == (
        allowed.days, allowed.mean_improvement, allowed.lower_bound)
    assert short.summary.endswith("need >= 29 days of realised outcomes, have 28")
    assert short.summary.startswith("refused: ")
    margin = round(allowed.lower_bound + 0.001, 4)
    demanding = judge(february, february.weak, february.proper,
                      gate.GateThresholds(min_margin=margin))
    assert not demanding.allowed
    assert f"lower bound {allowed.lower_bound:+.4f} <= margin {margin:+.4f}" in demanding.summary
    assert demanding.share_not_better > allowed.share_not_better


def test_only_the_known_days_count(february: February) -> None:
    """A window of ten days is judged on those ten, and refused for want of days."""
    ten = february.outcomes.filter(pl.col("partition_date") <= dt.date(2013, 2, 10))
    cut = dataclasses.replace(february, outcomes=ten)
    verdict = judge(cut, february.weak, february.proper)
    assert (verdict.days, verdict.last_day) == (10, dt.date(2013, 2, 10))
    assert not verdict.allowed
    assert "have 10" in verdict.summary


# --- a challenger no better is refused ----------------------------------------------------------

def test_the_same_model_is_refused(february: February) -> None:
    verdict = judge(february, february.proper, dataclasses.replace(february.proper))
    assert not verdict.allowed
    assert (verdict.days, verdict.days_won) == (FEBRUARY_DAYS, 0)
    assert (verdict.mean_improvement, verdict.lower_bound, verdict.upper_bound) == (0, 0, 0)
    assert verdict.share_not_better == 1.0
    assert verdict.cumulated["auc"]["champion"] == verdict.cumulated["auc"]["challenger"]
    assert "better on 0 of 28 days" in verdict.summary
    assert "lower bound +0.0000 <= margin +0.0000" in verdict.summary


def test_a_model_that_differs_only_by_its_seed_is_refused(february: February) -> None:
    verdict = judge(february, february.proper, february.reseeded)
    champion = per_day(february, february.proper)
    challenger = per_day(february, february.reseeded)
    improvements = np.array([challenger[d][1] - champion[d][1] for d in sorted(champion)])
    assert february.reseeded.version != february.proper.version
    assert not verdict.allowed
    assert verdict.days == FEBRUARY_DAYS
    assert verdict.mean_improvement == pytest.approx(improvements.mean(), abs=1e-12)
    # Noise: small either way, and the interval straddles zero.
    assert abs(verdict.mean_improvement) < 0.005
    assert verdict.lower_bound < 0 < verdict.upper_bound
    assert 0.05 < verdict.share_not_better < 1.0
    assert verdict.summary.startswith(
        f"refused: challenger {february.reseeded.version} vs champion "
        f"{february.proper.version}: better on {verdict.days_won} of 28 days")


def test_an_improvement_that_noise_could_explain_is_refused(february: February) -> None:
    """The full features beat the route and the hour on most days, but on one month of
    outcomes the bootstrap cannot rule out that they do not."""
    verdict = judge(february, february.route_and_hour, february.proper)
    assert not verdict.allowed
    assert verdict.mean_improvement > 0
    assert verdict.days_won > FEBRUARY_DAYS / 2
    assert verdict.lower_bound < 0 < verdict.upper_bound
    assert 0.05 < verdict.share_not_better < 0.5
    assert f"lower bound {verdict.lower_bound:+.4f} <= margin +0.0000" in verdict.summary


def test_the_weak_model_cannot_replace_the_proper_one(february: February) -> None:
    verdict = judge(february, february.proper, february.weak)
    assert not verdict.allowed
    assert verdict.upper_bound < 0  # significantly worse
    assert verdict.share_not_better == 1.0


# --- what the gate refuses to judge ----------------------------------------------------------

def test_models_that_scored_different_rows_are_refused_naming_the_day(february: February
                                                                      ) -> None:
    day = dt.date(2013, 2, 5)
    gone = february.proper.predictions.filter(pl.col("partition_date") == day)["flight_id"][:3]
    dropped = february.proper.predictions.filter(~pl.col("flight_id").is_in(gone.to_list()))
    with pytest.raises(gate.GateInputError) as raised:
        gate.paired_outcomes(february.weak.predictions, dropped, february.outcomes,
                             id_column="flight_id", output="score", outcome=LABEL,
                             champion_version=february.weak.version,
                             challenger_version=february.proper.version)
    assert str(raised.value) == (
        f"champion {february.weak.version} and challenger {february.proper.version} did not "
        "score the same rows on 2013-02-05: 3 row(s) by one only (or a null score); the gate "
        "compares models on the same rows: rescore that day with both")


def test_rows_of_other_versions_are_not_evidence(february: February) -> None:
    """Days the champion's table holds by another version drop out of the comparison."""
    relabelled = february.weak.predictions.with_columns(
        pl.when(pl.col("partition_date") <= dt.date(2013, 2, 14)).then(pl.lit("older"))
        .otherwise(pl.col("model_version")).alias("model_version"))
    paired = gate.paired_outcomes(relabelled, february.proper.predictions, february.outcomes,
                                  id_column="flight_id", output="score", outcome=LABEL,
                                  champion_version=february.weak.version,
                                  challenger_version=february.proper.version)
    assert paired["partition_date"].min() == dt.date(2013, 2, 15)
    assert paired[LABEL].null_count() == 0


def test_bad_per_day_metrics_are_refused(february: February) -> None:
    metrics = daily(february, february.weak, february.proper)
    with pytest.raises(gate.GateInputError, match=r"per-day metrics lack column\(s\) "
                                                  r"\['challenger_brier'\]"):
        gate.judge(metrics.drop("challenger_brier"), BINARY, "a", "b", gate.GateThresholds())
    with pytest.raises(gate.GateInputError, match="list 2013-02-01 more than once"):
        gate.judge(pl.concat([metrics, metrics.head(1)]), BINARY, "a", "b",
                   gate.GateThresholds())
    with pytest.raises(ValueError, match="confidence must be in"):
        gate.GateThresholds(confidence=1.0)


def test_no_day_known_is_refused_in_words() -> None:
    empty = pl.DataFrame(schema={"partition_date": pl.Date, "rows": pl.Int64,
                                 **{f"{r}_{m}": pl.Float64 for r in gate.ROLES
                                    for m in ("auc", "brier")}})
    verdict = gate.judge(empty, BINARY, "champ", "chall", gate.GateThresholds())
    assert not verdict.allowed
    assert verdict.summary == ("refused: challenger chall vs champion champ: no day with "
                               "outcomes known for both; need >= 14 days of realised outcomes")


# --- the gate decides a promotion -------------------------------------------------------------

def register(february: February, scored: Scored, data_dir: Path) -> registry.ModelRecord:
    """Register ``scored``'s file the way the model asset does for a brought file."""
    brought = data_dir.parent / f"{scored.version}.txt"
    brought.write_text(scored.text)
    return build_model(USE_CASE, None, february.last_week_of_january, None, LAST_WEEK,
                       data_dir / "models", data_dir, brought_file=brought, num_threads=2,
                       run_id="test", code_version="test").record


def test_the_gate_lets_a_better_challenger_through_and_the_promotion_keeps_its_figures(
        february: February, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    lake = Lake(f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}", tmp_path / "lake" / "files")
    champion = register(february, february.few_rounds, data_dir)
    challenger = register(february, february.proper, data_dir)
    lake.commit(lambda con: registry.register_champion(con, champion), "champion", {})
    lake.commit(lambda con: registry.register_challenger(con, challenger), "challenger", {})

    verdict = judge(february, february.few_rounds, february.proper)
    assert verdict.allowed
    assert verdict.days == FEBRUARY_DAYS and verdict.lower_bound > 0
    with lake.read_only() as con:
        read = registry.champion_version(con, "flights")
    assert read == february.few_rounds.version
    lake.commit(lambda con: registry.promote(
        con, "flights", challenger.model_version, "won February", "alice", verdict,
        expected_champion=read, data_dir=data_dir, models_dir=data_dir / "models"),
        "promote", {})

    with lake.read_only() as con:
        assert registry.resolve(con, "flights", None)["model_version"] == february.proper.version
        row = registry.history(con, "flights").row(-1, named=True)
    assert (row["action"], row["model_version"], row["previous_champion"], row["forced"]) == (
        "promote", february.proper.version, february.few_rounds.version, False)
    evidence = json.loads(row["evidence"])
    assert evidence == json.loads(json.dumps(verdict.evidence()))
    assert evidence["mean_improvement"] == verdict.mean_improvement
    assert evidence["summary"].startswith("allowed: ")


# --- regression: the temperature use case, judged on MAE --------------------------------------

TEMPERATURE = catalog.use_case("temperature").spec
NAIVE_FEATURES = ("station", "hour_of_day")


@pytest.fixture(scope="module")
def temperature_february(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, ...]:
    """January trains, February is judged: a proper model's and a naive one's predictions, and
    February's observed temperatures."""
    folder = tmp_path_factory.mktemp("gate_temperature")
    days = days_of((TRAIN[0], JUDGED[1]))
    temperature_landing.land(folder, days)
    rows = build_temperature(read_temperature(folder, days), TRAIN[0], JUDGED[1])
    train = rows.filter(pl.col("partition_date") <= TRAIN[1])
    judged = rows.filter(pl.col("partition_date") >= JUDGED[0])
    naive = dataclasses.replace(TEMPERATURE, feature_columns=NAIVE_FEATURES,
                                categorical_columns=("station",))
    proper = train_and_score(train, judged, TEMPERATURE, 200)
    weak = train_and_score(train, judged, naive, 20)
    outcomes = judged.select("partition_date", TEMPERATURE.id_column, TEMPERATURE.label_column)
    return (*(s.predictions.rename({"score": "prediction"}) for s in (weak, proper)), outcomes)


def test_a_regression_challenger_is_judged_on_mae(temperature_february: tuple[pl.DataFrame, ...]
                                                  ) -> None:
    weak, proper, outcomes = temperature_february
    label, kind = TEMPERATURE.label_column, objective("regression")
    versions = (weak["model_version"][0], proper["model_version"][0])

    def verdict(champion: pl.DataFrame, challenger: pl.DataFrame) -> gate.Verdict:
        paired = gate.paired_outcomes(
            champion, challenger, outcomes, id_column=TEMPERATURE.id_column, output="prediction",
            outcome=label, champion_version=champion["model_version"][0],
            challenger_version=challenger["model_version"][0])
        return gate.judge(gate.daily_metrics(paired, kind, label), kind,
                          champion["model_version"][0], challenger["model_version"][0],
                          gate.GateThresholds())

    better = verdict(weak, proper)
    errors = {}
    for name, frame in (("champion", weak), ("challenger", proper)):
        joined = frame.join(outcomes, on=["partition_date", TEMPERATURE.id_column]).filter(
            pl.col(label).is_not_null())
        errors[name] = (joined["prediction"] - joined[label]).to_numpy()
    assert better.allowed and better.primary_metric == "mae"
    assert (better.champion, better.challenger) == versions
    assert better.days == FEBRUARY_DAYS and better.rows == len(errors["champion"])
    # MAE and RMSE over all of February's rows, exactly.
    for name, error in errors.items():
        assert better.cumulated["mae"][name] == pytest.approx(np.abs(error).mean(), rel=1e-9)
        assert better.cumulated["rmse"][name] == pytest.approx(
            np.sqrt((error ** 2).mean()), rel=1e-9)
    # Lower MAE is better: the improvement is the champion's MAE minus the challenger's.
    assert better.cumulated["mae"]["challenger"] < better.cumulated["mae"]["champion"]
    assert 0 < better.lower_bound < better.mean_improvement
    assert "mean MAE improvement +" in better.summary

    worse = verdict(proper, weak)
    assert not worse.allowed
    assert worse.mean_improvement == pytest.approx(-better.mean_improvement, abs=1e-12)
    assert worse.upper_bound < 0


# --- the evidence read from the lake ------------------------------------------------------------

def test_the_evidence_read_from_the_lake_is_the_days_after_both_validation_windows(
        february: February, tmp_path: Path) -> None:
    lake = Lake(f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}", tmp_path / "lake" / "files")
    tables = {"predictions.flights": february.weak.predictions,
              "predictions.flights_shadow": february.proper.predictions,
              "features.flights": february.outcomes}
    lake.commit(lambda con: replace_partitions(con, list(tables.items()), days_of(JUDGED)),
                "February", {})
    # The champion was validated until 2013-02-10, the challenger earlier: judged from the 11th.
    champion = {"model_version": february.weak.version, "valid_end": dt.date(2013, 2, 10)}
    challenger = {"model_version": february.proper.version, "valid_end": dt.date(2013, 1, 31)}
    with lake.read_only() as con:
        read = evidence.daily_comparison(
            con, FLIGHTS, predictions_table="predictions.flights",
            shadow_table="predictions.flights_shadow", features_table="features.flights",
            champion=champion, challenger=challenger)
        until = evidence.daily_comparison(
            con, FLIGHTS, predictions_table="predictions.flights",
            shadow_table="predictions.flights_shadow", features_table="features.flights",
            champion=champion, challenger=challenger, end=dt.date(2013, 2, 20))
    expected = daily(february, february.weak, february.proper).filter(
        pl.col("partition_date") >= dt.date(2013, 2, 11))
    assert read.height == 18
    assert read.equals(expected)
    assert until["partition_date"].max() == dt.date(2013, 2, 20) and until.height == 10
    # A table the gate needs that does not exist yet: said in one line.
    with lake.read_only() as con, pytest.raises(MissingDataError, match=(
            r"^predictions\.flights_challenger does not exist yet: the gate needs")):
        evidence.daily_comparison(
            con, FLIGHTS, predictions_table="predictions.flights",
            shadow_table="predictions.flights_challenger", features_table="features.flights",
            champion=champion, challenger=challenger)
