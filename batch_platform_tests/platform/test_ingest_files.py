"""Ingest of a range's files in few passes: each file's rows, reasons, tallies and errors are
what staging it alone gives."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.storage import staging
from batch_platform_tests.flights import FLIGHTS_SOURCE as FLIGHTS
from batch_platform_tests.flights import WEATHER
from batch_platform_tests.platform.support import DAY_1, DAY_2, DAY_3, DAYS, LINEAGE

DAY_4 = dt.date(2013, 1, 4)


@pytest.fixture
def flight_files(landing_dir: Path, tmp_path: Path) -> dict[dt.date, Path]:
    """Four days of real flights: as landed; with a bad row and a repeated row; with its
    columns in another order and one more; the first day's rows again, under the fourth day
    (every row of another partition)."""
    folder = tmp_path / "landing" / "flights"
    folder.mkdir(parents=True)
    paths = {day: folder / f"{day}.csv" for day in (*DAYS, DAY_4)}
    real = {day: landing.landing_file(landing_dir, "flights", day) for day in DAYS}
    shutil.copy(real[DAY_1], paths[DAY_1])
    header, *lines = real[DAY_2].read_text().splitlines()
    at = next(n for n, line in enumerate(lines) if n and ",EWR," in line)
    bad = lines[at].replace(",EWR,", ",XXXX,", 1)
    paths[DAY_2].write_text("\n".join([header, *lines[:at], bad, *lines[at + 1:], lines[0]])
                            + "\n")
    text = pl.read_csv(real[DAY_3], infer_schema=False)
    text.select(pl.lit("a note").alias("note"), *reversed(text.columns)).write_csv(paths[DAY_3])
    shutil.copy(real[DAY_1], paths[DAY_4])
    return paths


def _stage(paths: dict[dt.date, Path], schema: ingest.SourceSchema, chunk_rows: int,
           folder: Path, one_by_one: bool
           ) -> tuple[pl.DataFrame, pl.DataFrame, list[ingest.FileTally]]:
    """The staged good and rejected rows, in the order staged, and the files' tallies."""
    good = staging.StagedTable(folder / "good", chunk_rows, exclude=(ingest.LINE_COLUMN,))
    rejected = staging.StagedTable(folder / "rejected", chunk_rows)
    if one_by_one:
        tallies = [ingest.stage_file(path, schema, day, LINEAGE, good, rejected, chunk_rows,
                                     folder) for day, path in paths.items()]
    else:
        tallies = list(ingest.stage_files(paths, schema, LINEAGE, good, rejected, chunk_rows,
                                          folder))
    read = [pl.concat(staging.chunks(t.close().files, 10**6)) for t in (good, rejected)]
    return read[0], read[1], tallies


def _tally(tally: ingest.FileTally) -> dict[str, object]:
    lines = tally.repeated_lines
    return {**vars(tally), "repeated_lines": None if lines is None else lines.to_list()}


@pytest.mark.parametrize("chunk_rows", [100_000, 1_000, 500])
def test_a_range_staged_together_equals_each_file_staged_alone(
        flight_files: dict[dt.date, Path], tmp_path: Path, chunk_rows: int) -> None:
    alone = _stage(flight_files, FLIGHTS, chunk_rows, tmp_path / "alone", one_by_one=True)
    together = _stage(flight_files, FLIGHTS, chunk_rows, tmp_path / "together",
                      one_by_one=False)
    assert_frame_equal(together[0], alone[0])
    assert_frame_equal(together[1], alone[1])
    assert [_tally(t) for t in together[2]] == [_tally(t) for t in alone[2]]
    # And what validating each whole file gives, lineage added file by file.
    whole = [ingest.validate_file(path, FLIGHTS, day) for day, path in flight_files.items()]
    repeated = {t.source_file: t.repeated_lines.to_list() for t in together[2]
                if t.repeated_lines is not None}
    assert_frame_equal(together[0].filter(~pl.struct("_source_file", ingest.LINE_COLUMN).is_in(
        [{"_source_file": f, ingest.LINE_COLUMN: n} for f, lines in repeated.items()
         for n in lines])),
        pl.concat(ingest.with_lineage(v.good, v, LINEAGE).with_columns(v.good_lines)
                  for v in whole))
    assert_frame_equal(together[1].sort("_source_file", ingest.LINE_COLUMN),
                       pl.concat(ingest.with_lineage(v.rejected, v, LINEAGE) for v in whole))
    tallies = {t.partition_date: t for t in together[2]}
    assert list(tallies) == list(flight_files)
    # What each file holds is its own: the repeated key and the bad code of the second day,
    # the extra column of the third, every row of the fourth dated elsewhere.
    assert tallies[DAY_2].rejected == 2
    assert tallies[DAY_2].reasons == {"origin": 1, "key": 1}
    assert tallies[DAY_3].ignored_columns == ("note",)
    assert tallies[DAY_3].rejected == 0
    assert tallies[DAY_4].rejected == tallies[DAY_4].rows_in == tallies[DAY_1].rows_in
    assert tallies[DAY_4].first_rejected[ingest.REASON_COLUMN] == (  # type: ignore[index]
        "date: row date 2013-1-1 is not partition 2013-01-04")
    rejected = together[1]
    assert rejected.filter(pl.col("partition_date") == DAY_2).get_column("reason").to_list()[
        1].startswith("key: duplicate of line 2 ")
    assert set(rejected.get_column("_source_file")) == {str(flight_files[DAY_2]),
                                                        str(flight_files[DAY_4])}
    for day, tally in tallies.items():  # the reject limit judges each file alone
        ingest.enforce_reject_threshold(tally, 0.01 if day != DAY_4 else 1.0, "here")
    with pytest.raises(ingest.BadInputError, match=r"^here: 842 of 842 rows rejected"):
        ingest.enforce_reject_threshold(tallies[DAY_4], 0.01, "here")


