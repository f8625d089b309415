"""Runs in parallel with analysts querying: nobody fails, nobody waits on anybody, no row twice.

Four partition runs start at once, each its own process against the persistent instance: two
with `dagster asset materialize`, one with Dagster's multiprocess executor (every step a process
of its own, so two steps of one run commit at once) and one in process, and two with
`batch-platform score`. Meanwhile two analyst processes
query the lake read-only every 100 ms, attached with the documented line, one through a session
held open the whole time, one through a new session per query. Every test that runs anything
runs it on its own copy of the platform (``own_platform``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from batch_platform import cli
from batch_platform.orchestration import stages
from batch_platform.platform.storage.lake import Lake, lake_of
from batch_platform.settings import Settings
from batch_platform_tests.conftest import (
    Platform,
    attach_lake,
    failure_messages,
    partition_snapshot,
)
from batch_platform_tests.platform.test_warehouse import HOLD_LOCK

DAYS = [dt.date(2013, 1, 18), dt.date(2013, 1, 19), dt.date(2013, 1, 20), dt.date(2013, 1, 21)]
DAILY_ASSETS = ("raw.flights", "raw.weather", "features.flights", "predictions.flights",
                "reports.flights_daily")
TABLES = ("raw.flights", "features.flights", "predictions.flights", "reports.flights_daily")

ANALYST = textwrap.dedent("""
    import json, os, sys, time
    import duckdb
    attach, stop, fresh = sys.argv[1], sys.argv[2], sys.argv[3] == "fresh"
    # No progress bar: an ATTACH over 2 s on a loaded machine would draw one on the standard
    # output this test reads "open" from.
    def connect():
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.execute(attach)
        return con
    con = connect()
    print("open", flush=True)
    latencies, errors = [], []
    while not os.path.exists(stop):
        started = time.perf_counter()
        try:
            if fresh:
                con.close()
                con = connect()
            con.execute("SELECT partition_date, count(*), count(DISTINCT flight_id) "
                        "FROM predictions.flights GROUP BY ALL").fetchall()
        except Exception as err:
            errors.append(repr(err))
        latencies.append(time.perf_counter() - started)
        # A new session verifies two extensions' signatures (0.3 s of CPU): every 2 s, not
        # ten times a second, or the analyst takes a core from the runs.
        time.sleep(2.0 if fresh else 0.1)
    con.close()
    print(json.dumps({"mode": sys.argv[3], "latencies": latencies, "errors": errors}),
          flush=True)
