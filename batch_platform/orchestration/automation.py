"""Running a use case unattended: its landing sensor, nightly schedule, freshness schedule, the
automation sensors that make its reports follow predictions and rescore the days a change of
champion made stale, and its retraining schedule. Each is on unless the declaration's
``automation`` switches it off, but the retraining schedule, which is off unless switched on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from batch_platform.orchestration.assets import UseCaseAssets
from batch_platform.orchestration.jobs import partition_range_tags
from batch_platform.orchestration.liveness import pending_undo
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.ingest import arrivals, landing
from batch_platform.platform.models import registry
from batch_platform.platform.models.rescoring import last_day_with_outcomes, trailing_windows
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.storage.warehouse import partition_times
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

RUNNING = dg.DefaultSensorStatus.RUNNING
LANDING_SENSOR_SECONDS = 30
FRESHNESS_CRON = "*/30 * * * *"
TRIGGER_TAG = "batch_platform/trigger"
DIGEST_TAG = "batch_platform/digest"
ATTEMPT_TAG = "batch_platform/attempt"
RETRY_OF_TAG = "batch_platform/retry_of"
# The runs the automation started, and so retries when they die: the sensor's, the nightly
# schedule's, and its own retries. A run someone started is theirs to run again.
AUTOMATED = ("landing", "nightly", "retry")
MAX_ATTEMPTS = 3  # a day whose run died three times in a row is left to the operator
RETRY_WITHIN = dt.timedelta(days=1)


def partition_days(use_case: UseCase, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    local_today = today or dt.datetime.now(ZoneInfo(use_case.partitions.timezone)).date()
    return use_case.partitions.start, use_case.partitions.last_day(local_today)


def ingested_at(settings: Settings, use_case: UseCase) -> dict[dt.date, dt.datetime]:
    """When each day was last loaded into the raw table of the rows source, as published.

    That source, not the others: any source of a day may hold no rows, and every loaded day
    has feature rows. A later file of another source makes the day's newest landing later.
    """
    lake = lake_of(settings)
    if not lake.exists():
        return {}
    with lake.read_only() as con:
        return partition_times(con, use_case.raw_table(use_case.features.rows_from),
                               "_ingested_at", newest=False)


def run_days(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """The first and last partition a run covers, from its tags; None for no partition."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG], tags[PARTITION_NAME_TAG]
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        return tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
    return None


def describe_request(request: dg.RunRequest) -> str:
    days = run_days(request.tags)
    what = "" if request.asset_selection is None else (
        " (" + ", ".join(key.to_user_string() for key in request.asset_selection) + ")")
    if days is None:
        return f"a run{what}"
    return (days[0] if days[0] == days[1] else f"{days[0]}..{days[1]}") + what


