"""SIGKILL at every point of a write: the partition is the old version or the new, never half,
and a rerun is clean.

Each crash runs the real job in a subprocess (``crash_run``) that kills itself at the chosen
point. Afterwards the lake must hold exactly the old version (killed before the commit) or the
new one (after it), every file its snapshot lists must be there, and a rerun, given only a short
lock wait, must produce exactly a clean run's rows and leave no temporary file behind. Every
test crashes its own copy of the platform (``own_platform``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.models import booster as model_core
from batch_platform.platform.monitoring import drift
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import (
    LINEAGE_COLUMNS,
    Platform,
    model_config,
    partition_snapshot,
    seal,
)
from batch_platform_tests.flights import FLIGHTS

DAY = dt.date(2013, 1, 17)
TABLES = ("raw.flights", "quarantine.flights", "features.flights", "predictions.flights",
          "reports.flights_daily")


def snapshot(platform: Platform, clean: bool = False) -> dict[str, pl.DataFrame]:
    """The day in every table; ``clean``: what a clean rerun must reproduce (everything but
    when and by which run)."""
    return partition_snapshot(platform, TABLES, [DAY], without_lineage=clean)


def listed_files_exist(platform: Platform) -> int:
    """Every data file the current snapshot lists is on disk; how many there are."""
    with lake_of(platform.settings).read_only() as con:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                             "WHERE database_name = 'lake'").fetchall()
        files = [Path(row[0]) for schema, name in tables for row in con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', $t, schema => $s)",
            {"t": name, "s": schema}).fetchall()]
    missing = [f for f in files if not f.exists()]
    assert not missing, f"the snapshot lists files that are gone: {missing[:3]}"
    return len(files)


def crash(platform: Platform, job: str, table: str, point: str, start: dt.date | None = DAY,
          run_config: dict | None = None, env: dict[str, str] | None = None) -> None:
    """Run ``job`` in a process that SIGKILLs itself at ``point`` of its write to ``table``
    (``env``: see ``crash_run``)."""
    day = start.isoformat() if start else "-"
    done = subprocess.run(
        [sys.executable, "-m", "batch_platform_tests.orchestration.crash_run",
         str(platform.settings.data_dir), job, day, day, table, point,
         json.dumps(run_config or {})],
        capture_output=True, text=True, timeout=240, env=os.environ | (env or {}))
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout[-2000:],
                                                 done.stderr[-3000:])


def temp_files(platform: Platform) -> list[Path]:
    data_dir = platform.settings.data_dir
    return [p for p in data_dir.rglob(".*.tmp") if "dagster" not in p.parts]


def impatient(platform: Platform):
    """The platform's settings with a lock wait short enough to expose any stale lock."""
    return dataclasses.replace(platform.settings, lock_timeout_seconds=2.0)


# The step of flights_daily writing each table; raw and quarantine share one transaction.
STEP = {"raw.flights": 0, "quarantine.flights": 0, "features.flights": 1,
        "predictions.flights": 2, "reports.flights_daily": 3}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "point"),
    [
        ("raw.flights", "before_delete"),
        ("raw.flights", "after_delete"),
        ("raw.flights", "mid_insert"),
        # raw and quarantine are one transaction: raw replaced, quarantine deleted, not yet filled
        ("quarantine.flights", "after_delete"),
        ("predictions.flights", "mid_insert"),
        ("predictions.flights", "before_commit"),
        ("predictions.flights", "during_commit"),
        ("predictions.flights", "after_commit"),
    ],
)
def test_a_run_killed_mid_write_leaves_the_partition_whole_and_the_rerun_is_clean(
    own_platform: Platform, table: str, point: str
) -> None:
    before = snapshot(own_platform)
    clean = snapshot(own_platform, clean=True)
    assert before["predictions.flights"].height > 0

    # The job that starts with the step to crash: the steps before it are not under test.
    job = "flights_predict" if STEP[table] >= STEP["predictions.flights"] else "flights_daily"
    crash(own_platform, job, table, point)

    after = snapshot(own_platform)
    listed_files_exist(own_platform)
    for name in TABLES:
        # Every table holds one whole version: never half, never twice.
        whole = after[name].drop(*LINEAGE_COLUMNS[name])
        assert whole.equals(clean[name]), f"{name} is not whole after the crash"
        if STEP[name] < STEP[table]:
            continue  # the steps before the crash finished and committed their new version
        old_version = after[name].equals(before[name])
        if point == "during_commit" and STEP[name] == STEP[table]:
            continue  # the old version or the new: whole either way (asserted above)
        committed = point == "after_commit" and STEP[name] == STEP[table]
        assert old_version != committed, f"{name}: expected the {'new' if committed else 'old'}"

    # Nothing blocks the rerun: it gets the lock within 2 s, and yields a clean run's rows.
    result = own_platform.run(job, DAY, settings=impatient(own_platform))
    assert result.success
    rerun = snapshot(own_platform, clean=True)
    for name, frame in clean.items():
        assert rerun[name].equals(frame), f"{name} differs from a clean run after the rerun"
    run_ids = own_platform.query("SELECT DISTINCT run_id FROM predictions.flights "
                                 "WHERE partition_date = ?", [DAY])
    assert run_ids["run_id"].to_list() == [result.run_id]
    assert temp_files(own_platform) == []


