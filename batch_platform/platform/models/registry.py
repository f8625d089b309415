"""``models.registry``: one row per model version and its status; ``models.promotions``: every
change of champion, with who made it, why and on what evidence.

A use case has at most one champion (what scoring uses) and at most one challenger (scored
beside it, waiting for the gate); every other version is retired. The functions run inside the
lake's commit transaction (``Lake.commit``): each checks everything before it writes, so a
refusal changes nothing, and a status change and its promotions row land in one snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models.gate import Verdict
from batch_platform.platform.models.objectives import Calibration
from batch_platform.platform.storage.warehouse import (
    MissingDataError,
    ensure_table,
    insert,
    table_exists,
)

REGISTRY_TABLE = "models.registry"
PROMOTIONS_TABLE = "models.promotions"
CHAMPION = "champion"
CHALLENGER = "challenger"
RETIRED = "retired"
STATUSES = (CHAMPION, CHALLENGER, RETIRED)
# The actions of models.promotions: a champion registered directly (training or a brought
# file, no gate), a challenger promoted, the previous champion restored.
REGISTER = "register"
PROMOTE = "promote"
ROLLBACK = "rollback"


class LifecycleError(ValueError):
    """A promotion, rollback or challenger that cannot be done as asked; nothing changed."""


@dataclass(frozen=True)
class ModelRecord:
    model_version: str
    use_case: str
    objective: str
    status: str
    source: str  # "trained" or "user_file"
    trained_at: dt.datetime
    train_start: dt.date | None
    train_end: dt.date | None
    valid_start: dt.date
    valid_end: dt.date
    train_rows: int | None
    valid_rows: int
    # The objective's metrics on the validation window; the others' are null.
    auc: float | None
    log_loss: float | None
    brier: float | None
    positive_rate: float | None
    predicted_positive_rate: float | None
    mae: float | None
    rmse: float | None
    bias: float | None
    # Post-processing: a binary model's threshold, a regression's band (residual quantiles).
    threshold: float | None
    band_low: float | None
    band_high: float | None
    feature_list: list[str]
    num_trees: int
    model_path: str  # relative to the data directory
    code_version: str
    run_id: str


_SCHEMA: dict[str, pl.DataType] = {
    "model_version": pl.String(), "use_case": pl.String(), "objective": pl.String(),
    "status": pl.String(),
    "source": pl.String(), "trained_at": pl.Datetime("us", "UTC"), "train_start": pl.Date(),
    "train_end": pl.Date(), "valid_start": pl.Date(), "valid_end": pl.Date(),
    "train_rows": pl.Int64(), "valid_rows": pl.Int64(), "auc": pl.Float64(),
    "log_loss": pl.Float64(), "brier": pl.Float64(), "positive_rate": pl.Float64(),
    "predicted_positive_rate": pl.Float64(), "mae": pl.Float64(), "rmse": pl.Float64(),
    "bias": pl.Float64(), "threshold": pl.Float64(), "band_low": pl.Float64(),
    "band_high": pl.Float64(),
    "feature_list": pl.List(pl.String()), "num_trees": pl.Int64(), "model_path": pl.String(),
    "code_version": pl.String(), "run_id": pl.String(),
}


@dataclass(frozen=True)
class Promotion:
    """One row of ``models.promotions``: a change of a use case's champion."""

    use_case: str
    sequence: int  # 1, 2, ... per use case, in the order the changes were committed
    action: str  # REGISTER, PROMOTE or ROLLBACK
    model_version: str  # the champion from then on
    previous_champion: str | None
    promoted_at: dt.datetime  # UTC
    actor: str  # who, or which automation (a run)
    reason: str
    evidence: str  # JSON: the gate's verdict, or what stood in for it
    forced: bool  # the gate refused, or was not asked, and the actor overrode it


_PROMOTION_SCHEMA: dict[str, pl.DataType] = {
    "use_case": pl.String(), "sequence": pl.Int64(), "action": pl.String(),
    "model_version": pl.String(), "previous_champion": pl.String(),
    "promoted_at": pl.Datetime("us", "UTC"), "actor": pl.String(), "reason": pl.String(),
    "evidence": pl.String(), "forced": pl.Boolean(),
}


