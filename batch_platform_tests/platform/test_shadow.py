"""The challenger in the shadow, on the plain functions: scoring, the writes of one commit, and
the comparison the daily report stores.

Two real flights models (trained on 2013-01-01..02 by the model stage's own function, their
files in a data directory of the module's) score the three real days of the shared fixtures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.models import gate, registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.models.training import BuiltModel, build_model
from batch_platform.platform.reports import shadow_comparison as comparisons
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring import shadow
from batch_platform.platform.scoring.partition import score_staged
from batch_platform.platform.storage import rollback
from batch_platform.platform.storage.lake import Lake
from batch_platform.platform.storage.staging import staging
from batch_platform.platform.storage.warehouse import replace_partitions
from batch_platform.settings import Settings
from batch_platform_tests.flights import FLIGHTS, USE_CASE
from batch_platform_tests.platform.support import DAY_1, DAY_2, DAY_3, DAYS

BINARY = objective("binary")
LABEL = FLIGHTS.label_column
RUN_COLUMNS = ("run_id", "scored_at")
LINEAGE = scoring.ScoringLineage("set per model", "test", "run-1",
                                 dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
AT = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shadow") / "data"


@pytest.fixture(scope="module")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir).validated().resolved(USE_CASE)


@pytest.fixture(scope="module")
def built(feature_rows: pl.DataFrame, settings: Settings) -> dict[str, BuiltModel]:
    """A champion and a challenger. Their records say they were validated on the last day
    of 2012, so that the comparison judges the three days (the models are real, the windows
    in their records are what the evidence reads)."""
    train = feature_rows.filter(pl.col("partition_date") <= DAY_2)
    valid = feature_rows.filter(pl.col("partition_date") == DAY_3)
    models = {}
    for name, rounds in (("champion", 8), ("challenger", 25)):
        model = build_model(USE_CASE, train, valid, (DAY_1, DAY_2), (DAY_3, DAY_3),
                            settings.models_dir, settings.data_dir, rounds=rounds,
                            num_threads=2, run_id=f"run-{name}", code_version="test")
        before = dt.date(2012, 12, 31)
        models[name] = dataclasses.replace(model, record=dataclasses.replace(
            model.record, valid_start=before, valid_end=before))
    return models


def row(model: BuiltModel, status: str) -> dict:
    return dataclasses.asdict(model.record) | {"status": status}


def direct(feature_rows: pl.DataFrame, settings: Settings, record: dict) -> pl.DataFrame:
    loaded, _ = shadow.load_model(settings, FLIGHTS, record)
    scored, _ = scoring.score(feature_rows, loaded, FLIGHTS,
                              dataclasses.replace(LINEAGE, model_version=loaded.version),
                              explain=settings.explain, explain_max_rows=settings.explain_max_rows)
    return scored


@pytest.fixture(scope="module")
def scores(feature_rows: pl.DataFrame, settings: Settings, built: dict[str, BuiltModel]
           ) -> dict[str, pl.DataFrame]:
    """Each model's direct scoring of the three days."""
    return {name: direct(feature_rows, settings, row(model, name))
            for name, model in built.items()}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    folder = tmp_path / "lake"
    return Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files", lock_timeout_seconds=30)


def table(lake: Lake, name: str) -> pl.DataFrame:
    with lake.read_only() as con:
        return con.execute(f"SELECT * FROM {name} ORDER BY partition_date, flight_id").pl()


# --- scoring ---------------------------------------------------------------------------------

def test_the_shadow_is_the_challenger_scoring_the_champions_features(
        feature_rows: pl.DataFrame, settings: Settings, built: dict[str, BuiltModel],
        scores: dict[str, pl.DataFrame], tmp_path: Path) -> None:
    champion, challenger = row(built["champion"], "champion"), row(built["challenger"],
                                                                    "challenger")
    features_file = tmp_path / "features.parquet"
    feature_rows.write_parquet(features_file)
    warnings: list[str] = []
    said: list[str] = []
    scope = ("predictions/flights", DAY_1, DAY_3)
    with staging(tmp_path / "staging", "run-1", "predictions", settings.chunk_rows) as folder:
        loaded, profile = shadow.load_model(settings, FLIGHTS, champion)
        alone = dataclasses.replace(LINEAGE, model_version=loaded.version)
        scored = score_staged(settings, FLIGHTS, folder, features_file, loaded, profile, alone,
                              "3 days", scope, warnings.append)
        champion_rows = pl.read_parquet(scored.predictions.files)
        outcome = shadow.score_shadow(settings, FLIGHTS, folder, features_file, challenger,
                                      scored, alone, "3 days", scope, said.append)
        assert outcome.withheld is None and outcome.predictions is not None
        shadow_rows = pl.read_parquet(outcome.predictions.files)
        # The champion's staged rows are untouched by the challenger's, and its own.
        assert pl.read_parquet(scored.predictions.files).equals(champion_rows)
    assert champion_rows.equals(scores["champion"])
    assert shadow_rows.equals(scores["challenger"])
    assert shadow_rows["flight_id"].equals(champion_rows["flight_id"])
    assert not shadow_rows["score"].equals(champion_rows["score"])
    # Both models know the same carriers (one training window): the same warnings, each
    # saying which model it is about.
    assert warnings and said == [f"challenger {challenger['model_version']} (shadow): {warning}"
                                 for warning in warnings]


