"""The monitoring page of a use case: one HTML file of charts, rewritten with the daily report.

``monitoring_data`` reads what the page shows from the lake, as small Polars frames (one row per
day, decile or day and column); ``monitoring_figures`` turns them into Plotly figures and
``monitoring_page`` into one HTML page. The page loads Plotly's JavaScript from one file beside
the use cases' folders (``plotly-<version>.min.js``, written once by ``write_monitoring_page``),
so it opens from the data directory with no network and each page stays small.

What it shows, over the ``PAGE_DAYS`` days up to the latest reported one:

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
import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import plotly
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from batch_platform.platform.files import write_bytes_atomic
from batch_platform.platform.monitoring import drift
from batch_platform.platform.monitoring.audits import AuditThresholds
from batch_platform.platform.reports.daily import ALL_SEGMENT
from batch_platform.platform.reports.shadow_comparison import DAY
from batch_platform.platform.storage.warehouse import table_name
from batch_platform.platform.use_case import UseCase

PAGE_DAYS = 365
CALIBRATION_DAYS = 30
DECILES = 10
PAGE_NAME = "monitoring.html"
PLOTLY_JS = f"plotly-{plotly.__version__}.min.js"
CHAMPION = "champion"
CHALLENGER = "challenger"
# Figure ids: the page's div ids, and what a reader (or a test) looks them up by.
QUALITY, CALIBRATION, VOLUME, DRIFT = "quality", "calibration", "volume", "drift"
TITLES = {QUALITY: "Realised quality per day", CALIBRATION: "Calibration",
          VOLUME: "Rows scored and rows rejected per day", DRIFT: "Drift (PSI) per day"}
METRIC_NAMES = {"auc": "AUC", "brier": "Brier score", "mae": "MAE", "rmse": "RMSE"}
COLOURS = {CHAMPION: "#1f77b4", CHALLENGER: "#d62728"}


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
        return ("auc", "brier") if self.binary else ("mae", "rmse")


def page_path(reports_dir: Path, use_case: str) -> Path:
    return reports_dir / use_case / PAGE_NAME


def monitoring_data(con: duckdb.DuckDBPyConnection, use_case: UseCase,
                    profile: drift.ModelProfile | None, thresholds: AuditThresholds,
                    generated_at: dt.datetime, chunk_rows: int = 100_000
                    ) -> MonitoringData | None:
    """The page's figures from the lake; None while the use case has no report yet."""
    spec = use_case.spec
    # Which tables exist, in one look at the catalog (each look costs a catalog query).
    tables = {f"{schema}.{name}" for schema, name in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database()").fetchall()}
    report_table = table_name(use_case.report_table)
    if report_table not in tables:
        return None
    first, last = con.execute(f"SELECT min(partition_date), max(partition_date) "
                              f"FROM {report_table}").fetchone()
    if last is None:
        return None
    first = max(first, last - dt.timedelta(days=PAGE_DAYS - 1))
    window = {"start": first, "end": last}
    binary = spec.is_binary
    output = "score" if binary else "prediction"
    report = con.execute(
        f"SELECT * FROM {report_table} WHERE segment_type = '{ALL_SEGMENT}' "
        "AND partition_date BETWEEN $start AND $end ORDER BY partition_date", window).pl()
    versions = dict(con.execute(
        "SELECT status, model_version FROM models.registry WHERE use_case = $u "
        "AND status IN ('champion', 'challenger')", {"u": use_case.name}).fetchall())
    labelled = _labelled_rows_sql(use_case, use_case.predictions_table, output)
    quality = _champion_quality(con, report, labelled, binary, window)
    calibration_window = (
        None if quality.height == 0 else
        (max(first, quality["partition_date"].max() - dt.timedelta(days=CALIBRATION_DAYS - 1)),
         quality["partition_date"].max()))
    if use_case.shadow_comparison_table in tables:
        challenger_quality = _challenger_quality(con, use_case, binary, window)
        if challenger_quality.height:
            quality = pl.concat([quality, challenger_quality], how="diagonal_relaxed")
    calibration = pl.DataFrame()
    if calibration_window is not None:
        sources = [(CHAMPION, labelled, None)]
        if versions.get(CHALLENGER) and use_case.shadow_table in tables:
            sources.append((CHALLENGER, _labelled_rows_sql(use_case, use_case.shadow_table,
                                                           output), versions[CHALLENGER]))
        calibration = pl.concat([_calibration(con, sql, role, binary, calibration_window,
                                              version) for role, sql, version in sources],
                                how="diagonal_relaxed")
    quarantined = [table_name(use_case.quarantine_table(source)) for source in use_case.sources
                   if use_case.quarantine_table(source) in tables]
    rejected = dict(con.execute(
        "SELECT partition_date, count(*) FROM (" + " UNION ALL ".join(
            f"SELECT partition_date FROM {table} WHERE partition_date BETWEEN $start AND $end"
            for table in quarantined) + ") GROUP BY ALL", window).fetchall()) if quarantined else {}
    volume = report.select("partition_date", "rows").with_columns(
        pl.col("partition_date").replace_strict(rejected, default=0, return_dtype=pl.Int64)
        .alias("rejected"))
    drift_frame, reference = _drift(con, use_case, profile, output, window, chunk_rows, tables)
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


def _champion_quality(con: duckdb.DuckDBPyConnection, report: pl.DataFrame, labelled: str,
                      binary: bool, window: dict) -> pl.DataFrame:
    """The report's realised figures per day (AUC; MAE, RMSE), and for a probability the Brier
    score of the same rows, which the report does not carry."""
    metrics = ["auc"] if binary else ["mae", "rmse"]
    quality = report.select(
        "partition_date", pl.lit(CHAMPION).alias("model"), "model_version",
        pl.col("outcomes_known").alias("rows"), *metrics)
    if binary:
        brier = con.execute(
            f"SELECT partition_date, avg(power(output - outcome, 2)) AS brier "
            f"FROM ({labelled}) GROUP BY ALL", window).pl()
        quality = quality.join(brier, on="partition_date", how="left")
    return quality.filter(pl.col("rows") > 0)


def _challenger_quality(con: duckdb.DuckDBPyConnection, use_case: UseCase, binary: bool,
                        window: dict) -> pl.DataFrame:
    """The challenger's figures on the days the shadow comparison judged."""
    metrics = ("auc", "brier") if binary else ("mae", "rmse")
    frame = con.execute(
        "SELECT partition_date, challenger_version AS model_version, rows, "
        + ", ".join(f"challenger_{m} AS {m}" for m in metrics)
        + f" FROM {table_name(use_case.shadow_comparison_table)} WHERE span = '{DAY}' "
        "AND partition_date BETWEEN $start AND $end ORDER BY partition_date", window).pl()
    return frame.with_columns(pl.lit(CHALLENGER).alias("model"))


def _calibration(con: duckdb.DuckDBPyConnection, labelled: str, role: str, binary: bool,
                 days: tuple[dt.date, dt.date], version: str | None) -> pl.DataFrame:
    """Per decile of the output (equal counts of rows): its mean, and what was realised."""
    realised = ("avg(outcome) AS realised_rate" if binary else
                "avg(outcome - output) AS mean_residual, "
                "quantile_cont(outcome - output, 0.1) AS residual_p10, "
                "quantile_cont(outcome - output, 0.9) AS residual_p90")
    only_version = "WHERE model_version = $version" if version else ""
    params = {"start": days[0], "end": days[1]} | ({"version": version} if version else {})
    frame = con.execute(
        f"SELECT decile, count(*) AS rows, avg(output) AS mean_output, {realised} FROM ("
        f"SELECT output, outcome, ntile({DECILES}) OVER (ORDER BY output) AS decile "
        f"FROM ({labelled}) {only_version}) GROUP BY decile ORDER BY decile", params).pl()
    return frame.with_columns(pl.lit(role).alias("model"))


def _drift(con: duckdb.DuckDBPyConnection, use_case: UseCase,
           profile: drift.ModelProfile | None, output: str, window: dict, chunk_rows: int,
           tables: set[str]) -> tuple[pl.DataFrame, tuple[str, str] | None]:
    schema = {"partition_date": pl.Date(), "kind": pl.String(), "column": pl.String(),
              "rows": pl.Int64(), "psi": pl.Float64()}
    if profile is None:
        return pl.DataFrame(schema=schema), None
    rows = []
    for kind, reference, table in (("feature", profile.features, use_case.features_table),
                                   ("output", profile.scores, use_case.predictions_table)):
        if not reference.columns or table not in tables:
            continue
        columns = ", ".join(f'"{c}"' for c in reference.columns)
        counter = drift.DriftCounter(reference)
        for chunk in _chunks(con, f"SELECT partition_date, {columns} FROM {table_name(table)} "
                             "WHERE partition_date BETWEEN $start AND $end", window, chunk_rows):
            counter.add(chunk)
        for day, by_column in counter.psi_by_day().items():
            rows += [{"partition_date": day, "kind": kind, "column": column,
                      "rows": counter.rows[day], "psi": value}
                     for column, value in by_column.items()]
    return pl.DataFrame(rows, schema=schema), (profile.features.window, profile.scores.window)


def _chunks(con: duckdb.DuckDBPyConnection, sql: str, params: dict, chunk_rows: int
            ) -> Iterator[pl.DataFrame]:
    reader = con.execute(sql, params).to_arrow_reader(chunk_rows)
    for batch in reader:
        yield pl.from_arrow(batch)  # type: ignore[misc]


# --- the figures and the page -------------------------------------------------------------

def _day_count(data: MonitoringData) -> int:
    return (data.last_day - data.first_day).days + 1


def _days(frame: pl.DataFrame) -> list[str]:
    return [day.isoformat() for day in frame["partition_date"]]


def monitoring_figures(data: MonitoringData) -> dict[str, go.Figure]:
    """The page's four figures, by id; their traces carry the frames' values as plain lists."""
    return {QUALITY: _quality_figure(data), CALIBRATION: _calibration_figure(data),
            VOLUME: _volume_figure(data), DRIFT: _drift_figure(data)}


def _layout(figure: go.Figure, title: str, height: int, days: int | None = None) -> go.Figure:
    """Common looks; ``days``: the x axes are days, labelled as days (at most 12 ticks)."""
    if days is not None:
        figure.update_xaxes(type="date", tickformat="%b %d", nticks=max(2, min(days, 12)))
    figure.update_layout(title=title, height=height, template="none", plot_bgcolor="white",
                         legend={"orientation": "h", "y": -0.15}, margin={"t": 90, "b": 40})
    return figure


def _quality_figure(data: MonitoringData) -> go.Figure:
    metrics = data.metrics
    figure = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=[METRIC_NAMES[m] for m in metrics])
    for role in (CHAMPION, CHALLENGER):
        rows = (data.quality.filter(pl.col("model") == role).sort("partition_date")
                if data.quality.height else data.quality)
        if not rows.height:
            continue
        version = ",".join(sorted(set(rows["model_version"])))
        for index, metric in enumerate(metrics, start=1):
            figure.add_trace(go.Scatter(
                x=_days(rows), y=rows[metric].to_list(), mode="lines+markers",
                name=f"{role} ({version})", legendgroup=role, showlegend=index == 1,
                line={"color": COLOURS[role]}, customdata=rows["rows"].to_list(),
                hovertemplate=f"%{{x}}: {METRIC_NAMES[metric]} %{{y:.4f}} "
                              "on %{customdata} rows"), row=index, col=1)
    return _layout(figure, TITLES[QUALITY], 520, _day_count(data))


