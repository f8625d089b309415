"""Asset checks: audits as Dagster sees them, the write-audit-publish gate, and freshness.

The audits of a partition run on the frame about to be written. Their results go to Dagster
as asset checks either way; if one of severity error failed, nothing is written or published,
the step fails without retrying, and analysts keep the version published before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

from batch_platform.platform.models.objectives import Objective
from batch_platform.platform.monitoring.audits import ERROR, Audit, blocking

SEVERITY = {ERROR: dg.AssetCheckSeverity.ERROR}

# Audits per asset, with what each one guards; names must match the audits' names.
RAW_CHECKS = {
    "schema": "Every declared column with its declared type; input columns the schema does "
              "not know warn.",
    "row_count": "Rows per day within the declared range (sources.<name>.expected_rows_per_day), "
                 "which warns; and, where declared (rows_vs_history), within a tolerance of the "
                 "same weekday's recent median, which blocks publishing.",
    "required_values": "Share of a day's rows missing a required value at most "
                       "BATCH_PLATFORM_MAX_NULL_FRACTION; blocks publishing.",
}
FEATURE_CHECKS = {
    "feature_drift": "PSI of each drift feature (features.drift) against the champion's "
                     "training window: warns above checks.psi_warn, blocks above "
                     "checks.psi_error.",
}


def prediction_checks(kind: Objective) -> dict[str, str]:
    name, guard = kind.output_check
    return {
        "one_per_feature_row": "Exactly one prediction per feature row; blocks publishing.",
        name: guard,
        "model_version_is_loaded": "Every row carries the version of the model loaded; blocks.",
        "score_drift": f"PSI of the day's {kind.output}s against the model's validation "
                       f"{kind.output}s; warns above checks.score_psi_warn.",
    }


REPORT_CHECKS = {
    "reconciles_with_predictions": "Per day, each segment type's totals equal the predictions' "
                                   "rows (and predicted positives); blocks publishing.",
}


def check_specs(asset_key: Sequence[str], checks: dict[str, str]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset_key, description=description, blocking=True)
            for name, description in checks.items()]


class AuditsBlockedPublishing(dg.Failure):
    """A blocking audit failed: the partitions were not written, and are not retried.

    Carries the check results, which the asset yields before failing (see ``stage``).
    """

    def __init__(self, description: str, results: list,
                 withheld: Sequence[dt.date] | None = None) -> None:
        super().__init__(description=description, allow_retries=False)
        self.results = results
        # The days not published when others of the range were; None: every day of the step.
        self.withheld = list(withheld) if withheld is not None else None


def check_results(context: dg.AssetExecutionContext, audits: Sequence[Audit],
                  where: str) -> list[dg.AssetCheckResult]:
    """The audits as check results, for the checks this run selected (one-day runs)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    return [
        dg.AssetCheckResult(
            check_name=audit.name, passed=audit.passed,
            severity=SEVERITY.get(audit.severity, dg.AssetCheckSeverity.WARN),
            description=audit.description,
            metadata={"partitions": where, **{key: metadata_value(value)
                                              for key, value in audit.metadata.items()}},
        )
        for audit in audits if audit.name in selected
    ]


def day_evaluations(context: dg.AssetExecutionContext, audits: Sequence[Audit],
                    days: Sequence[dt.date]) -> list[dg.AssetCheckEvaluation]:
    """One check record per day and selected check (range runs): a backfill of a month keeps
    thirty results per check, each day's own pass or fail."""
    selected = {key.name for key in context.selected_asset_check_keys}
    evaluations = []
    for audit in audits:
        if audit.name not in selected:
            continue
        metadata = {key: metadata_value(value) for key, value in audit.metadata.items()}
        for day in days:
            passed, severity = audit.verdict(day)
            evaluations.append(dg.AssetCheckEvaluation(
                asset_key=context.asset_key, check_name=audit.name, passed=passed,
                partition=day.isoformat(), blocking=True,
                severity=SEVERITY.get(severity, dg.AssetCheckSeverity.WARN),
                description=(audit.description if not passed or audit.failed_days is None
                             else f"{day}: passed ({audit.description})"),
                metadata={"range": f"{days[0]}..{days[-1]}", **metadata}))
    return evaluations


@dataclass
class Verdict:
    """What the audits allow: the days to publish, the days withheld with why, and the check
    events to record."""

    context: dg.AssetExecutionContext
    days: list[dt.date]
    publish: list[dt.date]
    withheld: dict[dt.date, list[str]]
    events: list
    where: str

    def outcome(self, metadata: dict[str, object]) -> Iterator[object]:
        """The step's events: its checks and materialization; with days withheld, the
        published days' materializations, then the failure naming the withheld ones."""
        if len(self.days) == 1:
            yield dg.MaterializeResult(metadata=metadata, check_results=self.events)
            return
        yield from self.events
        if not self.withheld:
            yield dg.MaterializeResult(metadata=metadata)
            # Each check's own output, so its per-day records are the only ones.
            for key in self.context.selected_asset_check_keys:
                spec = dg.AssetCheckSpec(key.name, asset=key.asset_key)
                yield dg.Output(None, output_name=spec.get_python_identifier())
            return
        for day in self.publish:
            yield dg.AssetMaterialization(asset_key=self.context.asset_key,
                                          partition=day.isoformat(),
                                          metadata={"published_with": self.where})
        reasons = "; ".join(f"{day}: {', '.join(why)}" for day, why in self.withheld.items())
        raise AuditsBlockedPublishing(
            f"{self.context.asset_key.to_user_string()} {self.where}: "
            f"{describe_days(self.publish)} published; {len(self.withheld)} day(s) withheld, "
            f"the version published before stays in place. Failed: {reasons}", [],
            withheld=list(self.withheld))


def gate(context: dg.AssetExecutionContext, audits: Sequence[Audit], days: Sequence[dt.date]
         ) -> Verdict:
    """Log every failed audit; say which days may be published.

    A one-day run that an audit blocks raises ``AuditsBlockedPublishing`` after logging the
    results; a range run publishes the days that pass and withholds the others (per-day check
    records), and raises only if no day passed.
    """
    days = list(days)
    where = describe_days(days)
    for audit in audits:
        if not audit.passed:
            context.log.warning(f"{where}: check {audit.name} ({audit.severity}): "
                                f"{audit.description}")
    withheld: dict[dt.date, list[str]] = {}
    for audit in audits:
        for day in days:
            passed, severity = audit.verdict(day)
            if not passed and severity == ERROR:
                withheld.setdefault(day, []).append(audit.name)
    single = len(days) == 1
    events = check_results(context, audits, where) if single else day_evaluations(
        context, audits, days)
    publish = [day for day in days if day not in withheld]
    if not publish:
        reasons = "; ".join(f"{audit.name}: {audit.description}" for audit in blocking(audits))
        raise AuditsBlockedPublishing(
            f"{context.asset_key.to_user_string()} {where} not published, the version "
            f"published before stays in place. Failed: {reasons}", events)
    return Verdict(context, days, publish, withheld, events, where)


def metadata_value(value: object) -> object:
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    return value


def describe_days(days: Sequence[dt.date]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"
