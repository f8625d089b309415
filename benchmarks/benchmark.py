"""The benchmark: the platform against the floor and a hand-written script.

    make benchmark                       # 1M and 10M rows, and the flights year
    .venv/bin/python benchmarks/benchmark.py --rows 1000000 --skip-year   # quicker

Every contender runs in its own process, so its peak resident memory (``ru_maxrss`` from
``wait4``) is its own. All figures come from one run on the same data and model; the ratio
column divides by the floor measured in that same run, so it survives a noisy machine.

Contenders, per partition size (one day, resampled from the real flights of July):
- floor: ``Booster.predict`` alone on the partition's feature matrix, in memory (the
  process also reads the features, which its peak memory includes; its time does not);
- floor, compiled: the same with the lleaves-compiled model;
- platform: ``batch-platform score --date DAY``: landing file to reports through Dagster
  (validation, quarantine, features, scoring, post-processing, warehouse writes and
  publishing), with ``BATCH_PLATFORM_SCORER=lightgbm`` and ``compiled``;
- pandas script: ``benchmarks/pandas_baseline.py`` reads the CSV, builds the same features,
  predicts and inserts into DuckDB.
Explanations are off (``BATCH_PLATFORM_EXPLAIN=none``) in these rows: neither the floor nor the
script explains. Their cost is measured separately (``--layouts``).

``--ray ROWS`` measures the scoring engines on one partition of ROWS rows: the local
engine, then the Ray engine on a cluster of one node and of two nodes started on this machine
(``platform/scoring/ray_local.py``), each with two scoring actors; rows/s, and the staging overhead
(features to Parquet, predictions back) apart from the cluster's own time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAY = dt.date(2013, 7, 1)
YEAR = (dt.date(2013, 1, 1), dt.date(2013, 12, 31))


@dataclass
class Row:
    contender: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    note: str = ""


@dataclass
class Child:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout: str


def lake(data_dir: Path):
    """The lake of a benchmark's data directory."""
    from batch_platform.platform.storage.lake import lake_of
    from batch_platform.settings import Settings

    return lake_of(Settings(data_dir=data_dir))


