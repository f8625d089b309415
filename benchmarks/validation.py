"""CPU seconds of validating a range's landing files: one file a pass against many to a pass.

    .venv/bin/python benchmarks/validation.py [DATA_DIR] [--from 2013-01-01 --to 2013-12-31]

Stages every landing file of each daily source of the flights use case (the year: 365 days of
flights and of weather, 730 files) into staged good and rejected rows, as the raw step does:
first each file alone (``stage_file``), then each source's files together (``stage_files``),
in the same process, and checks that both staged the same rows. DATA_DIR holds the landing
files (``batch-platform land``; default ``.benchmark``, which ``benchmarks/benchmark.py``
lands). CPU seconds (user and system, all threads), not wall time: a busy machine does not
change them much.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import polars as pl

from batch_platform import catalog
from batch_platform.platform.dates import days_between
from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.storage import staging
from batch_platform.settings import Settings

CHUNK_ROWS = Settings(data_dir=Path(".")).chunk_rows


def _stage(schema: SourceSchema, paths: dict[dt.date, Path], folder: Path,
           together: bool) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The staged good and rejected rows and the rows read."""
    lineage = ingest.Lineage("benchmark", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    good = staging.StagedTable(folder / "good", CHUNK_ROWS, exclude=(ingest.LINE_COLUMN,))
    rejected = staging.StagedTable(folder / "rejected", CHUNK_ROWS)
    if together:
        tallies = list(ingest.stage_files(paths, schema, lineage, good, rejected, CHUNK_ROWS,
                                          folder))
    else:
        tallies = [ingest.stage_file(path, schema, day, lineage, good, rejected, CHUNK_ROWS,
                                     folder) for day, path in paths.items()]
    read = [pl.concat(staging.chunks(t.close().files, 10**7)) for t in (good, rejected)]
    return read[0], read[1], sum(t.rows_in for t in tallies)


def main(data_dir: Path, start: dt.date, end: dt.date) -> None:
    use_case = catalog.use_case("flights")
    days = days_between(start, end)
    print("| source | files | rows | one file a pass, CPU s | files together, CPU s | ratio |"
          "\n|---|---:|---:|---:|---:|---:|")
    files, alone_total, together_total = 0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as scratch:
        _stage(use_case.sources["weather"].schema,  # warm up: imports, Polars' first queries
               {days[0]: landing.landing_file(data_dir / "landing", "weather", days[0])},
               Path(scratch) / "warm", together=False)
        for landed in use_case.sources.values():
            paths = {day: landing.landing_file(data_dir / "landing", landed.folder, day)
                     for day in days}
            seconds, staged = [], []
            for together in (False, True):
                started = time.process_time()
                staged.append(_stage(landed.schema, paths,
                                     Path(scratch) / f"{landed.folder}-{together}", together))
                seconds.append(time.process_time() - started)
            (alone_good, alone_rejected, rows), (good, rejected, _) = staged
            if not (good.equals(alone_good) and rejected.equals(alone_rejected)):
                raise SystemExit(f"{landed.folder}: the files staged together differ from "
                                 "each staged alone")
            print(f"| {landed.folder} | {len(paths)} | {rows:,} | {seconds[0]:.2f} | "
                  f"{seconds[1]:.2f} | {seconds[0] / seconds[1]:.1f} |", flush=True)
            files += len(paths)
            alone_total += seconds[0]
            together_total += seconds[1]
    print(f"| all | {files} | | {alone_total:.2f} | {together_total:.2f} | "
          f"{alone_total / together_total:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=".benchmark", type=Path)
    parser.add_argument("--from", dest="start", default="2013-01-01", type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="end", default="2013-12-31", type=dt.date.fromisoformat)
    args = parser.parse_args()
    main(args.data_dir.resolve(), args.start, args.end)
