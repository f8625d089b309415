"""A run whose process dies: the sweep marks it failed (or finds it failed by its code server)
and undoes what it committed, and the landing sensor requests its day again; a run still going
is left alone.

The killed run is real: ``crash_run`` executes the daily job in a subprocess, recorded in the
test's Dagster instance as the landing sensor would start it, and SIGKILLs itself once raw's
commit returned, before features run (killed between steps)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test
from dagster._serdes import serialize_value

from batch_platform.orchestration.automation import (
    ATTEMPT_TAG,
    DIGEST_TAG,
    RETRY_OF_TAG,
    TRIGGER_TAG,
    landing_sensor,
    retry_requests,
)
from batch_platform.orchestration.jobs import partition_range_tags
from batch_platform.orchestration.liveness import DIED_TAG, HOST_TAG, PID_TAG, sweep
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.files import process_gone
from batch_platform.settings import Settings
from batch_platform_tests.conftest import LINEAGE_COLUMNS, Platform, partition_snapshot
from batch_platform_tests.flights import USE_CASE
from batch_platform_tests.orchestration.test_crashes import DAY, crash

TABLES = tuple(LINEAGE_COLUMNS)  # every table of the day, raw and quarantine of both sources
JOB = dg.define_asset_job("flights_daily")


def tick(settings: Settings, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """One tick of the landing sensor, as the daemon evaluates it."""
    context = dg.build_sensor_context(instance=instance, resources={
        "platform": PlatformResource.from_settings(settings)})
    return landing_sensor(USE_CASE, JOB)(context).run_requests


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_process_is_gone_when_it_ended_or_its_pid_was_reused() -> None:
    assert process_gone(dead_pid(), time.time() - 60)
    assert not process_gone(os.getpid(), time.time())
    # The pid is held by a process that started after the run did: not the run's process.
    assert process_gone(os.getpid(), time.time() - 3600 * 24 * 365 * 50)


def test_the_sweep_fails_only_runs_of_this_host_whose_process_is_gone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data").validated()  # no lake: nothing to undo
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def started(host: str, pid: int) -> str:
            run = create_run_for_test(instance, job_name="flights_daily",
                                      status=dg.DagsterRunStatus.STARTED,
                                      tags={HOST_TAG: host, PID_TAG: str(pid)})
            return run.run_id

        here = socket.gethostname()
        dead = started(here, dead_pid())
        alive = started(here, os.getpid())
        elsewhere = started(f"not-{here}", dead_pid())
        swept = sweep(instance, settings)
        assert [(s.run_id, s.marked_failed, s.restored) for s in swept] == [(dead, True, ())]
        status = {run_id: instance.get_run_by_id(run_id).status
                  for run_id in (dead, alive, elsewhere)}
        assert status == {dead: dg.DagsterRunStatus.FAILURE,
                          alive: dg.DagsterRunStatus.STARTED,
                          elsewhere: dg.DagsterRunStatus.STARTED}
        assert sweep(instance, settings) == []  # swept once


def test_only_the_automations_runs_that_died_are_requested_again(tmp_path: Path) -> None:
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def failed(day: str, reason: str, **tags: str) -> str:
            return create_run_for_test(
                instance, job_name="flights_daily", status=dg.DagsterRunStatus.FAILURE,
                tags={"dagster/partition": day, "dagster/failure_reason": reason} | tags).run_id

        died = failed("2013-01-10", "UNEXPECTED_TERMINATION", **{TRIGGER_TAG: "landing"})
        failed("2013-01-11", "STEP_FAILURE", **{TRIGGER_TAG: "landing"})  # bad input: not
        failed("2013-01-12", "UNEXPECTED_TERMINATION")  # started by someone: theirs to rerun
        failed("2013-01-13", "UNEXPECTED_TERMINATION", **{TRIGGER_TAG: "retry",
                                                          ATTEMPT_TAG: "3"})  # tried 3 times
        failed("2013-01-14", "UNEXPECTED_TERMINATION", **{TRIGGER_TAG: "nightly"})
        failed("2013-01-15", "UNEXPECTED_TERMINATION", **{TRIGGER_TAG: "landing"})
        for rerun in ({"dagster/partition": "2013-01-14"},  # run again since, by the sensor
                      partition_range_tags("2013-01-15", "2013-01-15")):  # by `score --date`
            create_run_for_test(instance, job_name="flights_daily",
                                status=dg.DagsterRunStatus.SUCCESS, tags=rerun)
        [retry] = retry_requests(instance, "flights_daily")
        assert (retry.partition_key, retry.run_key, retry.tags[ATTEMPT_TAG]) == (
            "2013-01-10", f"retry-{died}", "2")


def test_a_rescoring_run_whose_process_died_is_requested_again_once(tmp_path: Path) -> None:
    """The automation conditions' runs (a rescoring after a promotion, a backfill of days) are
    runs of the asset job, tagged by Dagster, not by the platform."""
    from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG

    settings = Settings(data_dir=tmp_path / "data").validated()  # no lake: nothing to undo
    (tmp_path / "instance").mkdir()
    here = socket.gethostname()
    predictions = dg.AssetKey(["predictions", "flights"])
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def run(status: dg.DagsterRunStatus, days: tuple[str, str], key: dg.AssetKey,
                job: str = "__ASSET_JOB", **tags: str) -> str:
            return create_run_for_test(
                instance, job_name=job, status=status, asset_selection=frozenset({key}),
                tags={AUTOMATION_CONDITION_TAG: "true", **partition_range_tags(*days),
                      **tags}).run_id

        process = {HOST_TAG: here, PID_TAG: str(dead_pid())}
        died = run(dg.DagsterRunStatus.STARTED, ("2013-01-18", "2013-01-21"), predictions,
                   **process)
        # Not requested again: a step failed; another use case's; the automation's own retry
        # that died on its third attempt.
        run(dg.DagsterRunStatus.FAILURE, ("2013-01-15", "2013-01-15"), predictions,
            **{"dagster/failure_reason": "STEP_FAILURE"})
        run(dg.DagsterRunStatus.STARTED, ("2013-01-18", "2013-01-21"),
            dg.AssetKey(["predictions", "temperature"]), **process)
        run(dg.DagsterRunStatus.FAILURE, ("2013-01-11", "2013-01-12"), predictions,
            job="flights_daily", **{TRIGGER_TAG: "retry", ATTEMPT_TAG: "3",
                                    "dagster/failure_reason": "UNEXPECTED_TERMINATION"})
        assert tick(settings, instance) == []  # STARTED: in progress
        swept = sweep(instance, settings)
        assert died in {s.run_id for s in swept}
        assert instance.get_run_by_id(died).tags["dagster/failure_reason"] == (
            "UNEXPECTED_TERMINATION")

        [retry] = tick(settings, instance)
        assert (retry.run_key, retry.partition_key, retry.asset_selection) == (
            f"retry-{died}", None, [predictions])
        assert retry.tags == {TRIGGER_TAG: "retry", ATTEMPT_TAG: "2", RETRY_OF_TAG: died,
                              **partition_range_tags("2013-01-18", "2013-01-21")}
        # The daemon launches it once (its run key); once it ran, nothing more.
        create_run_for_test(instance, job_name="flights_daily", tags=retry.tags,
                            asset_selection=frozenset(retry.asset_selection),
                            status=dg.DagsterRunStatus.SUCCESS)
        assert tick(settings, instance) == []


@pytest.mark.slow
@pytest.mark.parametrize("failed_by", ["the sweep", "its code server"])
def test_a_run_killed_between_steps_is_failed_undone_and_its_day_retried(
    own_platform: Platform, failed_by: str,
) -> None:
    instance, settings = own_platform.instance, own_platform.settings
    before = partition_snapshot(own_platform, TABLES, [DAY])
    clean = partition_snapshot(own_platform, TABLES, [DAY], without_lineage=True)
    crash(own_platform, "flights_daily", "raw.flights", "after_commit", env={
        "CRASH_RUN_INSTANCE": serialize_value(instance.get_ref()),
        "CRASH_RUN_TAGS": f'{{"{TRIGGER_TAG}": "landing", "{DIGEST_TAG}": "0123456789abcdef"}}'})

    [killed] = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    run_id = killed.dagster_run.run_id
    killed_at = partition_snapshot(own_platform, TABLES, [DAY])
    assert not killed_at["raw.flights"].equals(before["raw.flights"])  # raw was committed
    assert killed_at["features.flights"].equals(before["features.flights"])  # features not
    assert tick(settings, instance) == []  # STARTED: in progress, not requested again

    if failed_by == "its code server":  # as Dagster's does when a run worker it launched dies
        instance.report_run_failed(killed.dagster_run)
        assert tick(settings, instance) == []  # its day waits for the sweep to undo it
    [swept] = sweep(instance, settings)
    assert swept.run_id == run_id and swept.marked_failed == (failed_by == "the sweep")
    assert "raw.flights" in {r.table for r in swept.restored if not r.left_as_is}
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    if failed_by == "the sweep":
        assert run.tags[DIED_TAG] == "true"
        assert run.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    after = partition_snapshot(own_platform, TABLES, [DAY])
    for table in TABLES:
        assert after[table].equals(before[table]), f"{table} is not as before the killed run"
    assert sweep(instance, settings) == []  # undone once

    # The landing sensor requests the day again, once; the rerun is exact.
    [retry] = tick(settings, instance)
    assert retry.partition_key == DAY.isoformat() and retry.run_key == f"retry-{run_id}"
    assert (retry.tags[TRIGGER_TAG], retry.tags[ATTEMPT_TAG], retry.tags[RETRY_OF_TAG]) == (
        "retry", "2", run_id)
    result = own_platform.defs.resolve_job_def("flights_daily").execute_in_process(
        instance=instance, partition_key=retry.partition_key, tags=retry.tags)
    assert result.success
    rerun = partition_snapshot(own_platform, TABLES, [DAY], without_lineage=True)
    for table in TABLES:
        assert rerun[table].equals(clean[table]), f"{table} differs from a clean run"
    assert tick(settings, instance) == []  # run again since: nothing more to retry
