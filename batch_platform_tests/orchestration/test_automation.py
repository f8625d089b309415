"""Running unattended: the landing sensor, the nightly schedule, reports following predictions
and the partition-aware freshness check, evaluated the way the daemon evaluates them.

Ticks that only read use the shared platform; a test that lands, runs or loads anything has a
data directory of its own: a copy of the platform (``own_platform``) or an empty one
(``fresh``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest

from batch_platform.definitions import build_definitions
from batch_platform.orchestration.assets import ModelConfig
from batch_platform.orchestration.automation import (
    landing_sensor,
    nightly_schedule,
    retraining_schedule,
)
from batch_platform.orchestration.factory import use_case_definitions
from batch_platform.orchestration.jobs import partition_range_tags
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.ingest import landing
from batch_platform.platform.use_case import Retraining, UseCase
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.conftest import LAST, WEEK, Platform, platform_at, seal
from batch_platform_tests.flights import USE_CASE

NEW_YORK = ZoneInfo("America/New_York")
DAY = dt.date(2013, 1, 17)
REPORTS = dg.AssetKey(["reports", "flights_daily"])
PREDICTIONS = dg.AssetKey(["predictions", "flights"])
FEATURES = dg.AssetKey(["features", "flights"])
MODEL = dg.AssetKey(["models", "flights"])


JOB = dg.define_asset_job("flights_daily")


def settled(*paths: Path) -> None:
    """Make files look landed a minute ago: past the sensor's settle time."""
    stamp = dt.datetime.now(dt.UTC).timestamp() - 60
    for path in paths:
        os.utime(path, (stamp, stamp))


def tick(settings: Settings, instance: dg.DagsterInstance, cursor: str | None
         ) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "platform": PlatformResource.from_settings(settings)})
    return landing_sensor(USE_CASE, JOB)(context)


@pytest.fixture
def empty_platform(tmp_path: Path) -> Iterator[Platform]:
    """An empty data directory and a new Dagster instance: nothing landed or loaded yet."""
    with platform_at(tmp_path / "empty") as platform:
        yield platform


@pytest.fixture
def fresh(empty_platform: Platform) -> Settings:
    return empty_platform.settings


@pytest.fixture
def instance(empty_platform: Platform) -> dg.DagsterInstance:
    return empty_platform.instance


def land(settings: Settings, *days: dt.date) -> list[Path]:
    flights_landing.land(settings.landing_dir, list(days), with_reference=False)
    paths = [landing.landing_file(settings.landing_dir, source, day)
             for day in days for source in flights_landing.DAILY_SOURCES]
    settled(*paths)
    return paths


