"""What a use case's monitoring page shows, read from the lake as small Polars frames (one row
per day, decile, or day and column); ``monitoring_page.py`` draws them.

Over the ``PAGE_DAYS`` reported days up to the latest one:

- realised quality per day: the daily report's own figures for the predictions analysts read
  (AUC and, from the same rows, the Brier score; MAE and RMSE), and the challenger's from
  ``reports.<use case>_shadow_comparison`` on the days it was judged;
- calibration over the latest ``CALIBRATION_DAYS`` days with known outcomes: per decile of the
  output, the mean score against the realised positive rate (binary), or the mean residual and
  its 10-90 % range (regression), for the predictions and for the challenger's shadow rows;
- rows scored per day, and input rows rejected into quarantine per day;
- drift: each day's PSI of every drift feature and of the output against the current
  champion's profile, computed by ``monitoring/drift.py`` as the drift checks compute it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.models.objectives import objective
from batch_platform.platform.monitoring import drift
from batch_platform.platform.monitoring.audits import AuditThresholds
from batch_platform.platform.reports.daily import ALL_SEGMENT
from batch_platform.platform.reports.shadow_comparison import DAY
from batch_platform.platform.storage.warehouse import table_exists, table_name
from batch_platform.platform.use_case import UseCase

# A quarter: enough to see a trend, and each report reads no more than that of the history.
PAGE_DAYS = 92
CALIBRATION_DAYS = 30
DECILES = 10
PAGE_NAME = "monitoring.html"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class MonitoringData:
    """What the page shows; every frame is small (per day, per decile, per day and column)."""

    use_case: str
    binary: bool
    output: str  # score or prediction
    first_day: dt.date
    last_day: dt.date
    champion: str | None  # the registry's, now
    challenger: str | None
    # partition_date, model ("champion", "challenger"), model_version, rows, and each metric
    quality: pl.DataFrame
    # model, decile, rows, mean_output, then realised_rate (binary) or mean_residual,
    # residual_p10, residual_p90 (regression)
    calibration: pl.DataFrame
    calibration_window: tuple[dt.date, dt.date] | None
    volume: pl.DataFrame  # partition_date, rows, rejected
    drift: pl.DataFrame  # partition_date, kind ("feature", "output"), column, rows, psi
    # The windows the PSI compares with: the features' (training) and the output's
    # (validation); None without a profile.
    drift_reference: tuple[str, str] | None
    thresholds: AuditThresholds
    generated_at: dt.datetime

    @property
    def metrics(self) -> tuple[str, ...]:
        """The objective's realised metrics, as the shadow comparison names them."""
        return realised_metrics(self.binary)


def realised_metrics(binary: bool) -> tuple[str, ...]:
    kind = objective("binary" if binary else "regression")
    return tuple(name for name, _ in kind.realised_metrics)


def page_path(reports_dir: Path, use_case: str) -> Path:
    """Where the use case's page lives: ``<reports dir>/<use case>/monitoring.html``."""
    return reports_dir / use_case / PAGE_NAME


