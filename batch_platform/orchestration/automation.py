"""Running unattended: the landing sensor, the nightly schedule, the freshness schedule and
the automation sensor that makes reports follow predictions. All run by default."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from batch_platform.orchestration.freshness import FRESHNESS_CHECKS
from batch_platform.orchestration.jobs import daily_flow_job
from batch_platform.orchestration.partitions import DATA_TIMEZONE, daily_partitions
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.ingest import arrivals, landing
from batch_platform.platform.storage.warehouse import partition_times, read_only
from batch_platform.settings import Settings

RUNNING = dg.DefaultSensorStatus.RUNNING
LANDING_SENSOR_SECONDS = 30
NIGHTLY_CRON = "30 2 * * *"  # 02:30 in the data's time zone: the previous day is complete
FRESHNESS_CRON = "*/30 * * * *"


def partition_days() -> tuple[dt.date, dt.date]:
    keys = daily_partitions.get_partition_keys()
    return dt.date.fromisoformat(keys[0]), dt.date.fromisoformat(keys[-1])


def ingested_at(settings: Settings) -> dict[dt.date, dt.datetime]:
    """When each day was last loaded into raw.flights, as published.

    Flights, not weather: a day's weather file may hold no rows (2013-12-31 does), and every
    loaded day has flights. A later weather file makes the day's newest landing time later.
    """
    if not settings.warehouse_path.exists():
        return {}
    with read_only(settings.warehouse_path) as con:
        return partition_times(con, "raw.flights", "_ingested_at", newest=False)


@dg.sensor(
    name="landing_sensor", job=daily_flow_job, default_status=RUNNING,
    minimum_interval_seconds=LANDING_SENSOR_SECONDS,
    description="A new or changed day under the landing directory (flights and weather both "
                "there) requests one run of that partition, raw to reports. Files are compared "
                "by content; files younger than BATCH_PLATFORM_LANDING_SETTLE_SECONDS wait for "
                "the next tick.",
)
def landing_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource
                   ) -> dg.SensorResult:
    settings = platform.settings
    first_day, last_day = partition_days()
    first_tick = context.cursor is None
    scan = arrivals.scan(settings.landing_dir, arrivals.decode_cursor(context.cursor),
                         first_day, last_day, dt.datetime.now(dt.UTC),
                         settings.landing_settle_seconds)
    for message in scan.ignored:
        context.log.warning(f"ignored {message}")
    for message in scan.waiting:
        context.log.info(message)
    # Days already loaded after their files landed (by `make demo`, a backfill, an
    # earlier sensor) are not new: recorded as seen without a run.
    loaded = ingested_at(settings) if scan.arrivals else {}
    requests = []
    for arrival in scan.arrivals:
        if arrival.day in loaded and loaded[arrival.day] >= arrival.landed_at:
            continue
        requests.append(dg.RunRequest(
            run_key=f"{arrival.day}-{arrival.digest[:16]}",
            partition_key=arrival.day.isoformat(),
            tags={"batch_platform/trigger": "landing", "batch_platform/digest":
                  arrival.digest[:16]}))
    skipped = len(scan.arrivals) - len(requests)
    context.log.info(f"{len(requests)} partition(s) requested, {skipped} already loaded"
                     + (" (first tick)" if first_tick else ""))
    return dg.SensorResult(run_requests=requests,
                           cursor=arrivals.encode_cursor(scan.seen))


@dg.schedule(
    name="nightly_schedule", job=daily_flow_job, cron_schedule=NIGHTLY_CRON,
    execution_timezone=DATA_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 02:30 New York time, the previous day's partition, raw to reports: a safety "
                "net for days the landing sensor missed (rerunning a day is idempotent).",
)
def nightly_schedule(context: dg.ScheduleEvaluationContext, platform: PlatformResource
                     ) -> dg.RunRequest | dg.SkipReason:
    settings = platform.settings
    tick = context.scheduled_execution_time.astimezone(ZoneInfo(DATA_TIMEZONE))
    day = tick.date() - dt.timedelta(days=1)
    first_day, last_day = partition_days()
    if not first_day <= day <= last_day:
        return dg.SkipReason(f"{day} is not a partition ({first_day}..{last_day})")
    absent = [str(landing.landing_file(settings.landing_dir, source, day))
              for source in landing.DAILY_SOURCES
              if not landing.landing_file(settings.landing_dir, source, day).is_file()]
    if absent:
        return dg.SkipReason(f"{day} has not landed: no {', '.join(absent)}")
    return dg.RunRequest(run_key=f"nightly-{day}", partition_key=day.isoformat(),
                         tags={"batch_platform/trigger": "nightly"})


freshness_job = dg.define_asset_job(
    "flights_freshness", selection=dg.AssetSelection.checks(*FRESHNESS_CHECKS),
    description="The partition-aware freshness checks of predictions and reports.")

freshness_schedule = dg.ScheduleDefinition(
    name="freshness_schedule", job=freshness_job, cron_schedule=FRESHNESS_CRON,
    execution_timezone=DATA_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 30 minutes: is every landed day scored and reported in time?")

automation_sensor = dg.AutomationConditionSensorDefinition(
    "reports_follow_predictions", target=dg.AssetSelection.all(),
    default_status=RUNNING, minimum_interval_seconds=30,
    description="Evaluates automation conditions: reports follow any update of predictions.")

SENSORS = [landing_sensor, automation_sensor]
SCHEDULES = [nightly_schedule, freshness_schedule]
