"""Partition-aware freshness: every landed day is scored and reported soon after it lands.

Days up to the end of the champion's validation window are its training and validation data,
not expected to be scored; every later day with landing files is.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from batch_platform.orchestration.assets import flights_daily_report, flights_predictions
from batch_platform.orchestration.checks import SEVERITY, metadata_value
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.features.spec import FLIGHTS
from batch_platform.platform.ingest import landing
from batch_platform.platform.models import registry
from batch_platform.platform.monitoring.audits import audit_partition_freshness
from batch_platform.platform.storage.warehouse import MissingDataError, partition_times, read_only
from batch_platform.settings import Settings


def produced_at(settings: Settings, table: str, column: str) -> tuple[dict, dt.date | None]:
    """When each day of ``table`` was last written, as analysts see it; and the last day of
    the champion's validation window."""
    if not settings.warehouse_path.exists():
        return {}, None
    with read_only(settings.warehouse_path) as con:
        try:
            valid_end = registry.resolve(con, FLIGHTS.use_case, settings.model_version
                                         )["valid_end"]
        except MissingDataError:
            valid_end = None
        return partition_times(con, table, column, newest=True), valid_end


def freshness_check(name: str, asset: dg.AssetsDefinition, table: str, column: str,
                    what: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset, name=name,
        description=f"Every landed day after the champion's validation window is {what} within "
                    "BATCH_PLATFORM_FRESHNESS_LAG_MINUTES of its files landing.",
    )
    def _check(platform: PlatformResource) -> dg.AssetCheckResult:
        settings = platform.settings
        produced, valid_end = produced_at(settings, table, column)
        landed = {day: at for day, at in landing.landed_at(settings.landing_dir).items()
                  if valid_end is not None and day > valid_end}
        audit = audit_partition_freshness(
            name, landed, produced, dt.datetime.now(dt.UTC),
            dt.timedelta(minutes=settings.freshness_lag_minutes))
        return dg.AssetCheckResult(
            passed=audit.passed, severity=SEVERITY[audit.severity],
            description=audit.description,
            metadata={"expected_after": str(valid_end) if valid_end else "no champion yet",
                      **{k: metadata_value(v) for k, v in audit.metadata.items()}})

    return _check


landed_partitions_scored = freshness_check(
    "landed_partitions_scored", flights_predictions, "predictions.flights", "scored_at", "scored")
landed_partitions_reported = freshness_check(
    "landed_partitions_reported", flights_daily_report, "reports.flights_daily", "reported_at",
    "reported")
FRESHNESS_CHECKS = [landed_partitions_scored, landed_partitions_reported]
