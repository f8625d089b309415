"""Asset checks: audits as Dagster sees them, the write-audit-publish gate, and freshness.

The audits of a partition run on the frame about to be written. Their results go to Dagster
as asset checks either way; if one of severity error failed, nothing is written or published,
the step fails without retrying, and analysts keep the version published before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from batch_platform.platform.models.objectives import Objective
from batch_platform.platform.monitoring.audits import ERROR, Audit, blocking

SEVERITY = {ERROR: dg.AssetCheckSeverity.ERROR}

# Audits per asset, with what each one guards; names must match the audits' names.
RAW_CHECKS = {
    "schema": "Every declared column with its declared type; input columns the schema does "
              "not know warn.",
    "row_count": "Rows per day within the declared range (sources.<name>.expected_rows_per_day); "
                 "warns.",
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

    def __init__(self, description: str, results: list[dg.AssetCheckResult]) -> None:
        super().__init__(description=description, allow_retries=False)
        self.results = results


def check_results(context: dg.AssetExecutionContext, audits: Sequence[Audit],
                  where: str) -> list[dg.AssetCheckResult]:
    """The audits as check results, for the checks this run selected."""
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


def gate(context: dg.AssetExecutionContext, audits: Sequence[Audit], where: str
         ) -> list[dg.AssetCheckResult]:
    """Log every failed audit; return the check results if nothing blocks publishing.

    If something blocks, raise ``AuditsBlockedPublishing`` after logging the results.
    """
    results = check_results(context, audits, where)
    for audit in audits:
        if not audit.passed:
            context.log.warning(f"{where}: check {audit.name} ({audit.severity}): "
                                f"{audit.description}")
    blocked = blocking(audits)
    if blocked:
        reasons = "; ".join(f"{audit.name}: {audit.description}" for audit in blocked)
        raise AuditsBlockedPublishing(
            f"{context.asset_key.to_user_string()} {where} not published, the version "
            f"published before stays in place. Failed: {reasons}", results)
    return results


def metadata_value(value: object) -> object:
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    return value


def describe_days(days: Sequence[dt.date]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"
