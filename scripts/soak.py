"""Soak: run partitions through every stage in parallel, SIGKILL runs at random, keep analysts
querying, then prove that nothing was lost or duplicated.

    .venv/bin/python scripts/soak.py --partitions 20 --parallel 3 --minutes 10

What it does, on a fresh data directory (a temporary one unless --data-dir is given):

1. lands the training window (2013-01-01..21) and N days from 2013-02-01, trains a first
   champion with `batch-platform train` and scores the first day (not killed: every table must
   exist before readers start);
2. starts analyst readers (separate processes) that query the lake (read-only) every
   100 ms: one holds a session open and reconnects every few seconds, one opens a new session
   per query. Every answer is checked: a partition is either absent or holds exactly its
   expected rows, each once (a half-written or doubled partition counts as a torn read);
3. until the time is up, keeps K runs going: `batch-platform score --date D` (in-process
   executor), `dagster asset materialize --partition D` (multiprocess executor) and, now and
   then, `batch-platform train` (features of the windows, then the model). Every few seconds
   it SIGKILLs a random running run (its whole process group) and queues it again;
4. lets the last runs finish without kills, then counts every partition of every table in the
   lake against the rows the landing files should give, checks the model
   registry against the model files, and prints the figures. It exits 1 if anything was lost,
   duplicated, torn or failed.

This is not part of the unit suite (pytest collects only batch_platform_tests/).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRAIN = ("2013-01-01", "2013-01-14")
VALID = ("2013-01-15", "2013-01-21")
FIRST_SCORED = dt.date(2013, 2, 1)
QUERY_INTERVAL = 0.1
SESSION_SECONDS = 3.0

# Per table: the key a row must be unique on.
KEYS = {
    "raw.flights": "carrier, flight, origin, sched_dep_time",
    "quarantine.flights": "_line_number",
    "raw.weather": "origin, time_hour",
    "quarantine.weather": "_line_number",
    "features.flights": "flight_id",
    "predictions.flights": "flight_id",
    "reports.flights_daily": "segment_type, segment",
}
# What readers check on every query: the tables every run rewrites.
READER_TABLES = ("raw.flights", "features.flights", "predictions.flights")


# --- the clean expectation ---------------------------------------------------------------

def expected_rows(landing_dir: Path, trained_days: list[dt.date], scored_days: list[dt.date]
                  ) -> dict[str, dict[str, int]]:
    """Rows each partition of each table must hold, derived from the landing files alone."""
    import polars as pl

    from batch_platform import catalog
    from batch_platform.platform.ingest import landing
    from batch_platform.platform.ingest import validate as ingest

    flights_use_case = catalog.use_case("flights")
    FLIGHTS = flights_use_case.sources["flights"].schema
    WEATHER = flights_use_case.sources["weather"].schema

    expected: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for day in trained_days + scored_days:
        key = day.isoformat()
        flights = ingest.validate_file(landing.landing_file(landing_dir, "flights", day),
                                       FLIGHTS, day)
        weather = ingest.validate_file(landing.landing_file(landing_dir, "weather", day),
                                       WEATHER, day)
        expected["raw.flights"][key] = flights.good.height
        expected["quarantine.flights"][key] = flights.rejected.height
        expected["raw.weather"][key] = weather.good.height
        expected["quarantine.weather"][key] = weather.rejected.height
        expected["features.flights"][key] = flights.good.height
        if day in scored_days:
            expected["predictions.flights"][key] = flights.good.height
            segments = flights.good.select(pl.col("carrier").n_unique() + pl.col("origin")
                                           .n_unique()).item()
            expected["reports.flights_daily"][key] = 1 + segments
    return expected


# --- analyst readers (run as separate processes) -------------------------------------------

def reader(data_dir: Path, expected_file: Path, stop_file: Path, out_file: Path,
           fresh_sessions: bool) -> None:
    """Query the lake, attached as analysts attach it, every 100 ms until ``stop_file``."""
    import duckdb

    attach = (f"SET extension_directory = '{data_dir}/lake/extensions'; ATTACH 'ducklake:sqlite:"
              f"{data_dir}/lake/catalog.sqlite' AS lake (READ_ONLY); USE lake;")

    expected = json.loads(expected_file.read_text())
    queries = failed = torn = 0
    latencies: list[float] = []
    errors: list[str] = []
    con = None
    opened = 0.0
    turn = 0
    while not stop_file.exists():
        table = READER_TABLES[turn % len(READER_TABLES)]
        turn += 1
        started = time.perf_counter()
        try:
            if con is None or fresh_sessions or time.monotonic() - opened > SESSION_SECONDS:
                if con is not None:
                    con.close()
                con = duckdb.connect()
                con.execute(attach)
                opened = time.monotonic()
            rows = con.execute(
                f"SELECT partition_date::VARCHAR, count(*), count(DISTINCT ({KEYS[table]})) "
                f"FROM {table} GROUP BY ALL").fetchall()
            for day, count, distinct in rows:
                want = expected[table].get(day)
                if count != distinct or (want is not None and count != want):
                    torn += 1
                    errors.append(f"torn read: {table} {day} holds {count} rows "
                                  f"({distinct} distinct), expected {want}")
        except duckdb.Error as err:
            failed += 1
            errors.append(f"{type(err).__name__}: {err}")
            con = None
        queries += 1
        elapsed = time.perf_counter() - started
        latencies.append(elapsed)
        time.sleep(max(0.0, QUERY_INTERVAL - elapsed))
    if con is not None:
        con.close()
    out_file.write_text(json.dumps({"queries": queries, "failed": failed, "torn": torn,
                                    "latencies": latencies, "errors": errors[:20]}))


# --- runs --------------------------------------------------------------------------------

@dataclass
class Job:
    kind: str  # "score", "dagster" or "train"
    day: dt.date | None = None
    attempts: int = 0
    kills: int = 0

    def describe(self) -> str:
        return f"{self.kind} {self.day}" if self.day else self.kind

    def command(self) -> list[str]:
        if self.kind == "train":
            return [str(BIN / "batch-platform"), "train", "--train-from", TRAIN[0],
                    "--train-to", TRAIN[1], "--valid-from", VALID[0], "--valid-to", VALID[1]]
        assert self.day is not None
        if self.kind == "score":
            return [str(BIN / "batch-platform"), "score", "--date", self.day.isoformat()]
        return [str(BIN / "dagster"), "asset", "materialize", "-m", "batch_platform.definitions",
                "--select", "tag:flow=flights", "--partition", self.day.isoformat()]


@dataclass
class Running:
    job: Job
    process: subprocess.Popen
    log: Path
    started: float
    killed: bool = False


@dataclass
class Figures:
    started: int = 0
    killed: int = 0
    retried: int = 0
    succeeded: int = 0
    failed: int = 0
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)


def launch(job: Job, env: dict[str, str], logs: Path, figures: Figures) -> Running:
    job.attempts += 1
    figures.started += 1
    figures.by_kind[job.kind] += 1
    if job.attempts > 1:
        figures.retried += 1
    log = logs / f"{figures.started:05d}-{job.describe().replace(' ', '-')}.log"
    handle = open(log, "w")  # noqa: SIM115 - closed when the run is reaped
    # A session of its own, so a kill takes the run's step processes with it.
    process = subprocess.Popen(job.command(), cwd=ROOT, env=env, stdout=handle,
                               stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Running(job, process, log, time.monotonic())


def kill(running: Running) -> None:
    if running.process.poll() is not None:
        return  # it finished first
    try:
        os.killpg(running.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    running.killed = True


def soak(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="batch-platform-soak-")).resolve()
    if args.data_dir and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)  # mkdtemp made it already
    logs = data_dir / "soak-logs"
    logs.mkdir()
    env = os.environ | {
        "BATCH_PLATFORM_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        # K runs share the cores: one LightGBM thread each keeps them from thrashing.
        "BATCH_PLATFORM_SCORING_THREADS": "1",
        # The soak is about crashes, not drift: against a two-week January training window a
        # February day may drift past the blocking PSI, which would (rightly) withhold it.
        "BATCH_PLATFORM_PSI_ERROR": "100",
    }
    rng = random.Random(args.seed)
    trained_days = days(dt.date.fromisoformat(TRAIN[0]), dt.date.fromisoformat(VALID[1]))
    scored_days = days(FIRST_SCORED, FIRST_SCORED + dt.timedelta(days=args.partitions - 1))
    print(f"soak: data directory {data_dir}; {args.partitions} partitions, {args.parallel} "
          f"parallel runs, a kill every ~{args.kill_every:g}s, {args.readers} readers, "
          f"{args.minutes:g} minutes", flush=True)

    for command in (["land", "--from", TRAIN[0], "--to", VALID[1]],
                    ["land", "--from", scored_days[0].isoformat(),
                     "--to", scored_days[-1].isoformat()]):
        subprocess.run([str(BIN / "batch-platform"), *command], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    # A champion and one scored day, so every table exists before analysts start querying.
    for job in (Job("train"), Job("score", scored_days[0])):
        setup = subprocess.run(job.command(), cwd=ROOT, env=env, capture_output=True, text=True)
        if setup.returncode:
            print(setup.stdout[-3000:], setup.stderr[-3000:])
            return 1
    sys.path.insert(0, str(ROOT))
    expected = expected_rows(data_dir / "landing", trained_days, scored_days)
    expected_file = data_dir / "soak-expected.json"
    expected_file.write_text(json.dumps(expected))

    stop_file = data_dir / "soak-stop"
    readers = []
    for i in range(args.readers):
        out = data_dir / f"soak-reader-{i}.json"
        readers.append((out, subprocess.Popen(
            [sys.executable, __file__, "reader", str(data_dir),
             str(expected_file), str(stop_file), str(out), "fresh" if i % 2 else "session"],
            cwd=ROOT)))

    figures = Figures()
    queue: collections.deque[Job] = collections.deque()
    running: list[Running] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60

    def refill() -> None:
        order = scored_days[:]
        rng.shuffle(order)
        for i, day in enumerate(order):
            kind = "dagster" if args.multiprocess_every and i % args.multiprocess_every == 0 \
                else "score"
            queue.append(Job(kind, day))
        queue.insert(rng.randrange(len(queue) + 1), Job("train"))

    try:
        rounds = run_until(deadline, args, rng, queue, running, figures, refill, env, logs,
                           started)
    finally:
        for run in running:  # interrupted: take the runs down with the soak
            kill(run)
        stop_file.touch()
    elapsed = time.monotonic() - started

    queries = failed_queries = torn = 0
    latencies: list[float] = []
    reader_errors: list[str] = []
    for out, process in readers:
        process.wait(timeout=60)
        result = json.loads(out.read_text())
        queries += result["queries"]
        failed_queries += result["failed"]
        torn += result["torn"]
        latencies += result["latencies"]
        reader_errors += result["errors"]

    verdict = verify(data_dir, expected)
    print()
    print(f"soak: {elapsed / 60:.1f} minutes, {args.partitions} partitions "
          f"({scored_days[0]}..{scored_days[-1]}) plus the {len(trained_days)}-day training "
          f"window, {args.parallel} parallel runs, {rounds} round(s)")
    print(f"  runs:    {figures.started} started ({figures.by_kind['score']} batch-platform "
          f"score, {figures.by_kind['dagster']} dagster multiprocess, {figures.by_kind['train']} "
          f"train), {figures.killed} killed, {figures.retried} retried, {figures.succeeded} "
          f"succeeded, {figures.failed} failed")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    print(f"  queries: {queries} run, {failed_queries} failed, {torn} torn reads; latency "
          f"median {statistics.median(latencies or [0]) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {max(latencies or [0]) * 1000:.0f} ms")
    print(f"  rows:    {verdict['expected']} expected, {verdict['present']} present, "
          f"{verdict['duplicated']} duplicated, {verdict['lost']} lost, {verdict['extra']} "
          f"unexpected")
    for table, counts in verdict["tables"].items():
        print(f"           {table:<22} {counts['partitions']:3d} partitions, "
              f"{counts['expected']:6d} expected, {counts['present']:6d} present")
    print(f"  models:  {verdict['registry']}")
    print(f"  after:   {verdict['leftovers']}")
    for message in (figures.failures[:3] + reader_errors[:5] + verdict["problems"][:10]):
        print(f"  ! {message}")
    clean = (not figures.failed and not failed_queries and not torn and not verdict["lost"]
             and not verdict["duplicated"] and not verdict["extra"] and not verdict["problems"])
    if clean and not args.keep:
        shutil.rmtree(data_dir)
    return 0 if clean else 1


def run_until(deadline: float, args: argparse.Namespace, rng: random.Random,
              queue: collections.deque, running: list[Running], figures: Figures, refill,
              env: dict[str, str], logs: Path, started: float) -> int:
    """Keep K runs going and kill one now and then until the deadline; then drain the queue.

    Returns how many rounds over the partitions were queued."""
    rounds = 0
    next_kill = started + rng.uniform(0.5, 1.5) * args.kill_every
    next_report = started + 60
    while True:
        now = time.monotonic()
        for run in running[:]:
            code = run.process.poll()
            if code is None:
                continue
            running.remove(run)
            if run.killed:
                figures.killed += 1
                queue.appendleft(run.job)  # retry it next
            elif code == 0:
                figures.succeeded += 1
            else:
                figures.failed += 1
                tail = run.log.read_text()[-1500:]
                figures.failures.append(f"{run.job.describe()} exited {code}:\n{tail}")
                if run.job.attempts - run.job.kills < 3:  # a run that keeps failing is dropped
                    queue.appendleft(run.job)
        if now < deadline and not queue:
            refill()
            rounds += 1
        if now >= deadline and not queue and not running:
            break
        while queue and len(running) < args.parallel:
            running.append(launch(queue.popleft(), env, logs, figures))
        killable = [run for run in running if run.job.kills < args.max_kills_per_run]
        if now < deadline and now >= next_kill and killable:
            victim = rng.choice(killable)
            victim.job.kills += 1
            kill(victim)
            next_kill = now + rng.uniform(0.5, 1.5) * args.kill_every
        time.sleep(0.05)
        if now >= next_report:
            next_report += 60
            print(f"  {now - started:4.0f}s: {figures.started} started, {figures.killed} "
                  f"killed, {figures.succeeded} succeeded, {figures.failed} failed, "
                  f"{len(running)} running", flush=True)
    return rounds


def verify(data_dir: Path, expected: dict[str, dict[str, int]]) -> dict:
    """Every partition against its expectation, in what analysts see; models; leftovers."""
    from batch_platform.platform.files import exclusive_lock
    from batch_platform.platform.models.booster import version_of
    from batch_platform.platform.storage.lake import lake_of
    from batch_platform.settings import Settings

    totals = collections.Counter()
    tables: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    lake = lake_of(Settings(data_dir=data_dir))
    with lake.read_only() as con:
        for table, per_day in expected.items():
            rows = con.execute(
                f"SELECT partition_date::VARCHAR, count(*), count(DISTINCT ({KEYS[table]})) "
                f"FROM {table} GROUP BY ALL").fetchall()
            present = {day: (count, distinct) for day, count, distinct in rows}
            for day, want in per_day.items():
                count, distinct = present.pop(day, (0, 0))
                totals["expected"] += want
                totals["present"] += count
                totals["duplicated"] += count - distinct
                totals["lost"] += max(0, want - distinct)
                totals["extra"] += max(0, distinct - want)
                if (count, distinct) != (want, want):
                    problems.append(f"{table} {day}: {count} rows ({distinct} distinct), "
                                    f"expected {want}")
            for day, (count, _) in present.items():
                totals["extra"] += count
                problems.append(f"{table} {day}: {count} rows in a partition never run")
            tables[table] = {"partitions": len(per_day), "expected": sum(per_day.values()),
                             "present": sum(count for _, count, _ in rows)}
        registry = con.execute("SELECT model_version, status, model_path "
                               "FROM models.registry").fetchall()
    champions = [r for r in registry if r[1] == "champion"]
    for version, _, path in registry:
        file = data_dir / path
        if not file.is_file() or version_of(file.read_text()) != version:
            problems.append(f"registry row {version} has no intact file at {file}")
    if len(champions) != 1:
        problems.append(f"{len(champions)} champion(s) in models.registry")
    model_files = sorted((data_dir / "models" / "flights").glob("*.txt"))
    temp_files = list(data_dir.rglob(".*.tmp"))
    with exclusive_lock(lake.lock_path, 1.0, "check the lock is free"):
        lock = "free"
    if temp_files:
        problems.append(f"temporary files left: {[str(p) for p in temp_files]}")
    return totals | {
        "tables": tables, "problems": problems,
        "registry": f"{len(registry)} version(s), {len(champions)} champion, "
                    f"{len(model_files)} model file(s), every registered file present and intact"
                    if not any("registry" in p for p in problems) else "inconsistent",
        "leftovers": f"writer lock {lock}, {len(temp_files)} temporary file(s) left",
    }


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "reader":
        data_dir, expected, stop, out, mode = sys.argv[2:7]
        reader(Path(data_dir), Path(expected), Path(stop), Path(out), mode == "fresh")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=20, help="days scored (N)")
    parser.add_argument("--parallel", type=int, default=3, help="runs at a time (K)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=8.0,
                        help="mean seconds between SIGKILLs")
    parser.add_argument("--max-kills-per-run", type=int, default=2,
                        help="a run killed this often is left to finish, so the soak progresses")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--multiprocess-every", type=int, default=4,
                        help="every n-th score run uses dagster's multiprocess executor (0: never)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--data-dir", help="where to run (emptied first); default a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    return soak(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
