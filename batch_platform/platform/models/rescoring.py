"""Which scored days a change of champion makes stale, and the windows a scheduled retraining
trains and validates on.

After a promotion, a rollback or a new champion trained, the days the model scoring uses should
score again are those after its validation window that hold predictions by another version.
Not the days it was trained or validated on: its predictions there are in-sample (its
threshold was chosen on them), so the older out-of-sample rows stay. Not the days never scored
either: those are the landing sensor's.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from batch_platform.platform.models import registry
from batch_platform.platform.storage.warehouse import MissingDataError, table_exists
from batch_platform.platform.use_case import UseCase


def stale_days(con: duckdb.DuckDBPyConnection, use_case: UseCase,
               pinned_version: str | None = None) -> list[dt.date]:
    """The scored days after the scoring model's validation window whose predictions were made
    by another version, oldest first; none without a model or predictions."""
    try:
        model = registry.resolve(con, use_case.name, pinned_version)
    except MissingDataError:
        return []
    if not table_exists(con, use_case.predictions_table):
        return []
    rows = con.execute(
        f"SELECT DISTINCT partition_date FROM {use_case.predictions_table} "
        "WHERE partition_date > $after AND model_version <> $version ORDER BY 1",
        {"after": model["valid_end"], "version": model["model_version"]}).fetchall()
    return [row[0] for row in rows]


def last_day_with_outcomes(con: duckdb.DuckDBPyConnection, use_case: UseCase) -> dt.date | None:
    """The last day of the features table with a known outcome (a label), or None."""
    if not table_exists(con, use_case.features_table):
        return None
    return con.execute(
        f"SELECT max(partition_date) FROM {use_case.features_table} "
        f'WHERE "{use_case.spec.label_column}" IS NOT NULL').fetchone()[0]


Window = tuple[dt.date, dt.date]


def trailing_windows(last_day: dt.date, window_days: int, validation_days: int,
                     first_day: dt.date) -> tuple[Window, Window] | None:
    """Training and validation windows of a trailing window of ``window_days`` ending on
    ``last_day``: validation is its last ``validation_days``, training the days before them,
    starting no earlier than ``first_day``. None when no training day is left."""
    valid = (last_day - dt.timedelta(days=validation_days - 1), last_day)
    train_end = valid[0] - dt.timedelta(days=1)
    train_start = max(first_day, last_day - dt.timedelta(days=window_days - 1))
    if train_end < train_start:
        return None
    return (train_start, train_end), valid
