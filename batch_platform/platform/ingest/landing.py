"""Where landing files are, and how they are written: atomically, and only when changed.

A daily source's file of a day is ``<landing dir>/<folder>/YYYY-MM-DD.csv``; a reference
table's is ``<landing dir>/reference/<name>.csv``. Nothing is read through a link that leads
outside the landing directory. A lander (a use case's ``landing.py``) writes files through
``write_csv_atomic``: an unchanged file is left untouched, so a modification time means "new
data".
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batch_platform.platform.files import write_bytes_atomic

DATE_FILE_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")
SOURCE_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")


class UnsafeLandingPath(ValueError):
    """A landing file that would be read from outside the landing directory."""


@dataclass(frozen=True)
class LandingSummary:
    files_written: int
    files_unchanged: int
    rows: int


def package_data_dir(package: str) -> Path:
    """The ``data`` folder of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package} package is not installed: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def landing_file(landing_dir: Path, source: str, day: dt.date) -> Path:
    """The day's file of ``source``, refused if it resolves outside the landing directory."""
    return _inside(landing_dir, landing_path(landing_dir, source, day), f"partition {day}")


def reference_file(landing_dir: Path, source: str) -> Path:
    return _inside(landing_dir, reference_path(landing_dir, source), "reference data")


def landing_path(landing_dir: Path, source: str, day: dt.date) -> Path:
    """Where a lander writes the day's file: through the path itself, replacing a link rather
    than following it (readers use ``landing_file``)."""
    # A date object, not a caller's string: a partition key cannot smuggle "../" in here.
    return landing_dir / _source(source) / f"{dt.date.isoformat(day)}.csv"


def reference_path(landing_dir: Path, source: str) -> Path:
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


def write_csv_atomic(frame: pl.DataFrame, path: Path) -> bool:
    """Write ``frame`` to ``path`` through a temporary file; return False if it was unchanged."""
    return write_if_changed(path, csv_bytes(frame))


def csv_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    return buffer.getvalue()


def write_if_changed(path: Path, payload: bytes) -> bool:
    """``write_bytes_atomic`` unless ``path`` already holds ``payload``: whether it wrote."""
    if path.exists() and path.read_bytes() == payload:
        return False
    write_bytes_atomic(path, payload)
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


def landed_at(landing_dir: Path, sources: Iterable[str]
              ) -> dict[dt.date, dt.datetime]:
    """When each day's files last changed: the newest modification time among its sources."""
    newest: dict[dt.date, dt.datetime] = {}
    for source in sources:
        for day in landed_days(landing_dir, source):
            path = landing_file(landing_dir, source, day)
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            newest[day] = max(mtime, newest.get(day, mtime))
    return newest
