"""The assets of a use case, built from its declaration: wiring and metadata around
``batch_platform.platform``.

Every partitioned asset works on ``context.partition_key_range`` with a single-run backfill
policy, so one day and a year of days are the same code path and a range is one run.
"""


import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from batch_platform import code_version
from batch_platform.orchestration.checks import (
    FEATURE_CHECKS,
    RAW_CHECKS,
    REPORT_CHECKS,
    check_specs,
    describe_days,
    gate,
    prediction_checks,
)
from batch_platform.orchestration.lookback import rerun_days_looking_back
from batch_platform.orchestration.metadata import (
    comparison_metadata,
    prediction_summary,
    report_summary,
    scoped_to_partitions,
    score_summary,
    shadow_metadata,
    table_metadata,
    timing_metadata,
)
from batch_platform.orchestration.rescoring import rescore_after_champion_change
from batch_platform.orchestration.resources import PlatformResource, WarehouseResource
from batch_platform.orchestration.stages import Progress, stage
from batch_platform.platform.dates import days_between
from batch_platform.platform.features.rows import FeatureTally, feature_chunks
from batch_platform.platform.ingest import completeness, landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.models import registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.models.training import build_model, check_windows
from batch_platform.platform.monitoring import audits, drift
from batch_platform.platform.reports import daily as reports
from batch_platform.platform.reports import monitoring
from batch_platform.platform.reports.shadow_comparison import shadow_comparison
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring import shadow
from batch_platform.platform.scoring.partition import score_staged
from batch_platform.platform.storage import rollback
from batch_platform.platform.storage.staging import Staging, chunks, row_count, staging
from batch_platform.platform.storage.warehouse import (
    MissingDataError,
    delete_partitions,
    partition_counts,
    partitions_query,
    read_partitions,
    read_table,
    replace_partitions,
    replace_table,
    require_partitions,
)
from batch_platform.platform.use_case import LandingSource, ReferenceSource, UseCase
from batch_platform.settings import Settings

# Tag on every asset a use case's day materializes: select them with `tag:flow=<use case>`.
DAILY_FLOW_TAG = "flow"
# Scored and reported nightly: a day without a new materialization means the flow stopped.
NIGHTLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26),
                                                   warn_window=dt.timedelta(hours=24))


def daily_partitions(use_case: UseCase) -> dg.DailyPartitionsDefinition:
    p = use_case.partitions
    end = (p.end + dt.timedelta(days=1)).isoformat() if p.end else None
    return dg.DailyPartitionsDefinition(start_date=p.start.isoformat(), end_date=end,
                                        timezone=p.timezone)


