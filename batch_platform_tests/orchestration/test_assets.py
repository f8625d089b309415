"""A real week of flights through every stage, as an operator and an analyst see it.

Tests that run anything run it on their own copy of the platform (``own_platform``)."""

import datetime as dt
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import numpy as np
import polars as pl

from batch_platform import code_version
from batch_platform.definitions import build_definitions
from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest import landing
from batch_platform.platform.models.booster import feature_matrix, levels_from_model
from batch_platform_tests.conftest import FIRST, LAST, WEEK, Platform, attach_lake
from batch_platform_tests.flights import USE_CASE

DUCKDB_CLI = Path(sys.executable).with_name("duckdb")


def landing_rows(platform: Platform, source: str, day: dt.date) -> int:
    path = landing.landing_file(platform.settings.landing_dir, source, day)
    return pl.read_csv(path, infer_schema=False).height


def per_day(platform: Platform, table: str) -> dict[dt.date, int]:
    rows = platform.query(f"SELECT partition_date, count(*) AS n FROM {table} GROUP BY ALL")
    return dict(rows.iter_rows())


def test_every_stage_holds_one_row_per_landed_flight(platform: Platform) -> None:
    raw, quarantined = per_day(platform, "raw.flights"), per_day(platform, "quarantine.flights")
    features, predictions = per_day(platform, "features.flights"), per_day(platform,
                                                                           "predictions.flights")
    for day in days_between(FIRST, LAST):
        expected = landing_rows(platform, "flights", day) - quarantined.get(day, 0)
        assert raw[day] == expected, day
        assert features[day] == expected, day
    for day in days_between(*WEEK):
        assert predictions[day] == features[day], day
    assert set(predictions) == set(days_between(*WEEK))
    duplicates = platform.query("SELECT flight_id FROM predictions.flights GROUP BY 1 "
                                "HAVING count(*) > 1")
    assert duplicates.height == 0


def test_reports_reconcile_with_predictions(platform: Platform) -> None:
    report = platform.query(
        "SELECT partition_date, segment_type, sum(rows) AS rows, "
        "sum(predicted_positive) AS predicted_positive FROM reports.flights_daily GROUP BY ALL")
    scored = platform.query(
        "SELECT partition_date, count(*) AS rows, sum(label::INT) AS predicted_positive "
        "FROM predictions.flights GROUP BY ALL")
    for segment_type in ("all", "carrier", "origin"):
        totals = report.filter(pl.col("segment_type") == segment_type).drop("segment_type")
        joined = totals.join(scored, on="partition_date", suffix="_scored")
        assert joined.height == 7
        assert (joined["rows"] == joined["rows_scored"]).all(), segment_type
        assert (joined["predicted_positive"] == joined["predicted_positive_scored"]).all(), \
            segment_type
    realised = platform.query("SELECT auc, outcomes_known FROM reports.flights_daily "
                              "WHERE segment_type = 'all'")
    assert realised["auc"].is_between(0.5, 1.0).all()
    assert (realised["outcomes_known"] > 0).all()


def test_rerunning_a_range_leaves_the_rows_of_one_run(own_platform: Platform) -> None:
    tables = ("raw.flights", "raw.weather", "quarantine.weather", "features.flights",
              "predictions.flights", "reports.flights_daily")
    before = {t: own_platform.query(f"SELECT count(*) AS n FROM {t}").item() for t in tables}
    scores_before = own_platform.query("SELECT flight_id, score FROM predictions.flights")
    result = own_platform.run("flights_daily", *WEEK)
    after = {t: own_platform.query(f"SELECT count(*) AS n FROM {t}").item() for t in tables}
    assert after == before
    scores_after = own_platform.query("SELECT flight_id, score, run_id FROM predictions.flights")
    assert (scores_after["run_id"] == result.run_id).all()
    joined = scores_before.join(scores_after, on="flight_id", how="full", validate="1:1")
    assert joined.height == scores_before.height
    assert (joined["score"] == joined["score_right"]).all()


def test_stored_scores_equal_rescoring_with_the_saved_model_file(platform: Platform) -> None:
    champion = platform.query("SELECT model_version, model_path, threshold FROM models.registry "
                              "WHERE status = 'champion'").row(0, named=True)
    booster = lgb.Booster(model_file=str(platform.settings.data_dir / champion["model_path"]))
    features = platform.query("SELECT * FROM features.flights WHERE partition_date BETWEEN ? AND ? "
                              "ORDER BY flight_id", list(WEEK))
    # The champion reads its own features of the table, by name.
    spec = USE_CASE.training().spec
    matrix, _ = feature_matrix(features, spec, levels_from_model(booster, spec, "saved"))
    stored = platform.query("SELECT flight_id, score, label, model_version, code_version "
                            "FROM predictions.flights ORDER BY flight_id")
    assert stored["flight_id"].to_list() == features["flight_id"].to_list()
    np.testing.assert_allclose(stored["score"].to_numpy(), booster.predict(matrix), rtol=0,
                               atol=1e-12)
    assert (stored["label"] == (stored["score"] >= champion["threshold"])).all()
    assert set(stored["model_version"]) == {champion["model_version"]}
    assert set(stored["code_version"]) == {code_version()}


