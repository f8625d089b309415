"""The lake's upkeep, once for every use case: an asset on a daily schedule."""

import datetime as dt

import dagster as dg

from batch_platform.orchestration.resources import PlatformResource, WarehouseResource
from batch_platform.orchestration.stages import stage

# 09:30 UTC (04:30 or 05:30 in New York): after the shipped use cases' nightly runs (02:30 New
# York time). Maintenance is safe beside runs and sessions at any hour; it only competes for CPU.
MAINTENANCE_CRON = "30 9 * * *"


@dg.asset(
    key=["platform", "lake_maintenance"], group_name="platform", kinds={"duckdb"},
    description="Merges the lake's small files, expires snapshots older than "
                "BATCH_PLATFORM_LAKE_RETENTION_DAYS (default 7) and deletes the files no "
                "snapshot within it reads, and those of transactions that never committed. "
                "Time travel reaches back as far as the retention.",
)
@stage
def lake_maintenance(context: dg.AssetExecutionContext, platform: PlatformResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    days = platform.settings.lake_retention_days
    counts = warehouse.lake.maintain(dt.timedelta(days=days))
    return dg.MaterializeResult(metadata={"retention_days": days, **counts})


maintenance_job = dg.define_asset_job("lake_maintenance", selection=[lake_maintenance],
                                      description="The lake's daily upkeep.")
maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule", job=maintenance_job, cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 09:30 UTC: lake_maintenance.")


def maintenance_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[lake_maintenance], jobs=[maintenance_job],
                          schedules=[maintenance_schedule])
