"""A use case's monitoring page: ``MonitoringData`` (``monitoring.py``) as Plotly figures, in one
HTML file.

The page loads Plotly's JavaScript from one file beside the use cases' folders
(``plotly-<version>.min.js``, written once by ``write_monitoring_page``), so it opens from the
data directory with no network and each page stays small. The figures are plain dicts drawn
by Plotly.js; Plotly's Python side is not imported.
"""

from __future__ import annotations

import html
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import polars as pl

from batch_platform.platform.files import write_bytes_atomic
from batch_platform.platform.reports.monitoring import (
    CHALLENGER,
    CHAMPION,
    MonitoringData,
    page_path,
)

# Figures are plain dicts handed to Plotly.js as they are: Plotly's Python figure objects
# validate every property, which cost more than reading the lake. Nor is Plotly imported: its
# version and its JavaScript file are read from the installed package.
PLOTLY_VERSION = importlib.metadata.version("plotly")
PLOTLY_JS = f"plotly-{PLOTLY_VERSION}.min.js"
# Figure ids: the page's div ids, and what a reader (or a test) looks them up by.
QUALITY, CALIBRATION, VOLUME, DRIFT = "quality", "calibration", "volume", "drift"
TITLES = {QUALITY: "Realised quality per day", CALIBRATION: "Calibration",
          VOLUME: "Rows scored and rows rejected per day", DRIFT: "Drift (PSI) per day"}
METRIC_NAMES = {"auc": "AUC", "brier": "Brier score", "mae": "MAE", "rmse": "RMSE"}
COLOURS = {CHAMPION: "#1f77b4", CHALLENGER: "#d62728"}
GUIDE = {"dash": "dot", "color": "#7f7f7f"}
CONFIG = {"displaylogo": False, "responsive": True}

Figure = dict[str, Any]  # {"data": [trace, ...], "layout": {...}}, as Plotly.js takes them


def plotly_js_source() -> Path:
    """Plotly's minified JavaScript as the installed package ships it."""
    spec = importlib.util.find_spec("plotly")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise OSError("plotly is not installed: install the project's dependencies")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _day_count(data: MonitoringData) -> int:
    return (data.last_day - data.first_day).days + 1


def _days(frame: pl.DataFrame) -> list[str]:
    return [day.isoformat() for day in frame["partition_date"]]


def _values(series: pl.Series) -> list:
    """A column as JSON values: a NaN is a gap, as Plotly draws a missing value."""
    return (series.fill_nan(None) if series.dtype.is_float() else series).to_list()


def monitoring_figures(data: MonitoringData) -> dict[str, Figure]:
    """The page's four figures, by id; their traces carry the frames' values as plain lists."""
    return {QUALITY: _quality_figure(data), CALIBRATION: _calibration_figure(data),
            VOLUME: _volume_figure(data), DRIFT: _drift_figure(data)}


def _axis_name(letter: str, row: int) -> str:
    """Plotly's axis ids: ``x``, ``x2``, ... in traces and references; ``xaxis``, ``xaxis2``,
    ... in the layout."""
    return letter if row == 1 else f"{letter}{row}"


def _rows_layout(titles: list[str], spacing: float, days: int) -> dict[str, Any]:
    """Subplots stacked in rows sharing a day axis, as make_subplots(rows=n, cols=1,
    shared_xaxes=True, subplot_titles=...) lays them out: the bottom row's axis labels them
    all, and each row's title sits above it."""
    count = len(titles)
    height = (1 - spacing * (count - 1)) / count
    layout: dict[str, Any] = {"annotations": []}
    for row, title in enumerate(titles, start=1):
        top = round(1 - (row - 1) * (height + spacing), 10)
        bottom = max(0.0, round(top - height, 10))
        x, y = _axis_name("x", row), _axis_name("y", row)
        axis: dict[str, Any] = {"anchor": y, "domain": [0.0, 1.0], "type": "date",
                                "tickformat": "%b %d", "nticks": max(2, min(days, 12))}
        if row < count:
            axis |= {"matches": _axis_name("x", count), "showticklabels": False}
        layout[f"xaxis{'' if row == 1 else row}"] = axis
        layout[f"yaxis{'' if row == 1 else row}"] = {"anchor": x, "domain": [bottom, top]}
        layout["annotations"].append({
            "font": {"size": 16}, "showarrow": False, "text": title, "x": 0.5,
            "xanchor": "center", "xref": "paper", "y": top, "yanchor": "bottom",
            "yref": "paper"})
    return layout


def _figure(traces: list[dict], layout: dict[str, Any], title: str, height: int) -> Figure:
    """Common looks."""
    return {"data": traces, "layout": layout | {
        "title": {"text": title}, "height": height, "plot_bgcolor": "white",
        "legend": {"orientation": "h", "y": -0.15}, "margin": {"t": 90, "b": 40}}}


def _hline(level: float, row: int = 1) -> dict[str, Any]:
    """A dotted horizontal line across a row's plot at ``level``."""
    return {"type": "line", "line": GUIDE, "x0": 0, "x1": 1,
            "xref": f"{_axis_name('x', row)} domain", "y0": level, "y1": level,
            "yref": _axis_name("y", row)}


def _on_row(trace: dict[str, Any], row: int) -> dict[str, Any]:
    return trace | {"xaxis": _axis_name("x", row), "yaxis": _axis_name("y", row)}