def register_champion(con: duckdb.DuckDBPyConnection, record: ModelRecord) -> None:
    """Record ``record`` as its use case's champion and retire the previous one, atomically.

    Registering the same version again replaces its row, so retraining on the same data is
    idempotent. A change of champion is a ``register`` row of ``models.promotions`` (no gate:
    the model asset's direct path). Inside the commit's transaction.
    """
    frame = pl.DataFrame([asdict(record) | {"status": CHAMPION}], schema=_SCHEMA)
    ensure_table(con, REGISTRY_TABLE, frame)
    previous = champion_version(con, record.use_case)
    _take_status(con, record, frame, CHAMPION)
    if previous != record.model_version:
        how = "training" if record.source == "trained" else "a brought model file"
        validation = {name: getattr(record, name) for name in (
            "auc", "log_loss", "brier", "mae", "rmse", "bias") if getattr(record, name) is not None}
        _record_promotion(con, record.use_case, REGISTER, record.model_version, previous,
                          f"run {record.run_id}", f"registered as champion by {how}",
                          {"gate": "not asked: registered directly",
                           "valid_window": [record.valid_start.isoformat(),
                                            record.valid_end.isoformat()],
                           "validation": validation}, forced=False)


def _take_status(con: duckdb.DuckDBPyConnection, record: ModelRecord, frame: pl.DataFrame,
                 status: str) -> None:
    """``record`` (as ``frame``) becomes its use case's one ``status``: the holder before is
    retired, and the version's own row, if any, replaced."""
    con.execute(f"UPDATE {REGISTRY_TABLE} SET status = $retired "
                "WHERE use_case = $use_case AND status = $status",
                {"retired": RETIRED, "use_case": record.use_case, "status": status})
    con.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_version = $version",
                {"version": record.model_version})
    insert(con, REGISTRY_TABLE, frame)


def register_challenger(con: duckdb.DuckDBPyConnection, record: ModelRecord) -> None:
    """Record ``record`` as its use case's challenger, beside the champion; the previous
    challenger, if another version, is retired. Registering the same challenger again replaces
    its row. Refused for the champion itself, a version of another use case, or a use case
    with no champion to compare it with."""
    require_champion(con, record.use_case)
    frame = pl.DataFrame([asdict(record) | {"status": CHALLENGER}], schema=_SCHEMA)
    ensure_table(con, REGISTRY_TABLE, frame)
    existing = _version_row(con, record.model_version)
    if existing is not None and existing["use_case"] != record.use_case:
        raise LifecycleError(
            f"model version {record.model_version} is registered for use case "
            f"{existing['use_case']}, not {record.use_case}")
    if existing is not None and existing["status"] == CHAMPION:
        raise LifecycleError(
            f"model version {record.model_version} is already the champion of "
            f"{record.use_case}: a challenger must be another model")
    _take_status(con, record, frame, CHALLENGER)


def promote(con: duckdb.DuckDBPyConnection, use_case: str, version: str, reason: str,
            actor: str, evidence: Verdict | None, force: bool = False, *,
            expected_champion: str | None, data_dir: Path, models_dir: Path,
            unjudged: str = "not asked") -> Promotion:
    """Make challenger ``version`` the champion of ``use_case`` and retire the champion.

    ``evidence`` is the gate's verdict on this challenger against this champion; without
    ``force`` it must allow the promotion. ``expected_champion`` is the champion the caller
    read (and judged against): if another promotion committed since, this one fails naming
    it. ``data_dir``/``models_dir`` locate the model file, whose hash must be ``version``.
    ``unjudged``: why there is no verdict, the evidence of a forced promotion without one.
    Inside the commit's transaction; returns the ``models.promotions`` row written.
    """
    what = f"promotion of {version} to champion of {use_case}"
    _require_text(what, reason=reason, actor=actor)
    row = _use_case_version(con, use_case, version, what)
    current = _check_champion_unchanged(con, use_case, expected_champion, what)
    if row["status"] == CHAMPION:
        raise LifecycleError(f"{what} refused: {version} is already the champion")
    if row["status"] == RETIRED:
        raise LifecycleError(
            f"{what} refused: {version} is retired; promote the current challenger, or roll "
            "back to return to the previous champion")
    _check_file(row, data_dir, models_dir, what)
    if evidence is not None and (evidence.challenger, evidence.champion) != (version, current):
        raise LifecycleError(
            f"{what} refused: the evidence compares challenger {evidence.challenger} with "
            f"champion {evidence.champion}, not {version} with {current}")
    if not force:
        if evidence is None:
            raise LifecycleError(f"{what} refused: no gate verdict given (judge the challenger "
                                 "on realised outcomes, or force it with a reason)")
        if not evidence.allowed:
            raise LifecycleError(f"{what} {evidence.summary}")
    _set_champion(con, use_case, version)
    figures = evidence.evidence() if evidence is not None else {"gate": unjudged}
    return _record_promotion(con, use_case, PROMOTE, version, current, actor, reason, figures,
                             forced=force)


