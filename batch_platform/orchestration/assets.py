"""The assets of the flights use case: wiring and metadata around ``batch_platform.core``.

Every partitioned asset works on ``context.partition_key_range`` with a single-run backfill
policy, so one day and a year of days are the same code path and a range is one run.
"""


import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from batch_platform import code_version
from batch_platform.orchestration.checks import (
    FEATURE_CHECKS,
    PREDICTION_CHECKS,
    RAW_CHECKS,
    REPORT_CHECKS,
    check_specs,
    describe_days,
    gate,
)
from batch_platform.orchestration.metadata import (
    PredictionSummary,
    prediction_summary,
    report_summary,
    scoped_to_partitions,
    score_summary,
    table_metadata,
    timing_metadata,
)
from batch_platform.orchestration.partitions import DAILY_FLOW_TAG, daily_partitions
from batch_platform.orchestration.resources import PlatformResource, WarehouseResource
from batch_platform.orchestration.stages import Progress, stage
from batch_platform.platform.features import spec as feature_core
from batch_platform.platform.features.spec import FLIGHTS
from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import AIRLINES, AIRPORTS, PLANES, WEATHER, SourceSchema
from batch_platform.platform.ingest.schema import FLIGHTS as FLIGHTS_SOURCE
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models import registry
from batch_platform.platform.monitoring import audits, drift
from batch_platform.platform.reports import daily as reports
from batch_platform.platform.scoring import engines
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.storage.staging import StagedTable, Staging, chunks, row_count, staging
from batch_platform.platform.storage.warehouse import (
    MissingDataError,
    partition_counts,
    partitions_query,
    read_partitions,
    read_table,
    replace_partitions,
    replace_table,
    require_partitions,
)
from batch_platform.settings import Settings

GROUP = "flights"
# Scored and reported nightly: a day without a new materialization means the flow stopped.
NIGHTLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26),
                                                   warn_window=dt.timedelta(hours=24))
