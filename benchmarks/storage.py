"""What a write costs on the lake: bytes written by scoring one day, and a 1M-row partition's
commit with 1 day and with 60 days of history already in the table.

    .venv/bin/python benchmarks/storage.py                  # both, about 10 minutes on 2 cores
    .venv/bin/python benchmarks/storage.py --skip-demo-day  # the history figure only

1. Scoring one ordinary demo day: a data directory as ``make demo`` leaves it (made here with
   ``batch-platform demo --use-case flights`` unless ``--data-dir`` has one), then
   ``batch-platform score --date 2013-11-14`` in a child process. Printed: the bytes the child
   wrote to disk (``write_bytes`` of ``/proc/<pid>/io``: everything, Dagster's event log
   included), how much the warehouse (catalog and Parquet files) and Dagster's storage grew,
   and the warehouse's size; the ratio divides by that size. ``strace -f -y -e trace=write,
   pwrite64`` on the same command shows which files take the bytes.
2. A partition of 1M rows (ten columns, like predictions) committed to a table holding 1 day,
   then to one holding 60 days of 1M rows: the median of five commits of the same day each.
   If a write cost the warehouse, the second would be about 60 times the first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from batch_platform.platform.storage.lake import Lake
from batch_platform.platform.storage.staging import StagedTable
from batch_platform.platform.storage.warehouse import replace_partitions

BIN = Path(sys.executable).parent
DEMO_DAY = "2013-11-14"  # a Thursday in the demo's scored window, about 900 flights
ROWS = 1_000_000
FIRST = dt.date(2013, 1, 1)

# Runs the command in this process so that /proc/self/io counts its writes, then prints them.
MEASURED = """
import sys
from batch_platform import cli
status = cli.main(sys.argv[1:])
fields = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print("WRITE_BYTES", fields["write_bytes"], flush=True)
sys.exit(status)
"""


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def warehouse_size(lake_dir: Path) -> int:
    """The catalog and the data files: the warehouse, without the extensions beside it."""
    return size_of(lake_dir / "files") + sum(
        p.stat().st_size for p in lake_dir.glob("catalog.sqlite*"))


def demo_day(data_dir: Path) -> None:
    env = os.environ | {"BATCH_PLATFORM_DATA_DIR": str(data_dir),
                        "DAGSTER_HOME": str(data_dir / "dagster")}
    lake_dir = data_dir / "lake"
    if not (lake_dir / "catalog.sqlite").exists():
        print(f"making the demo's data directory in {data_dir} (a few minutes)", flush=True)
        subprocess.run([str(BIN / "batch-platform"), "demo", "--use-case", "flights"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "batch-platform"), "score", "--date", DEMO_DAY], env=env,
                   check=True, stdout=subprocess.DEVNULL)  # warm: the day exists once before
    before = warehouse_size(lake_dir)
    dagster_before = size_of(data_dir / "dagster")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, "score", "--date", DEMO_DAY],
                          env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    written = int(done.stdout.split("WRITE_BYTES")[-1].split()[0])
    after = warehouse_size(lake_dir)
    print("\n| scoring one demo day | value |\n|---|---:|")
    print(f"| warehouse size (catalog and Parquet files) | {after / 1e6:,.1f} MB |")
    print(f"| bytes written by the command, all files | {written / 1e6:,.2f} MB |")
    print(f"| written / warehouse size | {written / after:.1%} |")
    print(f"| warehouse grew by | {(after - before) / 1e6:,.2f} MB |")
    print(f"| Dagster's run and event storage grew by | "
          f"{(size_of(data_dir / 'dagster') - dagster_before) / 1e6:,.2f} MB |")
    print(f"| wall seconds | {seconds:.1f} |")


def partition(day: dt.date, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "partition_date": pl.Series([day] * ROWS, dtype=pl.Date),
        "flight_id": pl.Series(rng.integers(0, 2**62, ROWS), dtype=pl.Int64),
        "score": rng.random(ROWS),
        "label": rng.random(ROWS) < 0.2,
        "risk_band": pl.Series(rng.choice(["low", "medium", "high"], ROWS)),
        "top_reasons": pl.Series(rng.choice(["dep_hour", "carrier", "origin"], ROWS)),
        "model_version": "0123456789abcdef",
        "code_version": "fedcba9876543210",
        "run_id": "benchmark",
        "scored_at": dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
    })


def staged(folder: Path, frame: pl.DataFrame) -> StagedTable:
    """As a step hands rows to the commit: Parquet parts of 100,000 rows."""
    table = StagedTable(folder, 100_000)
    for offset in range(0, frame.height, 100_000):
        table.write(frame.slice(offset, 100_000))
    return table.close()


def history(scratch: Path) -> None:
    lake = Lake(f"sqlite:{scratch / 'lake' / 'catalog.sqlite'}", scratch / "lake" / "files")
    day = FIRST + dt.timedelta(days=100)
    rows = staged(scratch / "stage", partition(day, 0))

    def commit_seconds() -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            lake.commit(lambda con: replace_partitions(con, [("predictions.t", rows)], [day]),
                        "benchmark", {"run_id": "benchmark"})
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def add_history(days: range) -> None:
        for n in days:
            earlier = FIRST + dt.timedelta(days=n)
            frame = partition(earlier, n + 1)
            lake.commit(lambda con, f=frame, d=earlier: replace_partitions(
                con, [("predictions.t", f)], [d]), "history", {})

    add_history(range(1))
    with_one = commit_seconds()
    add_history(range(1, 60))
    with_sixty = commit_seconds()
    files = size_of(scratch / "lake")
    print("\n| 1M-row partition, write and commit | median of 5 |\n|---|---:|")
    print(f"| 1 day of history | {with_one:.2f} s |")
    print(f"| 60 days of history ({files / 1e9:.2f} GB lake) | {with_sixty:.2f} s |")
    print(f"| ratio | {with_sixty / with_one:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".benchmark-storage"))
    parser.add_argument("--skip-demo-day", action="store_true")
    parser.add_argument("--skip-history", action="store_true")
    args = parser.parse_args()
    if not args.skip_demo_day:
        demo_day(args.data_dir.resolve())
    if not args.skip_history:
        with tempfile.TemporaryDirectory(dir=args.data_dir.parent) as scratch:
            history(Path(scratch))


if __name__ == "__main__":
    main()
