"""The gate's evidence read from the lake: the champion's and the challenger's predictions of
the same rows, joined to the outcomes the features table has for them, per day.

Only days after both models' validation windows count: a day a model was trained or
calibrated on says nothing about how it does on days it has not seen.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models import gate
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.storage.warehouse import MissingDataError, table_exists, table_name


def first_judged_day(champion: dict, challenger: dict) -> dt.date:
    """The first day both models are judged on: after the later validation window."""
    return max(champion["valid_end"], challenger["valid_end"]) + dt.timedelta(days=1)


def daily_comparison(con: duckdb.DuckDBPyConnection, spec: FeatureSpec, *,
                     predictions_table: str, shadow_table: str, features_table: str,
                     champion: dict, challenger: dict, end: dt.date | None = None
                     ) -> pl.DataFrame:
    """Per day from ``first_judged_day`` to ``end`` (default: all): the rows with a known
    outcome and each realised metric of both models (``gate.daily_metrics``).

    ``champion`` and ``challenger`` are registry rows; the champion's rows are read from
    ``predictions_table``, the challenger's from ``shadow_table``, each by its own version.
    """
    for table in (predictions_table, shadow_table, features_table):
        if not table_exists(con, table):
            raise MissingDataError(f"{table} does not exist yet: the gate needs the champion's "
                                   "predictions, the challenger's shadow predictions and the "
                                   "features with their outcomes")
    kind = objective(spec.objective)
    start = first_judged_day(champion, challenger)
    window = {"start": start, "end": end or dt.date.max}
    columns = f'partition_date, "{spec.id_column}", "{kind.output}", model_version'

    def scored(table: str, version: str) -> pl.DataFrame:
        return con.execute(f"SELECT {columns} FROM {table_name(table)} WHERE model_version = $v "
                           "AND partition_date BETWEEN $start AND $end",
                           window | {"v": version}).pl()

    outcomes = con.execute(
        f'SELECT partition_date, "{spec.id_column}", "{spec.label_column}" FROM '
        f'{table_name(features_table)} WHERE "{spec.label_column}" IS NOT NULL '
        "AND partition_date BETWEEN $start AND $end", window).pl()
    paired = gate.paired_outcomes(
        scored(predictions_table, champion["model_version"]),
        scored(shadow_table, challenger["model_version"]), outcomes,
        id_column=spec.id_column, output=kind.output, outcome=spec.label_column,
        champion_version=champion["model_version"],
        challenger_version=challenger["model_version"])
    return gate.daily_metrics(paired, kind, spec.label_column)
