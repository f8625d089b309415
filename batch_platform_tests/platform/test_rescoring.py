"""Which scored days a change of champion makes stale, the last day with outcomes, and the
trailing windows of a scheduled retraining: plain functions over the lake's tables."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import polars as pl

from batch_platform.platform.models import registry
from batch_platform.platform.models.rescoring import (
    last_day_with_outcomes,
    stale_days,
    trailing_windows,
)
from batch_platform.platform.storage.warehouse import ensure_table, insert
from batch_platform_tests.flights import USE_CASE
from batch_platform_tests.platform.test_registry import V1, V2, V3, _record


def day(month: int, n: int) -> dt.date:
    return dt.date(2013, month, n)


def scored(con: duckdb.DuckDBPyConnection, rows: list[tuple[dt.date, str]]) -> None:
    frame = pl.DataFrame(rows, schema={"partition_date": pl.Date(), "model_version": pl.String()},
                         orient="row")
    ensure_table(con, USE_CASE.predictions_table, frame)
    insert(con, USE_CASE.predictions_table, frame)


def test_stale_days_are_scored_by_another_version_after_the_validation_window(
        con: duckdb.DuckDBPyConnection) -> None:
    assert stale_days(con, USE_CASE) == []  # no registry yet
    # V1 was validated on 09-01..30 (the records' windows); V2 on 09-01..10-01.
    registry.register_champion(con, _record(V2))
    registry.register_champion(con, dataclasses.replace(_record(V1), valid_end=day(10, 1)))
    registry.register_champion(con, _record(V3))  # the champion
    assert stale_days(con, USE_CASE) == []  # nothing scored yet
    scored(con, [(day(9, 29), V1),  # a validation day: in-sample for the champion, kept
                 (day(10, 1), V1), (day(10, 1), V1),
                 (day(10, 2), V3),  # already the champion's
                 (day(10, 3), V2),
                 (day(10, 4), V3), (day(10, 4), V1)])  # one row by another version is enough
    assert stale_days(con, USE_CASE) == [day(10, 1), day(10, 3), day(10, 4)]
    # The version scoring is pinned to (BATCH_PLATFORM_MODEL_VERSION) stands for the champion.
    assert stale_days(con, USE_CASE, V1) == [day(10, 2), day(10, 3), day(10, 4)]


def test_the_last_day_with_outcomes(con: duckdb.DuckDBPyConnection) -> None:
    assert last_day_with_outcomes(con, USE_CASE) is None
    label = USE_CASE.spec.label_column
    frame = pl.DataFrame({"partition_date": [day(1, 20), day(1, 21), day(1, 22)],
                          label: [1, 0, None]}, schema_overrides={label: pl.Int8()})
    ensure_table(con, USE_CASE.features_table, frame)
    insert(con, USE_CASE.features_table, frame)
    assert last_day_with_outcomes(con, USE_CASE) == day(1, 21)  # 01-22's outcomes are unknown


def test_trailing_windows_end_at_the_last_day_and_start_no_earlier_than_the_first() -> None:
    assert trailing_windows(day(12, 31), 240, 30, day(1, 1)) == (
        (day(5, 6), day(12, 1)), (day(12, 2), day(12, 31)))
    # Fewer days than declared before the first partition: training starts there.
    assert trailing_windows(day(2, 28), 240, 14, day(1, 1)) == (
        (day(1, 1), day(2, 14)), (day(2, 15), day(2, 28)))
    assert trailing_windows(day(1, 10), 240, 10, day(1, 1)) is None  # all of it validation
