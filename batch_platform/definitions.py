"""The Dagster definitions of the project: assets, jobs and resources, assembled."""

from __future__ import annotations

import dagster as dg

from batch_platform.orchestration.assets import ALL_ASSETS
from batch_platform.orchestration.automation import SCHEDULES, SENSORS, freshness_job
from batch_platform.orchestration.freshness import FRESHNESS_CHECKS
from batch_platform.orchestration.jobs import ALL_JOBS
from batch_platform.orchestration.resources import PlatformResource, warehouse_resource
from batch_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=FRESHNESS_CHECKS,
        jobs=[*ALL_JOBS, freshness_job],
        schedules=SCHEDULES,
        sensors=SENSORS,
        resources={
            "platform": PlatformResource.from_settings(settings),
            "warehouse": warehouse_resource(settings),
        },
    )


defs = build_definitions(Settings.from_env())