def monitoring_data(con: duckdb.DuckDBPyConnection, use_case: UseCase,
                    profile: drift.ModelProfile | None, thresholds: AuditThresholds,
                    generated_at: dt.datetime, chunk_rows: int = 100_000
                    ) -> MonitoringData | None:
    """The page's figures from the lake; None while the use case has no report yet."""
    spec = use_case.spec
    report_table = table_name(use_case.report_table)
    if not table_exists(con, report_table):
        return None
    # A row a day: every day's, then the latest PAGE_DAYS.
    report = con.execute(f"SELECT * FROM {report_table} WHERE segment_type = '{ALL_SEGMENT}' "
                         "ORDER BY partition_date").pl()
    if report.height == 0:
        return None
    last = report["partition_date"][-1]
    first = max(report["partition_date"][0], last - dt.timedelta(days=PAGE_DAYS - 1))
    report = report.filter(pl.col("partition_date") >= first)
    window = {"start": first, "end": last}
    binary = spec.is_binary
    output = objective(spec.objective).output
    versions = dict(con.execute(
        "SELECT status, model_version FROM models.registry WHERE use_case = $u "
        "AND status IN ('champion', 'challenger')", {"u": use_case.name}).fetchall())
    quality = _champion_quality(report, binary)
    calibration_window = (
        None if quality.height == 0 else
        (max(first, quality["partition_date"].max() - dt.timedelta(days=CALIBRATION_DAYS - 1)),
         quality["partition_date"].max()))
    # The scored rows and their features, read once for the Brier score, the calibration and
    # the drift.
    rows = _champion_rows(con, use_case, profile, output, window, calibration_window,
                          chunk_rows)
    if binary:
        quality = quality.join(rows.brier, on="partition_date", how="left")
    if table_exists(con, use_case.shadow_comparison_table):
        challenger_quality = _challenger_quality(con, use_case, binary, window)
        if challenger_quality.height:
            quality = pl.concat([quality, challenger_quality], how="diagonal_relaxed")
    calibration = pl.DataFrame()
    if calibration_window is not None:
        deciles = [_calibration(rows.labelled, CHAMPION, binary)]
        if versions.get(CHALLENGER) and table_exists(con, use_case.shadow_table):
            shadowed = con.execute(
                f"SELECT output, outcome FROM ("
                f"{_labelled_rows_sql(use_case, use_case.shadow_table, output)}) "
                "WHERE model_version = $version",
                {"start": calibration_window[0], "end": calibration_window[1],
                 "version": versions[CHALLENGER]}).pl()
            deciles.append(_calibration(shadowed, CHALLENGER, binary))
        calibration = pl.concat(deciles, how="diagonal_relaxed")
    quarantined = [table_name(use_case.quarantine_table(source)) for source in use_case.sources
                   if table_exists(con, use_case.quarantine_table(source))]
    rejected = dict(con.execute(
        "SELECT partition_date, count(*) FROM (" + " UNION ALL ".join(
            f"SELECT partition_date FROM {table} WHERE partition_date BETWEEN $start AND $end"
            for table in quarantined) + ") GROUP BY ALL", window).fetchall()) if quarantined else {}
    volume = report.select("partition_date", "rows").with_columns(
        pl.col("partition_date").replace_strict(rejected, default=0, return_dtype=pl.Int64)
        .alias("rejected"))
    drift_frame = _drift_frame(rows.drift)
    reference = (profile.features.window, profile.scores.window) if profile else None
    return MonitoringData(
        use_case=use_case.name, binary=binary, output=output, first_day=first, last_day=last,
        champion=versions.get(CHAMPION), challenger=versions.get(CHALLENGER), quality=quality,
        calibration=calibration, calibration_window=calibration_window, volume=volume,
        drift=drift_frame, drift_reference=reference, thresholds=thresholds,
        generated_at=generated_at)


def _labelled_rows_sql(use_case: UseCase, predictions_table: str, output: str) -> str:
    """Each scored row of $start..$end whose outcome is known: day, output, outcome, version."""
    spec = use_case.spec
    key, label = f'"{spec.id_column}"', f'"{spec.label_column}"'
    return (f"SELECT p.partition_date, p.{output} AS output, "
            f"CAST(f.{label} AS DOUBLE) AS outcome, p.model_version "
            f"FROM {table_name(predictions_table)} p JOIN "
            f"{table_name(use_case.features_table)} f USING (partition_date, {key}) "
            f"WHERE p.partition_date BETWEEN $start AND $end AND f.{label} IS NOT NULL")


def _champion_quality(report: pl.DataFrame, binary: bool) -> pl.DataFrame:
    """The report's realised figures per day (AUC; MAE, RMSE) on the days with outcomes."""
    metrics = ["auc"] if binary else ["mae", "rmse"]
    return report.select(
        "partition_date", pl.lit(CHAMPION).alias("model"), "model_version",
        pl.col("outcomes_known").alias("rows"), *metrics).filter(pl.col("rows") > 0)


@dataclass(frozen=True)
class ChampionRows:
    """What the page needs of the window's scored rows, added up chunk by chunk."""

    brier: pl.DataFrame  # partition_date, brier: of the rows with known outcomes
    labelled: pl.DataFrame  # output, outcome: the calibration window's rows with outcomes
    drift: list[tuple[str, drift.DriftCounter]]  # ("feature" | "output", counter)