def _calibration_figure(data: MonitoringData) -> go.Figure:
    figure = go.Figure()
    calibration = data.calibration
    window = data.calibration_window
    span = f"{window[0]}..{window[1]}" if window else "no day with known outcomes"
    for role in (CHAMPION, CHALLENGER):
        rows = (calibration.filter(pl.col("model") == role).sort("decile")
                if calibration.height else calibration)
        if not rows.height:
            continue
        common = {"x": rows["mean_output"].to_list(), "mode": "lines+markers", "name": role,
                  "line": {"color": COLOURS[role]}, "customdata": rows["rows"].to_list()}
        if data.binary:
            figure.add_trace(go.Scatter(
                y=rows["realised_rate"].to_list(), **common,
                hovertemplate="mean score %{x:.3f}: realised %{y:.3f} (%{customdata} rows)"))
        else:
            mean = rows["mean_residual"]
            figure.add_trace(go.Scatter(
                y=mean.to_list(), **common, error_y={
                    "type": "data", "symmetric": False,
                    "array": (rows["residual_p90"] - mean).to_list(),
                    "arrayminus": (mean - rows["residual_p10"]).to_list()},
                hovertemplate="mean prediction %{x:.2f}: mean residual %{y:.2f} "
                              "(%{customdata} rows)"))
    if data.binary:
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect",
                                    line={"dash": "dot", "color": "#7f7f7f"}))
        figure.update_xaxes(title="mean score of the decile")
        figure.update_yaxes(title="realised positive rate")
    else:
        figure.add_hline(y=0, line={"dash": "dot", "color": "#7f7f7f"})
        figure.update_xaxes(title="mean prediction of the decile")
        figure.update_yaxes(title="residual: outcome - prediction (mean, 10-90 %)")
    return _layout(figure, f"{TITLES[CALIBRATION]} by decile of the {data.output}, {span}", 460)


