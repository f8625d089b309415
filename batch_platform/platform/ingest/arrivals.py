"""What is new in the landing directory: the partitions whose files arrived or changed.

A day is ready when every daily source has a settled file for it. A day is new when the
content of its files differs from what was last seen, so the same file landed twice (or
touched) is one arrival and a changed file is another. Files are only hashed when their size
or modification time changed. Nothing outside the landing directory is ever read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batch_platform.platform.ingest.completeness import (
    MANIFEST_SUFFIX,
    RENAMED,
    IncompleteLandingError,
    incomplete,
)
from batch_platform.platform.ingest.landing import DATE_FILE_PATTERN

# Temporary files of an atomic write (``.name.pid.tmp``) and common partial-download suffixes.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


@dataclass(frozen=True)
class Seen:
    """What a day's files were when last looked at: a cheap stat signature and their digest."""

    signature: str
    digest: str


@dataclass(frozen=True)
class Arrival:
    day: dt.date
    digest: str
    landed_at: dt.datetime  # the newest modification time of the day's files (UTC)


@dataclass
class Scan:
    arrivals: list[Arrival] = field(default_factory=list)
    seen: dict[str, Seen] = field(default_factory=dict)  # by ISO day: the cursor to keep
    ignored: list[str] = field(default_factory=list)  # names that are not a partition, or unsafe
    waiting: list[str] = field(default_factory=list)  # files still being written, days incomplete


def scan(landing_dir: Path, seen: Mapping[str, Seen], first_day: dt.date, last_day: dt.date,
         now: dt.datetime, settle_seconds: float,
         sources: Sequence[str], complete_when: Mapping[str, str] | None = None) -> Scan:
    """Compare the landing directory with ``seen``; ``seen`` itself is not changed.

    ``complete_when`` (by source folder) says how a file is known to be whole
    (``completeness.py``); a day with a file that is not waits, and is looked at again.
    """
    result = Scan(seen=dict(seen))
    root = landing_dir.resolve()
    files: dict[dt.date, dict[str, Path]] = {}
    for source in sources:
        folder = landing_dir / source
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            day = _settled_partition_file(entry, root, first_day, last_day, now, settle_seconds,
                                          result)
            if day is not None:
                files.setdefault(day, {})[source] = entry
    for day, by_source in sorted(files.items()):
        absent = [source for source in sources if source not in by_source]
        if absent:
            result.waiting.append(f"{day}: waiting for the {', '.join(absent)} file")
            continue
        stats = [by_source[source].stat() for source in sources]
        signature = ";".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)
        previous = seen.get(day.isoformat())
        if previous is not None and previous.signature == signature:
            continue
        unfinished = [f"{by_source[source]}: {reason}" for source in sources
                      if (reason := _incomplete(by_source[source], (complete_when or {}).get(
                          source, RENAMED), now, settle_seconds))]
        if unfinished:
            result.waiting.extend(unfinished)
            continue
        digest = _digest(by_source[source] for source in sources)
        result.seen[day.isoformat()] = Seen(signature, digest)
        if previous is None or previous.digest != digest:
            landed_at = dt.datetime.fromtimestamp(max(s.st_mtime for s in stats), dt.UTC)
            result.arrivals.append(Arrival(day, digest, landed_at))
    return result


def _settled_partition_file(entry: Path, root: Path, first_day: dt.date, last_day: dt.date,
                            now: dt.datetime, settle_seconds: float, result: Scan
                            ) -> dt.date | None:
    name = entry.name
    if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES):
        return None  # an atomic write or a download in progress: its final name comes later
    if name.endswith(MANIFEST_SUFFIX):
        return None  # a file's manifest, read with the file
    if not entry.resolve().is_relative_to(root):
        result.ignored.append(f"{entry}: points outside the landing directory {root}; refused")
        return None
    match = DATE_FILE_PATTERN.match(name)
    day = _date(match.group(1)) if match else None
    if day is None:
        result.ignored.append(f"{entry}: not a partition file (expected YYYY-MM-DD.csv)")
        return None
    if not first_day <= day <= last_day:
        result.ignored.append(f"{entry}: {day} is not a partition ({first_day}..{last_day})")
        return None
    if not entry.is_file():
        result.ignored.append(f"{entry}: not a regular file")
        return None
    age = now.timestamp() - entry.stat().st_mtime
    if age < settle_seconds:
        result.waiting.append(f"{entry}: modified {age:.0f}s ago, may still be being written "
                              f"(waiting {settle_seconds:g}s)")
        return None
    return day


def _incomplete(path: Path, complete_when: str, now: dt.datetime, settle_seconds: float
                ) -> str | None:
    try:
        return incomplete(path, complete_when, now, settle_seconds)
    except IncompleteLandingError as err:  # an unreadable manifest: wait for a good one
        return str(err)


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _digest(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def encode_cursor(seen: Mapping[str, Seen]) -> str:
    return json.dumps({day: [s.signature, s.digest] for day, s in sorted(seen.items())},
                      separators=(",", ":"))


def decode_cursor(cursor: str | None) -> dict[str, Seen]:
    return {day: Seen(*pair) for day, pair in json.loads(cursor or "{}").items()}
