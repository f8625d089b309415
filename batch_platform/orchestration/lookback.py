"""After a day is loaded again (a corrected landing file), the days whose features look back at
it rerun, once, through Dagster's automation conditions.

The features asset declares same-day dependencies (see ``assets.py``), so Dagster alone would
rerun only the corrected day. The condition on features adds the days that read it: the
``lookback_days`` after it that have features (``platform/features/lookback.py``). Predictions
follow an update of their features on the days already scored (``follows`` in ``assets.py``),
and reports follow predictions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from batch_platform.orchestration.conditions import DaysCondition, true_for_days
from batch_platform.platform.features.lookback import (
    days_looking_back_at,
    days_reading_newer_inputs,
)


class InputsNewerThanLookback(DaysCondition):
    """True for the days of features whose look-back window holds an input partition
    materialized after the day's features.

    "After" is the order of the event log's storage ids (``get_latest_storage_id_by_partition``,
    one indexed query per asset): one increasing sequence for every process, so exact where
    clocks are not, and it knows when features were written, which the lake does not."""

    condition_name = "inputs_newer_than_lookback"

    def __init__(self, inputs: Sequence[dg.AssetKey], lookback_days: int) -> None:
        self.inputs = tuple(inputs)
        self.lookback_days = lookback_days

    @property
    def description(self) -> str:
        return (f"one of the {self.lookback_days} day(s) before it was materialized after its "
                "features")

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance

        def written(key: dg.AssetKey) -> dict[dt.date, int]:
            latest = instance.get_latest_storage_id_by_partition(
                key, dg.DagsterEventType.ASSET_MATERIALIZATION)
            return {dt.date.fromisoformat(partition): storage_id
                    for partition, storage_id in latest.items()}

        days = days_reading_newer_inputs([written(key) for key in self.inputs],
                                         written(context.key), self.lookback_days)
        return true_for_days(context, days)


class LookbackInProgress(DaysCondition):
    """True for the days that read a day of the flow now in progress (a run or a backfill
    materializing it): that day itself and the ``lookback_days`` after it. A day's run may
    still fail and undo its raw rows, so the days that read them wait until it ended."""

    condition_name = "lookback_in_progress"

    def __init__(self, flow: Sequence[dg.AssetKey], lookback_days: int) -> None:
        self.flow = tuple(flow)
        self.lookback_days = lookback_days

    @property
    def description(self) -> str:
        return f"it or one of the {self.lookback_days} day(s) before it is in progress"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        view = context.asset_graph_view
        busy: set[dt.date] = set()
        for key in self.flow:
            everything = view.get_full_subset(key=key)
            for subset in (
                    await view.compute_run_in_progress_subset(key=key, from_subset=everything),
                    await view.compute_backfill_in_progress_subset(key=key,
                                                                   from_subset=everything)):
                busy |= {dt.date.fromisoformat(partition)
                         for partition in subset.expensively_compute_partition_keys()}
        return true_for_days(context, days_looking_back_at(busy, self.lookback_days))


def rerun_days_looking_back(inputs: Sequence[dg.AssetKey], flow: Sequence[dg.AssetKey],
                            lookback_days: int) -> dg.AutomationCondition:
    """Request a day's features once after a day it looks back at was materialized again: the
    trigger holds from then until the day is requested or updated, and never while that day,
    a day it reads, or their runs are in progress."""
    AC = dg.AutomationCondition
    newer = InputsNewerThanLookback(inputs, lookback_days)
    return (
        # newly_true: the state ("an input is newer") stays true until the day reruns, so only
        # its change is a trigger; a second evaluation requests nothing.
        newer.newly_true().since_last_handled().with_label(
            "a day it looks back at loaded again since handled")
        & ~LookbackInProgress(flow, lookback_days)
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("rerun after a day it looks back at was loaded again")
