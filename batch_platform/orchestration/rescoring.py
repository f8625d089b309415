"""After a change of champion, the scored days it makes stale are rescored, once, through
Dagster's own staleness machinery.

The model asset's data version is the champion's version: its materializations carry it, and a
promotion or rollback (which runs no model asset) records a materialization of its own with the
new version (``champion_materialization``). Dagster then sees the change
(``data_version_changed``) and, in the UI, every day scored before it as stale. The condition
on predictions narrows that to the days the new champion should score
(``platform/models/rescoring.py``), read from the lake by ``StaleDays``.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
)

from batch_platform.orchestration.conditions import DaysCondition, true_for_days
from batch_platform.platform.models import registry
from batch_platform.platform.models.rescoring import stale_days
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings


def champion_materialization(model_key: dg.AssetKey, promotion: registry.Promotion
                             ) -> dg.AssetMaterialization:
    """The model asset's new data version after a promotion or rollback, as an event for the
    Dagster instance (``report_runless_asset_event``, or logged by the op of a job)."""
    return dg.AssetMaterialization(
        asset_key=model_key,
        description=f"{promotion.action}: {promotion.model_version} is the champion",
        tags={DATA_VERSION_TAG: promotion.model_version,
              DATA_VERSION_IS_USER_PROVIDED_TAG: "true"},
        metadata={"action": promotion.action, "champion": promotion.model_version,
                  "previous_champion": promotion.previous_champion or "none",
                  "actor": promotion.actor, "reason": promotion.reason,
                  "forced": promotion.forced})


class StaleDays(DaysCondition):
    """True for the partitions of predictions that ``rescoring.stale_days`` names: scored by
    another version than the scoring model, after its validation window.

    It reads the lake of the settings in the environment (``BATCH_PLATFORM_DATA_DIR`` ...), as
    the project's definitions do."""

    condition_name = "stale_days"

    def __init__(self, use_case: UseCase) -> None:
        self.use_case = use_case

    @property
    def description(self) -> str:
        return ("scored by another model version, after the scoring model's validation "
                "window (read from the lake)")

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context=context, true_subset=candidates)
        settings = Settings.from_env().resolved(self.use_case)
        lake = lake_of(settings)
        days: list = []
        if lake.exists():
            with lake.read_only() as con:
                days = stale_days(con, self.use_case, settings.model_version)
        return true_for_days(context, days)


def rescore_after_champion_change(model_key: dg.AssetKey, use_case: UseCase
                                  ) -> dg.AutomationCondition:
    """Once the model's data version changed (a new champion), request each stale day once: the
    change stays pending for a day until it is requested (so a day still being scored by the
    old champion is requested once that run ends), never while it or its features are in
    progress."""
    AC = dg.AutomationCondition
    changed = AC.any_deps_match(AC.data_version_changed()).allow(
        dg.AssetSelection.assets(model_key))
    return (
        changed.since(AC.newly_requested()).with_label("champion changed since requested")
        & StaleDays(use_case)
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("rescore after a change of champion")