def run_child(argv: list[str], env: dict[str, str] | None = None) -> Child:
    """Run ``argv`` to completion; its wall time and peak RSS as the kernel reports them."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"benchmark-child-{os.getpid()}.log"
    started = time.perf_counter()
    with open(log, "w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    log.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{text[-4000:]}")
    # CPU seconds (user + system, all threads) hardly change when other work shares the cores;
    # wall seconds do. ru_maxrss is in KiB on Linux.
    return Child(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text)


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def platform_env(data_dir: Path, scorer: str = "lightgbm", explain: str = "none",
                 explain_max_rows: int = 1000) -> dict[str, str]:
    return {"BATCH_PLATFORM_DATA_DIR": str(data_dir), "BATCH_PLATFORM_SCORER": scorer,
            "BATCH_PLATFORM_EXPLAIN": explain,
            "BATCH_PLATFORM_EXPLAIN_MAX_ROWS": str(explain_max_rows),
            "DAGSTER_HOME": str(data_dir / "dagster")}


def cli(*args: str) -> list[str]:
    return [str(BIN / "batch-platform"), *args]


def setup(data_dir: Path) -> None:
    """The real 2013 landing files and the default model, trained once per work directory."""
    env = platform_env(data_dir)
    run_child(cli("land"), env)
    if not (data_dir / "models" / "flights").is_dir():
        child = run_child(cli("train"), env)
        print(f"trained the default model in {child.seconds:.0f} s", flush=True)


def child_prepare(data_dir: Path, rows: int) -> None:
    """Land the scaled day and compile the champion once, outside the measured processes."""
    from batch_platform.platform.models import registry
    from batch_platform.platform.scoring import compiled
    from batch_platform.use_cases.flights import scale

    started = time.perf_counter()
    scale.land_scaled(data_dir / "landing", DAY, rows)
    landed = time.perf_counter() - started
    with lake(data_dir).read_only() as con:
        record = registry.resolve(con, "flights", None)
    warm = compiled.load_or_compile(data_dir / record["model_path"], record["model_version"])
    print(json.dumps({"landed_seconds": landed, "model_path": record["model_path"],
                      "threshold": record["threshold"], "artifact": warm.artifact.name,
                      "compiled_now": warm.compiled_now, "compile_seconds": warm.seconds}))


def measure_year(data_dir: Path, explain: str, explain_max_rows: int = 1000) -> Row:
    env = platform_env(data_dir, explain=explain, explain_max_rows=explain_max_rows)
    run_child(cli("land"), env)  # the real landing files, whatever a scaled run left
    child = run_child(cli("score", "--from", YEAR[0].isoformat(), "--to", YEAR[1].isoformat()),
                      env)
    rows = int(child.stdout.rsplit("scored ", 1)[1].split()[0])
    what = f"{explain}, {explain_max_rows}/day" if explain == "riskiest" else explain
    return Row(f"platform, flights year, one run (explain={what})", rows, child.seconds,
               child.cpu_seconds, child.peak_rss_mb, "365 partitions, every stage")


def measure_partition(data_dir: Path, rows: int, platform_max_rows: int) -> list[Row]:
    # The parent stays small (standard library only): a forked child inherits the parent's
    # peak RSS in ru_maxrss until it execs, so a heavy parent would inflate every figure.
    prepared = last_json(run_child([sys.executable, __file__, "child-prepare", str(data_dir),
                                    str(rows)]).stdout)
    how = "compiled now" if prepared["compiled_now"] else "cached"
    print(f"landed {rows:,} flights for {DAY} in {prepared['landed_seconds']:.0f} s; compiled "
          f"model {prepared['artifact']} ({how}, {prepared['compile_seconds']:.1f} s)", flush=True)
    model_file = data_dir / prepared["model_path"]
    out: list[Row] = []

    def platform_run(scorer: str) -> None:
        # The scaled day is a thousand times its history: the check that blocks a day far from
        # its weekday's history (a partial or duplicated delivery) is told it is expected.
        env = platform_env(data_dir, scorer=scorer) | {
            "BATCH_PLATFORM_ROWS_VS_HISTORY_TOLERANCE": str(rows)}
        child = run_child(cli("score", "--date", DAY.isoformat()), env)
        out.append(Row(f"platform, {scorer}", rows, child.seconds, child.cpu_seconds,
                       child.peak_rss_mb, "landing → reports, incl. process start"))
        print(f"  {out[-1]}", flush=True)

    def floor(scorer: str) -> None:
        child = run_child([sys.executable, __file__, "child-floor", str(data_dir), scorer],
                          platform_env(data_dir))
        result = last_json(child.stdout)
        out.append(Row(f"floor: predict alone ({scorer})", result["rows"],
                       result["predict_seconds"], result["predict_cpu_seconds"],
                       child.peak_rss_mb, "predict call only; RSS includes the features"))
        print(f"  {out[-1]}", flush=True)

    if rows <= platform_max_rows:
        platform_run("lightgbm")  # also writes the partition's features that the floor reads
        floor("lightgbm")
        platform_run("compiled")
        floor("compiled")
    else:
        # Without the platform run, the features come from the core functions directly.
        run_child([sys.executable, __file__, "child-features", str(data_dir)])
        floor("lightgbm")
        floor("compiled")
        print(f"  platform skipped above {platform_max_rows:,} rows (--platform-max-rows)",
              flush=True)
    pandas_db = data_dir / "pandas_baseline.duckdb"
    pandas_db.unlink(missing_ok=True)
    child = run_child([sys.executable, str(ROOT / "benchmarks" / "pandas_baseline.py"),
                       str(data_dir / "landing"), DAY.isoformat(), str(model_file),
                       str(prepared["threshold"]), str(pandas_db)])
    agreement = "not compared (no platform run at this size)"
    if rows <= platform_max_rows:
        difference = run_child([sys.executable, __file__, "child-agreement", str(data_dir),
                                str(pandas_db)]).stdout.strip().splitlines()[-1]
        agreement = f"max abs(score − platform's) = {float(difference):.1e}"
    out.append(Row("pandas script", last_json(child.stdout)["rows"], child.seconds,
                   child.cpu_seconds, child.peak_rss_mb,
                   agreement))
    print(f"  {out[-1]}", flush=True)
    return out


def child_agreement(data_dir: Path, pandas_db: Path) -> None:
    """The largest difference between the pandas script's scores and the platform's."""
    import duckdb
    import polars as pl

    with lake(data_dir).read_only() as con:
        platform_scores = con.execute("SELECT flight_id, score FROM predictions.flights "
                                      "WHERE partition_date = ?", [DAY]).pl()
    script = duckdb.connect(str(pandas_db), read_only=True)
    try:
        script_scores = script.execute("SELECT flight_id, score FROM predictions").pl()
    finally:
        script.close()
    joined = platform_scores.join(script_scores, on="flight_id", suffix="_script")
    print(float(joined.select((pl.col("score") - pl.col("score_script")).abs().max()).item()))


def child_floor(data_dir: Path, scorer: str) -> None:
    """Time the scorer alone on the partition's features, read from the warehouse first."""
    from batch_platform import catalog
    from batch_platform.platform.models import booster as model
    from batch_platform.platform.models import registry
    from batch_platform.platform.scoring import compiled
    from batch_platform.platform.storage.warehouse import read_partitions

    FLIGHTS = catalog.use_case("flights").spec

    with lake(data_dir).read_only() as con:
        record = registry.resolve(con, "flights", None)
        frame = read_partitions(con, "features.flights", DAY, DAY)
    loaded = model.load_registered(data_dir, data_dir / "models", record["model_path"],
                                   record["model_version"], registry.calibration(record), FLIGHTS)
    # The champion's own features, by name: the table holds the challenger's too.
    FLIGHTS = model.model_spec(FLIGHTS, loaded.booster.feature_name(), loaded.version)
    matrix, _ = model.feature_matrix(frame, FLIGHTS, loaded.categorical_levels)
    del frame
    if scorer == "compiled":
        assert loaded.path is not None
        native = compiled.load_or_compile(loaded.path, loaded.version).model
        started, cpu = time.perf_counter(), time.process_time()
        native.predict(matrix, n_jobs=os.cpu_count())
    else:
        started, cpu = time.perf_counter(), time.process_time()
        loaded.booster.predict(matrix, num_threads=0)
    print(json.dumps({"rows": len(matrix), "predict_seconds": time.perf_counter() - started,
                      "predict_cpu_seconds": time.process_time() - cpu}))


