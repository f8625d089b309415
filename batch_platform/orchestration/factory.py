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


def _forkserver_by_default(config: dict) -> dict:
    [(mode, options)] = config.items()
    if mode == "multiprocess":
        options = {"start_method": {"forkserver": {}}, **(options or {})}
    return {mode: options}


# Dagster's default executor, whose multiprocess mode starts each step from a fork server that
# has imported the job's module once (Dagster's own option), instead of a fresh interpreter per
# step importing Dagster, Polars and DuckDB again (about 2 s of CPU a step). The run config
# still chooses `in_process`, or `multiprocess` with its own `start_method`.
platform_executor = dg.multi_or_in_process_executor.configured(
    _forkserver_by_default, name="multi_or_in_process_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema.as_field())


def platform_resources(settings: Settings) -> dict[str, object]:
    return {"platform": PlatformResource.from_settings(settings),
            "warehouse": warehouse_resource(settings)}
