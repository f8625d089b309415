"""The flights champion against its declared challenger, on the days after validation.

    .venv/bin/python benchmarks/challenger.py [DATA_DIR]   # after `make demo` (or `land`)

Builds the features of the year from the landing files, trains the champion's and the
challenger's feature sets (``UseCase.training``) on the declared windows (train Jan-Aug,
validate Sep), and measures both on October-December: AUC, Brier score, and the promotion
gate's verdict (a paired bootstrap over days, with the settings' thresholds) on the same
rows. Plain functions, no Dagster run and no lake: the figures of docs/performance.md.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import polars as pl

from batch_platform import catalog
from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.platform.models import booster as model
from batch_platform.platform.models import gate
from batch_platform.platform.models.lifecycle import gate_thresholds
from batch_platform.platform.models.objectives import objective
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import features

USE_CASE = catalog.use_case("flights")
HELD_OUT = (dt.date(2013, 10, 1), dt.date(2013, 12, 31))


def raw_days(folder: Path, schema: SourceSchema, first: dt.date, last: dt.date
             ) -> pl.DataFrame:
    """The good rows of every landed day from ``first`` to ``last``, as raw.<source> holds."""
    lineage = ingest.Lineage("challenger-benchmark", dt.datetime.now(dt.UTC))
    frames = []
    day = first
    while day <= last:
        path = landing.landing_file(folder, schema.name, day)
        if path.exists():
            checked = ingest.validate_file(path, schema, day)
            frames.append(ingest.with_lineage(checked.good, checked, lineage))
        day += dt.timedelta(days=1)
    return pl.concat(frames, how="diagonal_relaxed")


def window(frame: pl.DataFrame, span: tuple[dt.date, dt.date]) -> pl.DataFrame:
    return frame.filter(pl.col("partition_date").is_between(*span))


def main(data_dir: Path) -> None:
    folder = data_dir / "landing"
    first, last = USE_CASE.partitions.start, HELD_OUT[1]
    started = time.perf_counter()
    flights = raw_days(folder, USE_CASE.sources["flights"].schema, first, last)
    weather = raw_days(folder, USE_CASE.sources["weather"].schema, first, last)
    planes = ingest.validate_file(landing.reference_file(folder, "planes"),
                                  USE_CASE.references["planes"].schema, None).good
    frame = features.build_flight_features(flights, weather, planes, first, last)
    print(f"features of {first}..{last}: {frame.height:,} rows, "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    spec = USE_CASE.spec
    kind = objective(spec.objective)
    train, valid = (window(frame, USE_CASE.model.train),
                    window(frame, USE_CASE.model.validation))
    held_out = window(frame, HELD_OUT)
    scored = {}
    print("| model | features | validation AUC | held-out AUC | held-out Brier |")
    print("|---|---:|---:|---:|---:|")
    for role, challenger in ((gate.CHAMPION_ROLE, False), (gate.CHALLENGER_ROLE, True)):
        training = USE_CASE.training(challenger)
        booster = model.train(train, training.spec, rounds=training.rounds,
                              params=dict(training.params))
        levels = model.levels_from_model(booster, training.spec, role)
        figures = [model.evaluate_on(booster, part, training.spec, levels).metrics
                   for part in (valid, held_out)]
        print(f"| {role} | {len(training.spec.feature_columns)} | {figures[0]['auc']:.4f} | "
              f"{figures[1]['auc']:.4f} | {figures[1]['brier']:.4f} |", flush=True)
        matrix, _ = model.feature_matrix(held_out, training.spec, levels)
        scored[role] = held_out.select("partition_date", spec.id_column).with_columns(
            pl.Series(kind.output, booster.predict(matrix)), pl.lit(role).alias("model_version"))
    late = model.labelled(held_out, spec).get_column(spec.label_column).cast(pl.Float64)
    rate = float(late.mean())
    print(f"a constant (the held-out late rate {rate:.4f}): Brier {rate * (1 - rate):.4f}")
    paired = gate.paired_outcomes(
        scored[gate.CHAMPION_ROLE], scored[gate.CHALLENGER_ROLE],
        held_out.select("partition_date", spec.id_column, spec.label_column),
        id_column=spec.id_column, output=kind.output, outcome=spec.label_column,
        champion_version=gate.CHAMPION_ROLE, challenger_version=gate.CHALLENGER_ROLE)
    verdict = gate.judge(gate.daily_metrics(paired, kind, spec.label_column), kind,
                         gate.CHAMPION_ROLE, gate.CHALLENGER_ROLE,
                         gate_thresholds(Settings(data_dir=data_dir)))
    print(f"gate on {HELD_OUT[0]}..{HELD_OUT[1]}: {verdict.summary}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data"))
