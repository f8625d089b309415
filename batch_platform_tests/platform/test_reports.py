"""Daily report: per day and segment counts, scores, predicted and realised late, AUC."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.reports import daily as reports
from batch_platform_tests.flights import FLIGHTS

D1 = dt.date(2013, 1, 1)
D2 = dt.date(2013, 1, 2)
REPORTED_AT = dt.datetime(2013, 1, 3, 6, 0, tzinfo=dt.UTC)
LAST_DAY = REPORTED_AT.date()

# flight_id, day, carrier, origin, score, predicted label, realised outcome (None: cancelled)
FLIGHT_ROWS = [
    ("f1", D1, "UA", "EWR", 0.9, True, True),
    ("f2", D1, "UA", "JFK", 0.2, False, False),
    ("f3", D1, "AA", "EWR", 0.6, True, False),
    ("f4", D1, "AA", "EWR", 0.1, False, None),
    ("g1", D2, "UA", "EWR", 0.7, True, True),
    ("g2", D2, "UA", "EWR", 0.3, False, True),
    ("g3", D2, "AA", "LGA", 0.5, True, False),
]


@pytest.fixture(scope="module")
def report() -> pl.DataFrame:
    ids, days, carriers, origins, scores, labels, outcomes = map(list, zip(*FLIGHT_ROWS,
                                                                         strict=True))
    predictions = pl.DataFrame({
        "flight_id": ids, "partition_date": days, "score": scores, "label": labels,
        "model_version": ["v1"] * 6 + ["v2"],
    })
    # The features come in another order than the predictions: the join is by id.
    features = pl.DataFrame({
        "flight_id": ids, "carrier": carriers, "origin": origins, "arrived_late": outcomes,
        "distance": [100.0] * len(ids),
    }).reverse()
    return reports.daily_report(predictions, features, FLIGHTS, REPORTED_AT)


def _row(report: pl.DataFrame, day: dt.date, segment_type: str, segment: str) -> dict:
    rows = report.filter((pl.col("partition_date") == day)
                         & (pl.col("segment_type") == segment_type)
                         & (pl.col("segment") == segment))
    assert rows.height == 1
    return rows.row(0, named=True)


def test_one_row_per_day_and_segment(report: pl.DataFrame) -> None:
    keys = report.select("partition_date", "segment_type", "segment").rows()
    assert keys == [
        (D1, "all", "all"), (D1, "carrier", "AA"), (D1, "carrier", "UA"),
        (D1, "origin", "EWR"), (D1, "origin", "JFK"),
        (D2, "all", "all"), (D2, "carrier", "AA"), (D2, "carrier", "UA"),
        (D2, "origin", "EWR"), (D2, "origin", "LGA"),
    ]


def test_segment_flights_add_up_to_the_day(report: pl.DataFrame) -> None:
    for day, expected in ((D1, 4), (D2, 3)):
        day_rows = report.filter(pl.col("partition_date") == day)
        by_type = dict(day_rows.group_by("segment_type").agg(pl.col("rows").sum()).iter_rows())
        assert by_type == {"all": expected, "carrier": expected, "origin": expected}


def test_whole_day_figures(report: pl.DataFrame) -> None:
    row = _row(report, D1, "all", "all")
    assert row["rows"] == 4
    assert row["mean_score"] == pytest.approx((0.9 + 0.2 + 0.6 + 0.1) / 4)
    assert row["median_score"] == pytest.approx((0.2 + 0.6) / 2)
    assert row["p90_score"] == pytest.approx(0.6 + 0.7 * (0.9 - 0.6))  # linear, position 2.7
    assert row["predicted_positive"] == 2
    assert row["predicted_positive_rate"] == pytest.approx(0.5)
    # f4 was cancelled: it counts as a flight but not as a known outcome.
    assert row["outcomes_known"] == 3
    assert row["realised_positive"] == 1
    assert row["realised_positive_rate"] == pytest.approx(1 / 3)
    assert row["auc"] == pytest.approx(1.0)  # the one late flight has the top score
    assert row["model_version"] == "v1"


def test_auc_of_a_day_with_a_misranked_pair(report: pl.DataFrame) -> None:
    row = _row(report, D2, "all", "all")
    # Late: g1 (0.7), g2 (0.3); on time: g3 (0.5) -> one of two pairs ranked right.
    assert row["auc"] == pytest.approx(0.5)
    assert row["realised_positive_rate"] == pytest.approx(2 / 3)
    assert row["model_version"] == "v1,v2"


def test_segment_figures(report: pl.DataFrame) -> None:
    aa = _row(report, D1, "carrier", "AA")
    assert (aa["rows"], aa["predicted_positive"], aa["outcomes_known"],
            aa["realised_positive"]) == (2, 1, 1, 0)
    assert aa["realised_positive_rate"] == 0.0
    ewr = _row(report, D1, "origin", "EWR")
    assert ewr["rows"] == 3
    assert ewr["realised_positive_rate"] == pytest.approx(0.5)
    assert ewr["auc"] == pytest.approx(1.0)


def test_auc_is_null_with_one_class(report: pl.DataFrame) -> None:
    assert _row(report, D1, "carrier", "AA")["auc"] is None  # only an on-time flight known
    assert _row(report, D2, "carrier", "UA")["auc"] is None  # only late flights
    assert _row(report, D1, "origin", "JFK")["auc"] is None


def test_unknown_outcomes_only_leave_rates_empty() -> None:
    predictions = pl.DataFrame({"flight_id": ["a", "b"], "partition_date": [D1, D1],
                                "score": [0.2, 0.8], "label": [False, True],
                                "model_version": ["v1", "v1"]})
    features = pl.DataFrame({"flight_id": ["a", "b"], "carrier": ["UA", "UA"],
                             "origin": ["EWR", "EWR"], "arrived_late": [None, None]},
                            schema_overrides={"arrived_late": pl.Boolean})
    row = _row(reports.daily_report(predictions, features, FLIGHTS, REPORTED_AT), D1, "all", "all")
    assert row["rows"] == 2
    assert row["predicted_positive"] == 1
    assert row["outcomes_known"] == 0
    assert row["realised_positive_rate"] is None
    assert row["auc"] is None


def test_duplicate_feature_rows_are_refused() -> None:
    predictions = pl.DataFrame({"flight_id": ["a"], "partition_date": [D1], "score": [0.2],
                                "label": [False], "model_version": ["v1"]})
    features = pl.DataFrame({"flight_id": ["a", "a"], "carrier": ["UA", "UA"],
                             "origin": ["EWR", "EWR"], "arrived_late": [True, True]})
    with pytest.raises(pl.exceptions.ComputeError, match="1:1"):
        reports.daily_report(predictions, features, FLIGHTS, REPORTED_AT)


def _many_flights(rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three days of predictions with ties, a second model version and unknown outcomes."""
    rng = np.random.default_rng(5)
    ids = [f"f{i}" for i in range(rows)]
    predictions = pl.DataFrame({
        "flight_id": ids,
        "partition_date": pl.Series(rng.choice([D1, D2, REPORTED_AT.date()], rows).tolist(),
                                    dtype=pl.Date),
        "score": np.round(rng.random(rows), 2),  # rounded: tied scores get average ranks
        "label": rng.random(rows) < 0.4,
        "model_version": rng.choice(["v1", "v2"], rows, p=[0.8, 0.2]),
        "scorer": "lleaves",
    })
    late = pl.Series(rng.random(rows) < 0.3).set(pl.Series(rng.random(rows) < 0.1), None)
    features = pl.DataFrame({
        "flight_id": ids, "carrier": rng.choice(["UA", "AA", "B6"], rows),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows), "arrived_late": late,
        "distance": rng.random(rows),
    }).sample(fraction=1.0, shuffle=True, seed=3)
    return predictions, features


