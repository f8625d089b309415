"""Undoing a failed run: every table and day it committed goes back to the snapshot before,
in one commit; other runs' rows stay; a late step of an undone run commits nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.storage import lake as lakes
from batch_platform.platform.storage import rollback
from batch_platform.platform.storage import warehouse as wh

D1, D2, D3 = dt.date(2013, 1, 1), dt.date(2013, 1, 2), dt.date(2013, 1, 3)


@pytest.fixture
def lake(tmp_path: Path) -> lakes.Lake:
    folder = tmp_path / "lake"
    return lakes.Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files")


def day(when: dt.date, value: int, rows: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"partition_date": [when] * rows, "value": [value] * rows})


def write(lake: lakes.Lake, table: str, frame: pl.DataFrame, days: list[dt.date], run: str,
          **extra: str) -> None:
    details = {"run_id": run, "asset": table,
               "partitions": f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])}
    lake.commit(lambda con: (rollback.refuse_rolled_back(con, run),
                             wh.replace_partitions(con, [(table, frame)], days)),
                f"{table} by run {run}", details | extra)


def undo(lake: lakes.Lake, run: str) -> list[rollback.Restored]:
    restored: list[rollback.Restored] = []
    lake.commit(lambda con: restored.extend(rollback.undo_run(con, run, "features failed")),
                f"undo run {run}", {"run_id": run, rollback.UNDO: run})
    return restored


def values(lake: lakes.Lake, table: str) -> dict[dt.date, list[int]]:
    with lake.read_only() as con:
        rows = con.execute(f"SELECT partition_date, list(value ORDER BY value) FROM {table} "
                           "GROUP BY ALL ORDER BY ALL").fetchall()
    return dict(rows)


def test_a_failed_run_leaves_every_table_of_its_days_as_before(lake: lakes.Lake) -> None:
    write(lake, "raw.flights", pl.concat([day(D1, 1), day(D2, 1)]), [D1, D2], "old")
    write(lake, "features.flights", pl.concat([day(D1, 10), day(D2, 10)]), [D1, D2], "old")
    # The failing run replaced raw of D2 and the features of D2, then its report failed.
    write(lake, "raw.flights", day(D2, 2, rows=1), [D2], "failing")
    write(lake, "features.flights", day(D2, 20, rows=1), [D2], "failing")
    restored = undo(lake, "failing")
    assert [str(r) for r in restored] == [
        "raw.flights 2013-01-02 restored to snapshot " f"{restored[0].to_snapshot}",
        "features.flights 2013-01-02 restored to snapshot " f"{restored[1].to_snapshot}"]
    assert values(lake, "raw.flights") == {D1: [1, 1, 1], D2: [1, 1, 1]}
    assert values(lake, "features.flights") == {D1: [10, 10, 10], D2: [10, 10, 10]}
    with lake.read_only() as con:
        run, reason, what = con.execute(f"SELECT run_id, reason, restored FROM "
                                        f"{rollback.ROLLED_BACK_TABLE}").fetchone()
    assert (run, reason, len(what)) == ("failing", "features failed", 2)
    # Undoing again changes nothing: no second snapshot of rows.
    assert undo(lake, "failing") == []
    assert values(lake, "raw.flights") == {D1: [1, 1, 1], D2: [1, 1, 1]}


def test_a_day_new_to_the_lake_is_removed_and_a_new_table_emptied(lake: lakes.Lake) -> None:
    write(lake, "raw.flights", day(D1, 1), [D1], "old")
    write(lake, "raw.flights", day(D3, 3), [D3], "failing")
    write(lake, "predictions.flights", day(D3, 30), [D3], "failing")
    undo(lake, "failing")
    assert values(lake, "raw.flights") == {D1: [1, 1, 1]}
    assert values(lake, "predictions.flights") == {}


def test_a_step_of_an_undone_run_that_commits_later_is_refused(lake: lakes.Lake) -> None:
    write(lake, "raw.flights", day(D1, 1), [D1], "old")
    write(lake, "raw.flights", day(D1, 2), [D1], "failing")
    undo(lake, "failing")
    with pytest.raises(rollback.RunRolledBackError,
                       match=r"^run failing was rolled back after features failed: this step's "
                             r"rows are not committed; rerun the days$"):
        write(lake, "raw.weather", day(D1, 5), [D1], "failing")  # the parallel branch
    assert values(lake, "raw.flights") == {D1: [1, 1, 1]}
    with lake.read_only() as con:
        assert not wh.table_exists(con, "raw.weather")


def test_rows_another_run_wrote_since_are_left_as_they_are(lake: lakes.Lake) -> None:
    write(lake, "raw.flights", pl.concat([day(D1, 1), day(D2, 1)]), [D1, D2], "old")
    write(lake, "raw.flights", day(D2, 2), [D2], "failing")
    write(lake, "raw.flights", day(D2, 7), [D2], "later")  # a rerun of the day, meanwhile
    write(lake, "raw.weather", day(D2, 8), [D2], "failing")
    restored = undo(lake, "failing")
    assert [r.left_as_is for r in restored] == ["run later wrote it since", None]
    assert values(lake, "raw.flights") == {D1: [1, 1, 1], D2: [7, 7, 7]}
    assert values(lake, "raw.weather") == {}


def test_a_kept_commit_stays_when_its_run_is_undone(lake: lakes.Lake) -> None:
    write(lake, "quarantine.flights_refused", day(D1, 4), [D1], "failing",
          **{rollback.KEPT: "true"})
    write(lake, "raw.flights", day(D1, 2), [D1], "failing")
    undo(lake, "failing")
    assert values(lake, "quarantine.flights_refused") == {D1: [4, 4, 4]}
    assert values(lake, "raw.flights") == {}


def test_an_unpartitioned_table_goes_back_whole(lake: lakes.Lake) -> None:
    def replace(frame: pl.DataFrame, run: str) -> None:
        lake.commit(lambda con: wh.replace_table(con, "raw.planes", frame), f"planes by {run}",
                    {"run_id": run, "asset": "raw/planes", "partitions": ""})

    replace(pl.DataFrame({"tailnum": ["N1", "N2"]}), "old")
    replace(pl.DataFrame({"tailnum": ["N9"]}), "failing")
    undo(lake, "failing")
    with lake.read_only() as con:
        assert con.execute("SELECT list(tailnum ORDER BY tailnum) FROM raw.planes"
                           ).fetchone()[0] == ["N1", "N2"]


def test_a_range_whose_other_days_were_published_undoes_only_the_withheld_days(
        lake: lakes.Lake) -> None:
    write(lake, "raw.flights", pl.concat([day(D1, 1), day(D2, 1), day(D3, 1)]), [D1, D2, D3],
          "old")
    write(lake, "raw.flights", pl.concat([day(D1, 2), day(D2, 2), day(D3, 2)]), [D1, D2, D3],
          "range")
    restored: list[rollback.Restored] = []
    lake.commit(lambda con: restored.extend(rollback.undo_run(con, "range", "features failed",
                                                              [D1, D3])),
                "undo", {"run_id": "range", rollback.UNDO: "range"})
    assert [str(r).rsplit(" ", 1)[0] for r in restored] == [
        "raw.flights 2013-01-01, 2013-01-03 restored to snapshot"]
    assert values(lake, "raw.flights") == {D1: [1, 1, 1], D2: [2, 2, 2], D3: [1, 1, 1]}
    # The run may still commit its published day; not the withheld ones.
    with lake.connect() as con:
        rollback.refuse_rolled_back(con, "range", (D2, D2))
        with pytest.raises(rollback.RunRolledBackError):
            rollback.refuse_rolled_back(con, "range", (D2, D3))
