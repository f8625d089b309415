"""A challenger scored in the shadow and compared in the daily report, through Dagster.

On a copy of the three-week slice, a champion and a challenger are trained on its real days
(validated before the scored week, so the week is judged), then the week's last two days are
scored with the predictions job, in one run. What happens without a challenger, and when a
day is scored again, is tested on the plain functions (``batch_platform_tests/platform/
test_shadow.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.models import gate, registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.models.training import build_model
from batch_platform.platform.reports import monitoring
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring import shadow
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import LINEAGE_COLUMNS, Platform
from batch_platform_tests.flights import FLIGHTS, USE_CASE

DAYS = (dt.date(2013, 1, 20), dt.date(2013, 1, 21))
ANALYSTS = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
RUN_COLUMNS = LINEAGE_COLUMNS["predictions.flights"]
BINARY = objective("binary")
LABEL = FLIGHTS.label_column


def register(platform: Platform, *, champion: tuple, challenger: tuple) -> tuple[str, str]:
    """Train a champion and a challenger on the slice, each (train window, valid window,
    rounds), and register them; their versions."""
    settings = platform.settings
    features = platform.query("SELECT * FROM features.flights ORDER BY partition_date, flight_id")
    built = []
    # Each with its declared feature set: the challenger reads more columns of the table.
    for (train, valid, rounds), role in ((champion, False), (challenger, True)):
        def window(edges: tuple[dt.date, dt.date]) -> pl.DataFrame:
            return features.filter(pl.col("partition_date").is_between(*edges))
        built.append(build_model(USE_CASE, window(train), window(valid), train, valid,
                                 settings.models_dir, settings.data_dir, rounds=rounds,
                                 num_threads=2, run_id="test", code_version="test",
                                 challenger=role))
    lake_of(settings).commit(lambda con: (registry.register_champion(con, built[0].record),
                                          registry.register_challenger(con, built[1].record)),
                             "a champion and a challenger", {"run_id": "test"})
    return built[0].record.model_version, built[1].record.model_version


def rows_of(platform: Platform, table: str, order: str = "flight_id") -> pl.DataFrame:
    return platform.query(f"SELECT * FROM {table} WHERE partition_date = ANY(?) "
                          f"ORDER BY partition_date, {order}", [list(DAYS)])


def analysts_shadow_query() -> str:
    """The example query of docs/analysts.md that reads the shadow comparison."""
    block = re.search(r"-- Flights: champion against challenger[^\n]*\n(.*?;)",
                      ANALYSTS.read_text(), flags=re.S)
    assert block, "docs/analysts.md lost its shadow comparison query"
    return block.group(1)


def test_a_challenger_is_scored_in_the_shadow_and_compared_in_the_report(
        own_platform: Platform) -> None:
    platform = own_platform
    jan = dt.date(2013, 1, 1)
    champion, challenger = register(
        platform,
        champion=((jan, jan + dt.timedelta(days=9)), (jan + dt.timedelta(days=10),) * 2, 10),
        challenger=((jan, jan + dt.timedelta(days=13)), (jan + dt.timedelta(days=14),) * 2, 20))
    result = platform.run("flights_predict", *DAYS)

    predictions = rows_of(platform, "predictions.flights")
    shadowed = rows_of(platform, "predictions.flights_shadow")
    assert set(predictions["model_version"]) == {champion}
    assert set(shadowed["model_version"]) == {challenger}
    assert shadowed.columns == predictions.columns
    assert shadowed["flight_id"].equals(predictions["flight_id"])
    assert shadowed.select(RUN_COLUMNS).equals(predictions.select(RUN_COLUMNS))

    # The shadow rows are a direct scoring of the same features by the challenger, exactly, and
    # the champion's rows the champion's, as if there were no challenger.
    settings = platform.settings.resolved(USE_CASE)
    features = rows_of(platform, "features.flights")
    with lake_of(settings).read_only() as con:
        models = shadow.scoring_models(con, "flights", None)
    assert (models.scoring["feature_list"], models.challenger["feature_list"]) == (
        list(USE_CASE.training().spec.feature_columns), list(FLIGHTS.feature_columns))
    for record, stored in ((models.challenger, shadowed), (models.scoring, predictions)):
        loaded, _ = shadow.load_model(settings, FLIGHTS, record)
        direct, _ = scoring.score(
            features, loaded, FLIGHTS, scoring.ScoringLineage(
                record["model_version"], stored["code_version"][0], "direct",
                stored["scored_at"][0]),
            explain=settings.explain, explain_max_rows=settings.explain_max_rows)
        assert stored.drop(RUN_COLUMNS).equals(direct.drop(RUN_COLUMNS))

    metadata = result.asset_materializations_for_node("predictions__flights")[0].metadata
    assert metadata["challenger_version"].value == challenger
    assert metadata["range_shadow_rows"].value == shadowed.height
    assert "shadow_withheld" not in metadata

    # The comparison: the gate's daily metrics of the same rows, and cumulated over the days.
    comparison = rows_of(platform, "reports.flights_shadow_comparison", order="span")
    paired = gate.paired_outcomes(
        predictions, shadowed, features, id_column="flight_id", output="score", outcome=LABEL,
        champion_version=champion, challenger_version=challenger)
    daily = gate.daily_metrics(paired, BINARY, LABEL)
    metrics = [c for c in daily.columns if c.startswith(gate.ROLES)]
    by_day = comparison.filter(pl.col("span") == "day")
    assert by_day.select("partition_date", "rows", *metrics).equals(daily)
    last = comparison.filter(pl.col("span") == "cumulated").row(-1, named=True)
    cumulated = gate.cumulated_metrics(daily, BINARY)
    assert (last["first_day"], last["days"], last["rows"]) == (DAYS[0], 2, paired.height)
    for name, _ in BINARY.realised_metrics:
        for role in gate.ROLES:
            assert last[f"{role}_{name}"] == cumulated[name][role]
    # The Brier score cumulated is the one over every row of the two days.
    brier = ((paired["challenger"] - paired[LABEL].cast(pl.Float64)) ** 2).mean()
    assert last["challenger_brier"] == pytest.approx(brier, abs=1e-12)
    assert set(comparison[["champion_version", "challenger_version"]].rows()) == {
        (champion, challenger)}
    report = result.asset_materializations_for_node("reports__flights_daily")[0].metadata
    assert report["challenger_version"].value == challenger
    assert report["shadow_days_judged"].value == 2
    # The monitoring page the report rewrote shows the challenger beside the champion, with
    # the comparison's figures.
    page = monitoring.page_path(platform.settings.reports_dir, "flights")
    assert report["monitoring_page"].value == str(page)
    assert f"challenger ({challenger})" in page.read_text()
    with lake_of(settings).read_only() as con:
        data = monitoring.monitoring_data(con, USE_CASE, None, settings.audit_thresholds(),
                                          dt.datetime.now(dt.UTC))
    assert data is not None and data.challenger == challenger
    challenger_shown = data.quality.filter(pl.col("model") == monitoring.CHALLENGER).select(
        "partition_date", "rows", "auc", "brier")
    assert challenger_shown.rows() == by_day.select(
        "partition_date", "rows", "challenger_auc", "challenger_brier").rows()
    champion_shown = data.quality.filter((pl.col("model") == monitoring.CHAMPION)
                                         & pl.col("partition_date").is_in(DAYS))
    assert champion_shown["brier"].to_list() == pytest.approx(
        by_day["champion_brier"].to_list(), abs=1e-12)
    assert set(data.calibration["model"]) == {monitoring.CHAMPION, monitoring.CHALLENGER}
    # The analysts' example query reads it.
    shown = platform.query(analysts_shadow_query())
    assert shown.select("partition_date", "span", "rows").rows() == [
        (DAYS[0], "cumulated", by_day["rows"][0]), (DAYS[0], "day", by_day["rows"][0]),
        (DAYS[1], "cumulated", paired.height), (DAYS[1], "day", by_day["rows"][1])]
