"""``models.registry``: one row per model version, and which one is the champion."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import duckdb
import polars as pl

from batch_platform.platform.models.objectives import Calibration
from batch_platform.platform.storage.warehouse import (
    MissingDataError,
    ensure_table,
    insert,
    table_exists,
)

REGISTRY_TABLE = "models.registry"
CHAMPION = "champion"
RETIRED = "retired"


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


def register_champion(con: duckdb.DuckDBPyConnection, record: ModelRecord) -> None:
    """Record ``record`` as its use case's champion and retire the previous one, atomically.

    Registering the same version again replaces its row, so retraining on the same data is
    idempotent. Inside the commit's transaction.
    """
    frame = pl.DataFrame([asdict(record) | {"status": CHAMPION}], schema=_SCHEMA)
    ensure_table(con, REGISTRY_TABLE, frame)
    con.execute(f"UPDATE {REGISTRY_TABLE} SET status = $retired "
                "WHERE use_case = $use_case AND status = $champion",
                {"retired": RETIRED, "use_case": record.use_case, "champion": CHAMPION})
    con.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_version = $version",
                {"version": record.model_version})
    insert(con, REGISTRY_TABLE, frame)


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