def child_features(data_dir: Path) -> None:
    """Validate the scaled day and build its features with the core functions, into the
    warehouse's features table, for sizes the platform run is skipped at."""
    import polars as pl

    from batch_platform import catalog
    from batch_platform.platform.ingest import landing
    from batch_platform.platform.ingest import validate as ingest
    from batch_platform.platform.ingest.schema import SourceSchema
    from batch_platform.platform.storage.warehouse import replace_partitions
    from batch_platform.use_cases.flights import features

    use_case = catalog.use_case("flights")
    FLIGHTS = use_case.sources["flights"].schema
    WEATHER = use_case.sources["weather"].schema
    PLANES = use_case.references["planes"].schema

    lineage = ingest.Lineage("benchmark", dt.datetime.now(dt.UTC))
    folder = data_dir / "landing"

    def raw(schema: SourceSchema, day: dt.date) -> pl.DataFrame:
        checked = ingest.validate_file(landing.landing_file(folder, schema.name, day), schema, day)
        return ingest.with_lineage(checked.good, checked, lineage)

    previous = DAY - dt.timedelta(days=1)
    flights = pl.concat([raw(FLIGHTS, previous), raw(FLIGHTS, DAY)])
    planes = ingest.validate_file(landing.reference_file(folder, "planes"), PLANES, None).good
    frame = features.build_flight_features(flights, raw(WEATHER, DAY), planes, DAY, DAY)
    del flights
    lake(data_dir).commit(
        lambda con: replace_partitions(con, [("features.flights", frame)], [DAY]),
        "benchmark features.flights", {"run_id": "benchmark"})