def _champion_rows(con: duckdb.DuckDBPyConnection, use_case: UseCase,
                   profile: drift.ModelProfile | None, output: str, window: dict,
                   calibration_window: tuple[dt.date, dt.date] | None, chunk_rows: int
                   ) -> ChampionRows:
    """One read of the predictions beside their features over the window (a full join: the
    drift of each side counts that side's rows, as the drift checks do), in chunks."""
    spec = use_case.spec
    key, label = f'"{spec.id_column}"', f'"{spec.label_column}"'
    features = list(profile.features.columns) if profile else []
    scores = list(profile.scores.columns) if profile else []
    # The predictions' columns renamed, so none clashes with a feature's name.
    score_columns = {column: f"_score_{index}" for index, column in enumerate(scores)}
    sql = (
        "SELECT coalesce(p.partition_date, f.partition_date) AS partition_date, "
        "p.partition_date IS NOT NULL AS _scored, f.partition_date IS NOT NULL AS _featured, "
        f"p.{output} AS _output, CAST(f.{label} AS DOUBLE) AS _outcome"
        + "".join(f', p."{column}" AS {name}' for column, name in score_columns.items())
        + "".join(f', f."{column}"' for column in features)
        + f" FROM (SELECT * FROM {table_name(use_case.predictions_table)} "
        "WHERE partition_date BETWEEN $start AND $end) p "
        f"FULL JOIN (SELECT * FROM {table_name(use_case.features_table)} "
        "WHERE partition_date BETWEEN $start AND $end) f "
        f"ON p.partition_date = f.partition_date AND p.{key} = f.{key}")
    feature_drift = drift.DriftCounter(profile.features if features else None)
    output_drift = drift.DriftCounter(profile.scores if scores else None)
    errors, labelled = [], []
    for chunk in _chunks(con, sql, window, chunk_rows):
        feature_drift.add(chunk.filter(pl.col("_featured")).select("partition_date", *features))
        output_drift.add(chunk.filter(pl.col("_scored")).select(
            "partition_date", *(pl.col(name).alias(column)
                                for column, name in score_columns.items())))
        known = chunk.filter(pl.col("_scored") & pl.col("_outcome").is_not_null())
        errors.append(known.group_by("partition_date").agg(
            pl.len().alias("rows"), ((pl.col("_output") - pl.col("_outcome")) ** 2).sum()
            .alias("squared")))
        if calibration_window is not None:
            labelled.append(known.filter(pl.col("partition_date").is_between(
                *calibration_window)).select(
                pl.col("_output").alias("output"), pl.col("_outcome").alias("outcome")))
    brier = (pl.concat(errors).group_by("partition_date").agg(
        (pl.col("squared").sum() / pl.col("rows").sum()).alias("brier")) if errors else
        pl.DataFrame(schema={"partition_date": pl.Date(), "brier": pl.Float64()}))
    return ChampionRows(
        brier=brier,
        labelled=(pl.concat(labelled) if labelled else
                  pl.DataFrame(schema={"output": pl.Float64(), "outcome": pl.Float64()})),
        drift=[(kind, counter) for kind, counter, columns in (
            ("feature", feature_drift, features), ("output", output_drift, scores))
            if columns])


def _challenger_quality(con: duckdb.DuckDBPyConnection, use_case: UseCase, binary: bool,
                        window: dict) -> pl.DataFrame:
    """The challenger's figures on the days the shadow comparison judged."""
    metrics = realised_metrics(binary)
    frame = con.execute(
        "SELECT partition_date, challenger_version AS model_version, rows, "
        + ", ".join(f"challenger_{m} AS {m}" for m in metrics)
        + f" FROM {table_name(use_case.shadow_comparison_table)} WHERE span = '{DAY}' "
        "AND partition_date BETWEEN $start AND $end ORDER BY partition_date", window).pl()
    return frame.with_columns(pl.lit(CHALLENGER).alias("model"))


def _calibration(rows: pl.DataFrame, role: str, binary: bool) -> pl.DataFrame:
    """Per decile of the output (equal counts of rows, as SQL's ntile: the first
    ``rows % DECILES`` deciles hold one row more): its mean, and what was realised."""
    count = rows.height
    size, larger = divmod(count, DECILES)
    first_smaller = larger * (size + 1)  # the row where the deciles of ``size`` rows begin
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    decile = pl.when(index < first_smaller).then(index // (size + 1)).otherwise(
        larger + (index - first_smaller) // max(size, 1)) + 1
    residual = pl.col("outcome") - pl.col("output")
    realised = ([pl.col("outcome").mean().alias("realised_rate")] if binary else
                [residual.mean().alias("mean_residual"),
                 residual.quantile(0.1, "linear").alias("residual_p10"),
                 residual.quantile(0.9, "linear").alias("residual_p90")])
    return (rows.sort("output").with_columns(decile.alias("decile"))
            .group_by("decile").agg(pl.len().cast(pl.Int64).alias("rows"),
                                    pl.col("output").mean().alias("mean_output"), *realised)
            .sort("decile").with_columns(pl.lit(role).alias("model")))


def _drift_frame(counters: list[tuple[str, drift.DriftCounter]]) -> pl.DataFrame:
    """Each day's PSI of each column against the profile, a row per day and column."""
    schema = {"partition_date": pl.Date(), "kind": pl.String(), "column": pl.String(),
              "rows": pl.Int64(), "psi": pl.Float64()}
    return pl.DataFrame([
        {"partition_date": day, "kind": kind, "column": column, "rows": counter.rows[day],
         "psi": value}
        for kind, counter in counters for day, by_column in counter.psi_by_day().items()
        for column, value in by_column.items()], schema=schema)


def _chunks(con: duckdb.DuckDBPyConnection, sql: str, params: dict, chunk_rows: int
            ) -> Iterator[pl.DataFrame]:
    reader = con.execute(sql, params).to_arrow_reader(chunk_rows)
    for batch in reader:
        yield pl.from_arrow(batch)  # type: ignore[misc]
