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
4. lets the last runs finish without kills; then (``--gradual G``, default 3) starts the
   Dagster daemon and lands G more days the way a feed does: each file written in pieces
   (``--pieces``, ``--piece-seconds`` apart) under its final name, its manifest last, while the
   landing sensor runs. After every poll (each second) it checks that no partial day was ever
   published: each landed day holds, in every table, nothing or all of its rows (raw and
   quarantine together hold the manifest's rows). The first ``--daemon-kills`` runs the sensor
   starts are SIGKILLed after their first commit: each must end FAILURE, be undone, and have
   its day requested again by the landing sensor;
5. counts every partition of every table in the lake against the rows the landing files
   should give, checks the model registry against the model files, and prints the figures.
   It exits 1 if anything was lost, duplicated, torn, partial or failed.

This is not part of the unit suite (pytest collects only batch_platform_tests/).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
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
    # The days landed gradually come from a feed directory of their own, until they land.
    gradual_days = days(scored_days[-1] + dt.timedelta(days=1),
                        scored_days[-1] + dt.timedelta(days=args.gradual))
    feed_dir = data_dir / "soak-feed"
    if gradual_days:
        from batch_platform.use_cases.flights import landing as flights_landing

        flights_landing.land(feed_dir, gradual_days, with_reference=False)
        for table, per_day in expected_rows(feed_dir, [], gradual_days).items():
            expected[table].update(per_day)
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

    landed = Landed()
    try:
        rounds = run_until(deadline, args, rng, queue, running, figures, refill, env, logs,
                           started)
        if gradual_days:
            land_gradually(args, rng, data_dir, feed_dir, gradual_days, expected, env, logs,
                           landed)
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
    if gradual_days:
        print(f"  landing: {len(gradual_days)} day(s) ({gradual_days[0]}..{gradual_days[-1]}) "
              f"landed in {args.pieces} pieces per file over {landed.landing_seconds:.0f}s "
              f"while the daemon ran; {landed.polls} polls, {len(landed.partial)} partial "
              f"publication(s) seen")
        print(f"  daemon:  {landed.runs} run(s) of flights_daily ({landed.retries} retries), "
              f"{len(landed.killed)} killed after their first commit; "
              + "; ".join(landed.killed_outcomes()))
        print(f"  swept:   {landed.swept} run(s) of the soak marked failed by the sweep (their "
              f"process gone), {landed.still_started} left STARTED")
    print(f"  after:   {verdict['leftovers']}")
    for message in (figures.failures[:3] + reader_errors[:5] + verdict["problems"][:10]
                    + landed.problems[:10] + landed.partial[:5]):
        print(f"  ! {message}")
    clean = (not figures.failed and not failed_queries and not torn and not verdict["lost"]
             and not verdict["duplicated"] and not verdict["extra"] and not verdict["problems"]
             and not landed.problems and not landed.partial)
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


# --- landing gradually while the daemon's landing sensor runs ------------------------------

@dataclass
class Killed:
    run_id: str
    day: str
    at: float
    failed_after: float | None = None
    retried_after: float | None = None


@dataclass
class Landed:
    polls: int = 0
    runs: int = 0
    retries: int = 0
    landing_seconds: float = 0.0
    swept: int = 0  # runs of the whole soak marked failed by the sweep, their process gone
    still_started: int = 0
    killed: list[Killed] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def killed_outcomes(self) -> list[str]:
        return [f"{k.day}: failed {k.failed_after:.0f}s after the kill, retried "
                f"{k.retried_after:.0f}s after it" if k.retried_after is not None
                and k.failed_after is not None else f"{k.day}: not failed and retried"
                for k in self.killed]


def pieces_of(feed_dir: Path, landing_dir: Path, day: dt.date, pieces: int
              ) -> list[tuple[Path, bytes, str]]:
    """The writes that land a day as a feed does: per source, the file in ``pieces`` appends
    under its final name, then its manifest (whole, by a rename)."""
    from batch_platform.platform.ingest import landing
    from batch_platform.platform.ingest.completeness import manifest_path

    writes = []
    for source in ("weather", "flights"):
        feed = landing.landing_file(feed_dir, source, day)
        target = landing.landing_file(landing_dir, source, day)
        payload = feed.read_bytes()
        size = -(-len(payload) // pieces)
        writes += [(target, payload[i:i + size], "append")
                   for i in range(0, len(payload), size)]
        writes.append((manifest_path(target), manifest_path(feed).read_bytes(), "replace"))
    return writes


def write_piece(path: Path, payload: bytes, how: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "append":
        with open(path, "ab") as handle:
            handle.write(payload)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def published(con, gradual: list[str]) -> dict[str, dict[str, int]]:
    """Rows per table and gradual day, in one snapshot."""
    counts: dict[str, dict[str, int]] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table in KEYS:
            counts[table] = dict(con.execute(
                f"SELECT partition_date::VARCHAR, count(*) FROM {table} "
                "WHERE partition_date::VARCHAR = ANY($days) GROUP BY ALL",
                {"days": gradual}).fetchall())
    finally:
        con.execute("COMMIT")
    return counts


def land_gradually(args: argparse.Namespace, rng: random.Random, data_dir: Path,
                   feed_dir: Path, gradual_days: list[dt.date],
                   expected: dict[str, dict[str, int]], env: dict[str, str], logs: Path,
                   landed: Landed) -> None:
    """Start the daemon, land ``gradual_days`` piece by piece, poll every second until every
    day is published whole, kill the first runs the sensor starts after their first commit."""
    import dagster as dg

    from batch_platform.orchestration.liveness import DIED_TAG, run_process
    from batch_platform.platform.ingest.completeness import manifest_path, read_manifest
    from batch_platform.platform.storage.lake import lake_of
    from batch_platform.platform.storage.rollback import ROLLED_BACK_TABLE
    from batch_platform.platform.storage.warehouse import table_exists
    from batch_platform.settings import Settings

    gradual = [day.isoformat() for day in gradual_days]
    manifests = {}  # rows per source and day, from the feed's manifests
    for day in gradual_days:
        for source in ("flights", "weather"):
            manifest = read_manifest(feed_dir / source / f"{day}.csv")
            assert manifest is not None, manifest_path(feed_dir / source / f"{day}.csv")
            manifests[(source, day.isoformat())] = manifest.rows
    writes = [write for day in gradual_days
              for write in pieces_of(feed_dir, data_dir / "landing", day, args.pieces)]
    log = open(logs / "daemon.log", "w")  # noqa: SIM115 - closed below
    # A code server on a saturated machine may take more than Dagster's 60 s to start a run,
    # and the run is then failed before it started.
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m",
                               "batch_platform.definitions"], cwd=ROOT,
                              env=env | {"DAGSTER_GRPC_TIMEOUT_SECONDS": "300"}, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True,
                              preexec_fn=_dies_with_its_parent)
    log.close()
    lake = lake_of(Settings(data_dir=data_dir))
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # the instance's dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    kills_left = args.daemon_kills
    started = time.monotonic()
    deadline = started + args.gradual_minutes * 60
    next_write = started + 20  # the daemon's code server loads the definitions first
    try:
        while True:
            now = time.monotonic()
            if writes and now >= next_write:
                write_piece(*writes.pop(0))
                next_write = now + args.piece_seconds * rng.uniform(0.5, 1.5)
                if not writes:
                    landed.landing_seconds = now - started - 20
            with lake.read_only() as con:
                counts = published(con, gradual)
                committed = {row[0] for row in con.execute(
                    "SELECT json_extract_string(commit_extra_info, '$.run_id') FROM "
                    "lake.snapshots() WHERE commit_extra_info IS NOT NULL").fetchall()}
            landed.polls += 1
            for day in gradual:
                whole = {"raw.flights+quarantine.flights": manifests[("flights", day)],
                         "raw.weather+quarantine.weather": manifests[("weather", day)]}
                seen = {"raw.flights+quarantine.flights": counts["raw.flights"].get(day, 0)
                        + counts["quarantine.flights"].get(day, 0),
                        "raw.weather+quarantine.weather": counts["raw.weather"].get(day, 0)
                        + counts["quarantine.weather"].get(day, 0)}
                for table in ("features.flights", "predictions.flights",
                              "reports.flights_daily"):
                    whole[table], seen[table] = expected[table][day], counts[table].get(day, 0)
                for table, rows in seen.items():
                    if rows not in (0, whole[table]):
                        landed.partial.append(f"{table} {day}: {rows} rows published, "
                                              f"expected 0 or {whole[table]}")
            runs = instance.get_run_records(dg.RunsFilter(job_name="flights_daily", tags={
                "batch_platform/trigger": ["landing", "retry"]}))
            landed.runs = len(runs)
            landed.retries = sum(r.dagster_run.tags["batch_platform/trigger"] == "retry"
                                 for r in runs)
            for record in runs:
                run = record.dagster_run
                if (kills_left and run.status == dg.DagsterRunStatus.STARTED
                        and run.tags["batch_platform/trigger"] == "landing"
                        and run.run_id in committed):
                    _, pid = run_process(instance, record)
                    if pid is not None:  # its run worker only: the daemon lives on
                        os.kill(pid, signal.SIGKILL)
                        kills_left -= 1
                        landed.killed.append(Killed(run.run_id, run.tags["dagster/partition"],
                                                    now))
            for killed in landed.killed:
                run = instance.get_run_by_id(killed.run_id)
                if killed.failed_after is None and run.status == dg.DagsterRunStatus.FAILURE:
                    killed.failed_after = now - killed.at
                if killed.retried_after is None and any(
                        r.dagster_run.tags.get("batch_platform/retry_of") == killed.run_id
                        for r in runs):
                    killed.retried_after = now - killed.at
            done = all(counts["predictions.flights"].get(day) == expected[
                "predictions.flights"][day] and counts["reports.flights_daily"].get(day) ==
                expected["reports.flights_daily"][day] for day in gradual)
            busy = instance.get_runs_count(dg.RunsFilter(statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
            if not writes and done and not busy and all(
                    k.retried_after is not None for k in landed.killed):
                break
            if now > deadline:
                landed.problems.append(
                    f"the gradual days were not all published within {args.gradual_minutes:g} "
                    f"minutes ({busy} run(s) still busy); see {logs / 'daemon.log'}")
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        killed = {k.run_id for k in landed.killed}
        landed.swept = instance.get_runs_count(dg.RunsFilter(tags={DIED_TAG: "true"}))
        landed.still_started = instance.get_runs_count(dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED]))
        if landed.still_started:
            landed.problems.append(f"{landed.still_started} run(s) left STARTED")
        for record in instance.get_run_records(dg.RunsFilter(job_name="flights_daily", tags={
                "batch_platform/trigger": ["landing", "retry"]})):
            run = record.dagster_run
            if run.status != dg.DagsterRunStatus.SUCCESS and run.run_id not in killed:
                landed.problems.append(f"daemon run {run.run_id} of "
                                       f"{run.tags.get('dagster/partition')} ended "
                                       f"{run.status.value}")
        with lake.read_only() as con:
            undone = {row[0] for row in con.execute(
                f"SELECT run_id FROM {ROLLED_BACK_TABLE}").fetchall()} if table_exists(
                con, ROLLED_BACK_TABLE) else set()
        landed.problems += [f"killed run {run_id} was never undone"
                            for run_id in sorted(killed - undone)]
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        instance.dispose()


def _dies_with_its_parent() -> None:
    """In a child before it runs: SIGTERM when the soak dies, even killed with SIGKILL, so no
    daemon outlives it (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))


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
    parser.add_argument("--gradual", type=int, default=3,
                        help="days landed piece by piece at the end while the daemon's landing "
                             "sensor runs (0: none)")
    parser.add_argument("--pieces", type=int, default=5, help="pieces each such file is "
                        "written in")
    parser.add_argument("--piece-seconds", type=float, default=2.0,
                        help="mean seconds between two pieces")
    parser.add_argument("--daemon-kills", type=int, default=1,
                        help="runs of the landing sensor SIGKILLed after their first commit")
    parser.add_argument("--gradual-minutes", type=float, default=20.0,
                        help="how long the gradual days may take to be published")
    parser.add_argument("--data-dir", help="where to run (emptied first); default a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    return soak(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