def rollback(con: duckdb.DuckDBPyConnection, use_case: str, reason: str, actor: str, *,
             expected_champion: str | None, data_dir: Path, models_dir: Path) -> Promotion:
    """Make the champion before the current one (by ``models.promotions``) champion again and
    retire the current one. Rolling back again walks further back: the target is the
    previous champion of the promotion (or registration) that made the current one champion.
    ``expected_champion``, ``data_dir``, ``models_dir``: as for ``promote``.
    """
    what = f"rollback of {use_case}"
    _require_text(what, reason=reason, actor=actor)
    if not table_exists(con, REGISTRY_TABLE):
        raise LifecycleError(f"{what} refused: {REGISTRY_TABLE} is empty")
    current = _check_champion_unchanged(con, use_case, expected_champion, what)
    if current is None:
        raise LifecycleError(f"{what} refused: {use_case} has no champion")
    target = _champion_before(con, use_case, current)
    if target is None:
        raise LifecycleError(f"{what} refused: no previous champion recorded in "
                             f"{PROMOTIONS_TABLE} for {current}, the champion of {use_case}")
    row = _use_case_version(con, use_case, target, what)
    _check_file(row, data_dir, models_dir, what)
    _set_champion(con, use_case, target)
    return _record_promotion(con, use_case, ROLLBACK, target, current, actor, reason,
                             {"rolled_back": current}, forced=False)


def require_champion(con: duckdb.DuckDBPyConnection, use_case: str) -> str:
    """The champion's version; refused without one (a challenger needs one to be judged by)."""
    version = champion_version(con, use_case)
    if version is None:
        raise LifecycleError(
            f"{use_case} has no champion to compare a challenger with: register a champion "
            "first (batch-platform train, without --challenger)")
    return version


def champion_version(con: duckdb.DuckDBPyConnection, use_case: str) -> str | None:
    """The champion's version, or None (no registry yet, or no champion)."""
    if not table_exists(con, REGISTRY_TABLE):
        return None
    row = con.execute(f"SELECT model_version FROM {REGISTRY_TABLE} WHERE use_case = $u "
                      "AND status = $c", {"u": use_case, "c": CHAMPION}).fetchone()
    return row[0] if row else None


def challenger(con: duckdb.DuckDBPyConnection, use_case: str) -> dict | None:
    """The challenger's registry row, or None."""
    if not table_exists(con, REGISTRY_TABLE):
        return None
    rows = con.execute(f"SELECT * FROM {REGISTRY_TABLE} WHERE use_case = $u AND status = $c",
                       {"u": use_case, "c": CHALLENGER}).pl()
    return rows.row(0, named=True) if rows.height else None


def versions(con: duckdb.DuckDBPyConnection, use_case: str) -> pl.DataFrame:
    """Every registered version of ``use_case``, newest first."""
    if not table_exists(con, REGISTRY_TABLE):
        return pl.DataFrame(schema=_SCHEMA)
    return con.execute(f"SELECT * FROM {REGISTRY_TABLE} WHERE use_case = $u "
                       "ORDER BY trained_at DESC, model_version", {"u": use_case}).pl()


def history(con: duckdb.DuckDBPyConnection, use_case: str) -> pl.DataFrame:
    """The changes of champion of ``use_case``, oldest first."""
    if not table_exists(con, PROMOTIONS_TABLE):
        return pl.DataFrame(schema=_PROMOTION_SCHEMA)
    return con.execute(f"SELECT * FROM {PROMOTIONS_TABLE} WHERE use_case = $u "
                       "ORDER BY sequence", {"u": use_case}).pl()


def _version_row(con: duckdb.DuckDBPyConnection, version: str) -> dict | None:
    rows = con.execute(f"SELECT * FROM {REGISTRY_TABLE} WHERE model_version = $v",
                       {"v": version}).pl()
    return rows.row(0, named=True) if rows.height else None


def _use_case_version(con: duckdb.DuckDBPyConnection, use_case: str, version: str, what: str
                      ) -> dict:
    if not table_exists(con, REGISTRY_TABLE):
        raise LifecycleError(f"{what} refused: {REGISTRY_TABLE} is empty")
    row = _version_row(con, version)
    if row is None:
        raise LifecycleError(f"{what} refused: model version {version} is not in "
                             f"{REGISTRY_TABLE}")
    if row["use_case"] != use_case:
        raise LifecycleError(f"{what} refused: model version {version} belongs to use case "
                             f"{row['use_case']}")
    return row