""")


def partitions(platform: Platform, with_lineage: bool = False) -> dict[str, pl.DataFrame]:
    """The four days of every table; without lineage, as any clean run makes them."""
    return partition_snapshot(platform, TABLES, DAYS, without_lineage=not with_lineage)


def assert_same(actual: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    for table, frame in expected.items():
        assert actual[table].equals(frame), f"{table} differs"


def run_commands(platform: Platform) -> list[list[str]]:
    bin_dir = Path(sys.executable).parent
    # The daily stages only: each step is a process that imports everything, on two cores.
    daily = ",".join(f"{table.replace('.', '/')}" for table in DAILY_ASSETS)
    dagster_runs = [[str(bin_dir / "dagster"), "asset", "materialize", "-m",
                     "batch_platform.definitions", "--select", daily,
                     "--partition", day.isoformat()] for day in DAYS[:2]]
    # The second in process: every step process imports everything, on two cores.
    dagster_runs[1] += ["--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})]
    cli_runs = [[str(bin_dir / "batch-platform"), "score", "--date", day.isoformat()]
                for day in DAYS[2:]]
    return dagster_runs + cli_runs


@pytest.mark.slow
def test_four_parallel_runs_and_querying_analysts_all_succeed(own_platform: Platform,
                                                               tmp_path: Path) -> None:
    settings = own_platform.settings
    clean = partitions(own_platform)
    assert all(frame.height for frame in clean.values())
    cli.prepare_instance(settings)  # the persistent instance the runs record themselves in
    env = os.environ | {"BATCH_PLATFORM_DATA_DIR": str(settings.data_dir),
                        "DAGSTER_HOME": str(settings.dagster_home),
                        "BATCH_PLATFORM_SCORING_THREADS": "1"}
    stop = tmp_path / "stop"
    # Each analyst's standard error in a file: what it says if it fails to open the lake.
    errors = [tmp_path / f"analyst-{mode}.err" for mode in ("session", "fresh")]
    analysts = []
    for mode, error in zip(("session", "fresh"), errors, strict=True):
        with error.open("w") as stderr:  # the analyst keeps its own copy of the descriptor
            analysts.append(subprocess.Popen(
                [sys.executable, "-c", ANALYST, attach_lake(settings.data_dir), str(stop), mode],
                stdout=subprocess.PIPE, stderr=stderr, text=True))
    try:
        for analyst, error in zip(analysts, errors, strict=True):
            assert analyst.stdout is not None
            opened = analyst.stdout.readline().strip()
            assert opened == "open", (f"the analyst exited {analyst.wait(timeout=30)} before "
                                      f"opening the lake: {error.read_text()[-3000:]!r}")
        started = time.monotonic()
        runs = [subprocess.Popen(command, env=env, cwd=Path(__file__).parents[2],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for command in run_commands(own_platform)]
        outputs = [run.communicate(timeout=400)[0] for run in runs]
        elapsed = time.monotonic() - started
    finally:
        stop.touch()
    reports = [json.loads(analyst.communicate(timeout=60)[0].strip().splitlines()[-1])
               for analyst in analysts]

    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    for report in reports:
        assert report["errors"] == []
        # Queried all along (every 100 ms in the session, a new session every 2 s): a query
        # that waited on a run would wait for most of the runs' time (tens of seconds). Two
        # cores shared by four runs stretch a 15 ms query to about 0.7 s.
        assert len(report["latencies"]) >= elapsed / (2 if report["mode"] == "session" else 10)
        assert max(report["latencies"]) < min(10.0, elapsed / 3), max(report["latencies"])

    # Every partition holds exactly a clean run's rows, written by exactly one of the runs.
    assert_same(partitions(own_platform), clean)
    run_ids = own_platform.query("SELECT partition_date, list(DISTINCT run_id) AS runs "
                                 "FROM predictions.flights WHERE partition_date BETWEEN ? AND ? "
                                 "GROUP BY ALL ORDER BY 1", [DAYS[0], DAYS[-1]])
    assert run_ids["partition_date"].to_list() == DAYS
    assert all(len(runs) == 1 for runs in run_ids["runs"].to_list())
    assert len({runs[0] for runs in run_ids["runs"].to_list()}) == 4
    for run_id, output in zip(run_ids["runs"].to_list(), outputs, strict=True):
        assert run_id[0] in output  # each day was written by the run launched for it


def test_a_commit_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    lake = Lake(f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}", tmp_path / "lake" / "files",
                lock_timeout_seconds=30)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lake.lock_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    release = threading.Timer(1.0, holder.stdin.close)
    release.start()
    started = time.monotonic()
    try:
        lake.commit(lambda con: con.execute("CREATE TABLE t AS SELECT 1 AS v"),
                    "write after the other step", {})
        waited = time.monotonic() - started
    finally:
        release.join()
        holder.wait(timeout=30)
    assert 0.9 <= waited < 10
    with lake.read_only() as con:
        assert con.execute("SELECT v FROM t").fetchall() == [(1,)]


@pytest.fixture
def lock_held_elsewhere(own_platform: Platform):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lake_of(own_platform.settings).lock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    holder.stdin.close()
    holder.wait(timeout=30)


def failed_after_every_retry(platform: Platform, settings: Settings,
                             monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a day's predictions that must fail transiently: the step retries MAX_RETRIES times
    (their backoff is not under test), then the run fails; its failure messages."""
    monkeypatch.setattr(stages, "FIRST_RETRY_SECONDS", 0.05)
    started = time.monotonic()
    result = platform.run("flights_predict", DAYS[0], settings=settings, raise_on_error=False)
    assert not result.success
    assert time.monotonic() - started < 60
    assert len(result.filter_events(lambda e: e.is_step_up_for_retry)) == stages.MAX_RETRIES
    return failure_messages(result)


def test_a_lock_held_too_long_fails_the_run_naming_the_holder(
    own_platform: Platform, lock_held_elsewhere: subprocess.Popen, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = partitions(own_platform, with_lineage=True)
    impatient = dataclasses.replace(own_platform.settings, lock_timeout_seconds=1.0)
    message = failed_after_every_retry(own_platform, impatient, monkeypatch)
    assert "LockTimeout: waited 1s for " in message
    assert f"held by process {lock_held_elsewhere.pid} on " in message
    assert "(hold the lock for a test, since " in message
    assert "BATCH_PLATFORM_LOCK_TIMEOUT_SECONDS" in message
    assert_same(partitions(own_platform, with_lineage=True), before)


CREATE_INSTANCE = textwrap.dedent("""
    import sys
    from batch_platform import cli
    from batch_platform.settings import Settings
    cli.prepare_instance(Settings.from_env())
    from dagster import DagsterInstance
    with DagsterInstance.get() as instance:
        print(len(instance.get_runs()))
""")


@pytest.mark.slow
def test_runs_starting_together_on_a_new_instance_do_not_break_it(tmp_path: Path) -> None:
    """Concurrent first runs used to stamp the instance's schema twice, breaking every run."""
    env = os.environ | {"BATCH_PLATFORM_DATA_DIR": str(tmp_path / "data")}
    env.pop("DAGSTER_HOME", None)
    starters = [subprocess.Popen([sys.executable, "-c", CREATE_INSTANCE], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    for starter in starters:
        out, err = starter.communicate(timeout=120)
        assert starter.returncode == 0, err[-2000:]
        assert out.strip() == "0"
    databases = list((tmp_path / "data" / "dagster").rglob("*.db"))
    assert databases
    for database in databases:
        con = sqlite3.connect(database)
        try:  # one schema version per database: two make every later run fail
            assert len(con.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
        finally:
            con.close()


def test_a_catalog_that_is_down_fails_the_step_naming_it_and_is_retried(
    own_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = dataclasses.replace(
        own_platform.settings, lake_connect_timeout_seconds=2.0,
        lake_catalog=f"postgres:dbname=lake host=127.0.0.1 port={port} user=lake")
    message = failed_after_every_retry(own_platform, down, monkeypatch)
    assert "cannot attach the lake's catalog postgres:dbname=lake host=127.0.0.1 " in message
    assert f"port={port}" in message
