"""The lake on a PostgreSQL catalog, against a real server: a throwaway cluster made with
Debian's initdb and started with pg_ctl on a free loopback port (`make test` installs the
binaries: scripts/ensure-postgresql). Commits, another process's view, time travel, the
analysts' read-only session, a catalog that is down, and writers in several processes at once
with no lock."""

from __future__ import annotations

import datetime as dt
import glob
import itertools
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from batch_platform.platform.storage import lake as lakes
from batch_platform.platform.storage import warehouse as wh

HOST = "127.0.0.1"
SUPERUSER = "lake"  # initdb's superuser; trust auth, so no password anywhere
SERVER_USERS = ("postgres", "nobody")  # initdb refuses root: the server runs as one of these
D1, D2, D3, D4 = (dt.date(2013, 1, d) for d in (1, 2, 3, 4))
ROWS = 40  # above DuckLake's inlining limit (10), so every commit writes Parquet files
TABLE = "raw.flights"

READ_IN_ANOTHER_PROCESS = """
import json, sys
from pathlib import Path
from batch_platform.platform.storage.lake import Lake
with Lake(sys.argv[1], Path(sys.argv[2])).read_only() as con:
    rows = con.execute("SELECT partition_date::VARCHAR, count(*), sum(flight_id) "
                       f"FROM {sys.argv[3]} GROUP BY ALL ORDER BY 1").fetchall()
print(json.dumps(rows))
"""

# One writer: replaces its day of the table, then waits inside the open transaction until
# every writer is inside its own, so the commits certainly overlap (all began on one snapshot).
COMMIT_ONE_DAY = """
import datetime as dt, sys, time
from pathlib import Path
import polars as pl
from batch_platform.platform.storage.lake import Lake
from batch_platform.platform.storage.warehouse import replace_partitions
catalog, data, table, day, offset, rows, sync, writers = sys.argv[1:9]
day, offset, rows, sync, writers = (dt.date.fromisoformat(day), int(offset), int(rows),
                                    Path(sync), int(writers))
frame = pl.DataFrame({"partition_date": [day] * rows,
                      "flight_id": list(range(offset, offset + rows))})

def write(con):
    replace_partitions(con, [(table, frame)], [day])
    (sync / day.isoformat()).touch()
    deadline = time.monotonic() + 20
    while len(list(sync.iterdir())) < writers:
        if time.monotonic() > deadline:
            raise TimeoutError("the other writers never opened their transactions")
        time.sleep(0.01)

Lake(catalog, Path(data), connect_timeout_seconds=5).commit(
    write, f"{table} {day}", {"run_id": f"writer-{day}"})
"""


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL server with trust auth on ``HOST``:``port``."""

    bin_dir: Path
    port: int
    databases: Iterator[int]

    def new_catalog(self) -> str:
        """A fresh database, so each test's snapshots start at 0."""
        name = f"lake_{next(self.databases)}"
        _run([str(self.bin_dir / "createdb"), "-h", HOST, "-p", str(self.port),
              "-U", SUPERUSER, name])
        return f"postgres:dbname={name} host={HOST} port={self.port} user={SUPERUSER}"


