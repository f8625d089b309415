"""What the platform's own automation conditions share: each is true for the days a plain
function names (read from the lake or the instance), and keeps no cursor.

They are evaluated in the code server (their sensors' ``use_user_code_server``): a condition
of our own cannot be serialized for the daemon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import ClassVar

import dagster as dg


class DaysCondition(dg.AutomationCondition):
    """A condition of the platform's own; subclasses set ``condition_name`` (its name in the
    UI), ``description`` and ``evaluate`` (which ends with ``true_for_days``)."""

    condition_name: ClassVar[str]

    @property
    def name(self) -> str:
        return self.condition_name

    @property
    def requires_cursor(self) -> bool:
        return False


def true_for_days(context: dg.AutomationContext, days: Iterable[dt.date]
                  ) -> dg.AutomationResult:
    """A condition's result: true for those of its candidates that are these days."""
    partitions = context.partitions_def
    keys = {day.isoformat() for day in days}
    keys = {key for key in keys if partitions is not None and partitions.has_partition_key(key)}
    return dg.AutomationResult(context=context, true_subset=(
        context.candidate_subset.compute_intersection_with_partition_keys(keys)))
