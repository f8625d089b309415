"""The challenger scored in the shadow: the champion's staged features, scored again.

While a use case has a challenger, every range scored for the champion is scored by the
challenger too, with the same code and settings, into ``predictions.<use case>_shadow``: the
same row ids and columns, the challenger's version in ``model_version``. Both tables' days are
written in one commit, so a day's shadow rows always pair with its predictions.

The rule for a day's shadow rows: they are the current challenger's, from the day's latest
scoring. A day scored while there is no challenger has none (its earlier shadow rows are
deleted in that same commit), and so has a day whose shadow failed its audits. The champion's
predictions never depend on the challenger: a challenger that cannot score (its file, its
features) or scores badly leaves them as they would be without it, and says why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models import registry
from batch_platform.platform.monitoring import audits, drift
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring.partition import StagedScores, Warn, score_staged
from batch_platform.platform.storage.staging import StagedTable, Staging
from batch_platform.platform.storage.warehouse import Rows
from batch_platform.settings import Settings

SHADOW_STAGE = "shadow"  # the staged table of the challenger's rows


@dataclass(frozen=True)
class ScoringModels:
    """The registry rows a scoring run uses, read in one snapshot."""

    scoring: dict  # the champion, or the pinned version
    challenger: dict | None  # scored in the shadow; None: no challenger, or it is ``scoring``


@dataclass(frozen=True)
class ShadowOutcome:
    """What the shadow scoring of a range gave: rows to write, or why there are none."""

    version: str
    scores: StagedScores | None
    withheld: str | None  # why no shadow rows are written for the range

    @property
    def predictions(self) -> StagedTable | None:
        return self.scores.predictions if self.scores is not None else None


def scoring_models(con: duckdb.DuckDBPyConnection, use_case: str, pinned_version: str | None
                   ) -> ScoringModels:
    """The model that scores (``registry.resolve``) and the challenger, from one snapshot: a
    promotion committed between two reads would pair the old champion with the new one as
    its challenger."""
    con.execute("BEGIN TRANSACTION")
    try:
        record = registry.resolve(con, use_case, pinned_version)
        challenger = registry.challenger(con, use_case)
    finally:
        con.execute("ROLLBACK")  # read only
    if challenger is not None and challenger["model_version"] == record["model_version"]:
        challenger = None  # a pinned challenger scores as the champion: nothing to compare
    return ScoringModels(record, challenger)


def load_model(settings: Settings, spec: FeatureSpec, record: dict
               ) -> tuple[model_core.LoadedModel, drift.ModelProfile | None]:
    """A registry row's model, proven to be its version, and its drift references."""
    loaded = model_core.load_registered(settings.data_dir, settings.models_dir,
                                        record["model_path"], record["model_version"],
                                        registry.calibration(record), spec)
    profile = drift.load_profile(drift.profile_path(settings.data_dir / record["model_path"]))
    return loaded, profile


def score_shadow(settings: Settings, spec: FeatureSpec, staging: Staging, features_file: Path,
                 challenger: dict, champion: StagedScores, lineage: scoring.ScoringLineage,
                 where: str, scope: tuple[str, dt.date, dt.date], warn: Warn,
                 on_chunk: Callable[[int], None] = lambda rows: None) -> ShadowOutcome:
    """The challenger's scoring of the features the champion scored (``champion``), audited
    as the champion's are: one row per feature row, valid outputs, its own version in every
    row. ``lineage`` is the champion's; the shadow rows name the challenger instead."""
    version = challenger["model_version"]
    # Its own staging on a cluster engine: the champion's is named by the same run and days.
    asset, start, end = scope
    scope = (f"{asset}/{SHADOW_STAGE}", start, end)

    def said(message: str) -> None:
        warn(f"challenger {version} (shadow): {message}")

    try:
        loaded, profile = load_model(settings, spec, challenger)
        scores = score_staged(
            settings, spec, staging, features_file, loaded, profile,
            dataclasses.replace(lineage, model_version=version), where, scope, said, on_chunk,
            name=SHADOW_STAGE)
    except (model_core.ModelError, scoring.FeatureMismatchError) as err:
        said(f"not scored, no shadow rows for {where}: {err}")
        return ShadowOutcome(version, None, str(err))
    failed = [f"{audit.name}: {audit.description}"
              for audit in (audits.audit_prediction_counts(scores.counts),
                            audits.audit_scores_valid(scores.scores),
                            audits.audit_model_version(scores.scores, version))
              if not audit.passed]
    if scores.rows_by_day != champion.rows_by_day:
        failed.append(f"rows per day differ from the champion's ({scores.predictions.rows} "
                      f"against {champion.predictions.rows})")
    if failed:
        withheld = "; ".join(failed)
        said(f"no shadow rows for {where}: {withheld}")
        return ShadowOutcome(version, None, withheld)
    return ShadowOutcome(version, scores, None)


def scored_writes(predictions_table: str, shadow_table: str, predictions: StagedTable,
                  shadow: ShadowOutcome | None) -> list[tuple[str, Rows | None]]:
    """What one commit writes for the scored days: the predictions, and the shadow rows, or
    none (the days' earlier shadow rows deleted: see the module's rule)."""
    return [(predictions_table, predictions),
            (shadow_table, shadow.predictions if shadow is not None else None)]