def retry_requests(instance: dg.DagsterInstance, job_name: str,
                   flow: Collection[dg.AssetKey] = ()) -> list[dg.RunRequest]:
    """A run the automation started that failed without any step failing (its process died,
    marked failed by the sweep or its code server; it never started) has its days requested
    again, unless they were run since. A run still STARTED is not: it is in progress.

    The automation's runs are those of ``job_name`` it tagged, and those its automation
    conditions launched (after a change of champion, or for the days that look back at a day
    loaded again) whose assets are all of ``flow``: those are requested again as a run of
    ``job_name`` with their assets and days."""
    from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
    from dagster._core.storage.tags import (
        AUTOMATION_CONDITION_TAG,
        PARTITION_NAME_TAG,
        RUN_FAILURE_REASON_TAG,
    )

    within = dt.datetime.now(dt.UTC) - RETRY_WITHIN
    failed = [*instance.get_run_records(dg.RunsFilter(
        job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE],
        tags={TRIGGER_TAG: list(AUTOMATED)}, updated_after=within))]
    if flow:
        failed += [record for record in instance.get_run_records(dg.RunsFilter(
            job_name=IMPLICIT_ASSET_JOB_NAME, statuses=[dg.DagsterRunStatus.FAILURE],
            tags={AUTOMATION_CONDITION_TAG: "true"}, updated_after=within))
            if record.dagster_run.asset_selection
            and record.dagster_run.asset_selection <= set(flow)]
    requests = []
    for record in failed:
        run = record.dagster_run
        days = run_days(run.tags)
        attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
        if (days is None or attempt >= MAX_ATTEMPTS
                or run.tags.get(RUN_FAILURE_REASON_TAG) == "STEP_FAILURE"):
            continue  # a step failed: bad input or a check, which running again cannot fix
        first, last = days
        day_tags = partition_range_tags(first, last)
        same_days = [day_tags, {PARTITION_NAME_TAG: first}] if first == last else [day_tags]
        since = [later for job in {job_name, run.job_name} for tags in same_days
                 for later in instance.get_run_records(dg.RunsFilter(
                     job_name=job, tags=tags, created_after=record.create_timestamp), limit=10)
                 # The asset job runs every use case's assets: only those of the same ones
                 # (no selection, None or empty, is the whole job).
                 if not later.dagster_run.asset_selection or not run.asset_selection
                 or later.dagster_run.asset_selection & run.asset_selection]
        if since:
            continue  # run again since (by the automation, or `score --date`)
        tags = {TRIGGER_TAG: "retry", ATTEMPT_TAG: str(attempt + 1), RETRY_OF_TAG: run.run_id}
        if DIGEST_TAG in run.tags:
            tags[DIGEST_TAG] = run.tags[DIGEST_TAG]
        # A run of the job runs again whole; one of the conditions' runs, with its assets.
        selection = (sorted(run.asset_selection, key=str)
                     if run.job_name != job_name and run.asset_selection else None)
        if first == last:
            requests.append(dg.RunRequest(run_key=f"retry-{run.run_id}", partition_key=first,
                                          tags=tags, asset_selection=selection))
        else:  # a range is one run (single-run backfill policies)
            requests.append(dg.RunRequest(run_key=f"retry-{run.run_id}", tags=tags | day_tags,
                                          asset_selection=selection))
    return requests


def landing_sensor(use_case: UseCase, job: UnresolvedAssetJobDefinition
                   ) -> dg.SensorDefinition:
    folders = [source.folder for source in use_case.sources.values()]
    flow = UseCaseAssets(use_case).daily_flow()

    @dg.sensor(
        name=f"{use_case.name}_landing_sensor", job=job, default_status=RUNNING,
        minimum_interval_seconds=LANDING_SENSOR_SECONDS,
        description=f"A new or changed day under the landing directory ({', '.join(folders)} "
                    "all there) requests one run of that partition, raw to reports. Files are "
                    "compared by content; files younger than "
                    "BATCH_PLATFORM_LANDING_SETTLE_SECONDS wait for the next tick. A day whose "
                    "run by the automation died (the sensor's, the nightly's, or one its "
                    "automation conditions launched) is requested again (three attempts in "
                    "all).",
    )
    def _sensor(context: dg.SensorEvaluationContext, platform: PlatformResource
                ) -> dg.SensorResult:
        settings = platform.settings
        first_day, last_day = partition_days(use_case)
        first_tick = context.cursor is None
        scan = arrivals.scan(settings.landing_dir, arrivals.decode_cursor(context.cursor),
                             first_day, last_day, dt.datetime.now(dt.UTC),
                             settings.landing_settle_seconds, folders,
                             {source.folder: source.complete_when
                              for source in use_case.sources.values()})
        for message in scan.ignored:
            context.log.warning(f"ignored {message}")
        for message in scan.waiting:
            context.log.info(message)
        # Days already loaded after their files landed (by `make demo`, a backfill, an
        # earlier sensor) are not new: recorded as seen without a run.
        loaded = ingested_at(settings, use_case) if scan.arrivals else {}
        requests = []
        for arrival in scan.arrivals:
            if arrival.day in loaded and loaded[arrival.day] >= arrival.landed_at:
                continue
            requests.append(dg.RunRequest(
                run_key=f"{arrival.day}-{arrival.digest[:16]}",
                partition_key=arrival.day.isoformat(),
                tags={TRIGGER_TAG: "landing", DIGEST_TAG: arrival.digest[:16]}))
        skipped = len(scan.arrivals) - len(requests)
        retries = retry_requests(context.instance, job.name, flow)
        # A run failed by its code server is undone by the next sweep: its day waits for it.
        undoing = pending_undo(settings, [retry.tags[RETRY_OF_TAG] for retry in retries])
        for retry in retries:
            if retry.tags[RETRY_OF_TAG] in undoing:
                context.log.info(f"{describe_request(retry)}: run {retry.tags[RETRY_OF_TAG]} "
                                 "died; requested again once the sweep has undone it")
                continue
            context.log.warning(f"{describe_request(retry)}: run {retry.tags[RETRY_OF_TAG]} "
                                f"died, requested again (attempt {retry.tags[ATTEMPT_TAG]})")
        retries = [r for r in retries if r.tags[RETRY_OF_TAG] not in undoing]
        # A day landed again is run whole: its retry would be part of that run.
        requests += [r for r in retries if r.partition_key is None or r.partition_key not in
                     {request.partition_key for request in requests}]
        context.log.info(f"{len(requests)} partition(s) requested, {skipped} already loaded"
                         + (" (first tick)" if first_tick else ""))
        return dg.SensorResult(run_requests=requests, cursor=arrivals.encode_cursor(scan.seen))

    return _sensor


