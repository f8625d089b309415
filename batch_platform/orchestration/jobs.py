"""Jobs: named selections of a use case's assets that the CLI, schedules and operators launch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from batch_platform.orchestration.assets import DAILY_FLOW_TAG, UseCaseAssets

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )


def use_case_jobs(assets: UseCaseAssets) -> list[UnresolvedAssetJobDefinition]:
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
