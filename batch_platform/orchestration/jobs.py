"""Jobs: named selections that the CLI, schedules and operators launch."""

import dagster as dg

from batch_platform.orchestration.partitions import DAILY_FLOW_TAG

# Every stage from landing files to reports for the chosen days; never retrains.
daily_flow_job = dg.define_asset_job(
    "flights_daily", selection=dg.AssetSelection.tag(DAILY_FLOW_TAG, "daily"),
    description="Raw to reports for a day or a range of days, as one run.",
)
features_job = dg.define_asset_job(
    "flights_features",
    selection=dg.AssetSelection.tag(DAILY_FLOW_TAG, "daily").required_multi_asset_neighbors()
    - dg.AssetSelection.assets(["predictions", "flights"], ["reports", "flights_daily"]),
    description="Reference, raw and features: what training needs.",
)
train_job = dg.define_asset_job(
    "flights_train", selection=dg.AssetSelection.assets(["models", "flights"]),
    description="Train (or register a model file you bring) and make it the champion.",
)
predict_job = dg.define_asset_job(
    "flights_predict",
    selection=dg.AssetSelection.assets(["predictions", "flights"], ["reports", "flights_daily"]),
    description="Score and report days whose features are already materialized.",
)

ALL_JOBS = [daily_flow_job, features_job, train_job, predict_job]


def partition_range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make one run of a single-run-backfill job cover ``start``..``end``."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def run_failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """The errors that failed a run's steps, unwrapped from Dagster's step-error wrapper."""
    messages = []
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data
                and event.step_failure_data.error):
            continue
        error = event.step_failure_data.error
        retries = ""
        while error.cause is not None and error.cls_name in _WRAPPERS | {_RETRIES_EXHAUSTED}:
            if error.cls_name == _RETRIES_EXHAUSTED:
                # "Exceeded max_retries of 3" alone hides what kept failing: show its cause.
                retries = f" ({error.message.strip().split(': ', 1)[-1]})"
            error = error.cause
        messages.append(f"{event.step_key}: {error.cls_name}: {error.message.strip()}{retries}")
    return messages


_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}
_RETRIES_EXHAUSTED = "RetryRequested"