def _volume_figure(data: MonitoringData) -> go.Figure:
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                           subplot_titles=["rows scored", "input rows rejected (quarantine)"])
    volume = data.volume
    figure.add_trace(go.Bar(x=_days(volume), y=volume["rows"].to_list(), name="rows scored",
                            marker={"color": COLOURS[CHAMPION]}), row=1, col=1)
    figure.add_trace(go.Bar(x=_days(volume), y=volume["rejected"].to_list(),
                            name="rows rejected", marker={"color": "#ff7f0e"}), row=2, col=1)
    figure.update_yaxes(rangemode="tozero")
    return _layout(figure, TITLES[VOLUME], 460, _day_count(data))


def _drift_figure(data: MonitoringData) -> go.Figure:
    reference = data.drift_reference
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                           subplot_titles=[
                               f"features against the training window {reference[0]}"
                               if reference else "features: the champion has no profile",
                               f"the {data.output} against the validation window {reference[1]}"
                               if reference else f"the {data.output}"])
    for row, kind in ((1, "feature"), (2, "output")):
        rows = data.drift.filter(pl.col("kind") == kind).sort("column", "partition_date")
        for (column,), per_column in rows.partition_by("column", as_dict=True,
                                                        maintain_order=True).items():
            figure.add_trace(go.Scatter(
                x=_days(per_column), y=per_column["psi"].to_list(), mode="lines+markers",
                name=str(column), customdata=per_column["rows"].to_list(),
                hovertemplate=f"{column} %{{x}}: PSI %{{y:.3f}} (%{{customdata}} rows)"),
                row=row, col=1)
    limits = data.thresholds
    for row, level, name in ((1, limits.psi_warn, "warn"), (1, limits.psi_error, "block"),
                             (2, limits.score_psi_warn, "warn")):
        figure.add_hline(y=level, row=row, col=1, line={"dash": "dot", "color": "#7f7f7f"},
                         annotation_text=f"{name} {level}", annotation_position="top left")
    return _layout(figure, TITLES[DRIFT], 560, _day_count(data))


