"""Write, audit, publish on real data: a defect injected into a day is stopped by its check,
the version published before stays, and the check says why with the measured value.

Every test runs its own copy of the platform (``own_platform``)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import dagster as dg
import polars as pl

from batch_platform.orchestration.checks import (
    FEATURE_CHECKS,
    RAW_CHECKS,
    REPORT_CHECKS,
    prediction_checks,
)
from batch_platform.platform.files import exclusive_lock
from batch_platform.platform.ingest import landing
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import Platform, failure_messages, partition_snapshot, seal

DAY = dt.date(2013, 1, 18)
CHECKS = {("raw", "flights"): RAW_CHECKS, ("raw", "weather"): RAW_CHECKS,
          ("features", "flights"): FEATURE_CHECKS,
          ("predictions", "flights"): prediction_checks(objective("binary")),
          ("reports", "flights_daily"): REPORT_CHECKS}


def latest_evaluation(platform: Platform, asset: tuple[str, ...], check: str
                      ) -> dg.AssetCheckEvaluation:
    key = dg.AssetCheckKey(dg.AssetKey(list(asset)), check)
    record = platform.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key])[key]
    return record.event.dagster_event.event_specific_data


def published_day(platform: Platform) -> dict[str, pl.DataFrame]:
    return partition_snapshot(platform, ("raw.flights", "features.flights",
                                         "predictions.flights", "reports.flights_daily"), [DAY])


def edit_flights(platform: Platform, edit) -> None:
    path = landing.landing_file(platform.settings.landing_dir, "flights", DAY)
    edit(pl.read_csv(path, infer_schema=False)).write_csv(path)
    seal(path)


def assert_one_score_per_flight(platform: Platform) -> None:
    """The day holds one prediction per flight, whatever the defect did."""
    rows, flights = platform.query("SELECT count(*), count(DISTINCT flight_id) "
                                   "FROM predictions.flights WHERE partition_date = ?",
                                   [DAY]).row(0)
    assert rows == flights > 0


def test_a_clean_week_passes_every_check(own_platform: Platform) -> None:
    own_platform.run("flights_daily", DAY)
    for asset, checks in CHECKS.items():
        for check in checks:
            evaluation = latest_evaluation(own_platform, asset, check)
            assert evaluation.passed, (asset, check, evaluation.description)
            assert evaluation.metadata["partitions"].value == str(DAY)
    drift = latest_evaluation(own_platform, ("features", "flights"), "feature_drift")
    assert 0 < drift.metadata["max_psi"].value < drift.metadata["warn_threshold"].value
    assert drift.metadata["days_judged"].value == 1


def test_drifted_features_are_not_published(own_platform: Platform) -> None:
    before = published_day(own_platform)
    # The feed switched to kilometres: every distance is still valid input, but not the same.
    edit_flights(own_platform, lambda f: f.with_columns(
        (pl.col("distance").cast(pl.Float64) * 1.609).round(0).cast(pl.Int64)))
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert f"features/flights {DAY} not published, the version published before stays in " \
           "place" in message
    assert f"feature_drift: {DAY}: distance drifted from 2013-01-01..2013-01-14: PSI" in message
    evaluation = latest_evaluation(own_platform, ("features", "flights"), "feature_drift")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["max_psi"].value > evaluation.metadata["error_threshold"].value
    assert evaluation.metadata["max_psi_column"].value == "distance"
    after = published_day(own_platform)
    # raw's own checks passed, but the run failed: its raw commit was undone, so no layer of
    # the day changed.
    for table in ("raw.flights", "features.flights", "predictions.flights",
                  "reports.flights_daily"):
        assert after[table].equals(before[table]), table
    assert result.filter_events(lambda e: e.is_step_up_for_retry) == []
    assert_one_score_per_flight(own_platform)


def test_missing_required_values_are_not_published(own_platform: Platform) -> None:
    before = published_day(own_platform)
    edit_flights(own_platform, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) < 20).then(pl.lit("NA")).otherwise(pl.col("carrier"))
        .alias("carrier")))
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert f"raw/flights {DAY} not published" in message
    assert "required column carrier is missing in 2." in message
    evaluation = latest_evaluation(own_platform, ("raw", "flights"), "required_values")
    assert not evaluation.passed
    assert evaluation.metadata["threshold"].value == 0.01
    assert evaluation.metadata["max_null_fraction"].value > 0.02
    after = published_day(own_platform)
    for table, frame in before.items():
        assert after[table].equals(frame), table
    # Bad data is never retried: a retry cannot fix it.
    assert result.filter_events(lambda e: e.is_step_up_for_retry) == []
    assert_one_score_per_flight(own_platform)


def test_a_warning_publishes_and_flags(own_platform: Platform) -> None:
    edit_flights(own_platform, lambda f: f.with_columns(pl.lit("B12").alias("gate")))
    result = own_platform.run("flights_daily", DAY)

    assert result.success
    evaluation = latest_evaluation(own_platform, ("raw", "flights"), "schema")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["ignored_columns"].value == "gate"
    run_ids = own_platform.query("SELECT DISTINCT run_id FROM predictions.flights "
                                 "WHERE partition_date = ?", [DAY])
    assert run_ids.get_column("run_id").to_list() == [result.run_id]
    assert_one_score_per_flight(own_platform)


def test_a_locked_warehouse_is_retried_with_backoff(own_platform: Platform) -> None:
    settings = own_platform.settings.with_overrides(lock_timeout_seconds=0.5)
    lock = lake_of(settings).lock_path
    held = threading.Event()

    def retried() -> bool:
        instance = own_platform.instance
        return any(instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY, limit=1).records
            for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])))

    def hold() -> None:
        # Until the step has failed once on it (a loaded machine takes seconds to get there);
        # the retry, after its backoff, finds it free.
        with exclusive_lock(lock, 5, "a test holding the warehouse"):
            held.set()
            deadline = time.monotonic() + 120
            while not retried() and time.monotonic() < deadline:
                time.sleep(0.1)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        result = own_platform.run("flights_predict", DAY, settings=settings)
    finally:
        holder.join()

    assert result.success
    retries = result.filter_events(lambda e: e.is_step_up_for_retry)
    assert retries and retries[0].step_key == "predictions__flights"
    warnings = [entry.user_message for entry in own_platform.instance.all_logs(result.run_id)
                if "transient failure, retry 1 of 3" in entry.user_message]
    assert len(warnings) == 1 and "(a test holding the warehouse, since" in warnings[0]