@pytest.mark.slow
def test_files_of_a_killed_transaction_are_invisible_and_maintenance_removes_them(
    own_platform: Platform
) -> None:
    lake = lake_of(own_platform.settings)
    on_disk = set(lake.data_path.rglob("*.parquet"))
    listed = listed_files_exist(own_platform)
    crash(own_platform, "flights_predict", "predictions.flights", "before_commit")
    orphans = set(lake.data_path.rglob("*.parquet")) - on_disk
    assert orphans, "the killed transaction wrote its Parquet files before the commit"
    assert listed_files_exist(own_platform) == listed  # not one of them is in a snapshot
    # Maintenance deletes files that no snapshot reads once they are older than the retention.
    lake.maintain(dt.timedelta(days=7))
    assert all(path.exists() for path in orphans)
    lake.maintain(dt.timedelta(0))
    assert not any(path.exists() for path in orphans)
    assert listed_files_exist(own_platform) > 0
    assert own_platform.query("SELECT count(*) FROM predictions.flights WHERE partition_date = ?",
                              [DAY]).item() > 0


def registry_is_consistent(own_platform: Platform) -> list[tuple]:
    """No registry row without its intact file and profile, one champion, and it loads."""
    with lake_of(own_platform.settings).read_only() as con:
        rows = con.execute("SELECT model_version, status, model_path, threshold "
                           "FROM models.registry ORDER BY model_version").fetchall()
    settings = own_platform.settings
    for version, _, model_path, _ in rows:
        file = settings.data_dir / model_path
        assert file.is_file(), f"registry row {version} points at a missing file"
        assert model_core.version_of(file.read_text()) == version
        # Its drift profile, written beside it before the row, is whole too.
        assert drift.load_profile(drift.profile_path(file)) is not None
    champions = [row for row in rows if row[1] == "champion"]
    assert len(champions) == 1
    version, _, model_path, threshold = champions[0]
    model_core.load_registered(settings.data_dir, settings.models_dir, model_path, version,
                               threshold, FLIGHTS)
    return [(version, status) for version, status, _, _ in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "mid_training",
        "model_file",
        # inside the registry transaction: the old champion already retired, the new row not in
        "before_delete",
        "after_commit",
    ],
)
def test_a_crash_mid_training_leaves_registry_and_model_files_consistent(
    own_platform: Platform, point: str
) -> None:
    before = registry_is_consistent(own_platform)
    versions_before = {version for version, _ in before}
    # Fewer rounds than the champion's: a new version, whose file does not exist yet.
    config = model_config(rounds=17)
    crash(own_platform, "flights_train", "models.registry", point, start=None, run_config=config)

    after_crash = registry_is_consistent(own_platform)
    if point == "after_commit":  # committed: the new champion, whole
        assert champion(after_crash) not in versions_before
    else:
        assert after_crash == before

    result = own_platform.run("flights_train", run_config=config, settings=impatient(own_platform))
    assert result.success
    after = registry_is_consistent(own_platform)
    new = champion(after)
    assert new not in versions_before
    assert {version for version, _ in after} == versions_before | {new}
    assert temp_files(own_platform) == []


def champion(rows: list[tuple]) -> str:
    (version,) = [version for version, status in rows if status == "champion"]
    return version


TAKE_LOCK = """
import sys
from pathlib import Path
from batch_platform.platform.files import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), 1.0, "commit after a failed step"):
    pass
"""


def test_a_failed_step_leaks_no_lock(own_platform: Platform) -> None:
    """After a step fails in this process, another process gets the writer lock at once."""
    flights = own_platform.settings.landing_dir / "flights" / f"{DAY}.csv"
    flights.write_text("not,a,flights,file\n1,2,3,4\n")
    seal(flights)
    result = own_platform.run("flights_daily", DAY, raise_on_error=False)
    assert not result.success
    taken = subprocess.run([sys.executable, "-c", TAKE_LOCK,
                            str(lake_of(own_platform.settings).lock_path)],
                           capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0, taken.stderr