def test_small_files_are_validated_together(flight_files: dict[dt.date, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[int] = []
    validate_pass = ingest._validate_pass

    def counted(texts, schema):  # type: ignore[no-untyped-def]
        passes.append(len(texts))
        return validate_pass(texts, schema)

    monkeypatch.setattr(ingest, "_validate_pass", counted)
    _stage(flight_files, FLIGHTS, 100_000, tmp_path / "together", one_by_one=False)
    assert passes == [4]
    passes.clear()
    _stage(flight_files, FLIGHTS, 2_000, tmp_path / "bounded", one_by_one=False)
    assert passes == [2, 2]  # about 900 rows a file: never more than chunk_rows rows a pass


def test_weather_days_staged_together_equal_each_alone(landing_dir: Path, tmp_path: Path
                                                       ) -> None:
    paths = {day: landing.landing_file(landing_dir, "weather", day) for day in DAYS}
    alone = _stage(paths, WEATHER, 100, tmp_path / "alone", one_by_one=True)
    together = _stage(paths, WEATHER, 100, tmp_path / "together", one_by_one=False)
    assert_frame_equal(together[0], alone[0])
    assert_frame_equal(together[1], alone[1])
    assert [_tally(t) for t in together[2]] == [_tally(t) for t in alone[2]]
    assert together[0].height == sum(t.rows_in for t in together[2])


def test_a_file_that_cannot_be_read_stops_after_the_files_before_it(
        flight_files: dict[dt.date, Path], tmp_path: Path) -> None:
    text = pl.read_csv(flight_files[DAY_3], infer_schema=False)
    text.drop("dep_delay").write_csv(flight_files[DAY_3])
    with pytest.raises(ingest.BadInputError) as alone:
        ingest.stage_file(flight_files[DAY_3], FLIGHTS, DAY_3, LINEAGE,
                          staging.StagedTable(tmp_path / "g", 100),
                          staging.StagedTable(tmp_path / "r", 100), 100_000, tmp_path)
    assert "is missing column(s) 'dep_delay'" in str(alone.value)
    good = staging.StagedTable(tmp_path / "good", 100_000, exclude=(ingest.LINE_COLUMN,))
    rejected = staging.StagedTable(tmp_path / "rejected", 100_000)
    staged = ingest.stage_files(flight_files, FLIGHTS, LINEAGE, good, rejected, 100_000,
                                tmp_path)
    first, second = next(staged), next(staged)
    assert (first.partition_date, second.partition_date) == (DAY_1, DAY_2)
    # Both files before it are staged when their tallies come, the later file is not read.
    assert good.rows + rejected.rows == first.rows_in + second.rows_in
    with pytest.raises(ingest.BadInputError) as together:
        next(staged)
    assert str(together.value) == str(alone.value)


def test_keys_repeat_only_within_a_file(landing_dir: Path) -> None:
    path = landing.landing_file(landing_dir, "weather", DAY_1)
    text = ingest.read_text(path, WEATHER, DAY_1)
    again = text.head(1).with_columns(pl.lit(7, pl.Int64).alias(ingest.LINE_COLUMN))
    one, other, both = text.head(5), text.head(5), pl.concat([text.head(5), again])
    texts = [("a.csv", DAY_1, one), ("b.csv", DAY_1, other), ("both.csv", DAY_1, both)]
    files = ingest.validate_files(texts, WEATHER)
    assert [f.source_file for f in files] == ["a.csv", "b.csv", "both.csv"]
    for grouped, (name, day, single) in zip(files, texts, strict=True):
        alone = ingest.validate(single, WEATHER, day, name)
        assert_frame_equal(grouped.good, alone.good)
        assert_frame_equal(grouped.rejected, alone.rejected)
        assert grouped.good_lines.to_list() == alone.good_lines.to_list()  # type: ignore[union-attr]
    assert [f.rejected.height for f in files] == [0, 0, 1]
    assert files[2].rejected.get_column("reason").item().startswith("key: duplicate of line 2")


def test_files_of_several_days_name_their_own_partition(landing_dir: Path) -> None:
    path = landing.landing_file(landing_dir, "weather", DAY_1)
    text = ingest.read_text(path, WEATHER, DAY_1)
    first, second = ingest.validate_files([(str(path), DAY_1, text), (str(path), DAY_3, text)],
                                          WEATHER)
    assert first.rejected.height == 0
    assert_frame_equal(second.rejected, ingest.validate(text, WEATHER, DAY_3, str(path)).rejected)
    assert second.rejected.height == text.height
    assert second.rejected.get_column("reason").str.ends_with(
        "is not partition 2013-01-03").all()
