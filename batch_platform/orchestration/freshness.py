"""Partition-aware freshness: every landed day is scored and reported soon after it lands.

Days up to the end of the champion's validation window are its training and validation data,
not expected to be scored; every later day with landing files is.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from batch_platform.orchestration.assets import UseCaseAssets
from batch_platform.orchestration.checks import SEVERITY, metadata_value
from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.ingest import landing
from batch_platform.platform.models import registry
from batch_platform.platform.monitoring.audits import audit_partition_freshness
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.storage.warehouse import MissingDataError, partition_times
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings


def produced_at(settings: Settings, use_case: UseCase, table: str, column: str
                ) -> tuple[dict, dt.date | None]:
    """When each day of ``table`` was last written, as analysts see it; and the last day of
    the champion's validation window."""
    lake = lake_of(settings)
    if not lake.exists():
        return {}, None
    with lake.read_only() as con:
        try:
            valid_end = registry.resolve(con, use_case.name, settings.model_version
                                         )["valid_end"]
        except MissingDataError:
            valid_end = None
        return partition_times(con, table, column, newest=True), valid_end


def freshness_check(use_case: UseCase, name: str, asset: dg.AssetKey, table: str, column: str,
                    what: str) -> dg.AssetChecksDefinition:
    folders = [source.folder for source in use_case.sources.values()]

    @dg.asset_check(
        asset=asset, name=name,
        description=f"Every landed day after the champion's validation window is {what} within "
                    "checks.freshness_lag_minutes of its files landing.",
    )
    def _check(platform: PlatformResource) -> dg.AssetCheckResult:
        settings = platform.settings.resolved(use_case)
        assert settings.freshness_lag_minutes is not None
        produced, valid_end = produced_at(settings, use_case, table, column)
        landed = {day: at for day, at in landing.landed_at(settings.landing_dir, folders).items()
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


def freshness_checks(assets: UseCaseAssets) -> list[dg.AssetChecksDefinition]:
    use_case = assets.use_case
    return [
        freshness_check(use_case, "landed_partitions_scored", assets.predictions_key,
                        use_case.predictions_table, "scored_at", "scored"),
        freshness_check(use_case, "landed_partitions_reported", assets.report_key,
                        use_case.report_table, "reported_at", "reported"),
    ]
