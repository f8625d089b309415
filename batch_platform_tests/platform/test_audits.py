"""Audits on real rows: each passes on the clean data and fails on a defect injected into it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.models.booster import LoadedModel
from batch_platform.platform.monitoring import audits, drift
from batch_platform.platform.monitoring.audits import ERROR, WARN, AuditThresholds
from batch_platform.platform.reports import daily as reports
from batch_platform.platform.scoring import score as scoring
from batch_platform_tests.flights import FLIGHTS, FLIGHTS_SOURCE
from batch_platform_tests.platform.support import DAY_1, DAY_2, DAYS

THRESHOLDS = AuditThresholds()
LINEAGE = scoring.ScoringLineage("v1", "code", "run", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def validated_by_day(landing_dir: Path) -> dict[dt.date, ingest.ValidatedFile]:
    return {day: ingest.validate_file(landing.landing_file(landing_dir, "flights", day),
                                      FLIGHTS_SOURCE, day) for day in DAYS}


@pytest.fixture(scope="module")
def profile(feature_rows: pl.DataFrame) -> drift.ModelProfile:
    scores = pl.DataFrame({"score": [i / 1000 for i in range(1000)]})
    return drift.ModelProfile(
        features=drift.build_profile(feature_rows, FLIGHTS.drift_columns, "3 days"),
        scores=drift.build_profile(scores, ["score"], "validation"))


@pytest.fixture(scope="module")
def predictions(feature_rows: pl.DataFrame, loaded_model: LoadedModel) -> pl.DataFrame:
    lineage = scoring.ScoringLineage(loaded_model.version, "code", "run",
                                     dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    return scoring.score(feature_rows, loaded_model, FLIGHTS, lineage, explain="none")[0]


# --- raw --------------------------------------------------------------------------------------

def test_schema_passes_on_validated_rows(validated_by_day) -> None:
    good = validated_by_day[DAY_1].good
    audit = audits.audit_raw_schema(FLIGHTS_SOURCE, good, [])
    assert audit.passed and audit.metadata["columns_expected"] == 19


def test_schema_fails_on_a_mistyped_column(validated_by_day) -> None:
    good = validated_by_day[DAY_1].good.with_columns(pl.col("distance").cast(pl.String))
    audit = audits.audit_raw_schema(FLIGHTS_SOURCE, good, [])
    assert audit.blocks
    assert "distance: String (expected Float64)" in audit.description


def test_schema_warns_on_unknown_input_columns(validated_by_day) -> None:
    audit = audits.audit_raw_schema(FLIGHTS_SOURCE, validated_by_day[DAY_1].good, ["gate"])
    assert not audit.passed and audit.severity == WARN and not audit.blocks
    assert "gate" in audit.description


def test_row_counts_within_and_outside_the_expected_range(validated_by_day) -> None:
    counts = {day: v.rows_in for day, v in validated_by_day.items()}
    assert audits.audit_row_counts("flights", counts, (300, 2000)).passed
    low = audits.audit_row_counts("flights", counts, (900, 2000))
    assert not low.passed and low.severity == WARN
    assert f"{DAY_1} has {counts[DAY_1]}" in low.description
    assert low.metadata["days_outside"] == sum(1 for n in counts.values() if n < 900)


def test_required_values_missing_above_the_limit_block(tmp_path: Path, landing_dir: Path) -> None:
    source = landing.landing_file(landing_dir, "flights", DAY_2)
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    carrier = header.index("carrier")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows[:20]:  # 20 of ~940 rows: about 2%, under the 5% reject limit
        row[carrier] = "NA"
    damaged = tmp_path / "2013-01-02.csv"
    damaged.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    validated = ingest.validate_file(damaged, FLIGHTS_SOURCE, DAY_2)
    audit = audits.audit_required_nulls(FLIGHTS_SOURCE, {DAY_2: validated}, THRESHOLDS)
    assert audit.blocks
    assert "required column carrier is missing in 2.1% of the rows" in audit.description
    assert audits.audit_required_nulls(
        FLIGHTS_SOURCE, {DAY_2: validated}, AuditThresholds(max_null_fraction=0.05)).passed


def test_required_values_pass_on_real_days(validated_by_day) -> None:
    audit = audits.audit_required_nulls(FLIGHTS_SOURCE, validated_by_day, THRESHOLDS)
    assert audit.passed and audit.metadata["max_null_fraction"] == 0.0


# --- drift ------------------------------------------------------------------------------------

def test_feature_drift_passes_on_the_reference_days(feature_rows, profile) -> None:
    audit = audits.audit_feature_drift(feature_rows, profile, THRESHOLDS)
    assert audit.passed, audit.description
    assert audit.metadata["days_judged"] == 3
    assert set(audit.metadata["psi_by_column"]) == set(FLIGHTS.drift_columns)


def test_feature_drift_above_the_error_level_blocks(feature_rows, profile) -> None:
    # Distances sent in kilometres instead of miles on one day.
    shifted = feature_rows.with_columns(
        pl.when(pl.col("partition_date") == DAY_2).then(pl.col("distance") * 1.609)
        .otherwise(pl.col("distance")).alias("distance"))
    audit = audits.audit_feature_drift(shifted, profile, THRESHOLDS)
    assert audit.blocks
    assert audit.description.startswith(f"{DAY_2}: distance drifted from 3 days: PSI ")
    assert audit.metadata["max_psi_column"] == "distance"
    assert audit.metadata["max_psi"] > THRESHOLDS.psi_error


def test_feature_drift_between_the_levels_warns(feature_rows, profile) -> None:
    audit = audits.audit_feature_drift(feature_rows.filter(pl.col("origin") != "EWR"), profile,
                                       AuditThresholds(psi_warn=0.1, psi_error=50.0))
    assert not audit.passed and audit.severity == WARN and not audit.blocks
    assert "origin drifted" in audit.description


def test_days_below_the_minimum_sample_are_not_judged(feature_rows, profile) -> None:
    tiny = feature_rows.filter(pl.col("partition_date") == DAY_1).head(50).with_columns(
        pl.col("distance") * 10)
    audit = audits.audit_feature_drift(tiny, profile, THRESHOLDS)
    assert audit.passed
    assert audit.metadata["days_too_small"] == 1 and audit.metadata["days_judged"] == 0
    assert "not judged" in audit.description


def test_feature_drift_without_a_profile_passes_and_says_so(feature_rows) -> None:
    audit = audits.audit_feature_drift(feature_rows, None, THRESHOLDS)
    assert audit.passed and "no reference profile" in audit.description


def test_score_drift_only_warns(predictions, profile) -> None:
    high = predictions.with_columns(pl.lit(0.99).alias("score"))
    audit = audits.audit_score_drift(high, profile, THRESHOLDS)
    assert not audit.passed and audit.severity == WARN and not audit.blocks
    assert audit.metadata["max_psi_column"] == "score"


# --- predictions --------------------------------------------------------------------------

def test_prediction_audits_pass_on_real_scores(predictions, feature_rows, loaded_model) -> None:
    for audit in (audits.audit_one_prediction_per_row(predictions, feature_rows, "flight_id"),
                  audits.audit_scores_valid(predictions),
                  audits.audit_model_version(predictions, loaded_model.version)):
        assert audit.passed, audit.description


def test_missing_and_duplicated_predictions_block(predictions, feature_rows) -> None:
    damaged = pl.concat([predictions.slice(1), predictions.slice(1, 1)])  # first lost, second twice
    audit = audits.audit_one_prediction_per_row(damaged, feature_rows, "flight_id")
    assert audit.blocks
    assert audit.metadata["missing"] == 1 and audit.metadata["duplicated"] == 1
    assert f"{feature_rows.height} feature rows but {damaged.height} predictions" in (
        audit.description)


@pytest.mark.parametrize("bad_score", [1.5, -0.1, float("nan"), None])
def test_scores_outside_the_unit_interval_block(predictions, bad_score) -> None:
    damaged = predictions.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(bad_score, dtype=pl.Float64))
        .otherwise(pl.col("score")).alias("score"))
    audit = audits.audit_scores_valid(damaged)
    assert audit.blocks and audit.metadata["invalid_scores"] == 1


def test_rows_of_another_model_version_block(predictions, loaded_model) -> None:
    audit = audits.audit_model_version(predictions, "ffffffffffffffff")
    assert audit.blocks
    assert f"carry model version(s) ['{loaded_model.version}']" in audit.description


# --- reports ------------------------------------------------------------------------------

def test_report_reconciles_and_a_tampered_total_blocks(predictions, feature_rows) -> None:
    report = reports.daily_report(predictions, feature_rows, FLIGHTS,
                                  dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert audits.audit_report_reconciles(report, predictions).passed
    tampered = report.with_columns(
        pl.when((pl.col("segment_type") == "carrier") & (pl.col("segment") == "UA")
                & (pl.col("partition_date") == DAY_1))
        .then(pl.col("rows") + 1).otherwise(pl.col("rows")).alias("rows"))
    audit = audits.audit_report_reconciles(tampered, predictions)
    assert audit.blocks and audit.metadata["mismatches"] == 1
    assert f"{DAY_1} carrier" in audit.description


def test_a_day_missing_from_the_report_blocks(predictions, feature_rows) -> None:
    report = reports.daily_report(predictions, feature_rows, FLIGHTS,
                                  dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    audit = audits.audit_report_reconciles(
        report.filter(pl.col("partition_date") != DAY_2), predictions)
    assert audit.blocks and audit.metadata["mismatches"] == 1


# --- freshness ----------------------------------------------------------------------------

NOW = dt.datetime(2013, 6, 2, 12, 0, tzinfo=dt.UTC)
LAG = dt.timedelta(minutes=60)


def test_freshness_counts_fresh_pending_and_late_partitions() -> None:
    landed = {dt.date(2013, 6, 1): NOW - dt.timedelta(hours=5),   # scored 10 min after
              dt.date(2013, 5, 31): NOW - dt.timedelta(hours=3),  # never scored: late
              dt.date(2013, 5, 30): NOW - dt.timedelta(minutes=20)}  # landed again: pending
    produced = {dt.date(2013, 6, 1): NOW - dt.timedelta(hours=4, minutes=50),
                dt.date(2013, 5, 30): NOW - dt.timedelta(hours=6)}
    audit = audits.audit_partition_freshness("landed_partitions_scored", landed, produced,
                                             NOW, LAG)
    assert not audit.passed and audit.severity == ERROR
    expected = "1 landed partition(s) not produced within 60 minutes of landing: 2013-05-31"
    assert audit.description == expected
    assert audit.metadata["partitions_fresh"] == 1
    assert audit.metadata["partitions_pending"] == 1
    assert audit.metadata["max_lag_minutes"] == 10.0
    assert audit.metadata["max_waiting_minutes"] == 180.0


def test_freshness_passes_when_every_landed_day_is_produced() -> None:
    landed = {dt.date(2013, 6, 1): NOW - dt.timedelta(hours=5)}
    produced = {dt.date(2013, 6, 1): NOW - dt.timedelta(hours=4)}
    audit = audits.audit_partition_freshness("x", landed, produced, NOW, LAG)
    assert audit.passed and audit.metadata["max_lag_minutes"] == 60.0