def _warehouse_segment_rows(predictions: pl.DataFrame, features: pl.DataFrame,
                            start: dt.date = D1, end: dt.date = LAST_DAY) -> pl.DataFrame:
    """The segment rows as DuckDB exports them for the stage."""
    con = duckdb.connect()
    for table, frame in (("predictions.flights", predictions), ("features.flights", features)):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
        con.register("frame", frame.to_arrow())
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")
        con.unregister("frame")
    return con.execute(reports.segment_rows_sql(FLIGHTS), {"start": start, "end": end}).pl()


def _warehouse_report(predictions: pl.DataFrame, features: pl.DataFrame, chunk_rows: int,
                      start: dt.date = D1, end: dt.date = LAST_DAY) -> pl.DataFrame:
    """The report as the stage computes it: segment rows sorted by DuckDB, in chunks."""
    rows = _warehouse_segment_rows(predictions, features, start, end)
    chunks = (rows.slice(offset, chunk_rows) for offset in range(0, rows.height, chunk_rows))
    return reports.report_of_sorted_rows(chunks, FLIGHTS, REPORTED_AT)


@pytest.mark.parametrize("chunk_rows", [1, 7, 500, 100_000])
def test_the_warehouse_report_in_chunks_equals_the_report(chunk_rows: int) -> None:
    predictions, features = _many_flights(3_000)
    expected = reports.daily_report(predictions, features, FLIGHTS, REPORTED_AT)
    assert expected.height == 3 * (1 + 3 + 3)
    # The same order within each group, so the same float sums: equal exactly.
    assert_frame_equal(_warehouse_report(predictions, features, chunk_rows), expected,
                       check_exact=True)


