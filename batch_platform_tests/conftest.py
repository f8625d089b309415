"""Shared fixtures: a real three-week slice of the flights year, materialized once per session.

The slice: landing files for 2013-01-01..2013-01-21, features for all of it, a model trained on
the first two weeks and validated on the third, and the third week scored from raw to reports.

It is built once, into a template that no test opens (``prepared_slice``). A test that changes
anything (a landing file, a lake table, the registry, a model file, the Dagster instance's
history, even by a failed run) takes ``own_platform``: a copy of the template for it alone.
Tests that only read share one copy, ``platform``, and are checked to leave it as they found it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from batch_platform.cli import INSTANCE_YAML
from batch_platform.definitions import build_definitions
from batch_platform.orchestration.jobs import partition_range_tags, run_failure_messages
from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest.completeness import Manifest, write_manifest
from batch_platform.platform.storage import lake as lakes
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import landing as flights_landing

# How any DuckDB 1.5.5 client attaches the lake, from the repository's root (the README's line).
ATTACH_LAKE = ("SET extension_directory = 'data/lake/extensions'; "
               "ATTACH 'ducklake:sqlite:data/lake/catalog.sqlite' AS lake (READ_ONLY); USE lake;")


def attach_lake(data_dir: Path) -> str:
    """The documented line, for the lake of ``data_dir``."""
    return ATTACH_LAKE.replace("data/", f"{data_dir}/")


FIRST = dt.date(2013, 1, 1)
LAST = dt.date(2013, 1, 21)
TRAIN = (dt.date(2013, 1, 1), dt.date(2013, 1, 14))
WEEK = (dt.date(2013, 1, 15), dt.date(2013, 1, 21))
TEST_ROUNDS = 60

# Per table: the columns that say which run wrote a row, when, and from which file (an absolute
# path: a rerun in a copy of the platform names the copy's file). Two clean runs of the same day
# differ in these only.
LINEAGE_COLUMNS = {
    "raw.flights": ("_ingested_at", "_run_id", "_source_file"),
    "quarantine.flights": ("_ingested_at", "_run_id", "_source_file"),
    "raw.weather": ("_ingested_at", "_run_id", "_source_file"),
    "quarantine.weather": ("_ingested_at", "_run_id", "_source_file"),
    "features.flights": (),
    "predictions.flights": ("run_id", "scored_at"),
    "reports.flights_daily": ("reported_at",),
}


def model_config(**overrides: object) -> dict:
    config = {"train_start": TRAIN[0].isoformat(), "train_end": TRAIN[1].isoformat(),
              "valid_start": WEEK[0].isoformat(), "valid_end": WEEK[1].isoformat(),
              "rounds": TEST_ROUNDS}
    return {"ops": {"models__flights": {"config": config | overrides}}}


@dataclass
class Platform:
    """A data directory with its definitions and a Dagster instance, driven like an operator."""

    settings: Settings
    instance: dg.DagsterInstance

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(self.settings)

    def run(self, job: str, start: dt.date | None = None, end: dt.date | None = None,
            run_config: dict | None = None, settings: Settings | None = None,
            raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        defs = build_definitions(settings or self.settings)
        tags = partition_range_tags(start.isoformat(), (end or start).isoformat()) if start else {}
        return defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config or {},
            raise_on_error=raise_on_error)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """What an analyst sees: the lake, read-only."""
        with lake_of(self.settings).read_only() as con:
            return con.execute(sql, params or []).pl()

    def land(self, day: dt.date) -> None:
        flights_landing.land(self.settings.landing_dir, [day], with_reference=False)


def seal(*paths: Path) -> None:
    """Write each landing file's manifest as the feed does once it delivered the file, damaged
    or not: the tests that use it are about what a whole file holds."""
    for path in paths:
        if path.is_file():
            payload = path.read_bytes()
            write_manifest(path, Manifest.of(payload, max(payload.count(b"\n") - 1, 0)))


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(run_failure_messages(result))


def partition_snapshot(platform: Platform, tables: Sequence[str], days: Sequence[dt.date], *,
                       without_lineage: bool = False) -> dict[str, pl.DataFrame]:
    """Each table's rows of ``days``, in one fixed order (``ORDER BY ALL``), all read in one
    transaction: one snapshot of the lake. ``without_lineage`` leaves out ``LINEAGE_COLUMNS``, so
    that a clean rerun gives equal frames."""
    frames = {}
    with lake_of(platform.settings).read_only() as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for table in tables:
                lineage = LINEAGE_COLUMNS[table] if without_lineage else ()
                columns = f"* EXCLUDE ({', '.join(lineage)})" if lineage else "*"
                frames[table] = con.execute(
                    f"SELECT {columns} FROM {table} WHERE partition_date = ANY($days) "
                    "ORDER BY ALL", {"days": list(days)}).pl()
        finally:
            con.execute("COMMIT")
    return frames


# --- the prepared slice and its copies ----------------------------------------------------

def close_lake_sessions(data_dir: Path) -> None:
    """Close this process's DuckDB instances of the lake under ``data_dir``.

    ``lake.py`` keeps one instance per lake for the life of the process (its extensions are
    verified once): a copy's would otherwise stay open, with its memory and open files, after
    its test. The key holds the data path, so a copy never gets the template's instance.
    """
    with lakes._INSTANCES_LOCK:
        for key in [key for key in lakes._INSTANCES if Path(key[1]).is_relative_to(data_dir)]:
            lakes._INSTANCES.pop(key).close()


# The event storage the platform's own instances use (``cli.INSTANCE_YAML``), under the test
# instance's home: the runs the tests make are recorded as users' are, and 3x cheaper.
PLATFORM_STORAGE = yaml.safe_load(INSTANCE_YAML)["storage"]


@contextmanager
def platform_at(root: Path) -> Iterator[Platform]:
    """The platform under ``root``: its data directory ``data/`` and its Dagster instance home
    ``instance/`` (a test instance whose storage lives there, so a copy keeps its history)."""
    settings = Settings(data_dir=root / "data").validated()
    (root / "instance").mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(root / "instance"),
                              overrides={"storage": PLATFORM_STORAGE}) as instance:
        try:
            yield Platform(settings, instance)
        finally:
            close_lake_sessions(settings.data_dir)


# Under the data directory: what a copy may share with the template by a hard link. Only the
# DuckDB extensions: signed builds that sessions load and never write (a missing one is
# installed as a new file, in the copy's own directory). Everything else is copied: tests
# rewrite landing and model files in place, SQLite writes its catalog and the instance's
# databases in place, and a test may corrupt a Parquet data file by hand (DuckLake itself
# never rewrites one), which through a link would corrupt the template.
SHARED_BY_LINK = (Path("data/lake/extensions"),)


def copy_platform(template: Path, target: Path) -> None:
    """Copy the platform under ``template`` to ``target``: a platform that reads and writes
    its own files only (its rows still name the template's landing files in ``_source_file``)."""
    def copy(source: str, destination: str) -> None:
        relative = Path(source).relative_to(template)
        if any(relative.is_relative_to(shared) for shared in SHARED_BY_LINK):
            os.link(source, destination)
        else:
            shutil.copy2(source, destination)  # keeps mtimes: landed before it was loaded

    # SQLite's -shm index of a WAL file is rebuilt from the WAL by the first session to open it.
    shutil.copytree(template, target, copy_function=copy, ignore=shutil.ignore_patterns("*-shm"))
    own_data_path(Settings(data_dir=target / "data"))


def own_data_path(settings: Settings) -> None:
    """Point the copied catalog at the copy's own data files.

    The catalog records the absolute data path it was created with (``ducklake_metadata``,
    key ``data_path``). ``lake.py`` overrides it at every attach, but the analysts' documented
    line does not: in a copy it would read the template's files. The data files themselves are
    recorded relative to the data path. The catalog is not open in any session yet: Python's
    own SQLite may write it without dropping DuckDB's locks.
    """
    catalog = lake_of(settings).sqlite_path
    assert catalog is not None
    connection = sqlite3.connect(catalog)
    try:
        with connection:
            changed = connection.execute(
                "UPDATE ducklake_metadata SET value = ? WHERE key = 'data_path' AND scope IS NULL",
                [f"{settings.lake_dir / 'files'}/"]).rowcount
    finally:
        connection.close()
    assert changed == 1, f"{catalog} has no data_path in ducklake_metadata"


@dataclass(frozen=True)
class PreparedSlice:
    """The slice as built: a data directory and its Dagster instance home under ``root``."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def copy_to(self, target: Path) -> Path:
        copy_platform(self.root, target)
        return target


@pytest.fixture(scope="session")
def prepared_slice(tmp_path_factory: pytest.TempPathFactory) -> PreparedSlice:
    """The template every platform of the session is copied from; no test opens it."""
    root = tmp_path_factory.mktemp("prepared") / "slice"
    with platform_at(root) as platform:
        flights_landing.land(platform.settings.landing_dir, days_between(FIRST, LAST))
        platform.run("flights_features", FIRST, LAST)
        platform.run("flights_train", run_config=model_config())
        platform.run("flights_daily", *WEEK)
    return PreparedSlice(root)


@pytest.fixture
def own_platform(prepared_slice: PreparedSlice, tmp_path: Path) -> Iterator[Platform]:
    """A copy of the prepared slice, data and Dagster history, for this test alone."""
    with platform_at(prepared_slice.copy_to(tmp_path / "own")) as platform:
        yield platform


@pytest.fixture(scope="session")
def platform(prepared_slice: PreparedSlice,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One copy of the prepared slice for the tests that only read it (checked: see below)."""
    with platform_at(prepared_slice.copy_to(tmp_path_factory.mktemp("shared") / "slice")
                     ) as platform:
        yield platform


def fingerprint(platform: Platform) -> dict[str, object]:
    """What a test that changes the platform changes: the lake's latest snapshot, the files
    of the landing, model and lake data directories, and the Dagster instance's runs. (The
    command line's own instance home, ``dagster/``, is created by any command, even ``sql``.)
    """
    settings = platform.settings
    files = {str(path.relative_to(settings.data_dir)): (stat.st_size, stat.st_mtime_ns)
             for folder in (settings.landing_dir, settings.models_dir, settings.lake_dir / "files")
             for path in sorted(folder.rglob("*")) if not path.is_dir()
             for stat in [path.lstat()]}
    return {"snapshot": platform.query("SELECT max(snapshot_id) FROM lake.snapshots()").item(),
            "runs": platform.instance.get_runs_count(), "files": files}


@pytest.fixture(autouse=True)
def _reading_leaves_the_shared_platform_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    if "platform" not in request.fixturenames:
        yield
        return
    shared: Platform = request.getfixturevalue("platform")
    before = fingerprint(shared)
    yield
    after = fingerprint(shared)
    changed = sorted(key for key in before if before[key] != after[key])
    assert not changed, (f"{request.node.nodeid} changed the shared platform ({', '.join(changed)})"
                         ": a test that changes data takes own_platform")
