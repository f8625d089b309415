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
from collections.abc import Callable
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


def _cpu(call: Callable[[], object]) -> tuple[float, object]:
    started = time.process_time()
    result = call()
    return time.process_time() - started, result


def main(data_dir: Path, start: dt.date, end: dt.date) -> None:
    use_case = catalog.use_case("flights")
    days = days_between(start, end)
    print(f"| source | files | rows | one file a pass, CPU s | files together, CPU s | ratio |"
          "\n|---|---:|---:|---:|---:|---:|")
    totals = [0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as scratch:
        _stage(use_case.sources["weather"].schema,  # warm up: imports, Polars' first queries
               {days[0]: landing.landing_file(data_dir / "landing", "weather", days[0])},
               Path(scratch) / "warm", together=False)
        for landed in use_case.sources.values():
            paths = {day: landing.landing_file(data_dir / "landing", landed.folder, day)
                     for day in days}
            alone_s, alone = _cpu(lambda: _stage(landed.schema, paths,  # noqa: B023
                                                 Path(scratch) / f"{landed.folder}-alone",
                                                 together=False))
            together_s, together = _cpu(lambda: _stage(landed.schema, paths,  # noqa: B023
                                                       Path(scratch) / f"{landed.folder}-together",
                                                       together=True))
            for a, b in zip(alone[:2], together[:2], strict=True):  # type: ignore[index]
                if not a.equals(b):
                    raise SystemExit(f"{landed.folder}: the files staged together differ from "
                                     "each staged alone")
            rows = alone[2]  # type: ignore[index]
            print(f"| {landed.folder} | {len(paths)} | {rows:,} | {alone_s:.2f} | "
                  f"{together_s:.2f} | {alone_s / together_s:.1f} |", flush=True)
            totals = [totals[0] + len(paths), totals[1] + alone_s, totals[2] + together_s]
    print(f"| all | {totals[0]} | | {totals[1]:.2f} | {totals[2]:.2f} | "
          f"{totals[1] / totals[2]:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=".benchmark", type=Path)
    parser.add_argument("--from", dest="start", default="2013-01-01", type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="end", default="2013-12-31", type=dt.date.fromisoformat)
    args = parser.parse_args()
    main(args.data_dir.resolve(), args.start, args.end)