def test_registry_records_an_honest_model(platform: Platform) -> None:
    record = platform.query("SELECT * FROM models.registry WHERE status = 'champion'").row(
        0, named=True)
    assert record["source"] == "trained"
    assert 0.6 < record["auc"] < 0.85  # leakage (dep_delay) would push it to ~0.9
    assert record["feature_list"] == list(USE_CASE.training().spec.feature_columns)
    model_file = platform.settings.data_dir / record["model_path"]
    assert model_file.name == f"{record['model_version']}.txt"
    assert model_file.read_text().startswith("tree\n")


def test_the_duckdb_cli_attaches_the_lake_with_the_documented_line(platform: Platform) -> None:
    version = subprocess.run([str(DUCKDB_CLI), "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("v1.5.5"), version
    out = subprocess.run(
        [str(DUCKDB_CLI), "-csv", "-cmd", attach_lake(platform.settings.data_dir), "-c",
         "SELECT count(*) FROM predictions.flights"],
        capture_output=True, text=True, check=True).stdout
    expected = platform.query("SELECT count(*) FROM predictions.flights").item()
    assert out.strip().splitlines()[-1] == str(expected)


def test_an_analyst_session_neither_blocks_nor_is_blocked_by_a_run(own_platform: Platform) -> None:
    day = WEEK[0]
    # An analyst opens the warehouse read-only and keeps querying while a run rewrites the day.
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            # No progress bar on the standard output this test reads (an ATTACH over 2 s).
            con = duckdb.connect()
            con.execute("SET enable_progress_bar = false")
            con.execute({attach_lake(own_platform.settings.data_dir)!r})
            print("open", flush=True)
            deadline = time.monotonic() + 60
            queries = 0
            while time.monotonic() < deadline and sys.stdin.readline() != "stop\\n":
                con.execute("SELECT count(*) FROM predictions.flights").fetchone()
                queries += 1
                print(queries, flush=True)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        started = time.monotonic()
        result = own_platform.run("flights_daily", day)
        assert result.success
        for _ in range(3):  # the analyst's session still answers after the publish
            reader.stdin.write("go\n")
            reader.stdin.flush()
            assert reader.stdout.readline().strip().isdigit()
        assert time.monotonic() - started < 60
    finally:
        reader.stdin.write("stop\n")
        reader.stdin.flush()
        reader.wait(timeout=30)
    assert reader.returncode == 0


def test_metadata_of_a_day_and_of_a_range(own_platform: Platform) -> None:
    """A day's run reports its own counts; a range run labels its counts as range totals."""
    key = dg.AssetKey(["predictions", "flights"])
    day = WEEK[1]
    day_run = own_platform.run("flights_predict", day)
    range_run = own_platform.run("flights_predict", *WEEK)
    scored = per_day(own_platform, "predictions.flights")

    day_metadata = day_run.asset_materializations_for_node("predictions__flights")[0].metadata
    assert day_metadata["dagster/row_count"].value == scored[day]
    assert day_metadata["model_version"].value

    events = range_run.asset_materializations_for_node("predictions__flights")
    assert sorted(e.partition for e in events) == [
        d.isoformat() for d in days_between(*WEEK)]
    range_metadata = events[0].metadata
    assert "dagster/row_count" not in range_metadata
    assert range_metadata["range_row_count"].value == sum(scored.values())
    assert range_metadata["rows_by_partition"].value == {
        d.isoformat(): n for d, n in sorted(scored.items())}
    assert events[0].asset_key == key


def test_the_maintenance_job_keeps_every_row_and_reports_what_it_did(
    own_platform: Platform
) -> None:
    counts = {table: own_platform.query(f"SELECT count(*) FROM {table}").item()
              for table in ("raw.flights", "features.flights", "predictions.flights",
                            "reports.flights_daily", "models.registry")}
    result = own_platform.run("lake_maintenance")
    assert result.success
    (event,) = result.asset_materializations_for_node("platform__lake_maintenance")
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["retention_days"] == 7.0
    # Within the default retention every snapshot is kept, and so its files.
    assert metadata["snapshots_expired"] == 0 and metadata["files_deleted"] == 0
    assert {"files_merged", "orphan_files_deleted"} <= metadata.keys()
    assert {table: own_platform.query(f"SELECT count(*) FROM {table}").item()
            for table in counts} == counts


def test_a_monitoring_page_that_cannot_be_written_leaves_the_report_committed(
        own_platform: Platform) -> None:
    settings = own_platform.settings
    page = settings.reports_dir / "flights" / "monitoring.html"
    assert page.is_file()  # the slice's report wrote it
    shutil.rmtree(settings.reports_dir)
    settings.reports_dir.write_text("a file where the pages' folder belongs")
    report = dg.AssetKey(["reports", "flights_daily"])
    result = build_definitions(settings).resolve_implicit_global_asset_job_def(
        ).execute_in_process(instance=own_platform.instance, asset_selection=[report],
                             partition_key=WEEK[1].isoformat())
    assert result.success
    metadata = result.asset_materializations_for_node("reports__flights_daily")[0].metadata
    assert str(metadata["monitoring_page"].value).startswith("not written: ")
    assert "monitoring_page_url" not in metadata
    # The report is committed all the same, by this run.
    last = own_platform.query("SELECT commit_message FROM lake.snapshots() "
                              "ORDER BY snapshot_id DESC LIMIT 1").item()
    assert last == f"reports/flights_daily {WEEK[1]} by run {result.run_id}"