def nightly_schedule(use_case: UseCase, job: UnresolvedAssetJobDefinition
                     ) -> dg.ScheduleDefinition:
    timezone = use_case.partitions.timezone

    @dg.schedule(
        name=f"{use_case.name}_nightly_schedule", job=job,
        cron_schedule=use_case.partitions.nightly_cron, execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At {use_case.partitions.nightly_cron} ({timezone}), the previous day's "
                    "partition, raw to reports: a safety net for days the landing sensor "
                    "missed (rerunning a day is idempotent).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, platform: PlatformResource
                  ) -> dg.RunRequest | dg.SkipReason:
        settings = platform.settings
        tick = context.scheduled_execution_time.astimezone(ZoneInfo(timezone))
        day = tick.date() - dt.timedelta(days=1)
        first_day, last_day = partition_days(use_case, tick.date())
        if not first_day <= day <= last_day:
            return dg.SkipReason(f"{day} is not a partition ({first_day}..{last_day})")
        files = [landing.landing_file(settings.landing_dir, source.folder, day)
                 for source in use_case.sources.values()]
        absent = [str(path) for path in files if not path.is_file()]
        if absent:
            return dg.SkipReason(f"{day} has not landed: no {', '.join(absent)}")
        return dg.RunRequest(run_key=f"nightly-{day}", partition_key=day.isoformat(),
                             tags={TRIGGER_TAG: "nightly"})

    return _schedule


