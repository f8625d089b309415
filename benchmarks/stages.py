"""CPU seconds of each stage on the benchmark's day, by calling the core functions directly.

    .venv/bin/python benchmarks/stages.py        # after benchmarks/benchmark.py has run

Shows what bounds the platform beyond the scorer; CPU seconds, not wall time, so that a busy
machine does not distort the proportions.
"""

from __future__ import annotations

import datetime as dt
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from batch_platform import catalog
from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.models import booster as model
from batch_platform.platform.models import registry
from batch_platform.platform.reports import daily as reports
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.storage.lake import Lake, lake_of
from batch_platform.platform.storage.staging import Staging, chunks
from batch_platform.platform.storage.warehouse import partitions_query, replace_partitions
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import features

DAY = dt.date(2013, 7, 1)
T = TypeVar("T")
USE_CASE = catalog.use_case("flights")
FLIGHTS = USE_CASE.spec
FLIGHTS_SOURCE = USE_CASE.sources["flights"].schema
WEATHER = USE_CASE.sources["weather"].schema
PLANES = USE_CASE.references["planes"].schema


def timed(label: str, call: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    print(f"| {label} | {time.process_time() - cpu:.2f} | {time.perf_counter() - wall:.2f} |",
          flush=True)
    return result


def main(data_dir: Path) -> None:
    folder = data_dir / "landing"
    lineage = ingest.Lineage("stages", dt.datetime.now(dt.UTC))

    def raw(schema: SourceSchema, day: dt.date) -> pl.DataFrame:
        checked = ingest.validate_file(landing.landing_file(folder, schema.name, day), schema, day)
        return ingest.with_lineage(checked.good, checked, lineage)

    print("| stage | CPU s | wall s |\n|---|---:|---:|")
    day = timed("validate the landing file and add lineage", lambda: raw(FLIGHTS_SOURCE, DAY))
    previous = raw(FLIGHTS_SOURCE, DAY - dt.timedelta(days=1))
    weather = raw(WEATHER, DAY)
    planes = ingest.validate_file(landing.reference_file(folder, "planes"), PLANES, None).good
    frame = timed("build features", lambda: features.build_flight_features(
        pl.concat([previous, day]), weather, planes, DAY, DAY))
    with lake_of(Settings(data_dir=data_dir)).read_only() as con:
        record = registry.resolve(con, "flights", None)
    loaded = model.load_registered(data_dir, data_dir / "models", record["model_path"],
                                   record["model_version"], registry.calibration(record), FLIGHTS)
    # The champion's own features, by name: the table holds the challenger's too.
    spec = model.model_spec(FLIGHTS, loaded.booster.feature_name(), loaded.version)
    lineage_of_scores = scoring.ScoringLineage(loaded.version, "stages", "stages",
                                               dt.datetime.now(dt.UTC))
    matrix, _ = timed("encode the feature matrix", lambda: model.feature_matrix(
        frame, spec, loaded.categorical_levels))
    timed("Booster.predict (the floor)", lambda: loaded.booster.predict(matrix))
    predictions, _ = timed("score(), LightGBM, explain none", lambda: scoring.score(
        frame, loaded, spec, lineage_of_scores, explain="none"))
    timed("score(), compiled, explain none", lambda: scoring.score(
        frame, loaded, spec, lineage_of_scores, explain="none", scorer="compiled"))
    timed("score(), compiled, explain riskiest (1,000 rows)", lambda: scoring.score(
        frame, loaded, spec, lineage_of_scores, explain="riskiest", scorer="compiled"))
    timed("daily report", lambda: reports.daily_report(predictions, frame, spec,
                                                       dt.datetime.now(dt.UTC)))
    with tempfile.TemporaryDirectory() as scratch:
        scratch_lake = Lake(f"sqlite:{scratch}/lake/catalog.sqlite", Path(scratch) / "lake" / "f")
        for table, rows in (("raw.flights", day), ("features.flights", frame),
                            ("predictions.flights", predictions)):
            timed(f"lake commit {table}", lambda t=table, r=rows: scratch_lake.commit(
                lambda con: replace_partitions(con, [(t, r)], [DAY]), f"stages {t}", {}))
        with scratch_lake.connect() as con:
            timed("lake read features.flights back", lambda: con.execute(
                "SELECT * FROM features.flights").pl())
            staging = Staging(Path(scratch) / "staging", 100_000)
            window = {"start": DAY, "end": DAY}
            timed("export the features for scoring", lambda: staging.export(
                con, "features", partitions_query("features.flights"), window))
            rows_file = timed("export the report's segment rows", lambda: staging.export(
                con, "segment_rows", reports.segment_rows_sql(FLIGHTS), window))
        timed("report of the segment rows", lambda: reports.report_of_sorted_rows(
            chunks([rows_file], 100_000, categorical=reports.CATEGORICAL_COLUMNS), FLIGHTS,
            dt.datetime.now(dt.UTC)))
    print(f"\n{frame.height:,} rows; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".benchmark").resolve())