def test_a_challenger_that_cannot_score_leaves_no_shadow_rows(
        feature_rows: pl.DataFrame, settings: Settings, built: dict[str, BuiltModel],
        tmp_path: Path) -> None:
    champion = row(built["champion"], "champion")
    # A registry row whose file is not the version it names (a damaged or replaced file).
    damaged = row(built["challenger"], "challenger") | {"model_version": "0123456789abcdef"}
    features_file = tmp_path / "features.parquet"
    feature_rows.write_parquet(features_file)
    warnings: list[str] = []
    with staging(tmp_path / "staging", "run-1", "predictions", settings.chunk_rows) as folder:
        loaded, profile = shadow.load_model(settings, FLIGHTS, champion)
        scored = score_staged(settings, FLIGHTS, folder, features_file, loaded, profile,
                              LINEAGE, "3 days", ("predictions/flights", DAY_1, DAY_3),
                              lambda warning: None)
        outcome = shadow.score_shadow(settings, FLIGHTS, folder, features_file, damaged, scored,
                                      LINEAGE, "3 days", ("predictions/flights", DAY_1, DAY_3),
                                      warnings.append)
    assert outcome.predictions is None and outcome.withheld
    assert shadow.scored_writes("predictions.flights", "predictions.flights_shadow",
                                scored.predictions, outcome)[1] == (
        "predictions.flights_shadow", None)
    assert warnings == [f"challenger 0123456789abcdef (shadow): not scored, no shadow rows for "
                        f"3 days: {outcome.withheld}"]


# --- the writes of one commit ----------------------------------------------------------------

def test_a_day_scored_again_holds_the_latest_shadow_rows_or_none(
        scores: dict[str, pl.DataFrame], lake: Lake) -> None:
    champion, challenger = scores["champion"], scores["challenger"]
    tables = ("predictions.flights", "predictions.flights_shadow")

    def write(days: tuple[dt.date, ...], shadow_rows: pl.DataFrame | None,
              publish: list[dt.date] | None = None) -> None:
        def on(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col("partition_date").is_in(days))
        lake.commit(lambda con: replace_partitions(
            con, [(tables[0], on(champion)),
                  (tables[1], on(shadow_rows) if shadow_rows is not None else None)],
            list(days), publish), "scored", {"run_id": "test"})

    # No challenger yet: nothing is created for the shadow.
    write(DAYS, None)
    with lake.read_only() as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_name = 'flights_shadow'").fetchone()[0] == 0
    write(DAYS, challenger)
    first = table(lake, tables[1])
    # (DuckDB reads the UTC time zone back as Etc/UTC: the same instants.)
    assert first.drop("scored_at").equals(challenger.drop("scored_at"))
    # Scored again: the same rows, once.
    write(DAYS, challenger)
    assert table(lake, tables[1]).equals(first)
    # The last day scored without a challenger loses its shadow rows; the others keep theirs.
    write((DAY_3,), None)
    kept = table(lake, tables[1])
    assert set(kept["partition_date"]) == {DAY_1, DAY_2}
    assert kept.equals(first.filter(pl.col("partition_date") != DAY_3))
    # Only the days the audits publish lose them.
    write((DAY_1, DAY_2), None, publish=[DAY_2])
    assert set(table(lake, tables[1])["partition_date"]) == {DAY_1}
    assert table(lake, tables[0]).drop("scored_at").equals(champion.drop("scored_at"))


# --- the comparison ----------------------------------------------------------------------------

def paired(feature_rows: pl.DataFrame, scores: dict[str, pl.DataFrame],
           built: dict[str, BuiltModel]) -> pl.DataFrame:
    return gate.paired_outcomes(
        scores["champion"], scores["challenger"],
        feature_rows, id_column="flight_id", output="score", outcome=LABEL,
        champion_version=built["champion"].record.model_version,
        challenger_version=built["challenger"].record.model_version)


def test_the_comparison_is_the_gates_daily_metrics_and_their_cumulation(
        feature_rows: pl.DataFrame, scores: dict[str, pl.DataFrame],
        built: dict[str, BuiltModel]) -> None:
    pairs = paired(feature_rows, scores, built)
    daily = gate.daily_metrics(pairs, BINARY, LABEL)
    rows = comparisons.comparison_rows(daily, BINARY, [DAY_2, DAY_3], "a", "b", AT)
    assert rows.schema == pl.Schema(comparisons.comparison_schema(BINARY))
    assert rows.select("partition_date", "span", "days", "first_day").rows() == [
        (DAY_2, "day", 1, DAY_2), (DAY_2, "cumulated", 2, DAY_1),
        (DAY_3, "day", 1, DAY_3), (DAY_3, "cumulated", 3, DAY_1)]
    by_day = rows.filter(pl.col("span") == "day")
    assert by_day.select(daily.columns).equals(daily.filter(pl.col("partition_date") > DAY_1))
    for day in (DAY_2, DAY_3):
        so_far = daily.filter(pl.col("partition_date") <= day)
        cumulated = rows.filter((pl.col("partition_date") == day)
                                & (pl.col("span") == "cumulated")).row(0, named=True)
        expected = gate.cumulated_metrics(so_far, BINARY)
        assert cumulated["rows"] == so_far["rows"].sum()
        for name, _ in BINARY.realised_metrics:
            for role in gate.ROLES:
                assert cumulated[f"{role}_{name}"] == expected[name][role]
        # The Brier score over every row of the days, as the gate says it is.
        pooled = pairs.filter(pl.col("partition_date") <= day)
        for role in gate.ROLES:
            brier = ((pooled[role] - pooled[LABEL].cast(pl.Float64)) ** 2).mean()
            assert cumulated[f"{role}_brier"] == pytest.approx(brier, abs=1e-12)
    # A day with no judged outcomes has no rows.
    assert comparisons.comparison_rows(daily, BINARY, [DAY_3 + dt.timedelta(days=1)], "a", "b",
                                       AT).height == 0