def child_layouts(data_dir: Path, limit: int) -> None:
    """Rows/s of each input layout and thread count, and of explanations, on one partition."""
    import numpy as np
    import polars as pl

    from batch_platform import catalog
    from batch_platform.platform.models import booster as model
    from batch_platform.platform.models import registry
    from batch_platform.platform.scoring import compiled
    from batch_platform.platform.storage.warehouse import read_partitions

    FLIGHTS = catalog.use_case("flights").spec

    with lake(data_dir).read_only() as con:
        record = registry.resolve(con, "flights", None)
        frame = read_partitions(con, "features.flights", DAY, DAY).head(limit)
    loaded = model.load_registered(data_dir, data_dir / "models", record["model_path"],
                                   record["model_version"], registry.calibration(record), FLIGHTS)
    # The champion's own features, by name: the table holds the challenger's too.
    FLIGHTS = model.model_spec(FLIGHTS, loaded.booster.feature_name(), loaded.version)
    booster = loaded.booster
    matrix, _ = model.feature_matrix(frame, FLIGHTS, loaded.categorical_levels)
    encoded = pl.DataFrame(matrix, schema=list(FLIGHTS.feature_columns), orient="row")
    native = compiled.load_or_compile(loaded.path, loaded.version).model  # type: ignore[arg-type]
    results = []

    def timed(name: str, rows: int, call) -> None:
        started = time.perf_counter()
        try:
            call()
        except Exception as err:  # a layout LightGBM does not take is a result too
            results.append({"case": name, "error": f"{type(err).__name__}: {err}"[:80]})
            return
        seconds = time.perf_counter() - started
        results.append({"case": name, "rows_per_second": rows / seconds})

    n = len(matrix)
    timed("lightgbm, float64 C-contiguous, all threads", n,
          lambda: booster.predict(matrix, num_threads=0))
    timed("lightgbm, float64 C-contiguous, 1 thread", n,
          lambda: booster.predict(matrix, num_threads=1))
    as32 = np.ascontiguousarray(matrix, dtype=np.float32)
    timed("lightgbm, float32 C-contiguous, all threads", n,
          lambda: booster.predict(as32, num_threads=0))
    fortran = np.asfortranarray(matrix)
    timed("lightgbm, float64 Fortran order, all threads", n,
          lambda: booster.predict(fortran, num_threads=0))
    arrow = encoded.to_arrow()
    timed("lightgbm, pyarrow Table, all threads", n, lambda: booster.predict(arrow, num_threads=0))
    timed("lightgbm, polars DataFrame, all threads", n,
          lambda: booster.predict(encoded, num_threads=0))
    timed("compiled, float64 C-contiguous, 2 threads", n, lambda: native.predict(matrix, n_jobs=2))
    timed("compiled, float64 C-contiguous, 1 thread", n, lambda: native.predict(matrix, n_jobs=1))
    timed("compiled, float32 input (copied to float64), 2 threads", n,
          lambda: native.predict(as32, n_jobs=2))
    explained = matrix[: min(n, 5_000)]
    timed("lightgbm pred_contrib (explanations), all threads", len(explained),
          lambda: booster.predict(explained, pred_contrib=True, num_threads=0))
    late = float((booster.predict(matrix, num_threads=0) >= loaded.threshold).mean())
    print(json.dumps({"rows": n, "predicted_late_fraction": late, "results": results}))


