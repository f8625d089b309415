"""Whether a landing file is whole: no day is ingested from a file that is still being written.

A source declares how its feed says a file is complete (``complete_when``):

- ``renamed`` (the default): the feed writes a temporary name and renames it, so a file under
  its final name is whole. The landing sensor still waits until it has settled.
- ``manifest``: the feed writes ``<file>.manifest.json`` last, naming the file's rows, bytes
  and SHA-256. A file without its manifest, or that differs from it, is not complete yet.
  The shipped landers write one (``land_csv``).
- ``settled``: the file has not changed for ``BATCH_PLATFORM_LANDING_SETTLE_SECONDS``.

Every way a run starts goes through the raw step's check (``require_complete``); the sensor asks
the same question (``incomplete``) before it requests a day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batch_platform.platform.files import write_bytes_atomic
from batch_platform.platform.ingest.landing import csv_bytes, write_if_changed
from batch_platform.platform.ingest.validate import BadInputError

RENAMED, MANIFEST, SETTLED = "renamed", "manifest", "settled"
COMPLETE_WHEN = (RENAMED, MANIFEST, SETTLED)
MANIFEST_SUFFIX = ".manifest.json"


class IncompleteLandingError(BadInputError):
    """A landing file that is not whole yet: run the day again once it is."""


@dataclass(frozen=True)
class Manifest:
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def of(cls, payload: bytes, rows: int) -> Manifest:
        return cls(rows, len(payload), hashlib.sha256(payload).hexdigest())


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def land_csv(frame: pl.DataFrame, path: Path) -> bool:
    """Land ``frame`` as a CSV file, then its manifest (last, so a reader that finds the
    manifest finds the whole file). False when both were already there, unchanged."""
    payload = csv_bytes(frame)
    changed = write_if_changed(path, payload)
    manifest = Manifest.of(payload, frame.height)
    if changed or read_manifest(path) != manifest:
        write_manifest(path, manifest)
        return True
    return False


def write_manifest(path: Path, manifest: Manifest) -> None:
    payload = {"file": path.name, "rows": manifest.rows, "bytes": manifest.bytes,
               "sha256": manifest.sha256}
    write_bytes_atomic(manifest_path(path), json.dumps(payload, indent=1).encode() + b"\n")


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of ``path``; None if it has not landed, an error if it is unreadable."""
    where = manifest_path(path)
    if not where.is_file():
        return None
    try:
        payload = json.loads(where.read_bytes())
        return Manifest(int(payload["rows"]), int(payload["bytes"]), str(payload["sha256"]))
    except (ValueError, KeyError, TypeError) as err:
        raise IncompleteLandingError(
            f"manifest {where} cannot be read ({type(err).__name__}: {err}): it must be JSON "
            'with "rows", "bytes" and "sha256"') from None


def incomplete(path: Path, complete_when: str, now: dt.datetime, settle_seconds: float
               ) -> str | None:
    """Why ``path`` is not complete yet, or None when it is."""
    if complete_when == SETTLED:
        age = now.timestamp() - path.stat().st_mtime
        if age < settle_seconds:
            return (f"it changed {age:.0f}s ago, less than BATCH_PLATFORM_LANDING_SETTLE_SECONDS"
                    f"={settle_seconds:g}: it may still be being written")
        return None
    if complete_when != MANIFEST:
        return None
    manifest = read_manifest(path)
    if manifest is None:
        return f"its manifest {manifest_path(path).name} has not landed (the feed writes it last)"
    size = path.stat().st_size
    if size != manifest.bytes:
        return (f"it holds {size:,} bytes, its manifest says {manifest.bytes:,} "
                f"({manifest.rows:,} rows): still being written, or replaced without a new "
                "manifest")
    digest = _sha256(path)
    if digest != manifest.sha256:
        return (f"its SHA-256 {digest[:12]}… differs from its manifest's "
                f"{manifest.sha256[:12]}…: changed after the manifest was written")
    return None


def require_complete(path: Path, complete_when: str, where: str, now: dt.datetime,
                     settle_seconds: float) -> None:
    """Refuse a file that is not whole, before any row of it is read. ``where`` names the
    source and partition."""
    reason = path.is_file() and incomplete(path, complete_when, now, settle_seconds)
    if reason:
        raise IncompleteLandingError(f"{where} is not complete: {reason}; nothing of the day "
                                     "was read: run it again once the file is whole")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
