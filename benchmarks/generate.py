"""Land N flights for one day, resampled from the real flights of its month.

    .venv/bin/python benchmarks/generate.py --date 2013-06-01 --rows 1000000

Writes into the data directory's landing folder (``BATCH_PLATFORM_DATA_DIR``, default
``./data``): the scaled flights file of the day, the day's real weather, the previous day's real
flights and the reference files. Then ``batch-platform score --date 2013-06-01`` scores it
through every stage (the previous day needs its raw rows: score or land it first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from batch_platform.settings import Settings
from batch_platform.use_cases.flights import scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=2013)
    args = parser.parse_args()
    settings = Settings.from_env()
    started = time.perf_counter()
    path = scale.land_scaled(settings.landing_dir, args.date, args.rows, args.seed)
    print(f"landed {args.rows:,} flights for {args.date} in {path} "
          f"({path.stat().st_size / 1e6:,.0f} MB, {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