def child_ray(data_dir: Path, chunk_rows: int) -> None:
    """The local engine, then the Ray engine on one node and on two, on the same features."""
    import shutil
    import tempfile

    from batch_platform import catalog
    from batch_platform.platform.models import booster as model
    from batch_platform.platform.models import registry
    from batch_platform.platform.scoring import engines, ray_local
    from batch_platform.platform.scoring.score import ScoringLineage
    from batch_platform.platform.storage.warehouse import read_partitions
    from batch_platform.settings import Settings

    FLIGHTS = catalog.use_case("flights").spec

    with lake(data_dir).read_only() as con:
        record = registry.resolve(con, "flights", None)
        frame = read_partitions(con, "features.flights", DAY, DAY,
                                order_by=("partition_date", FLIGHTS.id_column))
    loaded = model.load_registered(data_dir, data_dir / "models", record["model_path"],
                                   record["model_version"], registry.calibration(record), FLIGHTS)
    # The champion's own features, by name: the table holds the challenger's too.
    FLIGHTS = model.model_spec(FLIGHTS, loaded.booster.feature_name(), loaded.version)
    lineage = ScoringLineage(loaded.version, "benchmark", "benchmark", dt.datetime.now(dt.UTC))
    base = Settings(data_dir=data_dir, explain="none", chunk_rows=chunk_rows).validated()
    scope = ("predictions/flights", DAY, DAY)
    results = []
    started, cpu = time.perf_counter(), time.process_time()
    local, _, _ = engines.score(frame, loaded, FLIGHTS, lineage, base, scope)
    results.append({"case": "local engine (one process, all cores)", "rows": frame.height,
                    "seconds": time.perf_counter() - started,
                    "driver_cpu_seconds": time.process_time() - cpu, "load": os.getloadavg()[0]})
    # Ray's CPUs are logical: a node has one per actor plus one for Ray Data's reads and writes.
    for nodes, cpus in ((1, 3), (2, 2)):
        temp = Path(tempfile.mkdtemp(prefix="bp-ray-", dir="/tmp"))
        cluster = ray_local.start(temp / "r", nodes=nodes, cpus_per_node=cpus, log_dir=temp)
        try:
            settings = base.with_overrides(engine="ray", ray_address=cluster.address,
                                           ray_actors=2)
            started, cpu = time.perf_counter(), time.process_time()
            remote, _, report = engines.score(frame, loaded, FLIGHTS, lineage, settings, scope)
            seconds = time.perf_counter() - started
            results.append({
                "case": f"Ray engine, {nodes} node(s), 2 actors", "rows": remote.height,
                "seconds": seconds, "driver_cpu_seconds": time.process_time() - cpu,
                "staging_seconds": report.ray.staging_seconds,
                "cluster_seconds": report.ray.cluster_seconds, "load": os.getloadavg()[0],
                "identical": remote.equals(local, null_equal=True)})
        finally:
            cluster.stop()
            shutil.rmtree(temp, ignore_errors=True)
    print(json.dumps({"results": results}))