def test_the_warehouse_segment_rows_come_sorted_by_group_score_and_id() -> None:
    """Numbered once by day, score and id, the segment rows are those of sorting every segment
    row by group, score and id, in the same order: tied scores, unknown segments included."""
    predictions, features = _many_flights(3_000)
    features = features.with_columns(
        pl.when(pl.col("flight_id").str.ends_with("7")).then(None).otherwise(pl.col("carrier"))
        .alias("carrier"))
    expected = reports.segment_rows(predictions, features, FLIGHTS).sort(
        *reports.GROUP, "score", "flight_id", nulls_last=True)
    assert expected.get_column("segment").null_count() > 0
    assert_frame_equal(_warehouse_segment_rows(predictions, features),
                       expected.drop("flight_id"), check_exact=True)


def test_the_warehouse_report_reads_only_its_days() -> None:
    predictions, features = _many_flights(600)
    report = _warehouse_report(predictions, features, 50, start=D2, end=D2)
    assert set(report.get_column("partition_date")) == {D2}
    assert _row(report, D2, "all", "all")["rows"] == predictions.filter(
        pl.col("partition_date") == D2).height


def test_the_report_by_hand_on_many_flights() -> None:
    """The figures against plain Python, computed in chunks that split the groups."""
    predictions, features = _many_flights(3_000)
    report = _warehouse_report(predictions, features, 37)
    joined = predictions.join(features, on="flight_id")
    day = joined.filter((pl.col("partition_date") == D2) & (pl.col("carrier") == "B6"))
    row = _row(report, D2, "carrier", "B6")
    scores = sorted(day.get_column("score").to_list())
    assert row["rows"] == len(scores)
    assert row["median_score"] == pytest.approx(float(np.median(scores)))
    assert row["p90_score"] == pytest.approx(float(np.quantile(scores, 0.9)))
    assert row["mean_score"] == pytest.approx(sum(scores) / len(scores))
    known = day.filter(pl.col("arrived_late").is_not_null())
    assert row["outcomes_known"] == known.height
    pairs = [(s, late) for s, late in known.select("score", "arrived_late").iter_rows()]
    late_scores = [s for s, late in pairs if late]
    on_time = [s for s, late in pairs if not late]
    wins = sum((a > b) + 0.5 * (a == b) for a in late_scores for b in on_time)
    assert row["auc"] == pytest.approx(wins / (len(late_scores) * len(on_time)))
    assert row["model_version"] == "v1,v2"