def _quality_figure(data: MonitoringData) -> Figure:
    metrics = data.metrics
    traces = []
    for role in (CHAMPION, CHALLENGER):
        rows = (data.quality.filter(pl.col("model") == role).sort("partition_date")
                if data.quality.height else data.quality)
        if not rows.height:
            continue
        version = ",".join(sorted(set(rows["model_version"])))
        for index, metric in enumerate(metrics, start=1):
            traces.append(_on_row({
                "type": "scatter", "x": _days(rows), "y": _values(rows[metric]),
                "mode": "lines+markers", "name": f"{role} ({version})", "legendgroup": role,
                "showlegend": index == 1, "line": {"color": COLOURS[role]},
                "customdata": rows["rows"].to_list(),
                "hovertemplate": f"%{{x}}: {METRIC_NAMES[metric]} %{{y:.4f}} "
                                 "on %{customdata} rows"}, index))
    layout = _rows_layout([METRIC_NAMES[m] for m in metrics], 0.08, _day_count(data))
    return _figure(traces, layout, TITLES[QUALITY], 520)


def _calibration_figure(data: MonitoringData) -> Figure:
    calibration = data.calibration
    window = data.calibration_window
    span = f"{window[0]}..{window[1]}" if window else "no day with known outcomes"
    traces = []
    for role in (CHAMPION, CHALLENGER):
        rows = (calibration.filter(pl.col("model") == role).sort("decile")
                if calibration.height else calibration)
        if not rows.height:
            continue
        trace = {"type": "scatter", "x": _values(rows["mean_output"]),
                 "mode": "lines+markers", "name": role, "line": {"color": COLOURS[role]},
                 "customdata": rows["rows"].to_list()}
        if data.binary:
            trace |= {"y": _values(rows["realised_rate"]), "hovertemplate":
                      "mean score %{x:.3f}: realised %{y:.3f} (%{customdata} rows)"}
        else:
            mean = rows["mean_residual"]
            trace |= {"y": _values(mean), "error_y": {
                "type": "data", "symmetric": False,
                "array": _values(rows["residual_p90"] - mean),
                "arrayminus": _values(mean - rows["residual_p10"])},
                "hovertemplate": "mean prediction %{x:.2f}: mean residual %{y:.2f} "
                                 "(%{customdata} rows)"}
        traces.append(trace)
    if data.binary:
        traces.append({"type": "scatter", "x": [0, 1], "y": [0, 1], "mode": "lines",
                       "name": "perfect", "line": GUIDE})
        layout: dict[str, Any] = {"xaxis": {"title": {"text": "mean score of the decile"}},
                                  "yaxis": {"title": {"text": "realised positive rate"}}}
    else:
        layout = {"shapes": [_hline(0)],
                  "xaxis": {"title": {"text": "mean prediction of the decile"}},
                  "yaxis": {"title": {
                      "text": "residual: outcome - prediction (mean, 10-90 %)"}}}
    return _figure(traces, layout,
                   f"{TITLES[CALIBRATION]} by decile of the {data.output}, {span}", 460)


def _volume_figure(data: MonitoringData) -> Figure:
    volume = data.volume
    layout = _rows_layout(["rows scored", "input rows rejected (quarantine)"], 0.1,
                          _day_count(data))
    for row in (1, 2):
        layout[f"yaxis{'' if row == 1 else row}"]["rangemode"] = "tozero"
    traces = [
        _on_row({"type": "bar", "x": _days(volume), "y": volume["rows"].to_list(),
                 "name": "rows scored", "marker": {"color": COLOURS[CHAMPION]}}, 1),
        _on_row({"type": "bar", "x": _days(volume), "y": volume["rejected"].to_list(),
                 "name": "rows rejected", "marker": {"color": "#ff7f0e"}}, 2)]
    return _figure(traces, layout, TITLES[VOLUME], 460)


def _drift_figure(data: MonitoringData) -> Figure:
    reference = data.drift_reference
    layout = _rows_layout([
        f"features against the training window {reference[0]}"
        if reference else "features: the champion has no profile",
        f"the {data.output} against the validation window {reference[1]}"
        if reference else f"the {data.output}"], 0.1, _day_count(data))
    traces = []
    for row, kind in ((1, "feature"), (2, "output")):
        rows = data.drift.filter(pl.col("kind") == kind).sort("column", "partition_date")
        for (column,), per_column in rows.partition_by("column", as_dict=True,
                                                        maintain_order=True).items():
            traces.append(_on_row({
                "type": "scatter", "x": _days(per_column), "y": _values(per_column["psi"]),
                "mode": "lines+markers", "name": str(column),
                "customdata": per_column["rows"].to_list(),
                "hovertemplate": f"{column} %{{x}}: PSI %{{y:.3f}} (%{{customdata}} rows)"},
                row))
    limits = data.thresholds
    levels = ((1, limits.psi_warn, "warn"), (1, limits.psi_error, "block"),
              (2, limits.score_psi_warn, "warn"))
    layout["shapes"] = [_hline(level, row) for row, level, _ in levels]
    layout["annotations"] += [
        {"showarrow": False, "text": f"{name} {level}", "x": 0, "xanchor": "left",
         "xref": f"{_axis_name('x', row)} domain", "y": level, "yanchor": "bottom",
         "yref": _axis_name("y", row)} for row, level, name in levels]
    return _figure(traces, layout, TITLES[DRIFT], 560)


def _json(value: object) -> str:
    """JSON for inside a <script>: no "</" that could close it."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def figure_html(key: str, figure: Figure) -> str:
    """The figure's div, and the script that draws it there once Plotly.js has loaded."""
    height = figure["layout"]["height"]
    return (f'<div id="{key}" class="plotly-graph-div" style="height:{height}px; '
            f'width:100%;"></div>\n<script>Plotly.newPlot("{key}", {_json(figure["data"])}, '
            f'{_json(figure["layout"])}, {_json(CONFIG)});</script>')


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
        + figure_html(key, figure)
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
        write_bytes_atomic(script, plotly_js_source().read_bytes())
    path = page_path(reports_dir, data.use_case)
    write_bytes_atomic(path, monitoring_page(data).encode())
    return path
