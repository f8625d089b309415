"""The monitoring page in a real browser: the page the daily report wrote for the prepared
slice, opened from its data directory in headless Chromium with the network off."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
from playwright.sync_api import sync_playwright

from batch_platform.platform.reports import monitoring
from batch_platform.platform.reports import monitoring_page as pages
from batch_platform_tests.conftest import WEEK, Platform
from batch_platform_tests.ui_support import CHROMIUM_ARGS, chromium_path

DAY = dt.date(2013, 1, 17)

# Per chart: its title and what it drew (Plotly's SVG: a path per line, a point per marker,
# a path per bar).
DRAWN = """() => [...document.querySelectorAll('.js-plotly-plot')].map(chart => ({
  id: chart.id,
  title: chart.querySelector('.gtitle')?.textContent ?? '',
  lines: [...chart.querySelectorAll('.scatterlayer .trace .js-line')]
           .filter(path => (path.getAttribute('d') ?? '').length > 2).length,
  points: chart.querySelectorAll('.scatterlayer .point').length,
  bars: chart.querySelectorAll('.barlayer .point path').length,
}))"""


def test_the_page_shows_its_charts_in_chromium_offline(platform: Platform) -> None:
    path = monitoring.page_path(platform.settings.reports_dir, "flights")
    assert path.is_file(), "the daily report of the prepared slice wrote no monitoring page"
    # The report's materialization links the page (the template's path: it ran there).
    event = platform.instance.get_latest_materialization_event(
        dg.AssetKey(["reports", "flights_daily"]))
    assert event is not None and event.asset_materialization is not None
    linked = event.asset_materialization.metadata["monitoring_page"].value
    assert str(linked).endswith("data/reports/flights/monitoring.html")

    report = platform.query("SELECT partition_date, rows, auc FROM reports.flights_daily "
                            "WHERE segment_type = 'all' ORDER BY partition_date")
    requested: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1200,
                                                                  "height": 900})
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(path.as_uri())
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4",
                timeout=20_000)
            drawn = page.evaluate(DRAWN)
            plotted = page.evaluate(
                "() => ['quality', 'volume'].map(id => document.getElementById(id).data[0])"
                ".map(trace => ({x: trace.x, y: trace.y}))")
        finally:
            browser.close()
    assert not errors
    assert requested and all(url.startswith("file://") for url in requested), requested
    charts = {chart["id"]: chart for chart in drawn}
    assert list(charts) == list(pages.TITLES)
    for key, title in pages.TITLES.items():
        assert charts[key]["title"].startswith(title)
    days = report.height
    # Quality: the AUC and Brier lines of the champion, a marker a day each.
    assert charts["quality"]["lines"] == 2 and charts["quality"]["points"] == 2 * days
    # Calibration: the champion's ten deciles and the diagonal.
    assert charts["calibration"]["lines"] == 2 and charts["calibration"]["points"] == 10
    # Volume: a bar a day of rows scored (the week rejected no row: zero-height bars).
    assert charts["volume"]["bars"] >= days
    # Drift: a line per drift feature and one for the score, a marker per day each.
    features = len(platform.query("SELECT * FROM features.flights LIMIT 0").columns)
    assert 2 <= charts["drift"]["lines"] < features
    assert charts["drift"]["points"] == charts["drift"]["lines"] * days

    # What the browser plots is the report's: the AUC and the rows of a day.
    quality, volume = plotted
    index = quality["x"].index(DAY.isoformat())
    reported = report.filter(pl.col("partition_date") == DAY).row(0, named=True)
    assert quality["y"][index] == reported["auc"]
    assert volume["y"][volume["x"].index(DAY.isoformat())] == reported["rows"]
    assert quality["x"] == [d.isoformat() for d in report["partition_date"]]
    assert (report["partition_date"][0], report["partition_date"][-1]) == WEEK
