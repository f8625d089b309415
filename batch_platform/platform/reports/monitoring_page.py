"""A use case's monitoring page: ``MonitoringData`` (``monitoring.py``) as Plotly figures, in one
HTML file.

The page loads Plotly's JavaScript from one file beside the use cases' folders
(``plotly-<version>.min.js``, written once by ``write_monitoring_page``), so it opens from the
data directory with no network and each page stays small. Importing Plotly takes about half a
second, so only what writes a page imports this module.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from batch_platform.platform.files import write_bytes_atomic
from batch_platform.platform.reports.monitoring import (
    CHALLENGER,
    CHAMPION,
    MonitoringData,
    page_path,
)

PLOTLY_JS = f"plotly-{plotly.__version__}.min.js"
# Figure ids: the page's div ids, and what a reader (or a test) looks them up by.
QUALITY, CALIBRATION, VOLUME, DRIFT = "quality", "calibration", "volume", "drift"
TITLES = {QUALITY: "Realised quality per day", CALIBRATION: "Calibration",
          VOLUME: "Rows scored and rows rejected per day", DRIFT: "Drift (PSI) per day"}
METRIC_NAMES = {"auc": "AUC", "brier": "Brier score", "mae": "MAE", "rmse": "RMSE"}
COLOURS = {CHAMPION: "#1f77b4", CHALLENGER: "#d62728"}


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
