"""The monitoring page's figures, read from the prepared slice's lake: they are the report's,
the quarantine's and the drift checks' own numbers, and the page carries them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.orchestration.assets import champion_profile
from batch_platform.platform.models.objectives import brier_expr
from batch_platform.platform.monitoring import drift
from batch_platform.platform.reports import monitoring
from batch_platform.platform.reports import monitoring_page as pages
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import WEEK, Platform
from batch_platform_tests.flights import FLIGHTS, USE_CASE

DAY = dt.date(2013, 1, 17)
GENERATED_AT = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
LABEL = FLIGHTS.label_column


@pytest.fixture(scope="module")
def page_data(platform: Platform) -> monitoring.MonitoringData:
    settings = platform.settings.resolved(USE_CASE)
    with lake_of(settings).read_only() as con:
        data = monitoring.monitoring_data(con, USE_CASE, champion_profile(con, settings,
                                                                          USE_CASE),
                                          settings.audit_thresholds(), GENERATED_AT)
    assert data is not None
    return data


def test_quality_and_volume_are_the_reports_figures(platform: Platform,
                                                    page_data: monitoring.MonitoringData) -> None:
    report = platform.query("SELECT * FROM reports.flights_daily WHERE segment_type = 'all' "
                            "ORDER BY partition_date")
    assert (page_data.first_day, page_data.last_day) == WEEK
    champion = page_data.quality.filter(pl.col("model") == monitoring.CHAMPION)
    assert champion["partition_date"].to_list() == report["partition_date"].to_list()
    day = champion.filter(pl.col("partition_date") == DAY).row(0, named=True)
    reported = report.filter(pl.col("partition_date") == DAY).row(0, named=True)
    assert (day["auc"], day["rows"], day["model_version"]) == (
        reported["auc"], reported["outcomes_known"], reported["model_version"])
    # The Brier score, which the report does not carry, of the same rows.
    rows = platform.query(
        "SELECT p.score, f.arrived_late FROM predictions.flights p JOIN features.flights f "
        "USING (flight_id) WHERE p.partition_date = ?", [DAY])
    assert day["brier"] == pytest.approx(rows.select(brier_expr("score", LABEL)).item(),
                                         abs=1e-12)
    assert page_data.volume["rows"].to_list() == report["rows"].to_list()
    rejected = dict(platform.query("SELECT partition_date, count(*) FROM quarantine.flights "
                                   "GROUP BY ALL").iter_rows())
    rejected_weather = dict(platform.query("SELECT partition_date, count(*) FROM "
                                           "quarantine.weather GROUP BY ALL").iter_rows())
    assert page_data.volume["rejected"].to_list() == [
        rejected.get(d, 0) + rejected_weather.get(d, 0) for d in report["partition_date"]]
    # No challenger in the slice: the champion alone.
    assert set(page_data.quality["model"]) == {monitoring.CHAMPION}
    assert page_data.challenger is None

    # The figure plots those values.
    figure = pages.monitoring_figures(page_data)[pages.QUALITY]
    auc, brier = figure["data"]
    assert (auc["yaxis"], brier["yaxis"]) == ("y", "y2")  # a row each
    index = auc["x"].index(DAY.isoformat())
    assert (auc["y"][index], brier["y"][index]) == (day["auc"], day["brier"])


def test_calibration_splits_the_known_outcomes_into_deciles(
        platform: Platform, page_data: monitoring.MonitoringData) -> None:
    known = platform.query(
        "SELECT p.score, f.arrived_late FROM predictions.flights p JOIN features.flights f "
        "USING (flight_id) WHERE f.arrived_late IS NOT NULL ORDER BY p.score")
    deciles = page_data.calibration.sort("decile")
    assert page_data.calibration_window == WEEK
    assert deciles["decile"].to_list() == list(range(1, 11))
    assert deciles["rows"].sum() == known.height
    assert deciles["rows"].max() - deciles["rows"].min() <= 1  # equal counts
    assert deciles["mean_output"].is_sorted()
    # Per decile, the realised rate is the share of late flights among its rows.
    first = known.head(deciles["rows"][0])
    assert deciles["realised_rate"][0] == pytest.approx(
        first[LABEL].cast(pl.Float64).mean(), abs=1e-12)
    assert (deciles["rows"] * deciles["realised_rate"]).sum() == pytest.approx(
        known[LABEL].sum(), abs=1e-9)


def test_drift_is_the_checks_psi_against_the_champions_profile(
        platform: Platform, page_data: monitoring.MonitoringData) -> None:
    settings = platform.settings.resolved(USE_CASE)
    with lake_of(settings).read_only() as con:
        profile = champion_profile(con, settings, USE_CASE)
    assert profile is not None
    features = platform.query("SELECT * FROM features.flights WHERE partition_date = ?", [DAY])
    scores = platform.query("SELECT partition_date, score FROM predictions.flights "
                            "WHERE partition_date = ?", [DAY])
    expected = {("feature", c): v for c, v in drift.DriftCounter(profile.features).add(
        features).psi_by_day()[DAY].items()}
    expected |= {("output", c): v for c, v in drift.DriftCounter(profile.scores).add(
        scores).psi_by_day()[DAY].items()}
    day = page_data.drift.filter(pl.col("partition_date") == DAY)
    assert {(k, c): v for k, c, v in day.select("kind", "column", "psi").rows()} == expected
    assert set(day["rows"]) == {features.height}
    assert set(page_data.drift["partition_date"]) == set(page_data.volume["partition_date"])


def test_the_page_is_written_whole_and_loads_plotly_from_beside_it(
        page_data: monitoring.MonitoringData, tmp_path: Path) -> None:
    path = pages.write_monitoring_page(tmp_path, page_data)
    assert path == tmp_path / "flights" / "monitoring.html"
    script = tmp_path / pages.PLOTLY_JS
    assert script.stat().st_size > 1_000_000
    text = path.read_text()
    assert f'<script src="../{pages.PLOTLY_JS}"></script>' in text
    assert "cdn" not in text.lower() and "https://" not in text
    assert text.count("Plotly.newPlot(") == 4
    for key in pages.TITLES:
        assert f'id="{key}"' in text
    # Rewriting it leaves no temporary file, and the script is written once.
    before = script.stat().st_mtime_ns
    pages.write_monitoring_page(tmp_path, page_data)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["flights", "monitoring.html", pages.PLOTLY_JS])
    assert script.stat().st_mtime_ns == before
    # The figures' data is in the page as plain numbers.
    auc = pages.monitoring_figures(page_data)[pages.QUALITY]["data"][0]["y"]
    assert repr(auc[0]) in text