def partition_dates(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    key_range = context.partition_key_range
    return dt.date.fromisoformat(key_range.start), dt.date.fromisoformat(key_range.end)


@contextmanager
def staged(context: dg.AssetExecutionContext, settings: Settings, step: str
           ) -> Iterator[Staging]:
    """The step's own staging directory, removed when the step ends, however it ends."""
    with staging(settings.staging_dir, context.run.run_id, step, settings.chunk_rows) as folder:
        yield folder


def commit(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
           write: Callable[[duckdb.DuckDBPyConnection], None],
           kept_if_the_run_fails: bool = False) -> float:
    """Write in one lake transaction whose snapshot names this step: what, which days, which
    run (``lake.snapshots()`` shows it; time travel finds a run's snapshot by it).

    If the run fails later, the commit is undone (``stages.undo_run``) unless
    ``kept_if_the_run_fails``; a run already undone commits nothing more."""
    asset = context.asset_key.to_user_string()
    days = ""
    if context.assets_def.partitions_def is not None:
        key_range = context.partition_key_range
        days = (key_range.start if key_range.start == key_range.end
                else f"{key_range.start}..{key_range.end}")
    run_id = context.run.run_id
    message = " ".join(part for part in (asset, days, "by run", run_id) if part)
    details = {"run_id": run_id, "asset": asset, "partitions": days,
               "code_version": code_version()}
    if kept_if_the_run_fails:
        details[rollback.KEPT] = "true"

    scope = partition_dates(context) if days else None

    def write_unless_rolled_back(con: duckdb.DuckDBPyConnection) -> None:
        rollback.refuse_rolled_back(con, run_id, scope)
        write(con)

    return warehouse.commit(write_unless_rolled_back, message, details)


def lineage(context: dg.AssetExecutionContext) -> ingest.Lineage:
    return ingest.Lineage(run_id=context.run.run_id, ingested_at=dt.datetime.now(dt.UTC))


class UseCaseAssets:
    """Builds the assets of one use case; every name comes from the ``UseCase``."""

    def __init__(self, use_case: UseCase) -> None:
        self.use_case = use_case
        self.partitions = daily_partitions(use_case)

    def key(self, *parts: str) -> dg.AssetKey:
        return dg.AssetKey(list(parts))

    @property
    def features_key(self) -> dg.AssetKey:
        return self.key("features", self.use_case.name)

    @property
    def model_key(self) -> dg.AssetKey:
        return self.key("models", self.use_case.name)

    @property
    def predictions_key(self) -> dg.AssetKey:
        return self.key("predictions", self.use_case.name)

    @property
    def report_key(self) -> dg.AssetKey:
        return self.key("reports", f"{self.use_case.name}_daily")

    def daily_flow(self) -> list[dg.AssetKey]:
        """The partitioned assets of a day, raw to reports."""
        return [*(self.key("raw", s) for s in self.use_case.sources), self.features_key,
                self.predictions_key, self.report_key]

    @property
    def reruns_days_looking_back(self) -> bool:
        """Whether features (and then predictions) rerun the days that read a day loaded
        again: switched on, and the features read earlier days."""
        return (self.use_case.automation.rerun_days_looking_back
                and self.use_case.features.lookback_days > 0)

    def predictions_condition(self) -> dg.AutomationCondition | None:
        after_change = (rescore_after_champion_change(self.model_key, self.use_case)
                        if self.use_case.automation.rescore_after_champion_change else None)
        after_features = (predictions_follow(self.features_key)
                          if self.reruns_days_looking_back else None)
        if after_change is not None and after_features is not None:
            return (after_change | after_features).with_label(
                "rescore after a change of champion, or after features")
        return after_change or after_features

    def settings(self, platform: PlatformResource) -> Settings:
        return platform.settings.resolved(self.use_case)

    def daily_asset(self, key: dg.AssetKey, checks: dict[str, str] | None = None,
                    **kwargs: object) -> Callable:
        """A stage of the daily flow: one day or a range of days per run, its audits as checks."""

        def decorate(compute: Callable) -> dg.AssetsDefinition:
            return dg.asset(
                key=key,
                group_name=self.use_case.group,
                partitions_def=self.partitions,
                backfill_policy=dg.BackfillPolicy.single_run(),
                tags={DAILY_FLOW_TAG: self.use_case.name},
                check_specs=check_specs(key.path, checks or {}),
                **kwargs,
            )(stage(compute))

        return decorate

    def all(self) -> list[dg.AssetsDefinition]:
        return [*(self.reference_asset(r) for r in self.use_case.references.values()),
                *(self.raw_asset(s) for s in self.use_case.sources.values()),
                self.features_asset(), self.model_asset(), self.predictions_asset(),
                self.report_asset()]

    # --- raw: landing files -> raw.<source> and quarantine.<source> --------------------------

    def reference_asset(self, reference: ReferenceSource) -> dg.AssetsDefinition:
        source = reference.schema
        use_case = self.use_case

        @dg.asset(
            key=["raw", source.name], group_name=use_case.group,
            # Runs with the daily flow, whose range runs need every selected asset single-run.
            backfill_policy=dg.BackfillPolicy.single_run(), kinds={"duckdb", "polars"},
            tags={DAILY_FLOW_TAG: use_case.name},
            description=f"Reference table {source.name}, from landing/{reference.path}.",
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
                    f"{ingest.describe(path, None)}: {validated.rejected.height} row(s) "
                    f"rejected; line {first[ingest.LINE_COLUMN]}: {first[ingest.REASON_COLUMN]}")
            frame = ingest.with_lineage(validated.good, validated, lineage(context))
            commit_seconds = commit(context, warehouse,
                lambda con: replace_table(con, use_case.raw_table(source.name), frame))
            return dg.MaterializeResult(metadata={
                **table_metadata(frame), "source_file": str(path),
                **timing_metadata(frame.height, started, commit_seconds),
            })

        return _reference

    def raw_asset(self, landed: LandingSource) -> dg.AssetsDefinition:
        source = landed.schema
        use_case = self.use_case
        raw_table, quarantine_table = use_case.raw_table(source.name), \
            use_case.quarantine_table(source.name)
        refused_table = use_case.refused_table(source.name)

        @self.daily_asset(
            self.key("raw", source.name), checks=RAW_CHECKS, kinds={"duckdb", "polars"},
            description=(f"Rows of landing/{landed.path} that pass the input schema, with "
                         f"lineage; rejected rows go to {quarantine_table} with the reason."),
        )
        def _raw(context: dg.AssetExecutionContext, platform: PlatformResource,
                 warehouse: WarehouseResource) -> dg.MaterializeResult:
            started = time.perf_counter()
            settings = self.settings(platform)
            assert settings.max_reject_fraction is not None
            start, end = partition_dates(context)
            days = days_between(start, end)
            run_lineage = lineage(context)
            tallies: dict[dt.date, ingest.FileTally] = {}
            progress = Progress(context.log, raw_table, len(days), "files validated")
            # Every file of the range is whole before any row is read (a feed still writing).
            now = dt.datetime.now(dt.UTC)
            paths = {day: landing.landing_file(settings.landing_dir, landed.folder, day)
                     for day in days}
            for day, path in paths.items():
                completeness.require_complete(
                    path, landed.complete_when, f"{source.name} landing file "
                    f"{ingest.describe(path, day)}", now, settings.landing_settle_seconds)
            with staged(context, settings, f"raw_{source.name}") as staging:
                good = staging.table("good", exclude=(ingest.LINE_COLUMN,))
                rejected = staging.table("rejected")
                # Small days are validated many files to a pass; each file's tally comes once
                # its rows are staged, in order, and may stop the step before later files.
                for tally in ingest.stage_files(paths, source, run_lineage, good, rejected,
                                                settings.chunk_rows, staging.root,
                                                settings.duckdb_memory_limit):
                    day = tally.partition_date
                    assert day is not None
                    path = paths[day]
                    tallies[day] = tally
                    try:
                        ingest.enforce_reject_threshold(tally, settings.max_reject_fraction,
                                                        ingest.describe(path, day))
                    except ingest.BadInputError as refused:
                        # The day keeps its published version; its rejected rows, every reason,
                        # stay readable apart until a delivery of the day is published (the
                        # staged rows may hold later days of its pass: only it is written).
                        commit(context, warehouse, functools.partial(
                            replace_partitions, writes=[(refused_table, rejected.close())],
                            partition_dates=days, publish=[day]),
                            kept_if_the_run_fails=True)
                        raise ingest.BadInputError(
                            f"{refused} Its {tally.rejected} rejected rows and their reasons: "
                            f"{refused_table} WHERE partition_date = '{day}'") from None
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
                history = landed.rows_vs_history
                if history is not None and settings.rows_vs_history_tolerance is not None:
                    history = dataclasses.replace(history,
                                                  tolerance=settings.rows_vs_history_tolerance)
                known = {}
                if history is not None:
                    with warehouse.get_connection() as con:
                        known = partition_counts(con, raw_table, history.first_day(start),
                                                 start - dt.timedelta(days=1))
                verdict = gate(context, [
                    audits.audit_raw_schema(source, good.empty(), ignored),
                    audits.audit_row_counts(source.name,
                                            {d: t.rows_in - t.rejected
                                             for d, t in tallies.items()},
                                            landed.expected_rows_per_day, history, known),
                    audits.audit_required_nulls(source, tallies, settings.audit_thresholds()),
                ], days)
                commit_seconds = commit(context, warehouse, lambda con: (
                    replace_partitions(con, [(raw_table, good), (quarantine_table, rejected)],
                                       days, verdict.publish),
                    delete_partitions(con, refused_table, verdict.publish)))
            rows_in = sum(t.rows_in for t in tallies.values())
            rows_rejected = sum(t.rejected for t in tallies.values())
            return verdict.outcome(scoped_to_partitions({
                **table_metadata(good),
                "rows_in": rows_in,
                "rows_rejected": rows_rejected,
                "rejected_fraction": rows_rejected / rows_in if rows_in else 0.0,
                "ignored_columns": ", ".join(ignored) or "none",
                "chunk_rows": settings.chunk_rows,
                **timing_metadata(rows_in, started, commit_seconds),
            }, days, {d: t.rows_in - t.rejected for d, t in tallies.items()}))

        return _raw

    # --- features --------------------------------------------------------------------------

    def features_asset(self) -> dg.AssetsDefinition:
        use_case = self.use_case
        features = use_case.features
        spec = use_case.spec
        rows_table = use_case.raw_table(features.rows_from)
        look_back = (f" A day also reads the {features.lookback_days} day(s) before it."
                     if features.lookback_days else "")

        @self.daily_asset(
            self.features_key, checks=FEATURE_CHECKS, kinds={"duckdb", "polars"},
            # Dagster shows a day computed by other code as unsynced (nothing reruns for it).
            code_version=code_version(),
            # Same-day dependencies, although a day may read earlier days (lookback_days):
            # with a TimeWindowPartitionMapping(start_offset=-1), UI backfills in Dagster 1.13
            # add the day after the range to the downstream run.
            deps=[*(self.key("raw", s) for s in use_case.sources),
                  *(self.key("raw", r) for r in features.references)],
            # ... so the days that look back at a day loaded again are requested by this.
            automation_condition=(rerun_days_looking_back(
                [self.key("raw", s) for s in use_case.sources], self.daily_flow(),
                features.lookback_days)
                if self.reruns_days_looking_back else None),
            description=f"One row per {features.rows_from} row: its features ({features.module})"
                        f" and the realised outcome ({spec.label_column}) as the label. The "
                        f"same table feeds training and scoring.{look_back}",
        )
        def _features(context: dg.AssetExecutionContext, platform: PlatformResource,
                      warehouse: WarehouseResource) -> dg.MaterializeResult:
            started = time.perf_counter()
            settings = self.settings(platform)
            start, end = partition_dates(context)
            days = days_between(start, end)
            first = start - dt.timedelta(days=features.lookback_days)
            with staged(context, settings, "features") as staging:
                with warehouse.get_connection() as con:
                    require_partitions(con, rows_table, start, end)
                    earlier = partition_counts(con, rows_table, first, start - dt.timedelta(1)
                                               ) if features.lookback_days else {}
                    files = {name: staging.export(con, name, partitions_query(
                        use_case.raw_table(name)), {"start": first, "end": end})
                        for name in use_case.sources}
                    references = {name: read_table(con, use_case.raw_table(name))
                                  for name in features.references}
                    profile = champion_profile(con, settings, use_case)
                missing_days = [d for d in days_between(first, start - dt.timedelta(1))
                                if not earlier.get(d)] if features.lookback_days else []
                if missing_days:
                    context.log.warning(
                        f"{rows_table} has no rows for {describe_days(missing_days)}: the "
                        f"features of {start} that look back at those days are incomplete")
                frame = staging.table("features")
                feature_drift = drift.DriftCounter(profile.features if profile else None)
                tally = FeatureTally(spec)
                progress = Progress(context.log, f"features {describe_days(days)}",
                                    max(1, -(-row_count(files[features.rows_from])
                                             // settings.chunk_rows)), "chunks")
                for rows in feature_chunks(features, files, references, start, end,
                                           settings.chunk_rows):
                    tally.add(rows)
                    feature_drift.add(rows)
                    frame.write(rows)
                    progress.advance(rows=rows.height)
                frame.close()
                drift_audit = audits.audit_feature_drift(feature_drift, profile,
                                                         settings.audit_thresholds())
                verdict = gate(context, [drift_audit], days)
                commit_seconds = commit(context, warehouse,
                    lambda con: replace_partitions(con, [(use_case.features_table, frame)],
                                                   days, verdict.publish))
            return verdict.outcome(scoped_to_partitions({
                **table_metadata(frame),
                **tally.metadata(),
                "lookback_days_complete": not missing_days,
                "max_psi": drift_audit.metadata["max_psi"],
                "chunk_rows": settings.chunk_rows,
                **timing_metadata(frame.rows, started, commit_seconds),
            }, days, tally.rows_by_day))

        return _features

    # --- model -----------------------------------------------------------------------------

    def model_asset(self) -> dg.AssetsDefinition:
        use_case = self.use_case
        spec = use_case.spec
        declared = use_case.model

        @dg.asset(
            key=self.model_key, group_name=use_case.group, kinds={"lightgbm"},
            deps=[self.features_key],
            description=f"The {declared.objective} model scoring uses: trained on a window of "
                        f"{use_case.features_table} (or a LightGBM file you bring), evaluated "
                        "on a later window, stored under its content hash and registered as "
                        "champion in models.registry, or, with config challenger: true, as "
                        "the challenger beside the champion. Windows default to the "
                        "declaration's.",
        )
        @stage
        def _model(context: dg.AssetExecutionContext, config: ModelConfig,
                   platform: PlatformResource, warehouse: WarehouseResource
                   ) -> dg.MaterializeResult:
            started = time.perf_counter()
            settings = self.settings(platform)
            valid_window = config.window("valid", declared.validation)
            train_window = None if config.model_file else config.window("train", declared.train)
            check_windows(train_window, valid_window)
            champion = None
            with warehouse.get_connection() as con:
                if config.challenger:  # before any training: a challenger needs a champion
                    champion = registry.require_champion(con, use_case.name)
                for window in [valid_window] + ([train_window] if train_window else []):
                    require_partitions(con, use_case.features_table, *window)
                # A fixed row order makes training reproducible: same features, same model.
                order = ("partition_date", spec.id_column)
                valid = read_partitions(con, use_case.features_table, *valid_window,
                                        order_by=order)
                train = (read_partitions(con, use_case.features_table, *train_window,
                                         order_by=order) if train_window else None)
            built = build_model(
                use_case, train, valid, train_window, valid_window, settings.models_dir,
                settings.data_dir,
                brought_file=(Path(config.model_file).expanduser() if config.model_file
                              else None),
                rounds=config.rounds, num_threads=settings.scoring_threads,
                run_id=context.run.run_id, code_version=code_version(),
                challenger=bool(config.challenger))
            register = (registry.register_challenger if config.challenger
                        else registry.register_champion)
            commit_seconds = commit(context, warehouse, lambda con: register(con, built.record))
            metrics = {name: value for name, value in built.evaluation.metrics.items()
                       if value is not None}
            record = built.record
            champion = champion or record.model_version
            # The asset's data version is the champion's: scoring changes only with it, so a
            # challenger registered beside it (or the same champion again) changes nothing
            # downstream.
            return dg.MaterializeResult(data_version=dg.DataVersion(champion), metadata={
                "model_version": record.model_version,
                "registered_as": registry.CHALLENGER if config.challenger else registry.CHAMPION,
                "champion": champion,
                "objective": record.objective,
                "source": record.source,
                "model_path": str(built.path),
                **metrics,
                **({"threshold": record.threshold} if record.threshold is not None else {}),
                **({"band_low": record.band_low, "band_high": record.band_high}
                   if record.band_low is not None else {}),
                "train_rows": record.train_rows or 0,
                "valid_rows": record.valid_rows,
                "num_trees": built.booster.num_trees(),
                "top_features_by_gain": dg.MetadataValue.md(
                    "| feature | gain |\n|---|---|\n" + "\n".join(
                        f"| {name} | {gain:,.0f} |" for name, gain in built.top_features())),
                **timing_metadata(record.valid_rows, started, commit_seconds),
            })

        return _model

    # --- predictions and reports ---------------------------------------------------------

    def predictions_asset(self) -> dg.AssetsDefinition:
        use_case = self.use_case
        spec = use_case.spec
        kind = objective(spec.objective)
        what = ("a probability, a label at the model's threshold and a risk band"
                if spec.is_binary else "a predicted value and its band")

        @self.daily_asset(
            self.predictions_key, checks=prediction_checks(kind), code_version=code_version(),
            freshness_policy=NIGHTLY_FRESHNESS, kinds={"duckdb", "lightgbm"},
            deps=[self.features_key, self.model_key],
            automation_condition=self.predictions_condition(),
            description=f"One row per feature row of {use_case.features_table}: {what}, top "
                        "reasons, and the model, code and run that scored it.",
        )
        def _predictions(context: dg.AssetExecutionContext, platform: PlatformResource,
                         warehouse: WarehouseResource) -> dg.MaterializeResult:
            started = time.perf_counter()
            settings = self.settings(platform)
            start, end = partition_dates(context)
            days = days_between(start, end)
            where = describe_days(days)
            with staged(context, settings, "predictions") as staging:
                with warehouse.get_connection() as con:
                    models = shadow.scoring_models(con, use_case.name, settings.model_version)
                    require_partitions(con, use_case.features_table, start, end)
                    # In the table's own order, unsorted (a sort costs as much as the rest of
                    # the export): a row's score depends on that row alone, the riskiest rows
                    # are chosen by score and id, and the report sorts what it adds up.
                    features_file = staging.export(
                        con, "features", partitions_query(use_case.features_table),
                        {"start": start, "end": end})
                loaded, profile = shadow.load_model(settings, spec, models.scoring)
                rows = max(1, -(-row_count(features_file) // settings.chunk_rows))
                # The challenger scores the same chunks again.
                progress = Progress(context.log, f"scoring {where}",
                                    rows * (1 if models.challenger is None else 2), "chunks")
                run_lineage = scoring.ScoringLineage(loaded.version, code_version(),
                                                     context.run.run_id, dt.datetime.now(dt.UTC))
                scope = (context.asset_key.to_user_string(), start, end)
                scored = score_staged(
                    settings, spec, staging, features_file, loaded, profile, run_lineage,
                    where, scope, context.log.warning, lambda n: progress.advance(rows=n),
                    value_range(profile, kind.output))
                shadowed = None if models.challenger is None else shadow.score_shadow(
                    settings, spec, staging, features_file, models.challenger, scored,
                    run_lineage, where, scope, context.log.warning,
                    lambda n: progress.advance(rows=n))
                output_drift = audits.audit_score_drift(scored.drift, profile,
                                                        settings.audit_thresholds())
                verdict = gate(context, [
                    audits.audit_prediction_counts(scored.counts),
                    audits.audit_scores_valid(scored.scores),
                    audits.audit_model_version(scored.scores, loaded.version),
                    output_drift,
                ], days)
                # One commit: a day's shadow rows are always those of its predictions' scoring.
                commit_seconds = commit(context, warehouse,
                    lambda con: replace_partitions(
                        con, shadow.scored_writes(use_case.predictions_table,
                                                  use_case.shadow_table, scored.predictions,
                                                  shadowed),
                        days, verdict.publish))
            stats = scored.stats
            return verdict.outcome(scoped_to_partitions({
                **table_metadata(scored.predictions),
                "rows_scored": scored.predictions.rows,
                "model_version": loaded.version,
                **({"threshold": loaded.threshold} if loaded.threshold is not None else {}),
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
                "score_max_psi": output_drift.metadata["max_psi"],
                **prediction_summary(scored.summary),
                **shadow_metadata(shadowed),
                **timing_metadata(stats.rows, started, commit_seconds),
            }, days, scored.rows_by_day))

        return _predictions

    def report_asset(self) -> dg.AssetsDefinition:
        use_case = self.use_case
        spec = use_case.spec
        kind = objective(spec.objective)
        measures = ("score statistics, predicted and realised positives and AUC"
                    if spec.is_binary else "prediction statistics, MAE, RMSE and bias")

        @self.daily_asset(
            self.report_key, checks=REPORT_CHECKS, freshness_policy=NIGHTLY_FRESHNESS,
            automation_condition=(reports_follow(self.predictions_key)
                                  if use_case.automation.reports_follow_predictions else None),
            kinds={"duckdb", "polars"}, deps=[self.predictions_key, self.features_key],
            description=f"Per day and segment (all, {', '.join(spec.segment_columns)}): rows, "
                        f"{measures} where outcomes are known.",
        )
        def _report(context: dg.AssetExecutionContext, platform: PlatformResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
            started = time.perf_counter()
            settings = self.settings(platform)
            start, end = partition_dates(context)
            days = days_between(start, end)
            window = {"start": start, "end": end}
            with staged(context, settings, "reports") as staging:
                with warehouse.get_connection() as con:
                    require_partitions(con, use_case.predictions_table, start, end)
                    # Each row once per segment type, sorted by day and segment: DuckDB joins
                    # and sorts out of core, and the report reads the groups one after another.
                    rows_file = staging.export(con, "segment_rows",
                                               reports.segment_rows_sql(spec), window)
                    # What the report must add up to, from the predictions table itself.
                    truth_file = staging.export(con, "predictions", partitions_query(
                        use_case.predictions_table, ("partition_date", *kind.report_values)),
                        window)
                    reported_at = dt.datetime.now(dt.UTC)
                    comparison = shadow_comparison(con, use_case, settings.model_version, days,
                                                   reported_at)
                report = reports.report_of_sorted_rows(
                    chunks([rows_file], settings.chunk_rows,
                           categorical=reports.CATEGORICAL_COLUMNS),
                    spec, reported_at)
                verdict = gate(context, [audits.audit_report_reconciles(
                    report, pl.scan_parquet(truth_file), kind)], days)
                # None: no challenger, and the days lose their comparison rows.
                commit_seconds = commit(context, warehouse, lambda con: replace_partitions(
                    con, [(use_case.report_table, report),
                          (use_case.shadow_comparison_table, comparison)],
                    days, verdict.publish))
            page = self.monitoring_page(context, settings, warehouse, reported_at)
            overall = report.filter(pl.col("segment_type") == reports.ALL_SEGMENT)
            rows = int(overall.get_column("rows").sum())
            quality = ({"predicted_positive": int(overall.get_column("predicted_positive").sum()),
                        "realised_auc_mean": float(overall.get_column("auc").mean() or 0.0)}
                       if spec.is_binary else
                       {"realised_mae_mean": float(overall.get_column("mae").mean() or 0.0)})
            return verdict.outcome(scoped_to_partitions({
                **table_metadata(report),
                "rows": rows,
                **quality,
                **report_summary(report, spec.is_binary),
                **comparison_metadata(comparison, kind),
                **page,
                **timing_metadata(rows, started, commit_seconds),
            }, days, report))

        return _report

    def monitoring_page(self, context: dg.AssetExecutionContext, settings: Settings,
                        warehouse: WarehouseResource, generated_at: dt.datetime
                        ) -> dict[str, object]:
        """Rewrite the use case's monitoring page from the lake as it now is; its link for the
        metadata. The page is a view of committed tables: if it cannot be written, the report
        stands and the run says why."""
        use_case = self.use_case
        started = time.perf_counter()
        try:
            with warehouse.get_connection() as con:
                data = monitoring.monitoring_data(
                    con, use_case, champion_profile(con, settings, use_case),
                    settings.audit_thresholds(), generated_at, settings.chunk_rows)
            if data is None:
                return {}
            # Here, not at the top: only a report writes a page, and looking up Plotly's
            # installed version would cost every load of the definitions.
            from batch_platform.platform.reports.monitoring_page import write_monitoring_page
            path = write_monitoring_page(settings.reports_dir, data)
        except (OSError, duckdb.Error, MissingDataError) as err:
            context.log.warning(f"{use_case.name}: the report is committed but its monitoring "
                                f"page could not be written ({err}); the next report rewrites it")
            return {"monitoring_page": f"not written: {err}"}
        return {"monitoring_page": dg.MetadataValue.path(str(path)),
                "monitoring_page_url": dg.MetadataValue.url(path.as_uri()),
                "monitoring_page_seconds": round(time.perf_counter() - started, 3)}


class ModelConfig(dg.Config):
    """Train on one window of feature partitions, validate on a later one; unset dates are the
    declaration's (``training.train``, ``training.validation``)."""

    train_start: str | None = None
    train_end: str | None = None
    valid_start: str | None = None
    valid_end: str | None = None
    rounds: int | None = None  # unset: the declaration's training.rounds
    model_file: str | None = None  # register this LightGBM text model instead of training
    # Register the model as the challenger, beside the champion, which stays champion; it is
    # promoted only through the gate (batch-platform models promote, or <use case>_promote).
    challenger: bool = False

    def window(self, name: str, declared: tuple[dt.date, dt.date]) -> tuple[dt.date, dt.date]:
        start, end = (self._day(f"{name}_{edge}", default)
                      for edge, default in zip(("start", "end"), declared, strict=True))
        if end < start:
            raise ValueError(f"{name} window ends ({end}) before it starts ({start})")
        return start, end

    def _day(self, field: str, default: dt.date) -> dt.date:
        value = getattr(self, field)
        if value is None:
            return default
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"model config {field}={value!r} is not a date like 2013-01-31"
                             ) from None


def follows(dep: dg.AssetKey) -> dg.AutomationCondition:
    """Any update of ``dep``'s partitions, however it was launched, requests the same days;
    not only the latest partition (as AutomationCondition.eager() would): backfills rescore
    old days. Updated in the same run as the dep, a day is not requested again."""
    return (
        dg.AutomationCondition.any_deps_updated()
        .allow(dg.AssetSelection.assets(dep)).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    )


def reports_follow(predictions: dg.AssetKey) -> dg.AutomationCondition:
    return follows(predictions).with_label("after predictions")


def predictions_follow(features: dg.AssetKey) -> dg.AutomationCondition:
    """Predictions follow their features on the days already scored (a day never scored is the
    landing sensor's), unless the day's last scoring failed: its run was undone, features
    included, and running it again on them would fail the same way."""
    return (follows(features) & ~dg.AutomationCondition.missing()
            & ~dg.AutomationCondition.execution_failed()).with_label("after features, if scored")


def champion_profile(con: duckdb.DuckDBPyConnection, settings: Settings, use_case: UseCase
                     ) -> drift.ModelProfile | None:
    """The drift references of the model that will score these features, if there is one."""
    try:
        record = registry.resolve(con, use_case.name, settings.model_version)
    except MissingDataError:
        return None
    return drift.load_profile(drift.profile_path(settings.data_dir / record["model_path"]))


def value_range(profile: drift.ModelProfile | None, output: str) -> tuple[float, float]:
    """Where the summary's histogram spans: [0, 1] for a probability; for a value, the first
    and last decile edges of the model's validation predictions, widened by half their gap."""
    if output == "score" or profile is None or output not in profile.scores.columns:
        return (0.0, 1.0)
    edges = profile.scores.columns[output].bins
    if not edges:
        return (0.0, 1.0)
    low, high = float(edges[0]), float(edges[-1])
    margin = (high - low) / 2 or 1.0
    return (low - margin, high + margin)