def _check_champion_unchanged(con: duckdb.DuckDBPyConnection, use_case: str,
                              expected: str | None, what: str) -> str | None:
    """The champion now; refused if it is not the one the caller read (another change won)."""
    current = champion_version(con, use_case)
    if current != expected:
        latest = history(con, use_case).tail(1)
        by = ""
        if latest.height and latest["model_version"][0] == current:
            change = latest.row(0, named=True)
            by = (f" ({change['action']} by {change['actor']} at "
                  f"{change['promoted_at'].astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC)")
        raise LifecycleError(f"{what} refused: the champion is now {current}{by}, not "
                             f"{expected} as read; another change won: judge against {current} "
                             "and try again")
    return current


def _champion_before(con: duckdb.DuckDBPyConnection, use_case: str, current: str) -> str | None:
    if not table_exists(con, PROMOTIONS_TABLE):
        return None
    row = con.execute(f"SELECT previous_champion FROM {PROMOTIONS_TABLE} WHERE use_case = $u "
                      "AND model_version = $v AND action <> $rollback "
                      "ORDER BY sequence DESC LIMIT 1",
                      {"u": use_case, "v": current, "rollback": ROLLBACK}).fetchone()
    return row[0] if row else None


def _check_file(row: dict, data_dir: Path, models_dir: Path, what: str) -> None:
    try:
        model_core.check_registered(data_dir, models_dir, row["model_path"],
                                    row["model_version"])
    except model_core.ModelError as err:
        raise LifecycleError(f"{what} refused: {err}") from None


def _require_text(what: str, **values: str) -> None:
    for name, value in values.items():
        if not value or not value.strip():
            raise LifecycleError(f"{what} refused: give a {name}")


def _set_champion(con: duckdb.DuckDBPyConnection, use_case: str, version: str) -> None:
    con.execute(f"UPDATE {REGISTRY_TABLE} SET status = $retired "
                "WHERE use_case = $use_case AND status = $champion",
                {"retired": RETIRED, "use_case": use_case, "champion": CHAMPION})
    con.execute(f"UPDATE {REGISTRY_TABLE} SET status = $champion WHERE model_version = $v",
                {"champion": CHAMPION, "v": version})


def _record_promotion(con: duckdb.DuckDBPyConnection, use_case: str, action: str, version: str,
                      previous: str | None, actor: str, reason: str, evidence: dict,
                      forced: bool) -> Promotion:
    frame = pl.DataFrame(schema=_PROMOTION_SCHEMA)
    ensure_table(con, PROMOTIONS_TABLE, frame)
    sequence = con.execute(f"SELECT coalesce(max(sequence), 0) + 1 FROM {PROMOTIONS_TABLE} "
                           "WHERE use_case = $u", {"u": use_case}).fetchone()[0]
    promotion = Promotion(
        use_case=use_case, sequence=sequence, action=action, model_version=version,
        previous_champion=previous, promoted_at=dt.datetime.now(dt.UTC), actor=actor,
        reason=reason, evidence=json.dumps(evidence, sort_keys=True, default=str),
        forced=forced)
    insert(con, PROMOTIONS_TABLE, pl.DataFrame([asdict(promotion)], schema=_PROMOTION_SCHEMA))
    return promotion


def resolve(con: duckdb.DuckDBPyConnection, use_case: str, pinned_version: str | None
            ) -> dict:
    """The registry row scoring must use: the pinned version if set, else the champion."""
    if not table_exists(con, REGISTRY_TABLE):
        raise MissingDataError(
            f"{REGISTRY_TABLE} is empty: train a model first (`batch-platform train`)")
    if pinned_version:
        rows = con.execute(f"SELECT * FROM {REGISTRY_TABLE} WHERE model_version = $v "
                           "AND use_case = $u", {"v": pinned_version, "u": use_case}).pl()
        if rows.height == 0:
            raise MissingDataError(f"pinned model version {pinned_version} is not in "
                                   f"{REGISTRY_TABLE} for use case {use_case}")
    else:
        rows = con.execute(f"SELECT * FROM {REGISTRY_TABLE} WHERE use_case = $u AND status = $c",
                           {"u": use_case, "c": CHAMPION}).pl()
        if rows.height == 0:
            raise MissingDataError(f"no champion model for use case {use_case}: train one first "
                                   "(`batch-platform train`)")
    return rows.row(0, named=True)


def calibration(record: dict) -> Calibration:
    """The post-processing a registry row records for its model."""
    band = ((record["band_low"], record["band_high"]) if record.get("band_low") is not None
            else None)
    return Calibration(threshold=record.get("threshold"), band=band)