def _server_bin_dir() -> Path:
    """Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/<version>/bin."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")
             if all(os.access(Path(p) / b, os.X_OK) for b in ("initdb", "pg_ctl", "createdb"))]
    if found:
        return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl") and shutil.which("createdb"):
        return Path(initdb).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): run "
                       "scripts/ensure-postgresql, or apt-get install -y postgresql "
                       "(make test does)")


def _server_user() -> pwd.struct_passwd | None:
    """Who runs initdb and the server: ourselves, unless we are root; None: no one can."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                           f"{done.stdout}{done.stderr}")
    return done


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    bin_dir = _server_bin_dir()
    owner = _server_user()
    if owner is None:
        # A failure, not a skip: CI runs as root and must run these tests.
        pytest.fail(f"running as root and none of the users {SERVER_USERS} exists to run initdb "
                    "unprivileged (initdb refuses root): create one, e.g. `useradd postgres`")
    # Not under pytest's tmp dir: that is private to root and the server user cannot enter it.
    root = Path(tempfile.mkdtemp(prefix="lake-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    for path in (root, sockets):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    as_owner: dict[str, Any] = {"cwd": root, "env": os.environ | {"HOME": str(root)}}
    if os.geteuid() == 0:
        as_owner |= {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    pg_ctl = str(bin_dir / "pg_ctl")
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
              "-E", "UTF8", "--no-locale", "--no-sync"], **as_owner)
        for _attempt in range(3):  # another process may take the probed port before we do
            port = _free_port()
            options = (f"-c listen_addresses={HOST} -p {port} -k {sockets} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            done = subprocess.run([pg_ctl, "start", "-D", str(data), "-l", str(log), "-w",
                                   "-t", "30", "-o", options],
                                  capture_output=True, text=True, timeout=60, **as_owner)
            if done.returncode == 0:
                started = True
                break
        if not started:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}"
                               f"{log.read_text() if log.exists() else ''}")
        yield Server(bin_dir, port, itertools.count(1))
    finally:
        if started:
            stopped = subprocess.run([pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w",
                                      "-t", "20"], capture_output=True, timeout=60, **as_owner)
            if stopped.returncode != 0:
                subprocess.run([pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w"],
                               capture_output=True, timeout=60, **as_owner)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def lake(postgres: Server, tmp_path: Path) -> lakes.Lake:
    return lakes.Lake(postgres.new_catalog(), tmp_path / "lake" / "files",
                      connect_timeout_seconds=5)


def _day(day: dt.date, rows: int = ROWS, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"partition_date": [day] * rows,
                         "flight_id": list(range(offset, offset + rows))})


def _replace(lake: lakes.Lake, frame: pl.DataFrame, days: list[dt.date], message: str,
             run_id: str) -> None:
    lake.commit(lambda con: wh.replace_partitions(con, [(TABLE, frame)], days), message,
                {"run_id": run_id})


def _counts(lake: lakes.Lake) -> dict[dt.date, int]:
    with lake.read_only() as con:
        return wh.partition_counts(con, TABLE, D1, D4)


def test_commits_replace_partitions_idempotently_and_another_process_sees_them(
        lake: lakes.Lake) -> None:
    both = pl.concat([_day(D1), _day(D2, offset=1000)])
    _replace(lake, both, [D1, D2], "load two days", "run-1")
    for run_id in ("run-2", "run-3"):  # the same day twice: the rows of once
        _replace(lake, _day(D1), [D1], "replace the first day", run_id)

    with lake.read_only() as con:
        read = wh.read_partitions(con, TABLE, D1, D2, order_by=["flight_id"])
    assert read.equals(both.sort("flight_id"))
    assert list(lake.data_path.rglob("*.parquet")), "the rows are Parquet under the data path"
    assert not lake.lock_path.exists(), "a PostgreSQL catalog takes no writer lock"

    done = subprocess.run([sys.executable, "-c", READ_IN_ANOTHER_PROCESS, lake.catalog,
                           str(lake.data_path), TABLE],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["2013-01-01", ROWS, sum(range(ROWS))],
                                       ["2013-01-02", ROWS, sum(range(1000, 1000 + ROWS))]]


def test_time_travel_and_snapshots_name_the_commit_and_its_run(lake: lakes.Lake) -> None:
    _replace(lake, _day(D1), [D1], "first load", "run-first")
    _replace(lake, _day(D1, rows=15), [D1], "smaller reload", "run-second")

    with lake.read_only() as con:
        taken = lakes.snapshots(con)
        by_message = {s["message"]: s for s in taken}
        first = by_message["first load"]["snapshot_id"]
        second = by_message["smaller reload"]["snapshot_id"]
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 15
        assert con.execute(f"SELECT count(*) FROM {TABLE} AT (VERSION => {first})"
                           ).fetchone()[0] == ROWS
        assert con.execute(f"SELECT count(*) FROM {TABLE} AT (VERSION => {second})"
                           ).fetchone()[0] == 15
    assert by_message["first load"]["run_id"] == "run-first"
    assert by_message["smaller reload"]["run_id"] == "run-second"
    assert taken[-1]["snapshot_id"] == second > first


