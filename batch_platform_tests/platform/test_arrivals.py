"""What the landing sensor sees: new, repeated, changed, unfinished, invalid and unsafe files."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from batch_platform.platform.ingest import arrivals, landing
from batch_platform.use_cases.flights import landing as flights_landing

FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 12, 31)
DAY = dt.date(2013, 1, 2)
NOW = dt.datetime.now(dt.UTC)
SETTLE = 10.0


def scan(landing_dir: Path, seen: dict | None = None, now: dt.datetime | None = None
         ) -> arrivals.Scan:
    return arrivals.scan(landing_dir, seen or {}, FIRST, LAST,
                         (now or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=1), SETTLE,
                         flights_landing.DAILY_SOURCES)


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look modified ``seconds`` ago."""
    stamp = dt.datetime.now(dt.UTC).timestamp() - seconds
    os.utime(path, (stamp, stamp))


@pytest.fixture
def landing_dir(tmp_path: Path, landing_dir: Path) -> Path:
    """A private copy of the shared day 2013-01-02 (flights and weather)."""
    folder = tmp_path / "landing"
    for source in flights_landing.DAILY_SOURCES:
        target = landing.landing_file(folder, source, DAY)
        target.parent.mkdir(parents=True)
        target.write_bytes(landing.landing_file(landing_dir, source, DAY).read_bytes())
    return folder


def test_a_new_day_arrives_once(landing_dir: Path) -> None:
    first = scan(landing_dir)
    assert [a.day for a in first.arrivals] == [DAY]
    again = scan(landing_dir, first.seen)
    assert again.arrivals == [] and again.seen == first.seen


def test_the_same_content_landed_again_is_not_new(landing_dir: Path) -> None:
    first = scan(landing_dir)
    path = landing.landing_file(landing_dir, "flights", DAY)
    path.write_bytes(path.read_bytes())  # rewritten: new modification time, same bytes
    age(path, 60)
    again = scan(landing_dir, first.seen)
    assert again.arrivals == []
    assert again.seen[DAY.isoformat()].digest == first.seen[DAY.isoformat()].digest


def test_a_changed_file_arrives_again(landing_dir: Path) -> None:
    first = scan(landing_dir)
    path = landing.landing_file(landing_dir, "weather", DAY)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one hour of weather less
    age(path, 60)
    again = scan(landing_dir, first.seen)
    assert [a.day for a in again.arrivals] == [DAY]
    assert again.arrivals[0].digest != first.arrivals[0].digest


def test_a_file_still_being_written_waits(landing_dir: Path) -> None:
    path = landing.landing_file(landing_dir, "flights", DAY)
    age(path, 1)  # modified a second ago
    young = arrivals.scan(landing_dir, {}, FIRST, LAST, dt.datetime.now(dt.UTC), SETTLE,
                          flights_landing.DAILY_SOURCES)
    assert young.arrivals == [] and young.seen == {}
    assert any("may still be being written" in message for message in young.waiting)
    age(path, 60)
    assert [a.day for a in scan(landing_dir, young.seen).arrivals] == [DAY]


def test_temporary_files_of_a_write_in_progress_are_left_alone(landing_dir: Path) -> None:
    folder = landing_dir / "flights"
    (folder / ".2013-01-03.csv.1234.tmp").write_text("year,month\n2013,")
    (folder / "2013-01-04.csv.part").write_text("year,month\n2013,")
    result = scan(landing_dir)
    assert [a.day for a in result.arrivals] == [DAY]
    assert result.ignored == [] and not any("01-03" in m or "01-04" in m for m in result.waiting)


def test_a_day_waits_for_all_its_sources(landing_dir: Path) -> None:
    landing.landing_file(landing_dir, "weather", DAY).unlink()
    result = scan(landing_dir)
    assert result.arrivals == []
    assert result.waiting == [f"{DAY}: waiting for the weather file"]


@pytest.mark.parametrize("name", ["notes.csv", "2013-02-30.csv", "2013-1-5.csv",
                                  "2014-06-01.csv", "2013-01-05.CSV"])
def test_names_that_are_not_a_partition_are_ignored_and_said(landing_dir: Path,
                                                             name: str) -> None:
    (landing_dir / "flights" / name).write_text("anything")
    result = scan(landing_dir)
    assert [a.day for a in result.arrivals] == [DAY]
    assert len(result.ignored) == 1 and name in result.ignored[0]


def test_a_link_out_of_the_landing_directory_is_refused(landing_dir: Path,
                                                        tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("year\n2013\n")
    link = landing_dir / "flights" / "2013-01-05.csv"
    link.symlink_to(outside)
    (landing_dir / "weather" / "2013-01-05.csv").write_text("year\n2013\n")
    for path in (outside, landing_dir / "weather" / "2013-01-05.csv"):
        age(path, 60)
    result = scan(landing_dir)
    assert [a.day for a in result.arrivals] == [DAY]
    assert any("points outside the landing directory" in m for m in result.ignored)


def test_the_cursor_round_trips(landing_dir: Path) -> None:
    seen = scan(landing_dir).seen
    assert arrivals.decode_cursor(arrivals.encode_cursor(seen)) == seen
    assert arrivals.decode_cursor(None) == {}