EXPLANATIONS = {
    QUALITY: "Per day with known outcomes: the champion is the predictions analysts read "
             "(the daily report's figures{brier}), the challenger its shadow rows on the days "
             "the shadow comparison judged.",
    CALIBRATION: "Rows with known outcomes split into ten equal groups by the model's output. "
                 "Binary: a calibrated model's points lie on the diagonal. Regression: the "
                 "mean residual per group (bars: 10 % to 90 % of the residuals) sits at zero.",
    VOLUME: "Rows scored per day, and input rows of the day's landing files rejected into "
            "quarantine (every source of the use case).",
    DRIFT: "Population stability index of each drift feature and of the model's output, per "
           "day, against the current champion's profile; dotted lines are the checks' levels.",
}


def explanation(data: MonitoringData, key: str) -> str:
    brier = "; the Brier score from the same rows" if data.binary else ""
    return EXPLANATIONS[key].format(brier=brier)


def monitoring_page(data: MonitoringData, plotly_src: str = f"../{PLOTLY_JS}") -> str:
    """The whole page: a header, then each figure with a line saying what it shows."""
    figures = monitoring_figures(data)
    sections = "\n".join(
        f'<section><p class="explain">{html.escape(explanation(data, key))}</p>\n'
        + figure.to_html(full_html=False, include_plotlyjs=False, div_id=key,
                         config={"displaylogo": False, "responsive": True})
        + "</section>" for key, figure in figures.items())
    title = f"{data.use_case}: monitoring"
    kind = "binary" if data.binary else "regression"
    facts = (f"{kind}; days {data.first_day}..{data.last_day}; champion "
             f"{data.champion or 'none'}; challenger {data.challenger or 'none'}; generated "
             f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        f'<script src="{html.escape(plotly_src)}"></script>'
        "<style>body{font-family:sans-serif;margin:1em 2em;max-width:1100px}"
        ".explain{color:#444}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1><p id=\"facts\">{html.escape(facts)}</p>\n"
        f"{sections}\n</body></html>\n")


def write_monitoring_page(reports_dir: Path, data: MonitoringData) -> Path:
    """Write the page atomically under ``reports_dir/<use case>/``, and Plotly's JavaScript
    beside the use cases' folders once; the page's path."""
    script = reports_dir / PLOTLY_JS
    if not script.is_file():
        source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        write_bytes_atomic(script, source.read_bytes())
    path = page_path(reports_dir, data.use_case)
    write_bytes_atomic(path, monitoring_page(data).encode())
    return path
