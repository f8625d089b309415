"""``reports.<use case>_shadow_comparison``: the champion against the challenger on realised
outcomes, written with the daily report.

For each reported day on which both models scored the same rows and outcomes are known, two
rows: ``span = 'day'``, the day alone, and ``span = 'cumulated'``, every judged day from the
first (the day after the later of the two validation windows) up to and including it. The
figures are the gate's own: ``evidence.daily_comparison`` reads both models' predictions from
the lake and ``gate.daily_metrics`` / ``gate.cumulated_metrics`` compute them, so the report
and a promotion's evidence cannot disagree.

A day reported while there is no challenger has no rows (its earlier ones are deleted), and so
has a day that is not judged (inside a validation window, outcomes unknown, or not scored in
the shadow by the current pair). A cumulated row says what was known when its day was
reported: reporting an earlier day again does not change it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import polars as pl

from batch_platform.platform.models import evidence, gate
from batch_platform.platform.models.objectives import Objective, objective
from batch_platform.platform.scoring.shadow import scoring_models
from batch_platform.platform.storage.warehouse import table_exists
from batch_platform.platform.use_case import UseCase

DAY = "day"
CUMULATED = "cumulated"
SPANS = (DAY, CUMULATED)


def comparison_schema(kind: Objective) -> dict[str, pl.DataType]:
    return {
        "partition_date": pl.Date(), "span": pl.String(), "champion_version": pl.String(),
        "challenger_version": pl.String(), "first_day": pl.Date(), "days": pl.Int64(),
        "rows": pl.Int64(),
        **{f"{role}_{name}": pl.Float64() for role in gate.ROLES
           for name, _ in kind.realised_metrics},
        "reported_at": pl.Datetime("us", "UTC"),
    }


def comparison_rows(daily: pl.DataFrame, kind: Objective, days: Sequence[dt.date],
                    champion_version: str, challenger_version: str,
                    reported_at: dt.datetime) -> pl.DataFrame:
    """The rows of ``days`` from ``daily`` (``gate.daily_metrics`` of every judged day up to
    the last of ``days``): each day's own figures, and the figures cumulated up to it."""
    schema = comparison_schema(kind)
    metrics = [f"{role}_{name}" for role in gate.ROLES for name, _ in kind.realised_metrics]
    daily = daily.sort("partition_date")
    rows = []
    for day in sorted(set(days) & set(daily["partition_date"])):
        so_far = daily.filter(pl.col("partition_date") <= day)
        today = so_far.row(-1, named=True)
        cumulated = gate.cumulated_metrics(so_far, kind)
        common = {"partition_date": day, "champion_version": champion_version,
                  "challenger_version": challenger_version, "reported_at": reported_at}
        rows.append(common | {"span": DAY, "first_day": day, "days": 1, "rows": today["rows"],
                              **{column: today[column] for column in metrics}})
        rows.append(common | {
            "span": CUMULATED, "first_day": so_far["partition_date"][0], "days": so_far.height,
            "rows": int(so_far["rows"].sum()),
            **{f"{role}_{name}": cumulated[name][role] for role in gate.ROLES
               for name, _ in kind.realised_metrics}})
    return pl.DataFrame(rows, schema=schema)


def shadow_comparison(con: duckdb.DuckDBPyConnection, use_case: UseCase,
                      pinned_version: str | None, days: Sequence[dt.date],
                      reported_at: dt.datetime) -> pl.DataFrame | None:
    """The comparison rows of ``days`` for the model that scores (the champion, or the pinned
    version) and the challenger; None without a challenger (the days lose their rows)."""
    models = scoring_models(con, use_case.name, pinned_version)
    if models.challenger is None:
        return None
    kind = objective(use_case.spec.objective)
    champion, challenger = models.scoring, models.challenger
    if not table_exists(con, use_case.shadow_table):  # not scored in the shadow yet
        return pl.DataFrame(schema=comparison_schema(kind))
    daily = evidence.daily_comparison(
        con, use_case.spec, predictions_table=use_case.predictions_table,
        shadow_table=use_case.shadow_table, features_table=use_case.features_table,
        champion=champion, challenger=challenger, end=max(days))
    return comparison_rows(daily, kind, days, champion["model_version"],
                           challenger["model_version"], reported_at)
