"""Jobs: named selections of a use case's assets that the CLI, schedules and operators launch,
and the changes of champion as jobs with config."""

# No ``from __future__ import annotations``: Dagster reads an op's config class from its
# annotation when the op is defined, and cannot resolve it from a string.

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from batch_platform.orchestration.assets import DAILY_FLOW_TAG, UseCaseAssets
from batch_platform.orchestration.rescoring import champion_materialization
from batch_platform.orchestration.resources import PlatformResource, WarehouseResource
from batch_platform.platform.models import lifecycle
from batch_platform.platform.use_case import UseCase

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )


def use_case_jobs(assets: UseCaseAssets) -> list["UnresolvedAssetJobDefinition"]:
    """``<use case>_daily``, ``_features``, ``_train`` and ``_predict``; each selects only its
    own use case's assets, so use cases never share a run."""
    use_case = assets.use_case
    group = dg.AssetSelection.groups(use_case.group)
    daily = group & dg.AssetSelection.tag(DAILY_FLOW_TAG, use_case.name)
    scoring = dg.AssetSelection.assets(assets.predictions_key, assets.report_key)
    return [
        dg.define_asset_job(
            use_case.job_name("daily"), selection=daily,
            description="Raw to reports for a day or a range of days, as one run."),
        dg.define_asset_job(
            use_case.job_name("features"),
            selection=daily.required_multi_asset_neighbors() - scoring,
            description="Reference, raw and features: what training needs."),
        dg.define_asset_job(
            use_case.job_name("train"), selection=dg.AssetSelection.assets(assets.model_key),
            description="Train (or register a model file you bring) and make it the champion."),
        dg.define_asset_job(
            use_case.job_name("predict"), selection=scoring,
            description="Score and report days whose features are already materialized."),
    ]


class PromoteConfig(dg.Config):
    """Promote the challenger ``version`` to champion if the gate allows it."""

    version: str = Field(description="the challenger's model version (batch-platform models "
                                     "lists it)")
    reason: str = Field(description="why: recorded in models.promotions")
    force: bool = Field(default=False, description="promote even if the gate refuses; the "
                                                   "verdict is recorded all the same")


class RollbackConfig(dg.Config):
    """Make the champion before the current one champion again."""

    reason: str = Field(description="why: recorded in models.promotions")


def lifecycle_jobs(use_case: UseCase, model_key: dg.AssetKey) -> list[dg.JobDefinition]:
    """``<use case>_promote`` and ``<use case>_rollback``: the changes of champion of
    ``batch-platform models promote`` and ``models rollback``, launched with config from the
    UI. Each is one op that calls ``platform/models/lifecycle.py``; the actor recorded in
    models.promotions is the run. The op records the model asset's new data version (the new
    champion's), so Dagster sees which scored days are now stale."""

    def report(context: dg.OpExecutionContext, change: lifecycle.Change) -> dg.Output:
        promotion = change.promotion
        context.log_event(champion_materialization(model_key, promotion))
        summary = change.verdict.summary if change.verdict else "the gate was not asked"
        context.log.info(f"{promotion.action}: {promotion.model_version} is the champion of "
                         f"{use_case.name} (was {promotion.previous_champion}); {summary}")
        return dg.Output(None, metadata={
            "action": promotion.action, "champion": promotion.model_version,
            "previous_champion": promotion.previous_champion or "none",
            "forced": promotion.forced, "reason": promotion.reason, "gate": summary})

    @dg.op(name=f"{use_case.name}_promote_model",
           description=f"Judge the challenger of {use_case.name} on realised outcomes and "
                       "promote it to champion if the gate allows it, or if forced.")
    def promote(context: dg.OpExecutionContext, config: PromoteConfig,
                platform: PlatformResource, warehouse: WarehouseResource) -> dg.Output:
        settings = platform.settings
        return report(context, lifecycle.promote(
            warehouse.lake, use_case, config.version, config.reason,
            f"dagster run {context.run_id}", config.force, lifecycle.gate_thresholds(settings),
            data_dir=settings.data_dir, models_dir=settings.models_dir,
            details={"run_id": context.run_id}))

    @dg.op(name=f"{use_case.name}_rollback_model",
           description=f"Make the previous champion of {use_case.name} champion again.")
    def rollback(context: dg.OpExecutionContext, config: RollbackConfig,
                 platform: PlatformResource, warehouse: WarehouseResource) -> dg.Output:
        settings = platform.settings
        return report(context, lifecycle.rollback(
            warehouse.lake, use_case, config.reason, f"dagster run {context.run_id}",
            data_dir=settings.data_dir, models_dir=settings.models_dir,
            details={"run_id": context.run_id}))

    @dg.job(name=use_case.job_name("promote"),
            description="Promote the challenger through the gate (config: version, reason, "
                        "force).")
    def promote_job() -> None:
        promote()

    @dg.job(name=use_case.job_name("rollback"),
            description="Return to the previous champion (config: reason).")
    def rollback_job() -> None:
        rollback()

    return [promote_job, rollback_job]


def partition_range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make one run of a single-run-backfill job cover ``start``..``end``."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


@dataclass(frozen=True)
class StepFailure:
    """Why a step failed: the error under Dagster's wrappers, and its whole traceback chain."""

    step: str
    error: str  # the error's class name
    message: str  # its message, on one line, without the module path Dagster prefixes
    traceback: str

    def __str__(self) -> str:
        return f"{self.step}: {self.error}: {self.message}"


def step_failures(result: dg.ExecuteInProcessResult) -> list[StepFailure]:
    """The errors that failed a run's steps, unwrapped from Dagster's wrappers; when no step
    failed (a resource that could not start), the run's own error."""
    step_errors = [(event.step_key or "", event.step_failure_data.error)
                   for event in result.all_events
                   if event.is_step_failure and event.step_failure_data
                   and event.step_failure_data.error]
    run_errors = [("run", error) for event in result.all_events
                  if (error := getattr(event.event_specific_data, "error", None)) is not None]
    failures = []
    for step, outer in step_errors or run_errors[:1]:
        error, retries = outer, ""
        while error.cause is not None and error.cls_name in _WRAPPERS | {_RETRIES_EXHAUSTED}:
            if error.cls_name == _RETRIES_EXHAUSTED:
                # "Exceeded max_retries of 3" alone hides what kept failing: show its cause.
                retries = f" ({_without_class(error.message, error.cls_name)})"
            error = error.cause
        message = " ".join(_without_class(error.message, error.cls_name or "").split())
        failures.append(StepFailure(step, error.cls_name or "Error", message + retries,
                                    outer.to_string()))
    return failures


def run_failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """``step: Error: message`` for every failed step of a run."""
    return [str(failure) for failure in step_failures(result)]


def _without_class(message: str, cls_name: str) -> str:
    """``pkg.module.BadInputError: the file ...`` is how Python prints an exception; keep the
    part after the class."""
    head, separator, rest = message.strip().partition(": ")
    if separator and " " not in head and head.rsplit(".", 1)[-1] == cls_name:
        return rest
    return message.strip()


_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError",
             "DagsterResourceFunctionError"}
_RETRIES_EXHAUSTED = "RetryRequested"
