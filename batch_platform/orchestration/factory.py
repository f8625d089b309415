"""Every Dagster definition of a use case, from its declaration: the one factory.

Assets of all five stages with their checks, jobs, sensors, schedules, freshness and automation
conditions; the resources are the platform's (``platform_resources``), shared by use cases.
"""

from __future__ import annotations

import dagster as dg

from batch_platform.orchestration.assets import UseCaseAssets
from batch_platform.orchestration.automation import use_case_automation
from batch_platform.orchestration.freshness import freshness_checks
from batch_platform.orchestration.jobs import lifecycle_jobs, use_case_jobs
from batch_platform.orchestration.resources import PlatformResource, warehouse_resource
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings


def use_case_definitions(use_case: UseCase) -> dg.Definitions:
    assets = UseCaseAssets(use_case)
    checks = freshness_checks(assets)
    jobs = use_case_jobs(assets)
    freshness_job = dg.define_asset_job(
        use_case.job_name("freshness"), selection=dg.AssetSelection.checks(*checks),
        description="The partition-aware freshness checks of predictions and reports.")
    daily_job, _, train_job, _ = jobs
    sensors, schedules = use_case_automation(assets, daily_job, freshness_job, train_job)
    return dg.Definitions(assets=assets.all(), asset_checks=checks,
                          jobs=[*jobs, freshness_job, *lifecycle_jobs(use_case, assets.model_key)],
                          sensors=sensors, schedules=schedules)


def platform_resources(settings: Settings) -> dict[str, object]:
    return {"platform": PlatformResource.from_settings(settings),
            "warehouse": warehouse_resource(settings)}