def test_the_comparison_of_a_regression_cumulates_mae_and_rmse_exactly() -> None:
    kind = objective("regression")
    days = [DAY_1] * 3 + [DAY_2] * 2
    pairs = pl.DataFrame({"partition_date": days, "champion": [1.0, 2.0, 4.0, 0.0, 8.0],
                          "challenger": [1.5, 2.0, 3.0, 1.0, 6.5],
                          "temp": [1.0, 3.0, 3.0, 0.5, 7.0]})
    daily = gate.daily_metrics(pairs, kind, "temp")
    last = comparisons.comparison_rows(daily, kind, [DAY_2], "a", "b", AT).filter(
        pl.col("span") == "cumulated").row(0, named=True)
    for role in gate.ROLES:
        error = pairs[role] - pairs["temp"]
        assert last[f"{role}_mae"] == pytest.approx(error.abs().mean(), abs=1e-12)
        assert last[f"{role}_rmse"] == pytest.approx((error ** 2).mean() ** 0.5, abs=1e-12)
    assert last["rows"] == 5 and last["days"] == 2


def test_the_report_reads_the_comparison_from_the_lake(
        feature_rows: pl.DataFrame, scores: dict[str, pl.DataFrame],
        built: dict[str, BuiltModel], lake: Lake) -> None:
    champion, challenger = row(built["champion"], "champion"), row(built["challenger"],
                                                                    "challenger")
    writes = [("predictions.flights", scores["champion"]),
              ("features.flights", feature_rows)]
    lake.commit(lambda con: (replace_partitions(con, writes, list(DAYS)),
                             registry.register_champion(con, built["champion"].record),
                             registry.register_challenger(con, built["challenger"].record)),
                "setup", {"run_id": "test"})
    with lake.read_only() as con:
        # A challenger, but nothing scored in the shadow yet: no rows, the report's schema.
        empty = comparisons.shadow_comparison(con, USE_CASE, None, list(DAYS), AT)
        assert empty is not None and empty.height == 0
    lake.commit(lambda con: replace_partitions(
        con, [("predictions.flights_shadow", scores["challenger"])],
        list(DAYS)), "shadow", {"run_id": "test"})
    with lake.read_only() as con:
        read = comparisons.shadow_comparison(con, USE_CASE, None, [DAY_3], AT)
        # Pinned to the challenger itself, there is nothing to compare.
        pinned = comparisons.shadow_comparison(con, USE_CASE,
                                               built["challenger"].record.model_version,
                                               [DAY_3], AT)
    daily = gate.daily_metrics(paired(feature_rows, scores, built), BINARY, LABEL)
    assert read.equals(comparisons.comparison_rows(
        daily, BINARY, [DAY_3], champion["model_version"], challenger["model_version"], AT))
    assert pinned is None


def test_a_failed_run_gives_a_day_back_its_shadow_rows(scores: dict[str, pl.DataFrame],
                                                       lake: Lake) -> None:
    """A run that scored a day without a challenger (deleting its shadow rows) and then failed
    is undone: the day has its predictions and shadow rows of before, together."""
    tables = ("predictions.flights", "predictions.flights_shadow")

    def scored(run: str, days: list[dt.date], shadow_rows: pl.DataFrame | None) -> None:
        def on(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col("partition_date").is_in(days))
        details = {"run_id": run, "asset": "predictions/flights",
                   "partitions": f"{days[0]}..{days[-1]}"}
        lake.commit(lambda con: replace_partitions(
            con, [(tables[0], on(scores["champion"])),
                  (tables[1], None if shadow_rows is None else on(shadow_rows))], days),
            f"predictions/flights by run {run}", details)

    scored("old", list(DAYS), scores["challenger"])
    before = {name: table(lake, name) for name in tables}
    scored("failing", [DAY_3], None)
    assert DAY_3 not in set(table(lake, tables[1])["partition_date"])
    lake.commit(lambda con: rollback.undo_run(con, "failing", "reports failed"),
                "undo run failing", {"run_id": "failing", rollback.UNDO: "failing"})
    for name in tables:
        assert table(lake, name).equals(before[name])
