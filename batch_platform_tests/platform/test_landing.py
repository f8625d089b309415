"""Landing lays the package data out as one CSV per day and source, atomically and idempotently."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform import files
from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest import landing
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.platform.support import DAY_1, DAY_2, source_day

TWO_DAYS = (DAY_1, DAY_2)
NEW_YEARS_EVE = dt.date(2013, 12, 31)


@pytest.fixture(scope="module")
def flights_source() -> pl.DataFrame:
    return flights_landing.read_source_text("flights")


@pytest.fixture(scope="module")
def weather_source() -> pl.DataFrame:
    return flights_landing.read_source_text("weather")


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, landing.LandingSummary]:
    """Two days landed once for the tests that only read; they must not change the files."""
    folder = tmp_path_factory.mktemp("landed") / "landing"
    return folder, flights_landing.land(folder, TWO_DAYS)


@pytest.fixture
def landed_copy(landed: tuple[Path, landing.LandingSummary], tmp_path: Path
                ) -> tuple[Path, landing.LandingSummary]:
    """A private copy (modification times kept) for tests that land again or add files."""
    folder, summary = landed
    copy = tmp_path / "landing"
    shutil.copytree(folder, copy)
    return copy, summary


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_files_are_laid_out_per_source_and_day(landed: tuple[Path, landing.LandingSummary]
                                               ) -> None:
    folder, summary = landed
    daily = {folder / source / f"{day}.csv" for source in ("flights", "weather")
             for day in ("2013-01-01", "2013-01-02")}
    references = {folder / "reference" / f"{name}.csv"
                  for name in ("planes", "airports", "airlines")}
    manifests = {path.with_name(path.name + ".manifest.json") for path in daily}
    # No temporary files left behind either; each daily file has its manifest, written last.
    assert set(_all_files(folder)) == daily | references | manifests
    assert summary.files_written == len(daily | references)
    assert summary.files_unchanged == 0
    assert landing.landing_file(folder, "flights", DAY_1) == folder / "flights" / "2013-01-01.csv"


def test_day_files_have_the_package_header(landed: tuple[Path, landing.LandingSummary],
                                          flights_source: pl.DataFrame,
                                          weather_source: pl.DataFrame) -> None:
    folder, _ = landed
    for source, frame in (("flights", flights_source), ("weather", weather_source)):
        header = landing.landing_file(folder, source, DAY_1).read_text().splitlines()[0]
        assert header.split(",") == frame.columns


def test_day_file_holds_exactly_that_days_flights(
    landed: tuple[Path, landing.LandingSummary], flights_source: pl.DataFrame
) -> None:
    folder, _ = landed
    for day in TWO_DAYS:
        expected = source_day(flights_source, day)
        assert expected.height > 800  # a weekday of the 2013 New York schedule
        landed_rows = pl.read_csv(landing.landing_file(folder, "flights", day), infer_schema=False)
        assert landed_rows.height == expected.height
        # Same text, same order, including the package's "NA" markers.
        assert landed_rows.equals(expected)
        assert (landed_rows.get_column("arr_delay") == "NA").any()


def test_summary_counts_daily_rows(landed: tuple[Path, landing.LandingSummary],
                                   flights_source: pl.DataFrame,
                                   weather_source: pl.DataFrame) -> None:
    _, summary = landed
    expected = sum(source_day(flights_source, d).height + source_day(weather_source, d).height
                   for d in TWO_DAYS)
    assert summary.rows == expected


def test_landing_again_writes_nothing_and_keeps_mtimes(
    landed_copy: tuple[Path, landing.LandingSummary]
) -> None:
    folder, first = landed_copy
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _all_files(folder)}
    second = flights_landing.land(folder, TWO_DAYS)
    assert second.files_written == 0
    assert second.files_unchanged == first.files_written
    assert second.rows == first.rows
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _all_files(folder)}
    assert after == before


def test_landing_again_repairs_a_changed_file(landed_copy: tuple[Path, landing.LandingSummary]
                                              ) -> None:
    folder, _ = landed_copy
    path = landing.landing_file(folder, "flights", DAY_2)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    summary = flights_landing.land(folder, TWO_DAYS)
    assert summary.files_written == 1
    assert path.read_bytes() == original


def test_day_without_observations_lands_header_only(tmp_path: Path,
                                                    weather_source: pl.DataFrame) -> None:
    # The package has no weather for 2013-12-31; the file still lands so "no file" means late.
    assert source_day(weather_source, NEW_YEARS_EVE).height == 0
    folder = tmp_path / "landing"
    summary = flights_landing.land(folder, [NEW_YEARS_EVE], with_reference=False)
    weather_file = landing.landing_file(folder, "weather", NEW_YEARS_EVE)
    assert weather_file.read_text() == ",".join(weather_source.columns) + "\n"
    flights_file = landing.landing_file(folder, "flights", NEW_YEARS_EVE)
    assert len(flights_file.read_text().splitlines()) > 1
    assert not (folder / "reference").exists()
    assert summary.files_written == 2


def test_reference_files_hold_the_whole_tables(landed: tuple[Path, landing.LandingSummary]
                                               ) -> None:
    folder, _ = landed
    for source in flights_landing.REFERENCE_SOURCES:
        path = landing.reference_file(folder, source)
        assert path == folder / "reference" / f"{source}.csv"
        shipped = flights_landing.read_source_text(source)
        assert pl.read_csv(path, infer_schema=False).equals(shipped)


def test_only_requested_sources_land(tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    flights_landing.land(folder, [DAY_1], sources=("weather",), with_reference=False)
    assert [p.relative_to(folder).as_posix() for p in _all_files(folder)] == [
        "weather/2013-01-01.csv", "weather/2013-01-01.csv.manifest.json"]


def test_landed_days_ignores_names_that_are_not_dates(
    landed_copy: tuple[Path, landing.LandingSummary]
) -> None:
    folder, _ = landed_copy
    flights_dir = folder / "flights"
    (flights_dir / "notes.csv").write_text("year\n")
    (flights_dir / "2013-13-45.csv").write_text("year\n")  # shaped like a date, but is not one
    (flights_dir / "2013-01-05.csv.bak").write_text("year\n")
    (flights_dir / ".2013-01-06.csv.123.tmp").write_text("year\n")
    (flights_dir / "2013-01-07.csv").mkdir()  # a directory, not a file
    (flights_dir / "2012-12-31.csv").write_text("year\n")
    assert landing.landed_days(folder, "flights") == [dt.date(2012, 12, 31), DAY_1, DAY_2]


def test_a_landing_file_may_not_lead_outside_the_landing_directory(
    landed_copy: tuple[Path, landing.LandingSummary], tmp_path: Path
) -> None:
    folder, _ = landed_copy
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("year\n")
    (folder / "flights" / "2013-01-04.csv").symlink_to(elsewhere)
    assert landing.landed_days(folder, "flights") == [DAY_1, DAY_2]
    with pytest.raises(landing.UnsafeLandingPath, match="outside the landing directory"):
        landing.landing_file(folder, "flights", dt.date(2013, 1, 4))
    for source in ("../flights", "flights/../../etc", "Flights; DROP"):
        with pytest.raises(landing.UnsafeLandingPath, match="invalid source name"):
            landing.landing_file(folder, source, DAY_1)
    with pytest.raises(TypeError):  # a partition key is parsed to a date first, never joined
        landing.landing_file(folder, "flights", "../../etc/passwd")  # type: ignore[arg-type]
    # Landing again replaces the link with the file itself.
    flights_landing.land(folder, [dt.date(2013, 1, 4)], with_reference=False)
    assert not (folder / "flights" / "2013-01-04.csv").is_symlink()
    assert elsewhere.read_text() == "year\n"


def test_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "2013-01-01.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".2013-01-01.csv.{dead}.tmp"
    alive = tmp_path / f".2013-01-01.csv.{os.getppid()}.tmp"
    other = tmp_path / f".2013-01-02.csv.{dead}.tmp"
    for path in (stale, alive, other):
        path.write_text("half a file")
    files.write_bytes_atomic(target, b"year\n")
    assert target.read_bytes() == b"year\n"
    assert not stale.exists()
    assert alive.exists() and other.exists()  # a live writer's file, another file's
    assert files.remove_stale_temp_files(target, any_owner=True) == [alive]


def test_landed_days_of_a_source_never_landed(tmp_path: Path) -> None:
    assert landing.landed_days(tmp_path, "flights") == []


def test_days_between_is_inclusive_and_checks_order() -> None:
    assert days_between(DAY_1, DAY_1) == [DAY_1]
    assert days_between(dt.date(2013, 2, 27), dt.date(2013, 3, 1)) == [
        dt.date(2013, 2, 27), dt.date(2013, 2, 28), dt.date(2013, 3, 1)]
    with pytest.raises(ValueError, match="range end 2013-01-01 is before its start 2013-01-02"):
        days_between(DAY_2, DAY_1)


def test_write_csv_atomic_reports_whether_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "file.csv"
    frame = pl.DataFrame({"a": ["1", "2"]})
    assert landing.write_csv_atomic(frame, path) is True
    assert path.read_text() == "a\n1\n2\n"
    assert landing.write_csv_atomic(frame, path) is False
    assert landing.write_csv_atomic(pl.DataFrame({"a": ["3"]}), path) is True
    assert path.read_text() == "a\n3\n"
    assert [p.name for p in path.parent.iterdir()] == ["file.csv"]
