"""The lake's upkeep, once for every use case: an asset on a daily schedule."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from batch_platform.orchestration.resources import PlatformResource, WarehouseResource

MAINTENANCE_CRON = "30 4 * * *"  # after the nightly runs, before people read the reports


@dg.asset(
    key=["platform", "lake_maintenance"], group_name="platform", kinds={"duckdb"},
    description="Merges the lake's small files, expires snapshots older than "
                "BATCH_PLATFORM_LAKE_RETENTION_DAYS (default 7) and deletes the files no "
                "snapshot within it reads, and those of transactions that never committed. "
                "Time travel reaches back as far as the retention.",
)
def lake_maintenance(platform: PlatformResource, warehouse: WarehouseResource
                     ) -> dg.MaterializeResult:
    days = platform.settings.lake_retention_days
    counts = warehouse.lake.maintain(dt.timedelta(days=days))
    return dg.MaterializeResult(metadata={"retention_days": days, **counts})


maintenance_job = dg.define_asset_job("lake_maintenance", selection=[lake_maintenance],
                                      description="The lake's daily upkeep.")
maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule", job=maintenance_job, cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:30 UTC: lake_maintenance.")


def maintenance_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[lake_maintenance], jobs=[maintenance_job],
                          schedules=[maintenance_schedule])