PREDICTIONS_KEY = dg.AssetKey(["predictions", "flights"])
# Reports follow any update of predictions' partitions, however it was launched; not only the
# latest partition (as AutomationCondition.eager() would), since backfills rescore old days.
REPORTS_FOLLOW_PREDICTIONS = (
    dg.AutomationCondition.any_deps_updated()
    .allow(dg.AssetSelection.assets(PREDICTIONS_KEY)).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after predictions")


def daily_asset(key: list[str], checks: dict[str, str] | None = None, **kwargs: object):
    """A stage of the daily flow: one day or a range of days per run, its audits as checks."""

    def decorate(compute):
        return dg.asset(
            key=key,
            group_name=GROUP,
            partitions_def=daily_partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            tags={DAILY_FLOW_TAG: "daily"},
            check_specs=check_specs(key, checks or {}),
            **kwargs,
        )(stage(compute))

    return decorate


def partition_dates(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    key_range = context.partition_key_range
    return dt.date.fromisoformat(key_range.start), dt.date.fromisoformat(key_range.end)


@contextmanager
def staged(context: dg.AssetExecutionContext, settings: Settings, step: str
           ) -> Iterator[Staging]:
    """The step's own staging directory, removed when the step ends, however it ends."""
    with staging(settings.staging_dir, context.run.run_id, step, settings.chunk_rows) as folder:
        yield folder


def lineage(context: dg.AssetExecutionContext) -> ingest.Lineage:
    return ingest.Lineage(run_id=context.run.run_id, ingested_at=dt.datetime.now(dt.UTC))


# --- raw: landing files → raw.<source> and quarantine.<source> ------------------------------

def reference_asset(source: SourceSchema) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", source.name],
        group_name="reference",
        # Runs with the daily flow, whose range runs need every selected asset single-run.
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"duckdb", "polars"},
        tags={DAILY_FLOW_TAG: "daily"},
        description=f"Reference table {source.name}, from landing/reference/{source.name}.csv.",
    )
    @stage
    def _reference(context: dg.AssetExecutionContext, platform: PlatformResource,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        path = landing.reference_file(platform.settings.landing_dir, source.name)
        validated = ingest.validate_file(path, source, None)
        if validated.rejected.height:
            first = validated.rejected.row(0, named=True)
            raise ingest.BadInputError(
                f"{ingest.describe(path, None)}: {validated.rejected.height} row(s) rejected; "
                f"line {first[ingest.LINE_COLUMN]}: {first[ingest.REASON_COLUMN]}"
            )
        frame = ingest.with_lineage(validated.good, validated, lineage(context))
        publish_seconds = warehouse.write_and_publish(
            lambda con: replace_table(con, f"raw.{source.name}", frame))
        return dg.MaterializeResult(metadata={
            **table_metadata(frame),
            "source_file": str(path),
            **timing_metadata(frame.height, started, publish_seconds),
        })

    return _reference


def raw_asset(source: SourceSchema) -> dg.AssetsDefinition:
    @daily_asset(
        key=["raw", source.name],
        checks=RAW_CHECKS,
        kinds={"duckdb", "polars"},
        description=(f"Rows of landing/{source.name}/YYYY-MM-DD.csv that pass the input "
                     f"schema, with lineage; rejected rows go to quarantine.{source.name} "
                     "with the reason."),
    )
    def _raw(context: dg.AssetExecutionContext, platform: PlatformResource,
             warehouse: WarehouseResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = platform.settings
        start, end = partition_dates(context)
        days = landing.days_between(start, end)
        run_lineage = lineage(context)
        tallies: dict[dt.date, ingest.FileTally] = {}
        progress = Progress(context.log, f"raw.{source.name}", len(days), "files validated")
        with staged(context, settings, f"raw_{source.name}") as staging:
            good = staging.table("good", exclude=(ingest.LINE_COLUMN,))
            rejected = staging.table("rejected")
            for day in days:
                path = landing.landing_file(settings.landing_dir, source.name, day)
                tally = ingest.stage_file(path, source, day, run_lineage, good, rejected,
                                          settings.chunk_rows, staging.root,
                                          settings.duckdb_memory_limit)
                ingest.enforce_reject_threshold(tally, settings.max_reject_fraction,
                                                ingest.describe(path, day))
                tallies[day] = tally
                if tally.rejected:
                    context.log.warning(f"{path}: {tally.rejected} row(s) quarantined: "
                                        f"{tally.top_reasons()}")
                progress.advance(rows=tally.rows_in)
            repeated = {t.source_file: t.repeated_lines for t in tallies.values()
                        if t.repeated_lines is not None}
            if repeated:
                good = ingest.without_lines(good, repeated, staging.table(
                    "good_without_repeated_keys", exclude=(ingest.LINE_COLUMN,)))
            good, rejected = good.close(), rejected.close()
            ignored = sorted({c for tally in tallies.values() for c in tally.ignored_columns})
            results = gate(context, [
                audits.audit_raw_schema(source, good.empty(), ignored),
                audits.audit_row_counts(source.name, {d: t.rows_in for d, t in tallies.items()},
                                        settings.expected_rows_per_day(source.name)),
                audits.audit_required_nulls(source, tallies, settings.audit_thresholds()),
            ], describe_days(days))
            publish_seconds = warehouse.write_and_publish(
                lambda con: replace_partitions(con, [(f"raw.{source.name}", good),
                                                     (f"quarantine.{source.name}", rejected)],
                                               days))
        rows_in = sum(t.rows_in for t in tallies.values())
        rows_rejected = sum(t.rejected for t in tallies.values())
        return dg.MaterializeResult(metadata=scoped_to_partitions({
            **table_metadata(good),
            "rows_in": rows_in,
            "rows_rejected": rows_rejected,
            "rejected_fraction": rows_rejected / rows_in if rows_in else 0.0,
            "ignored_columns": ", ".join(ignored) or "none",
            "chunk_rows": settings.chunk_rows,
            **timing_metadata(rows_in, started, publish_seconds),
        }, days, {d: t.rows_in - t.rejected for d, t in tallies.items()}),
            check_results=results)

    return _raw


raw_planes = reference_asset(PLANES)
raw_airports = reference_asset(AIRPORTS)
raw_airlines = reference_asset(AIRLINES)
raw_flights = raw_asset(FLIGHTS_SOURCE)
raw_weather = raw_asset(WEATHER)


# --- features ---------------------------------------------------------------------------

@daily_asset(
    key=["features", "flights"],
    checks=FEATURE_CHECKS,
    kinds={"duckdb", "polars"},
    # Same-day dependencies, although a day also reads the previous day's raw flights (its
    # point-in-time statistics): with a TimeWindowPartitionMapping(start_offset=-1), UI
    # backfills in Dagster 1.13 add the day after the range to the downstream run.
    deps=[raw_flights, raw_weather, raw_planes],
    description="One row per flight: what is known before departure, and the realised outcome "
                "(arrived_late) as the label. The same table feeds training and scoring. A day "
                "also reads the previous day's raw flights for its delay statistics.",
)
def flights_features(context: dg.AssetExecutionContext, platform: PlatformResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    settings = platform.settings
    start, end = partition_dates(context)
    days = landing.days_between(start, end)
    previous_day = start - dt.timedelta(days=1)
    window = {"start": start, "end": end}
    with staged(context, settings, "features") as staging:
        with warehouse.get_connection() as con:
            require_partitions(con, "raw.flights", start, end)
            has_previous_day = bool(partition_counts(con, "raw.flights", previous_day,
                                                     previous_day))
            flights_file = staging.export(con, "flights", partitions_query("raw.flights"),
                                          {"start": previous_day, "end": end})
            weather_file = staging.export(con, "weather", partitions_query("raw.weather"),
                                          window)
            planes = read_table(con, "raw.planes")
            profile = champion_profile(con, settings)
        if not has_previous_day:
            context.log.warning(f"raw.flights has no rows for {previous_day}: the previous-day "
                                f"statistics of {start} are missing")
        # Day-level aggregates first (small), then the flights chunk by chunk.
        feature_context = feature_core.flight_feature_context(
            pl.scan_parquet(flights_file), pl.scan_parquet(weather_file), planes, start, end)
        frame = staging.table("features")
        feature_drift_counts = drift.DriftCounter(profile.features if profile else None)
        tally: Counter[str] = Counter()
        rows_by_day: Counter[dt.date] = Counter()
        progress = Progress(context.log, f"features {describe_days(days)}",
                            max(1, -(-row_count(flights_file) // settings.chunk_rows)),
                            "chunks")
        for chunk in chunks([flights_file], settings.chunk_rows):
            rows = feature_core.flight_features_chunk(chunk, feature_context)
            label = rows.get_column(FLIGHTS.label_column)
            tally.update(rows=rows.height, with_outcome=int(label.is_not_null().sum()),
                         late=int(label.sum()),
                         without_weather=int(rows.get_column("temp").is_null().sum()),
                         without_plane=int(rows.get_column("plane_seats").is_null().sum()))
            rows_by_day.update(dict(rows.group_by("partition_date").len().iter_rows()))
            feature_drift_counts.add(rows)
            frame.write(rows)
            progress.advance(rows=chunk.height)
        frame.close()
        feature_drift = audits.audit_feature_drift(feature_drift_counts, profile,
                                                   settings.audit_thresholds())
        results = gate(context, [feature_drift], describe_days(days))
        publish_seconds = warehouse.write_and_publish(
            lambda con: replace_partitions(con, [("features.flights", frame)], days))
    return dg.MaterializeResult(metadata=scoped_to_partitions({
        **table_metadata(frame),
        "rows_with_outcome": tally["with_outcome"],
        "late_rate": tally["late"] / tally["with_outcome"] if tally["with_outcome"] else 0.0,
        "rows_without_weather": tally["without_weather"],
        "rows_without_plane": tally["without_plane"],
        "previous_day_available": has_previous_day,
        "max_psi": feature_drift.metadata["max_psi"],
        "chunk_rows": settings.chunk_rows,
        **timing_metadata(frame.rows, started, publish_seconds),
    }, days, rows_by_day), check_results=results)


def champion_profile(con: duckdb.DuckDBPyConnection, settings: Settings
                     ) -> drift.ModelProfile | None:
    """The drift references of the model that will score these features, if there is one."""
    try:
        record = registry.resolve(con, FLIGHTS.use_case, settings.model_version)
    except MissingDataError:
        return None
    return drift.load_profile(drift.profile_path(settings.data_dir / record["model_path"]))


# --- model ------------------------------------------------------------------------------

class ModelConfig(dg.Config):
    """Train on one window of feature partitions, choose the threshold on a later one."""

    train_start: str = "2013-01-01"
    train_end: str = "2013-08-31"
    valid_start: str = "2013-09-01"
    valid_end: str = "2013-09-30"
    rounds: int = model_core.DEFAULT_ROUNDS
    model_file: str | None = None  # register this LightGBM text model instead of training

    def window(self, name: str) -> tuple[dt.date, dt.date]:
        start, end = (self._day(f"{name}_{edge}") for edge in ("start", "end"))
        if end < start:
            raise ValueError(f"{name} window ends ({end}) before it starts ({start})")
        return start, end

    def _day(self, field: str) -> dt.date:
        value = getattr(self, field)
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"model config {field}={value!r} is not a date like 2013-01-31"
                             ) from None


@dg.asset(
    key=["models", "flights"],
    group_name=GROUP,
    kinds={"lightgbm"},
    deps=[flights_features],
    description="The model scoring uses: trained on a window of features (or a LightGBM file "
                "you bring), evaluated on a later window, stored under its content hash and "
                "registered as champion in models.registry.",
)
@stage
def flights_model(context: dg.AssetExecutionContext, config: ModelConfig,
                  platform: PlatformResource, warehouse: WarehouseResource
                  ) -> dg.MaterializeResult:
    started = time.perf_counter()
    settings = platform.settings
    valid_start, valid_end = config.window("valid")
    train_window = None if config.model_file else config.window("train")
    if train_window and valid_start <= train_window[1]:
        raise ValueError(f"validation window starts ({valid_start}) before the training window "
                         f"ends ({train_window[1]}): validation must be later data")
    with warehouse.get_connection() as con:
        windows = [(valid_start, valid_end)] + ([train_window] if train_window else [])
        for window_start, window_end in windows:
            require_partitions(con, "features.flights", window_start, window_end)
        # A fixed row order makes training reproducible: same features, same model version.
        order = ("partition_date", FLIGHTS.id_column)
        valid = read_partitions(con, "features.flights", valid_start, valid_end, order_by=order)
        train = (read_partitions(con, "features.flights", *train_window, order_by=order)
                 if train_window else None)

    if config.model_file:
        source, origin = "user_file", f"file {config.model_file}"
        text = model_core.read_model_text(Path(config.model_file).expanduser())
    else:
        source, origin = "trained", "trained on features.flights"
        text = model_core.model_text(model_core.train(
            train, FLIGHTS, rounds=config.rounds, num_threads=settings.scoring_threads))
    # Parse the text that will be saved, and validate it before anything is saved or registered.
    booster = model_core.parse(text, origin)
    levels = model_core.levels_from_model(booster, FLIGHTS, origin)
    evaluation = model_core.evaluate_on(booster, valid, FLIGHTS, levels,
                                        settings.scoring_threads)
    metrics = evaluation.metrics
    reference = train if train is not None else valid
    reference_window = train_window or (valid_start, valid_end)
    profile = drift.ModelProfile(
        features=drift.build_profile(reference, FLIGHTS.drift_columns,
                                     f"{reference_window[0]}..{reference_window[1]}"),
        scores=drift.build_profile(pl.DataFrame({"score": evaluation.scores}), ["score"],
                                   f"{valid_start}..{valid_end}"),
    )
    # The files are written before the registry row, so no row ever points at a missing file.
    version, path = model_core.save(text, settings.models_dir / FLIGHTS.use_case)
    drift.save_profile(profile, drift.profile_path(path))

    record = registry.ModelRecord(
        model_version=version, use_case=FLIGHTS.use_case, status=registry.CHAMPION, source=source,
        trained_at=dt.datetime.now(dt.UTC),
        train_start=train_window[0] if train_window else None,
        train_end=train_window[1] if train_window else None,
        valid_start=valid_start, valid_end=valid_end,
        train_rows=model_core.labelled(train, FLIGHTS).height if train is not None else None,
        valid_rows=metrics.rows, auc=metrics.auc,
        log_loss=metrics.log_loss, brier=metrics.brier, positive_rate=metrics.positive_rate,
        predicted_positive_rate=evaluation.predicted_positive_rate,
        threshold=evaluation.threshold,
        feature_list=list(FLIGHTS.feature_columns), num_trees=booster.num_trees(),
        model_path=str(path.relative_to(settings.data_dir)), code_version=code_version(),
        run_id=context.run.run_id,
    )
    publish_seconds = warehouse.write_and_publish(
        lambda con: registry.register_champion(con, record))
    importance = sorted(zip(booster.feature_name(), booster.feature_importance("gain"),
                            strict=True), key=lambda item: -item[1])[:10]
    return dg.MaterializeResult(metadata={
        "model_version": version,
        "source": source,
        "model_path": str(path),
        "auc": metrics.auc,
        "log_loss": metrics.log_loss,
        "brier": metrics.brier,
        "threshold": evaluation.threshold,
        "positive_rate": metrics.positive_rate,
        "train_rows": record.train_rows or 0,
        "valid_rows": metrics.rows,
        "num_trees": booster.num_trees(),
        "top_features_by_gain": dg.MetadataValue.md(
            "| feature | gain |\n|---|---|\n"
            + "\n".join(f"| {name} | {gain:,.0f} |" for name, gain in importance)),
        **timing_metadata(metrics.rows, started, publish_seconds),
    })


# --- predictions and reports -----------------------------------------------------------

@daily_asset(
    key=["predictions", "flights"],
    checks=PREDICTION_CHECKS,
    freshness_policy=NIGHTLY_FRESHNESS,
    kinds={"duckdb", "lightgbm"},
    deps=[flights_features, flights_model],
    description="One row per flight: probability of arriving >15 minutes late, label at the "
                "model's threshold, risk band, top reasons, and the model, code and run that "
                "scored it.",
)
def flights_predictions(context: dg.AssetExecutionContext, platform: PlatformResource,
                        warehouse: WarehouseResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    settings = platform.settings
    start, end = partition_dates(context)
    days = landing.days_between(start, end)
    where = describe_days(days)
    with staged(context, settings, "predictions") as staging:
        with warehouse.get_connection() as con:
            record = registry.resolve(con, FLIGHTS.use_case, settings.model_version)
            require_partitions(con, "features.flights", start, end)
            features_file = staging.export(
                con, "features", partitions_query(
                    "features.flights", order_by=("partition_date", FLIGHTS.id_column)),
                {"start": start, "end": end})
        loaded = model_core.load_registered(
            settings.data_dir, settings.models_dir, record["model_path"],
            record["model_version"], record["threshold"], FLIGHTS)
        profile = drift.load_profile(drift.profile_path(settings.data_dir / record["model_path"]))
        scored = score_staged(context, settings, staging, features_file, loaded, profile,
                              where, (context.asset_key.to_user_string(), start, end))
        score_drift = audits.audit_score_drift(scored.drift, profile, settings.audit_thresholds())
        results = gate(context, [
            audits.audit_prediction_counts(scored.counts),
            audits.audit_scores_valid(scored.scores),
            audits.audit_model_version(scored.scores, loaded.version),
            score_drift,
        ], where)
        publish_seconds = warehouse.write_and_publish(
            lambda con: replace_partitions(con, [("predictions.flights", scored.predictions)],
                                           days))
    stats = scored.stats
    return dg.MaterializeResult(metadata=scoped_to_partitions({
        **table_metadata(scored.predictions),
        "rows_scored": scored.predictions.rows,
        "model_version": loaded.version,
        "threshold": loaded.threshold,
        "rows_explained": stats.explained_rows,
        "scorer": stats.scorer.used,
        "scorer_requested": stats.scorer.requested,
        "parity_max_abs_diff": stats.scorer.parity_max_abs_diff,
        "parity_rows": stats.scorer.parity_rows,
        "unknown_categories": sum(stats.unknown_categories.values()),
        "chunk_rows": settings.chunk_rows,
        "scoring_rows_per_second": round(stats.rows / scored.seconds, 1)
        if scored.seconds else 0.0,
        **scored.engine.metadata(),
        **score_summary(scored.summary),
        "score_max_psi": score_drift.metadata["max_psi"],
        **prediction_summary(scored.summary),
        **timing_metadata(stats.rows, started, publish_seconds),
    }, days, scored.rows_by_day), check_results=results)


@dataclass
class StagedScores:
    """A partition's predictions, staged as Parquet, and what was tallied on the way."""

    predictions: StagedTable
    stats: scoring.ScoringStats
    counts: Counter[str]
    scores: audits.ScoreRange
    drift: drift.DriftCounter
    summary: PredictionSummary
    rows_by_day: Counter[dt.date]
    seconds: float
    engine: engines.EngineReport


def score_staged(context: dg.AssetExecutionContext, settings: Settings, staging: Staging,
                 features_file: Path, loaded: model_core.LoadedModel,
                 profile: drift.ModelProfile | None, where: str,
                 scope: tuple[str, dt.date, dt.date]) -> StagedScores:
    """Score the staged features chunk by chunk with one booster; nothing holds them whole.

    With ``BATCH_PLATFORM_ENGINE=ray`` a Ray cluster scores (``core/engines.py``) and the
    predictions come back whole; they are then tallied and staged chunk by chunk as here.
    """
    started = time.perf_counter()
    feature_rows = row_count(features_file)
    progress = Progress(context.log, f"scoring {where}", max(1, -(-feature_rows //
                                                                  settings.chunk_rows)), "chunks")
    lineage = scoring.ScoringLineage(loaded.version, code_version(), context.run.run_id,
                                     dt.datetime.now(dt.UTC))
    predictions = staging.table("predictions")
    counts: Counter[str] = Counter()
    scores = audits.ScoreRange()
    score_drift = drift.DriftCounter(profile.scores if profile else None)
    summary = PredictionSummary(FLIGHTS)
    rows_by_day: Counter[dt.date] = Counter()
    if settings.engine == "ray" and feature_rows:
        engine_run = _score_on_engine(context, settings, features_file, loaded, lineage, where,
                                      scope)
        scored_chunks, riskiest = engine_run.chunks, None
    else:
        engine_run = _LocalScoring(context, settings, loaded, lineage, where)
        scored_chunks = engine_run.score(chunks([features_file], settings.chunk_rows))
        riskiest = engine_run.riskiest
    for chunk, rows in scored_chunks:
        counts += audits.prediction_row_counts(rows, chunk, FLIGHTS.id_column)
        scores.add(rows)
        score_drift.add(rows)
        summary.add(rows, chunk)
        rows_by_day.update(dict(rows.group_by("partition_date").len().iter_rows()))
        if riskiest is not None:
            riskiest.add(rows)
        predictions.write(rows)
        progress.advance(rows=chunk.height)
    report = engine_run.report
    assert report is not None
    if predictions.schema is None:
        predictions.write(scoring.with_lineage(scoring.empty_predictions(FLIGHTS), lineage,
                                               report.used))
    predictions.close()
    explained = engine_run.explained
    if riskiest is not None:
        # A second pass: explain the chosen rows, then fill their reasons into the staged parts.
        reasons = riskiest.explain(chunks([features_file], settings.chunk_rows), loaded,
                                   FLIGHTS, settings.scoring_threads)
        explained = reasons.height
        filled = staging.table("predictions_explained")
        for part in chunks(predictions.files, settings.chunk_rows):
            filled.write(scoring.fill_reasons(part, reasons, FLIGHTS.id_column))
        predictions = filled.close()
    for column, count in engine_run.unknown.items():
        if count:
            context.log.warning(f"{count} row(s) have a {column} the model has not seen; "
                                "scored with that feature missing")
    stats = scoring.ScoringStats(predictions.rows, engine_run.unknown, explained, report)
    return StagedScores(predictions, stats, counts, scores, score_drift, summary, rows_by_day,
                        time.perf_counter() - started, engine_run.engine)


class _LocalScoring:
    """The local engine: chunk after chunk in this process, with one booster."""

    def __init__(self, context: dg.AssetExecutionContext, settings: Settings,
                 loaded: model_core.LoadedModel, lineage: scoring.ScoringLineage,
                 where: str) -> None:
        self.context, self.settings, self.loaded = context, settings, loaded
        self.lineage, self.where = lineage, where
        self.riskiest = (scoring.Riskiest(settings.explain_max_rows, FLIGHTS.id_column)
                         if settings.explain == "riskiest" else None)
        self.unknown = dict.fromkeys(FLIGHTS.categorical_columns, 0)
        self.explained = 0
        self.report: scoring.ScorerReport | None = None
        self.engine = engines.EngineReport("local", 1)

    def score(self, feature_chunks: Iterator[pl.DataFrame]
              ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        settings, chosen = self.settings, None
        explain = "none" if self.riskiest else settings.explain
        for chunk in feature_chunks:
            if chosen is None:
                scoring.check_features(chunk, FLIGHTS, f"features.flights {self.where}")
                # The parity check of a compiled scorer samples the first chunk.
                chosen, self.report = scoring.choose_scorer(
                    chunk, self.loaded, FLIGHTS, settings.scorer, settings.scoring_threads,
                    self.context.log.warning)
            if chunk.height == 0:
                continue
            result = scoring.score_chunk(chunk, self.loaded, FLIGHTS, chosen, explain,
                                         settings.scoring_threads)
            for name, count in result.unknown_categories.items():
                self.unknown[name] += count
            self.explained += result.explained_rows
            yield chunk, scoring.with_lineage(result.predictions, self.lineage, self.report.used)


@dataclass
class _EngineScoring:
    chunks: Iterator[tuple[pl.DataFrame, pl.DataFrame]]
    report: scoring.ScorerReport
    unknown: dict[str, int]
    explained: int
    engine: engines.EngineReport


def _score_on_engine(context: dg.AssetExecutionContext, settings: Settings, features_file: Path,
                     loaded: model_core.LoadedModel, lineage: scoring.ScoringLineage,
                     where: str, scope: tuple[str, dt.date, dt.date]) -> _EngineScoring:
    """Score on the configured cluster engine. The driver holds the range's features and
    predictions (the cluster scores them); they are tallied chunk by chunk afterwards."""
    features = pl.read_parquet(features_file)
    scoring.check_features(features, FLIGHTS, f"features.flights {where}")
    predictions, stats, engine = engines.score(features, loaded, FLIGHTS, lineage, settings,
                                               scope, warn=context.log.warning)
    step = settings.chunk_rows
    aligned = ((features.slice(offset, step), predictions.slice(offset, step))
               for offset in range(0, features.height, step))
    return _EngineScoring(aligned, stats.scorer, stats.unknown_categories, stats.explained_rows,
                          engine)


@daily_asset(
    key=["reports", "flights_daily"],
    checks=REPORT_CHECKS,
    freshness_policy=NIGHTLY_FRESHNESS,
    automation_condition=REPORTS_FOLLOW_PREDICTIONS,
    kinds={"duckdb", "polars"},
    deps=[flights_predictions, flights_features],
    description="Per day and segment (all, carrier, origin): flights, score statistics, "
                "predicted late, realised late rate and AUC where outcomes are known.",
)
def flights_daily_report(context: dg.AssetExecutionContext, platform: PlatformResource,
                         warehouse: WarehouseResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    start, end = partition_dates(context)
    days = landing.days_between(start, end)
    window = {"start": start, "end": end}
    with staged(context, platform.settings, "reports") as staging:
        with warehouse.get_connection() as con:
            require_partitions(con, "predictions.flights", start, end)
            # Each flight once per segment type, sorted by day and segment: DuckDB joins and
            # sorts out of core, and the report reads the groups one after another.
            rows_file = staging.export(con, "segment_rows", reports.segment_rows_sql(FLIGHTS),
                                       window)
            # What the report must add up to, from the predictions table itself, not the join.
            truth_file = staging.export(con, "predictions", partitions_query(
                "predictions.flights", ("partition_date", "label")), window)
        report = reports.report_of_sorted_rows(
            chunks([rows_file], platform.settings.chunk_rows,
                   categorical=reports.CATEGORICAL_COLUMNS),
            FLIGHTS, dt.datetime.now(dt.UTC))
        results = gate(context, [audits.audit_report_reconciles(
            report, pl.scan_parquet(truth_file))], describe_days(days))
        publish_seconds = warehouse.write_and_publish(
            lambda con: replace_partitions(con, [("reports.flights_daily", report)], days))
    overall = report.filter(pl.col("segment_type") == reports.ALL_SEGMENT)
    flights = int(overall.get_column("flights").sum())
    return dg.MaterializeResult(metadata=scoped_to_partitions({
        **table_metadata(report),
        "flights": flights,
        "predicted_late": int(overall.get_column("predicted_late").sum()),
        "realised_auc_mean": float(overall.get_column("auc").mean() or 0.0),
        **report_summary(report),
        **timing_metadata(flights, started, publish_seconds),
    }, days, report), check_results=results)


ALL_ASSETS = [raw_planes, raw_airports, raw_airlines, raw_flights, raw_weather, flights_features,
              flights_model, flights_predictions, flights_daily_report]
