"""What an operator does with a use case's models, the same from the command line and from a
Dagster job: list every version with its shadow record, promote the challenger through the
gate, roll back to the previous champion.

Each action reads the registry and the gate's evidence in a read-only session, then commits
through ``registry`` with the champion it read: if another change of champion committed in
between, the registry refuses this one naming the winner, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.models import evidence, gate, registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.storage.lake import Lake
from batch_platform.platform.storage.warehouse import MissingDataError
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings


def gate_thresholds(settings: Settings) -> gate.GateThresholds:
    return gate.GateThresholds(min_days=settings.gate_min_days,
                               min_margin=settings.gate_min_margin,
                               confidence=settings.gate_confidence,
                               resamples=settings.gate_resamples)


def _with_status(versions: pl.DataFrame, status: str) -> dict | None:
    rows = versions.filter(pl.col("status") == status)
    return rows.row(0, named=True) if rows.height else None


def judge(con: duckdb.DuckDBPyConnection, use_case: UseCase, champion: dict, challenger: dict,
          thresholds: gate.GateThresholds) -> gate.Verdict:
    """The gate's verdict on ``challenger`` against ``champion`` (registry rows), on the days
    after both validation windows. A table the evidence needs that does not exist yet (no
    shadow scoring so far) is no day of evidence, said in the summary."""
    spec = use_case.spec
    kind = objective(spec.objective)
    missing = None
    try:
        daily = evidence.daily_comparison(
            con, spec, predictions_table=use_case.predictions_table,
            shadow_table=use_case.shadow_table, features_table=use_case.features_table,
            champion=champion, challenger=challenger)
    except MissingDataError as err:
        missing = str(err).split(":", 1)[0]
        nothing = pl.DataFrame(schema={
            "partition_date": pl.Date(), gate.CHAMPION_ROLE: pl.Float64(),
            gate.CHALLENGER_ROLE: pl.Float64(), spec.label_column: pl.Float64()})
        daily = gate.daily_metrics(nothing, kind, spec.label_column)
    verdict = gate.judge(daily, kind, champion["model_version"], challenger["model_version"],
                         thresholds)
    if missing:
        verdict = replace(verdict, summary=f"{verdict.summary} ({missing})")
    return verdict


@dataclass(frozen=True)
class Listing:
    """Every version of a use case, and what the gate says of its challenger now."""

    versions: pl.DataFrame  # registry rows, newest first
    verdict: gate.Verdict | None  # the challenger against the champion; None without both
    history: pl.DataFrame  # models.promotions rows, oldest first


def listing(con: duckdb.DuckDBPyConnection, use_case: UseCase,
            thresholds: gate.GateThresholds) -> Listing:
    versions = registry.versions(con, use_case.name)
    champion = _with_status(versions, registry.CHAMPION)
    challenger = _with_status(versions, registry.CHALLENGER)
    verdict = (judge(con, use_case, champion, challenger, thresholds)
               if champion is not None and challenger is not None else None)
    return Listing(versions, verdict, registry.history(con, use_case.name))


@dataclass(frozen=True)
class Change:
    """A change of champion as committed, and the verdict it was judged by (None: not judged)."""

    promotion: registry.Promotion
    verdict: gate.Verdict | None


def promote(lake: Lake, use_case: UseCase, version: str, reason: str, actor: str, force: bool,
            thresholds: gate.GateThresholds, *, data_dir: Path, models_dir: Path,
            details: dict[str, str] | None = None) -> Change:
    """Judge challenger ``version`` against the champion and promote it if the gate allows,
    or if ``force`` (the verdict, whatever it is, is recorded). A version that is not the
    challenger is refused by the registry, with its reason (unknown, retired, another use
    case's, the champion)."""
    with lake.read_only() as con:
        versions = registry.versions(con, use_case.name)  # one query: one snapshot of both
        champion = _with_status(versions, registry.CHAMPION)
        challenger = _with_status(versions, registry.CHALLENGER)
        verdict, unjudged = None, "not asked"
        if (champion is not None and challenger is not None
                and challenger["model_version"] == version):
            try:
                verdict = judge(con, use_case, champion, challenger, thresholds)
            except gate.GateInputError as err:
                if not force:
                    raise registry.LifecycleError(
                        f"promotion of {version} to champion of {use_case.name} refused: "
                        f"{err}; or force it with a reason") from None
                unjudged = f"could not judge: {err}"
    expected = champion["model_version"] if champion is not None else None
    done: list[registry.Promotion] = []

    def write(con: duckdb.DuckDBPyConnection) -> None:
        done.append(registry.promote(
            con, use_case.name, version, reason, actor, verdict, force,
            expected_champion=expected, data_dir=data_dir, models_dir=models_dir,
            unjudged=unjudged))

    lake.commit(write, f"models/{use_case.name} promote {version} by {actor}",
                _details("promote", version, actor, details))
    return Change(done[-1], verdict)


def rollback(lake: Lake, use_case: UseCase, reason: str, actor: str, *, data_dir: Path,
             models_dir: Path, details: dict[str, str] | None = None) -> Change:
    """Make the previous champion champion again (``registry.rollback``)."""
    with lake.read_only() as con:
        current = registry.champion_version(con, use_case.name)
    done: list[registry.Promotion] = []

    def write(con: duckdb.DuckDBPyConnection) -> None:
        done.append(registry.rollback(con, use_case.name, reason, actor,
                                      expected_champion=current, data_dir=data_dir,
                                      models_dir=models_dir))

    lake.commit(write, f"models/{use_case.name} rollback of {current} by {actor}",
                _details("rollback", current or "", actor, details))
    return Change(done[-1], None)


def _details(action: str, version: str, actor: str, extra: dict[str, str] | None
             ) -> dict[str, str]:
    return {"action": action, "model_version": version, "actor": actor, **(extra or {})}