def retraining_schedule(use_case: UseCase, model_key: dg.AssetKey,
                        job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """On its cron, the model asset trains a challenger on the declared trailing window, ending
    at the last day whose outcomes are known; the champion stays until a promotion."""
    retraining = use_case.automation.retraining
    timezone = use_case.partitions.timezone

    @dg.schedule(
        name=f"{use_case.name}_retraining_schedule", job=job,
        cron_schedule=retraining.cron, execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At {retraining.cron} ({timezone}), train a challenger on the "
                    f"{retraining.window_days} days ending at the last day with outcomes, "
                    f"the last {retraining.validation_days} of them for validation.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, platform: PlatformResource
                  ) -> dg.RunRequest | dg.SkipReason:
        lake = lake_of(platform.settings)
        if not lake.exists():
            return dg.SkipReason(f"no warehouse yet: nothing to train {use_case.name} on")
        with lake.read_only() as con:
            champion = registry.champion_version(con, use_case.name)
            last_day = last_day_with_outcomes(con, use_case)
        if champion is None:
            return dg.SkipReason(f"{use_case.name} has no champion yet: a challenger is judged "
                                 "against one (batch-platform train)")
        if last_day is None:
            return dg.SkipReason(f"{use_case.features_table} has no day with outcomes yet")
        windows = trailing_windows(last_day, retraining.window_days, retraining.validation_days,
                                   use_case.partitions.start)
        if windows is None:
            return dg.SkipReason(
                f"the last day with outcomes, {last_day}, leaves no training day before the "
                f"{retraining.validation_days} validation days after {use_case.partitions.start}")
        (train_start, train_end), (valid_start, valid_end) = windows
        config: dict[str, object] = {
            "train_start": train_start.isoformat(), "train_end": train_end.isoformat(),
            "valid_start": valid_start.isoformat(), "valid_end": valid_end.isoformat(),
            "challenger": True}
        if retraining.rounds is not None:
            config["rounds"] = retraining.rounds
        # One challenger per window: the same last day next month trains nothing again.
        return dg.RunRequest(
            run_key=f"retraining-{train_start}..{valid_end}",
            run_config={"ops": {model_key.to_python_identifier(): {"config": config}}},
            tags={TRIGGER_TAG: "retraining"})

    return _schedule


def use_case_automation(assets: UseCaseAssets, daily_job: UnresolvedAssetJobDefinition,
                        freshness_job: UnresolvedAssetJobDefinition,
                        train_job: UnresolvedAssetJobDefinition
                        ) -> tuple[list[dg.SensorDefinition], list[dg.ScheduleDefinition]]:
    use_case = assets.use_case
    switches = use_case.automation
    sensors: list[dg.SensorDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    predictions = dg.AssetSelection.assets(assets.predictions_key)
    if switches.landing_sensor:
        sensors.append(landing_sensor(use_case, daily_job))
    lookback = assets.reruns_days_looking_back
    if switches.reports_follow_predictions or lookback:
        # Predictions have a sensor of their own: an asset is evaluated by one sensor only.
        sensors.append(dg.AutomationConditionSensorDefinition(
            f"{use_case.name}_refresh_features_and_reports",
            target=dg.AssetSelection.groups(use_case.group) - predictions,
            default_status=RUNNING, minimum_interval_seconds=30,
            # The condition on features is the platform's own: evaluated in the code server.
            use_user_code_server=lookback,
            description="Evaluates the automation conditions of this use case's assets but "
                        "predictions: "
                        + " ".join(what for on, what in (
                            (switches.reports_follow_predictions,
                             "reports follow any update of predictions."),
                            (lookback, f"After a day is loaded again, the features of the "
                                       f"{use_case.features.lookback_days} day(s) after it "
                                       "that read it are requested once.")) if on)))
    if switches.rescore_after_champion_change or lookback:
        sensors.append(dg.AutomationConditionSensorDefinition(
            f"{use_case.name}_rescore_stale_days", target=predictions,
            default_status=RUNNING, minimum_interval_seconds=30,
            # The condition reads the lake: evaluated in the code server, not the daemon.
            use_user_code_server=True,
            description=" ".join(what for on, what in (
                (switches.rescore_after_champion_change,
                 "After a change of champion, requests each scored day it should score again "
                 "once: the days after its validation window that hold predictions by another "
                 "version."),
                (lookback, "A scored day whose features were updated is scored again.")) if on)))
    if switches.retraining_schedule:
        schedules.append(retraining_schedule(use_case, assets.model_key, train_job))
    if switches.nightly_schedule:
        schedules.append(nightly_schedule(use_case, daily_job))
    if switches.freshness_schedule:
        schedules.append(dg.ScheduleDefinition(
            name=f"{use_case.name}_freshness_schedule", job=freshness_job,
            cron_schedule=FRESHNESS_CRON, execution_timezone=use_case.partitions.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Every 30 minutes: is every landed day scored and reported in time?"))
    return sensors, schedules