def ray_table(result: dict) -> str:
    lines = ["| engine | rows | wall s | rows/s | staging s | Ray Data s (actors start, read, "
             "score, write) | identical to local | load |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for case in result["results"]:
        staging = f"{case['staging_seconds']:.1f}" if "staging_seconds" in case else "–"
        on_cluster = f"{case['cluster_seconds']:.1f}" if "cluster_seconds" in case else "–"
        same = {True: "yes", False: "NO"}.get(case.get("identical"), "(reference)")
        lines.append(f"| {case['case']} | {case['rows']:,} | {case['seconds']:.1f} | "
                     f"{case['rows'] / case['seconds']:,.0f} | {staging} | {on_cluster} | {same} "
                     f"| {case['load']:.1f} |")
    return "\n".join(lines)


def measure_ray(data_dir: Path, rows: int) -> str:
    prepared = last_json(run_child([sys.executable, __file__, "child-prepare", str(data_dir),
                                    str(rows)]).stdout)
    print(f"landed {rows:,} flights for {DAY} in {prepared['landed_seconds']:.0f} s", flush=True)
    run_child([sys.executable, __file__, "child-features", str(data_dir)])
    child = run_child([sys.executable, __file__, "child-ray", str(data_dir), "100000"],
                      platform_env(data_dir))
    return ray_table(last_json(child.stdout))


def layouts_table(result: dict) -> str:
    lines = [f"{result['rows']:,} rows; predicted late (explained under "
             f"`predicted_late`): {result['predicted_late_fraction']:.1%}", "",
             "| scorer, input layout, threads | rows/s |", "|---|---:|"]
    for case in result["results"]:
        value = (f"{case['rows_per_second']:,.0f}" if "rows_per_second" in case
                 else f"not accepted: {case['error']}")
        lines.append(f"| {case['case']} | {value} |")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    floors = {r.rows: r for r in rows if r.contender == "floor: predict alone (lightgbm)"}
    lines = ["| contender | rows | wall s | CPU s | rows/s (wall) | wall ÷ floor | CPU ÷ floor "
             "| peak RSS (MB) | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        floor = floors.get(r.rows)
        wall = f"{r.seconds / floor.seconds:.2f}" if floor else "–"
        cpu = f"{r.cpu_seconds / floor.cpu_seconds:.2f}" if floor else "–"
        lines.append(f"| {r.contender} | {r.rows:,} | {r.seconds:.1f} | {r.cpu_seconds:.1f} | "
                     f"{r.rows / r.seconds:,.0f} | {wall} | {cpu} | {r.peak_rss_mb:,.0f} "
                     f"| {r.note} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))) / 2**20
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python "
            f"{platform.python_version()}, load average {load:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--platform-max-rows", type=int, default=10_000_000,
                        help="skip the platform contenders above this partition size (they "
                             "stream every stage; this only shortens a run)")
    parser.add_argument("--work", type=Path, default=ROOT / ".benchmark",
                        help="data directory of the benchmark (kept between runs)")
    parser.add_argument("--skip-year", action="store_true")
    parser.add_argument("--ray", type=int, default=0, metavar="ROWS",
                        help="only the scoring engines (local, Ray on one and two nodes) on a "
                             "partition of ROWS rows; needs the ray extra")
    parser.add_argument("--layouts", type=int, default=1_000_000, metavar="ROWS",
                        help="after the first size, measure input layouts and threads on up "
                             "to ROWS rows of its partition (0 to skip)")
    args = parser.parse_args(argv)
    data_dir = args.work.resolve()
    print(f"machine: {machine()}", flush=True)
    setup(data_dir)
    if args.ray:
        report = measure_ray(data_dir, args.ray)
        (data_dir / "benchmark-ray.md").write_text(f"machine: {machine()}\n\n{report}\n")
        print(f"\nmachine: {machine()}\n\n{report}")
        return
    rows: list[Row] = []
    layouts = ""
    started = machine()

    def save() -> str:
        # Written after every size, so an interrupted run still leaves its figures.
        report = table(rows) + (f"\n\n{layouts}" if layouts else "")
        (data_dir / "benchmark.md").write_text(
            f"machine: {started}\nat the end: {machine()}\n\n{report}\n")
        return report

    if not args.skip_year:
        # explain=all or predicted_late would explain most of 336,776 flights at a few
        # hundred to 2,000 rows/s: minutes, measured per row in the layouts table instead.
        for explain, per_day in (("none", 1), ("riskiest", 100)):
            rows.append(measure_year(data_dir, explain, per_day))
            print(f"  {rows[-1]}", flush=True)
            save()
    for i, count in enumerate(args.rows):
        rows.extend(measure_partition(data_dir, count, args.platform_max_rows))
        save()
        if i == 0 and args.layouts:
            child = run_child([sys.executable, __file__, "child-layouts", str(data_dir),
                               str(args.layouts)], platform_env(data_dir))
            layouts = layouts_table(last_json(child.stdout))
            print(layouts, flush=True)
            save()
    print(f"\nmachine: {started}\nat the end: {machine()}\n\n{save()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child-floor":
        child_floor(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "child-features":
        child_features(Path(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "child-prepare":
        child_prepare(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "child-agreement":
        child_agreement(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "child-ray":
        child_ray(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "child-layouts":
        child_layouts(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