def test_an_analyst_session_refuses_insert_and_copy_outside_the_lake(
        lake: lakes.Lake, tmp_path: Path) -> None:
    _replace(lake, _day(D1), [D1], "load", "run-1")
    outside = tmp_path / "outside.csv"
    with lake.read_only() as con:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f"INSERT INTO {TABLE} VALUES (DATE '2013-01-01', 99999)")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT * FROM {TABLE}) TO '{outside}' (FORMAT csv)")
    assert not outside.exists()
    assert _counts(lake) == {D1: ROWS}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word: only the timeout ends a wait."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("down", ["nothing listens", "never answers"])
def test_a_catalog_that_is_down_fails_within_the_connect_timeout(
        down: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    port = _free_port() if down == "nothing listens" else request.getfixturevalue("silent_port")
    lake = lakes.Lake(f"postgres:dbname=lake host={HOST} port={port} user={SUPERUSER}",
                      tmp_path / "lake" / "files", connect_timeout_seconds=2)
    started = time.monotonic()
    with pytest.raises(lakes.LakeUnavailableError) as raised, lake.connect():
        pass
    took = time.monotonic() - started
    assert took < 15, f"a catalog that is down took {took:.1f}s to fail"
    message = str(raised.value)
    if down == "never answers":
        assert took >= 1.5, "the connect timeout (2 s) was not waited for"
        assert "timeout expired" in message, message
    assert f"host={HOST} port={port}" in message, message
    assert f'"{HOST}", port {port} failed' in message, message


def test_an_unavailable_catalog_never_shows_its_password(tmp_path: Path) -> None:
    lake = lakes.Lake(f"postgres:dbname=lake host={HOST} port={_free_port()} user={SUPERUSER} "
                      "password=s3cret", tmp_path / "lake" / "files", connect_timeout_seconds=2)
    with pytest.raises(lakes.LakeUnavailableError) as raised, lake.connect():
        pass
    assert "s3cret" not in str(raised.value)


def _commit_at_once(lake: lakes.Lake, tmp_path: Path, days: list[dt.date], offset: int
                    ) -> list[subprocess.CompletedProcess[str]]:
    """Each day committed by its own process, the transactions overlapping; no lock."""
    sync = tmp_path / "sync"
    sync.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", COMMIT_ONE_DAY, lake.catalog,
                                 str(lake.data_path), TABLE, day.isoformat(), str(offset),
                                 str(ROWS), str(sync), str(len(days))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for day in days]
    done = []
    try:
        for writer in writers:
            out, err = writer.communicate(timeout=90)
            done.append(subprocess.CompletedProcess(writer.args, writer.returncode, out, err))
    finally:
        for writer in writers:  # none outlives the test (nor holds the server at teardown)
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    return done


def _failures(done: list[subprocess.CompletedProcess[str]]) -> str:
    return "\n".join(f"writer of {p.args[6]} exited {p.returncode}: "
                     f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"
                     for p in done if p.returncode != 0)


def test_writers_of_new_partitions_of_one_table_commit_at_once_without_a_lock(
        lake: lakes.Lake, tmp_path: Path) -> None:
    _replace(lake, _day(D1), [D1], "the table exists", "run-seed")

    done = _commit_at_once(lake, tmp_path, [D2, D3, D4], offset=0)

    assert not _failures(done), _failures(done)
    assert _counts(lake) == {D1: ROWS, D2: ROWS, D3: ROWS, D4: ROWS}
    with lake.read_only() as con:
        messages = [s["message"] for s in lakes.snapshots(con)]
    assert sorted(messages[-3:]) == [f"{TABLE} {d}" for d in (D2, D3, D4)]
    assert not lake.lock_path.exists()


def test_writers_replacing_partitions_of_one_table_commit_at_once_without_a_lock(
        lake: lakes.Lake, tmp_path: Path) -> None:
    days = [D1, D2, D3, D4]
    _replace(lake, pl.concat([_day(d) for d in days]), days, "four days", "run-seed")

    done = _commit_at_once(lake, tmp_path, [D2, D3, D4], offset=5000)

    assert not _failures(done), _failures(done)
    with lake.read_only() as con:
        rows = dict(con.execute(f"SELECT partition_date, sum(flight_id) FROM {TABLE} "
                                "GROUP BY ALL").fetchall())
    replaced = sum(range(5000, 5000 + ROWS))
    assert rows == {D1: sum(range(ROWS)), D2: replaced, D3: replaced, D4: replaced}