def test_sensor_requests_each_new_day_once(fresh: Settings, instance: dg.DagsterInstance
                                           ) -> None:
    land(fresh, dt.date(2013, 3, 1), dt.date(2013, 3, 2))
    first = tick(fresh, instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["2013-03-01",
                                                                    "2013-03-02"]
    assert all(r.run_key.startswith(r.partition_key) for r in first.run_requests)
    again = tick(fresh, instance, first.cursor)
    assert again.run_requests == []


def test_sensor_same_file_again_changed_file_and_half_written_file(
        fresh: Settings, instance: dg.DagsterInstance) -> None:
    flights, weather = land(fresh, DAY)
    cursor = tick(fresh, instance, None).cursor
    # The same bytes landed again: no run.
    flights.write_bytes(flights.read_bytes())
    settled(flights)
    result = tick(fresh, instance, cursor)
    assert result.run_requests == []
    # A corrected file: one new run, with a new run key.
    lines = weather.read_text().splitlines()
    weather.write_text("\n".join(lines[:-1]) + "\n")
    seal(weather)
    settled(weather)
    result = tick(fresh, instance, result.cursor)
    assert [r.partition_key for r in result.run_requests] == [DAY.isoformat()]
    # A file being written right now waits for a later tick, and for its manifest: settled
    # alone is not whole.
    whole = flights.read_text()
    flights.write_text(whole[: len(whole) // 2])
    waiting = tick(fresh, instance, result.cursor)
    assert waiting.run_requests == []
    settled(flights)
    waiting = tick(fresh, instance, waiting.cursor)
    assert waiting.run_requests == []
    flights.write_text(whole[: len(whole) // 2] + "\n".join(whole.splitlines()[1:3]) + "\n")
    seal(flights)  # the feed finished another file than before, and its manifest
    settled(flights)
    assert [r.partition_key for r in tick(fresh, instance, waiting.cursor).run_requests
            ] == [DAY.isoformat()]


def test_sensor_ignores_invalid_names_and_paths_outside(
        fresh: Settings, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    land(fresh, DAY)
    folder = fresh.landing_dir / "flights"
    (folder / "2013-13-45.csv").write_text("x")
    (folder / "2015-01-01.csv").write_text("x")
    (folder / "readme.txt").write_text("x")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("x")
    (folder / "2013-01-30.csv").symlink_to(outside)
    settled(*folder.iterdir(), outside)
    result = tick(fresh, instance, None)
    assert [r.partition_key for r in result.run_requests] == [DAY.isoformat()]


def test_sensor_leaves_days_already_loaded_alone(platform: Platform) -> None:
    # Every landed day of the fixture was loaded after it landed: nothing to do on a first tick.
    result = tick(platform.settings, platform.instance, None)
    assert result.run_requests == []


def materialized_since(instance: dg.DagsterInstance, keys: list[dg.AssetKey], after: int
                       ) -> dict[str, list[str | None]]:
    """The partitions of each asset materialized after storage id ``after``, once a time."""
    return {key.to_user_string(): sorted(
        (record.partition_key for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000).records),
        key=str) for key in keys}


class GroupSensor:
    """The use case's automation sensor ticked with its cursor, as the code server does."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.repository = defs.get_repository_def()
        self.sensor = self.repository.get_sensor_def("flights_refresh_features_and_reports")
        self.instance = instance
        self.cursor: str | None = None

    def tick(self) -> dict[str, list[str]]:
        result = self.sensor.evaluate_tick(dg.build_sensor_context(
            instance=self.instance, repository_def=self.repository, cursor=self.cursor))
        self.cursor = result.cursor
        requested: dict[str, list[str]] = {}
        for request in result.run_requests or []:
            subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
            for key, subset in subsets.items():
                requested[key.to_user_string()] = sorted(subset.get_partition_keys())
        return requested


def scorings(platform: Platform, days: list[dt.date]) -> dict[dt.date, str]:
    """The run that scored each day of ``days`` (one run a day)."""
    rows = platform.query("SELECT DISTINCT partition_date, run_id FROM predictions.flights "
                          "WHERE partition_date BETWEEN ? AND ? ORDER BY 1", days).rows()
    assert len(rows) == len({day for day, _ in rows})
    return dict(rows)


def test_a_corrected_file_reruns_its_day_then_the_scored_days_that_look_back_at_it(
        own_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    # The conditions on features and predictions read the lake the environment names.
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(own_platform.settings.data_dir))
    defs, instance = own_platform.defs, own_platform.instance
    conditions = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert conditions.total_requested == 0
    group_sensor = GroupSensor(defs, instance)
    assert group_sensor.tick() == {}
    corrected = dt.date(2013, 1, 10)  # features 01-11..17 read it (lookback_days 7)
    corrected_file = landing.landing_file(own_platform.settings.landing_dir, "flights",
                                          corrected)
    settings = own_platform.settings.with_overrides(landing_settle_seconds=0)
    cursor = tick(settings, instance, None).cursor
    header, *lines = corrected_file.read_text().splitlines()
    delay = header.split(",").index("arr_delay")
    kept = [line for line in lines
            if not (line.split(",")[delay] != "NA" and int(line.split(",")[delay]) > 15)]
    assert len(lines) - len(kept) > 50  # the day's late flights withdrawn
    corrected_file.write_text("\n".join([header, *kept]) + "\n")
    seal(corrected_file)
    result = tick(settings, instance, cursor)
    [request] = result.run_requests
    assert request.partition_key == corrected.isoformat()
    late_rates = ("SELECT partition_date, sum(route_late_rate_7d) AS route, "
                  "sum(dest_late_rate_7d) AS dest FROM features.flights "
                  "WHERE partition_date BETWEEN ? AND ? GROUP BY ALL ORDER BY ALL")
    week = [dt.date(2013, 1, 11), dt.date(2013, 1, 21)]
    rates_before = own_platform.query(late_rates, week)
    before = instance.event_log_storage.get_maximum_record_id() or 0
    runs = instance.get_runs_count()
    run = defs.resolve_job_def("flights_daily").execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags)
    assert run.success
    scored = own_platform.query("SELECT count(*) AS n, min(run_id) AS run FROM predictions.flights "
                                "WHERE partition_date = ?", [corrected]).row(0, named=True)
    assert scored == {"n": len(kept), "run": run.run_id}
    # The sensor's run: exactly that day, once, at every stage of the daily flow.
    graph = defs.resolve_asset_graph()
    flow = [key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "flights"
            and key.path[0] != "models"]
    ran = materialized_since(instance, flow, before)
    partitioned = {"raw/flights", "raw/weather", "features/flights", "predictions/flights",
                   "reports/flights_daily"}
    assert ran == {key: [corrected.isoformat()] if key in partitioned else [None] for key in ran}
    assert instance.get_runs_count() == runs + 1
    assert tick(settings, instance, result.cursor).run_requests == []

    # The automation: the features of the 7 days after it, which read it; predictions and
    # reports of those of them already scored. The use case's sensor, which evaluates the
    # features in the code server, requests the features (predictions have their own sensor).
    looking_back = [f"2013-01-{n}" for n in range(11, 18)]
    assert group_sensor.tick() == {"features/flights": looking_back}
    after_run = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                  cursor=conditions.cursor)
    scored_days = [f"2013-01-{n}" for n in range(15, 18)]
    assert {key.to_user_string(): sorted(after_run.get_requested_partitions(key))
            for key in (FEATURES, PREDICTIONS, REPORTS)} == {
        "features/flights": looking_back, "predictions/flights": scored_days,
        "reports/flights_daily": scored_days}
    assert after_run.total_requested == len(looking_back) + 2 * len(scored_days)
    # Requested once, even before it ran.
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                              cursor=after_run.cursor)
    assert again.total_requested == 0

    # Run as the backfill does with single-run policies: features of the range, then the
    # scored days' predictions and reports.
    before = instance.event_log_storage.get_maximum_record_id() or 0
    job = defs.resolve_implicit_global_asset_job_def()
    scored_before = scorings(own_platform, week)
    results = [job.execute_in_process(instance=instance, asset_selection=selection,
                                      tags=partition_range_tags(days[0], days[-1]))
               for selection, days in (([FEATURES], looking_back),
                                       ([PREDICTIONS, REPORTS], scored_days))]
    assert all(result.success for result in results)
    ran = materialized_since(instance, flow, before)
    assert ran == {key: {"features/flights": looking_back, "predictions/flights": scored_days,
                         "reports/flights_daily": scored_days}.get(key, []) for key in ran}
    rates_after = own_platform.query(late_rates, week)
    changed = rates_after.join(rates_before, on="partition_date", suffix="_before").filter(
        (pl.col("route") != pl.col("route_before")) | (pl.col("dest") != pl.col("dest_before")))
    assert changed["partition_date"].to_list() == [dt.date.fromisoformat(d)
                                                   for d in looking_back]
    # Their predictions were scored again by that run; the days after stayed as they were.
    assert scorings(own_platform, week) == scored_before | {
        dt.date.fromisoformat(d): results[-1].run_id for d in scored_days}
    assert dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                             cursor=again.cursor).total_requested == 0


def schedule_tick(platform: Platform, when: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    context = dg.build_schedule_context(
        instance=platform.instance, scheduled_execution_time=when,
        resources={"platform": PlatformResource.from_settings(platform.settings)})
    return nightly_schedule(USE_CASE, JOB)(context)


def test_nightly_schedule_requests_the_previous_day(platform: Platform) -> None:
    request = schedule_tick(platform, dt.datetime(2013, 1, 18, 2, 30, tzinfo=NEW_YORK))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2013-01-17" and request.run_key == "nightly-2013-01-17"
    # 02:30 in New York is 07:30 UTC: the day before is still the New York day before.
    utc = schedule_tick(platform, dt.datetime(2013, 1, 18, 7, 30, tzinfo=dt.UTC))
    assert utc.partition_key == "2013-01-17"


def test_nightly_schedule_skips_days_not_landed_or_not_partitions(platform: Platform) -> None:
    after_landing = LAST + dt.timedelta(days=2)
    skipped = schedule_tick(platform, dt.datetime.combine(
        after_landing, dt.time(2, 30), NEW_YORK))
    assert isinstance(skipped, dg.SkipReason)
    assert f"{LAST + dt.timedelta(days=1)} has not landed: no " in skipped.skip_message
    assert "flights/2013-01-22.csv" in skipped.skip_message
    beyond = schedule_tick(platform, dt.datetime(2026, 11, 29, 2, 30, tzinfo=NEW_YORK))
    assert beyond.skip_message == "2026-11-28 is not a partition (2013-01-01..2013-12-31)"


def retraining(**declared: object) -> UseCase:
    """Flights with the retraining schedule switched on, as declared."""
    automation = USE_CASE.automation
    return dataclasses.replace(USE_CASE, automation=dataclasses.replace(
        automation, retraining_schedule=True,
        retraining=dataclasses.replace(automation.retraining, **declared)))


def retraining_tick(settings: Settings, instance: dg.DagsterInstance, use_case: UseCase
                    ) -> dg.RunRequest | dg.SkipReason:
    # Entered, so that what the evaluation opens is closed with it.
    with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2013, 2, 1, 4, tzinfo=NEW_YORK),
            resources={"platform": PlatformResource.from_settings(settings)}) as context:
        return retraining_schedule(use_case, MODEL, dg.define_asset_job("flights_train"))(context)


def test_the_retraining_schedule_trains_a_challenger_on_the_trailing_window(
        platform: Platform) -> None:
    declared = retraining(window_days=14, validation_days=4, rounds=5)
    [schedule] = [s for s in use_case_definitions(declared).schedules
                  if s.name == "flights_retraining_schedule"]
    assert (schedule.cron_schedule, schedule.job_name, schedule.execution_timezone) == (
        Retraining.cron, "flights_train", "America/New_York")
    assert not [s for s in use_case_definitions(USE_CASE).schedules
                if s.name == "flights_retraining_schedule"]  # off unless declared
    # The slice's outcomes are known up to its last day, 2013-01-21: the window ends there.
    request = retraining_tick(platform.settings, platform.instance, declared)
    assert isinstance(request, dg.RunRequest)
    config = {"train_start": "2013-01-08", "train_end": "2013-01-17",
              "valid_start": "2013-01-18", "valid_end": "2013-01-21", "challenger": True,
              "rounds": 5}
    assert request.run_config == {"ops": {"models__flights": {"config": config}}}
    assert request.run_key == "retraining-2013-01-08..2013-01-21"
    assert request.tags == {"batch_platform/trigger": "retraining"}
    ModelConfig(**config)  # what the model asset accepts
    # A window longer than the partitions so far starts at the first partition; rounds unset
    # are the declaration's training.rounds.
    longer = retraining_tick(platform.settings, platform.instance,
                             retraining(window_days=240, validation_days=7))
    assert isinstance(longer, dg.RunRequest)
    assert longer.run_config["ops"]["models__flights"]["config"] == {
        "train_start": "2013-01-01", "train_end": "2013-01-14", "valid_start": "2013-01-15",
        "valid_end": "2013-01-21", "challenger": True}
    all_validation = retraining_tick(platform.settings, platform.instance,
                                     retraining(window_days=240, validation_days=21))
    assert isinstance(all_validation, dg.SkipReason)
    assert all_validation.skip_message == (
        "the last day with outcomes, 2013-01-21, leaves no training day before the 21 "
        "validation days after 2013-01-01")


def test_the_retraining_schedule_skips_without_a_warehouse(
        fresh: Settings, instance: dg.DagsterInstance) -> None:
    skipped = retraining_tick(fresh, instance, retraining())
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message == "no warehouse yet: nothing to train flights on"


def test_reports_follow_predictions(own_platform: Platform) -> None:
    defs = own_platform.defs
    selection = dg.AssetSelection.assets(REPORTS)
    first = dg.evaluate_automation_conditions(defs=defs, instance=own_platform.instance,
                                              asset_selection=selection)
    assert first.total_requested == 0
    # An operator rescores one day's predictions alone, in the UI or from the command line.
    defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=own_platform.instance, asset_selection=[PREDICTIONS],
        tags=partition_range_tags(DAY.isoformat(), DAY.isoformat()))
    second = dg.evaluate_automation_conditions(defs=defs, instance=own_platform.instance,
                                               asset_selection=selection, cursor=first.cursor)
    assert second.get_requested_partitions(REPORTS) == {DAY.isoformat()}
    # Reported in the same run as predictions (the sensor's and the nightly's runs): no extra run.
    own_platform.run("flights_predict", DAY)
    third = dg.evaluate_automation_conditions(defs=defs, instance=own_platform.instance,
                                              asset_selection=selection, cursor=second.cursor)
    assert third.total_requested == 0


def freshness(platform: Platform, settings: Settings) -> dg.AssetCheckEvaluation:
    result = platform.run("flights_freshness", settings=settings)
    [evaluation] = [e for e in result.get_asset_check_evaluations()
                    if e.check_name == "landed_partitions_scored"]
    return evaluation


def test_freshness_flags_landed_days_not_scored_in_time(own_platform: Platform) -> None:
    after = [LAST + dt.timedelta(days=n) for n in (1, 2)]  # after the validation window
    land(own_platform.settings, *after)
    pending = freshness(own_platform, own_platform.settings)
    assert pending.passed
    assert pending.metadata["partitions_pending"].value == 2
    impatient = own_platform.settings.with_overrides(freshness_lag_minutes=0.5)
    late = freshness(own_platform, impatient)
    assert not late.passed
    assert late.description == ("2 landed partition(s) not produced within 0.5 minutes of "
                                "landing: 2013-01-22, 2013-01-23")
    assert late.metadata["max_waiting_minutes"].value >= 1.0
    assert late.metadata["expected_after"].value == str(WEEK[1])


def test_a_loaded_day_without_weather_rows_is_not_requested_again(
        fresh: Settings, instance: dg.DagsterInstance) -> None:
    last_day = dt.date(2013, 12, 31)  # the package's weather ends on 2013-12-30
    land(fresh, last_day)
    assert landing.landing_file(fresh.landing_dir, "weather", last_day).read_text().count(
        "\n") == 1
    raw = [dg.AssetKey(["raw", "flights"]), dg.AssetKey(["raw", "weather"])]
    build_definitions(fresh).resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=raw, partition_key=last_day.isoformat())
    assert tick(fresh, instance, None).run_requests == []


def test_the_days_looking_back_rerun_only_when_switched_on_and_read() -> None:
    def built(use_case: UseCase) -> tuple[dict[str, str | None], dict[str, bool]]:
        defs = use_case_definitions(use_case)  # without resources: not resolved
        conditions = {key: asset.automation_conditions_by_key.get(key)
                      for asset in defs.assets or [] if isinstance(asset, dg.AssetsDefinition)
                      for key in asset.keys}
        labels = {key.to_user_string(): (condition.get_label() if condition else None)
                  for key in (FEATURES, PREDICTIONS) for condition in [conditions[key]]}
        sensors = {sensor.name: sensor._use_user_code_server  # no public accessor in 1.13
                   for sensor in defs.sensors or []
                   if isinstance(sensor, dg.AutomationConditionSensorDefinition)}
        return labels, sensors

    def switched(**switches: bool) -> UseCase:
        return dataclasses.replace(USE_CASE, automation=dataclasses.replace(
            USE_CASE.automation, **switches))

    assert built(USE_CASE) == (
        {"features/flights": "rerun after a day it looks back at was loaded again",
         "predictions/flights": "rescore after a change of champion, or after features"},
        {"flights_refresh_features_and_reports": True, "flights_rescore_stale_days": True})
    off = {"features/flights": None, "predictions/flights": "rescore after a change of champion"}
    assert built(switched(rerun_days_looking_back=False)) == (
        off, {"flights_refresh_features_and_reports": False, "flights_rescore_stale_days": True})
    # Features that read no earlier day: nothing to rerun.
    no_lookback = dataclasses.replace(USE_CASE, features=dataclasses.replace(
        USE_CASE.features, lookback_days=0))
    assert built(no_lookback)[0] == off
    # Only the days looking back: each condition keeps its sensor.
    assert built(switched(reports_follow_predictions=False,
                          rescore_after_champion_change=False)) == (
        {"features/flights": "rerun after a day it looks back at was loaded again",
         "predictions/flights": "after features, if scored"},
        {"flights_refresh_features_and_reports": True, "flights_rescore_stale_days": True})
