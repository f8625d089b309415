"""The batch-platform command: use-cases, land, train, models, score, sql, shell, snapshots,
maintain, migrate, demo and ui.

Every verb that acts on a use case takes ``--use-case NAME`` (default: BATCH_PLATFORM_USE_CASE,
else the first declared). Runs go through the persistent Dagster instance under the data
directory, so everything done here also shows in the UI's run history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import importlib.util
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batch_platform.platform.dates import days_between
from batch_platform.platform.files import (
    UnwritableDirectoryError,
    exclusive_lock,
    write_bytes_atomic,
)
from batch_platform.platform.models import gate, lifecycle, registry
from batch_platform.platform.models.objectives import auc_expr, objective
from batch_platform.platform.reports.daily import ALL_SEGMENT
from batch_platform.platform.storage import lake as lakes
from batch_platform.platform.storage.migration import migrate
from batch_platform.platform.use_case import UseCase
from batch_platform.settings import Settings, SettingsError

if TYPE_CHECKING:
    from batch_platform.orchestration.jobs import StepFailure

INSTANCE_YAML = """\
# Dagster instance of batch_platform: run history and event logs live beside this file.
telemetry:
  enabled: false
# Dagster's SQLite storage in this directory, with event writes about 3x cheaper (see
# batch_platform/orchestration/instance_storage.py). Remove this block to use Dagster's stock class.
storage:
  custom:
    module: batch_platform.orchestration.instance_storage
    class: BatchPlatformSqliteStorage
    config:
      base_dir:
        env: DAGSTER_HOME
# The landing sensor may request many days at once: at most this many run together (they take
# turns on the lake's writer lock; more would only compete for the cores).
concurrency:
  runs:
    max_concurrent_runs: 4
# Dagster's run monitoring (the daemon): a run that has not started 180 s after its launch, or
# not cancelled 180 s after being asked to, is failed. A run whose process dies while it runs is
# failed by the platform's sweep instead (batch_platform/orchestration/liveness.py): the default
# run launcher cannot check a run's worker. No maximum runtime: a backfill of a year is one run.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  poll_interval_seconds: 60
"""


class CliError(Exception):
    """A failure the user can act on; printed without a traceback."""


def prepare_instance(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the data directory's instance, creating it once.

    Runs started at the same time on a new instance would each create its SQLite storage and
    stamp its schema version: two stamps make every later run fail ("alembic_version has more
    than one head"). So the first caller creates the storage under a lock, and marks it done.
    """
    settings.require_writable_data_dir()
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)  # the instance's dagster.yaml reads it
    config = home / "dagster.yaml"
    created = home / ".storage-created"
    if not created.exists():
        with exclusive_lock(home / ".create.lock", settings.lock_timeout_seconds,
                            "create the Dagster instance"):
            if not config.exists():
                write_bytes_atomic(config, INSTANCE_YAML.encode())
            if not created.exists():
                from dagster import DagsterInstance

                with DagsterInstance.from_config(str(home)):
                    pass  # opening it creates and stamps the storage
                write_bytes_atomic(created, b"")
    # Dagster's code servers are subprocesses: hand them the same, absolute, data directory.
    os.environ["BATCH_PLATFORM_DATA_DIR"] = str(settings.data_dir)
    return home


def declared_use_cases() -> list[UseCase]:
    from batch_platform import catalog

    _, declared = catalog.load()
    return [entry.use_case for entry in declared]


def chosen_use_case(settings: Settings, args: argparse.Namespace) -> UseCase:
    use_cases = declared_use_cases()
    name = getattr(args, "use_case", None) or settings.use_case
    if name is None:
        return use_cases[0]
    for use_case in use_cases:
        if use_case.name == name:
            return use_case
    raise CliError(f"no use case {name!r}: declared are "
                   f"{', '.join(u.name for u in use_cases)} (batch-platform use-cases)")


def date_range(args: argparse.Namespace, default_all: bool, use_case: UseCase
               ) -> tuple[dt.date, dt.date]:
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if getattr(args, "date", None):
        if start or end:
            raise CliError("give either --date or --from/--to, not both")
        start = end = args.date
    first, last = use_case.partitions.start, use_case.partitions.last_day()
    if start is None and end is None:
        if default_all:
            return first, last
        raise CliError("give --date DAY or --from DAY --to DAY")
    if start is None or end is None:
        raise CliError("--from and --to go together")
    if end < start:
        raise CliError(f"--to {end} is before --from {start}")
    if start < first or end > last:
        raise CliError(f"days must be within the partitions of {use_case.name}, "
                       f"{first}..{last}")
    return start, end


class RunFailed(CliError):
    """A run of a job failed: one line naming the first cause; every step's traceback kept for
    ``--verbose``."""

    def __init__(self, run_id: str, what: str, failures: list[StepFailure]) -> None:
        self.failures = failures
        first = failures[0].message if failures else "a step failed"
        more = f"and {len(failures) - 1} more failed step(s) in " if len(failures) > 1 else ""
        super().__init__(f"{first} ({more}run {run_id[:8]} of {what}: --verbose or the UI "
                         "shows the details)")

    def details(self) -> str:
        return "\n".join(f"{failure.step}:\n{failure.traceback}" for failure in self.failures)


def run_job(settings: Settings, job_name: str, start: dt.date | None = None,
            end: dt.date | None = None, run_config: dict | None = None,
            verbose: bool = False) -> str:
    """Execute a job of the project's definitions in this process against the instance.

    Shows the run's progress (``orchestration/progress.py``); with ``verbose``, Dagster's whole
    console log instead.
    """
    import dagster as dg

    from batch_platform.definitions import build_definitions
    from batch_platform.orchestration.jobs import partition_range_tags, step_failures
    from batch_platform.orchestration.liveness import sweep, worker_tags
    from batch_platform.orchestration.progress import RunProgress, progress_logger

    tags = worker_tags()  # the sweep knows the run as this process's
    if start is not None and end is not None:
        tags |= partition_range_tags(start.isoformat(), end.isoformat())
    what = f"{job_name} {start}..{end}" if start else job_name
    print(f"→ {what}", flush=True)
    started = time.perf_counter()
    job = build_definitions(settings).resolve_job_def(job_name)
    partitions = len(days_between(start, end)) if start is not None and end is not None else 0
    progress = RunProgress(sys.stdout, sys.stdout.isatty(), len(job.graph.nodes), partitions)
    job = job.with_logger_defs({"console": dg.colored_console_logger,
                                "progress": progress_logger(progress)})
    loggers = ({"console": {"config": {"log_level": "INFO"}}} if verbose
               else {"progress": {}})
    with dg.DagsterInstance.get() as instance:
        # Runs that died before this one: failed, and what they committed undone.
        sweep(instance, settings, lambda line: print(f"  {line}", flush=True))
        result = job.execute_in_process(
            instance=instance, tags=tags, raise_on_error=False,
            run_config={"loggers": loggers} | (run_config or {}))
    progress.clear()
    if not result.success:
        raise RunFailed(result.run_id, what, step_failures(result))
    print(f"  done in {time.perf_counter() - started:.1f}s (run {result.run_id})", flush=True)
    return result.run_id


def cmd_use_cases(settings: Settings, args: argparse.Namespace) -> None:
    for use_case in declared_use_cases():
        p = use_case.partitions
        print(f"{use_case.name}: {use_case.description}")
        print(f"  declared in  {use_case.declared_in}/defs.yaml")
        print(f"  objective    {use_case.spec.objective}, one row per "
              f"{use_case.features.rows_from} row ({use_case.spec.id_column})")
        print(f"  partitions   {p.start}..{p.end or 'open'} ({p.timezone}), nightly "
              f"'{p.nightly_cron}'")
        print(f"  sources      {', '.join(f'landing/{s.path}' for s in use_case.sources.values())}"
              + (f"; reference {', '.join(use_case.references)}" if use_case.references else ""))
        print(f"  tables       {', '.join(use_case.tables())}")
        print(f"  jobs         {', '.join(use_case.job_name(j) for j in JOBS)}")


JOBS = ("daily", "features", "train", "predict", "freshness", "promote", "rollback")


def land_days(settings: Settings, use_case: UseCase, start: dt.date, end: dt.date) -> str:
    if use_case.lander is None:
        raise CliError(f"{use_case.name} declares no lander: its files arrive in "
                       f"{settings.landing_dir} from its feed")
    summary = use_case.lander(settings.landing_dir, days_between(start, end))
    return (f"{summary.files_written} file(s) written, {summary.files_unchanged} unchanged, "
            f"{summary.rows} daily rows")


def cmd_land(settings: Settings, args: argparse.Namespace) -> None:
    use_case = chosen_use_case(settings, args)
    start, end = date_range(args, True, use_case)
    print(f"landed {use_case.name} {start}..{end} into {settings.landing_dir}: "
          f"{land_days(settings, use_case, start, end)}")


def cmd_train(settings: Settings, args: argparse.Namespace) -> None:
    from batch_platform.orchestration.assets import ModelConfig

    use_case = chosen_use_case(settings, args)
    config = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in {
        "train_start": args.train_from, "train_end": args.train_to,
        "valid_start": args.valid_from, "valid_end": args.valid_to,
        "model_file": str(Path(args.model_file).resolve()) if args.model_file else None,
        "rounds": args.rounds, "challenger": args.challenger or None,
    }.items() if v is not None}
    if args.challenger:  # answer at once, before any run: a challenger needs a champion
        with lakes.lake_of(settings).read_only() as con:
            registry.require_champion(con, use_case.name)
    if args.model_file:  # answer at once, before any run: the same checks the model asset runs
        from batch_platform.platform.models.booster import ModelError, read_brought_model

        try:
            read_brought_model(Path(config["model_file"]),
                               use_case.feature_sets(args.challenger))
        except ModelError as err:
            raise CliError(str(err)) from None
    windows = ModelConfig(**config)
    valid = windows.window("valid", use_case.model.validation)
    # The features of both windows, built (or rebuilt, idempotently) from the landing files.
    first = valid[0] if args.model_file else windows.window("train", use_case.model.train)[0]
    run_job(settings, use_case.job_name("features"), first, valid[1], verbose=args.verbose)
    run_job(settings, use_case.job_name("train"),
            run_config={"ops": {f"models__{use_case.name}": {"config": config}}},
            verbose=args.verbose)
    print_model(settings, use_case, registry.CHALLENGER if args.challenger else registry.CHAMPION)


def actor() -> str:
    """Who runs the command, as models.promotions records it: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return f"uid {os.getuid()}"


def cmd_models(settings: Settings, args: argparse.Namespace) -> None:
    use_case = chosen_use_case(settings, args)
    lake = lakes.lake_of(settings)
    thresholds = lifecycle.gate_thresholds(settings)
    if args.action is None:
        with lake.read_only() as con:
            listed = lifecycle.listing(con, use_case, thresholds)
        print("\n".join(models_listing(use_case, listed)))
        return
    where = {"data_dir": settings.data_dir, "models_dir": settings.models_dir}
    if args.action == "promote":
        change = lifecycle.promote(lake, use_case, args.version, args.reason, actor(),
                                   args.force, thresholds, **where)
    else:
        change = lifecycle.rollback(lake, use_case, args.reason, actor(), **where)
    done = change.promotion
    record_champion(use_case, done)
    verb = "promoted" if done.action == registry.PROMOTE else "rolled back to"
    forced = " (forced)" if done.forced else ""
    print(f"{verb} {done.model_version}{forced}: champion of {use_case.name}, was "
          f"{done.previous_champion}; recorded as {registry.PROMOTIONS_TABLE} row "
          f"{done.sequence} by {done.actor}")
    if change.verdict is not None:
        print(f"  gate {change.verdict.summary}")


METRIC_NAMES = {"auc": "AUC", "brier": "Brier", "mae": "MAE", "rmse": "RMSE"}


def record_champion(use_case: UseCase, promotion: registry.Promotion) -> None:
    """The model asset's new data version, the new champion's, in the Dagster instance: the
    days it makes stale show in the UI, and the automation rescores them."""
    import dagster as dg

    from batch_platform.orchestration.assets import UseCaseAssets
    from batch_platform.orchestration.rescoring import champion_materialization

    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            champion_materialization(UseCaseAssets(use_case).model_key, promotion))


def models_listing(use_case: UseCase, listed: lifecycle.Listing) -> list[str]:
    """One aligned line per version, newest first: status, windows, held-out metrics and the
    challenger's shadow record; then what the gate says and the latest change of champion."""
    versions = listed.versions
    if versions.height == 0:
        return [f"{use_case.name}: no model registered yet (batch-platform train)"]
    metrics = [name for name, _ in objective(use_case.spec.objective).realised_metrics]
    header = ["version", "status", "source", "trained on", "validated on", "valid rows",
              *(f"held-out {METRIC_NAMES[m]}" for m in metrics), "trees", "registered",
              "shadow record (vs the champion)"]
    # A version promoted through the gate keeps the record it was judged on (the latest).
    judged_at_promotion = {
        change["model_version"]: evidence for change in listed.history.iter_rows(named=True)
        if change["action"] == registry.PROMOTE
        and "days" in (evidence := json.loads(change["evidence"]))}
    rows = [header]
    for row in versions.iter_rows(named=True):
        shadow = "-"
        if row["status"] == registry.CHALLENGER and listed.verdict is not None:
            shadow = shadow_record(listed.verdict.evidence())
        elif row["model_version"] in judged_at_promotion:
            shadow = "at its promotion: " + shadow_record(
                judged_at_promotion[row["model_version"]])
        rows.append([
            row["model_version"], row["status"],
            "trained" if row["source"] == "trained" else "brought",
            f"{row['train_start']}..{row['train_end']}" if row["train_start"] else "-",
            f"{row['valid_start']}..{row['valid_end']}", f"{row['valid_rows']:,}",
            *("-" if row[m] is None else f"{row[m]:.4f}" for m in metrics),
            str(row["num_trees"]), f"{row['trained_at']:%Y-%m-%d %H:%M}", shadow])
    lines = [f"{use_case.name} ({use_case.spec.objective}): {versions.height} version(s)",
             *aligned(rows)]
    if listed.verdict is not None:
        lines.append(f"gate: {listed.verdict.summary}")
    if listed.history.height:
        last = listed.history.row(-1, named=True)
        lines.append(f"last change: {last['action']} of {last['model_version']} "
                     f"(was {last['previous_champion']}) by {last['actor']} at "
                     f"{last['promoted_at'].astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC: "
                     f"{last['reason']}")
    return lines


def shadow_record(evidence: dict) -> str:
    """Days compared and cumulated realised metrics, champion -> challenger, from a verdict's
    figures (``Verdict.evidence()``, as models.promotions keeps them)."""
    if evidence["days"] == 0:
        return "no day compared yet"
    figures = ", ".join(
        f"{METRIC_NAMES[name]} {_metric(values[gate.CHAMPION_ROLE])} -> "
        f"{_metric(values[gate.CHALLENGER_ROLE])}"
        for name, values in evidence["cumulated"].items())
    return (f"{evidence['days']} day(s) {evidence['first_day']}..{evidence['last_day']}, "
            f"better on {evidence['days_won']}, {evidence['rows']:,} rows: {figures}")


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines, each column padded to its widest cell; the last one unpadded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)
                      ) + "  " + row[-1] for row in rows]


def cmd_score(settings: Settings, args: argparse.Namespace) -> None:
    use_case = chosen_use_case(settings, args)
    start, end = date_range(args, False, use_case)
    run_job(settings, use_case.job_name("daily"), start, end, verbose=args.verbose)
    print(scored_summary(settings, use_case, start, end))


def scored_summary(settings: Settings, use_case: UseCase, start: dt.date, end: dt.date) -> str:
    output = ("avg(score), avg(label::INT)" if use_case.spec.is_binary
              else "avg(prediction), NULL")
    with lakes.lake_of(settings).read_only() as con:
        rows, mean, positive = con.execute(
            f"SELECT count(*), {output} FROM {use_case.predictions_table} "
            "WHERE partition_date BETWEEN ? AND ?", [start, end]).fetchone()
    what = (f"mean score {mean:.3f}, predicted positive {positive:.1%}"
            if use_case.spec.is_binary and rows else
            f"mean prediction {mean:.3f}" if rows else "nothing to score")
    return f"scored {rows} rows of {use_case.name} from {start} to {end}: {what}"


def cmd_sql(settings: Settings, args: argparse.Namespace) -> None:
    import duckdb

    with lakes.lake_of(settings).read_only() as con:
        try:
            relation = con.sql(args.query)
        except duckdb.Error as err:
            raise CliError(f"query failed: {err}") from None
        if relation is not None:
            relation.show(max_rows=args.max_rows, max_width=200)


def duckdb_cli_binary() -> Path:
    """The DuckDB CLI itself: the ``duckdb`` script of the duckdb-cli package is a wrapper
    whose start-up ``SET`` fails in ``-safe`` mode, so run the binary it wraps."""
    spec = importlib.util.find_spec("duckdb_cli")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).with_name("duckdb")
        if bundled.is_file():
            return bundled
    found = shutil.which("duckdb")
    if found is None:
        raise CliError("the DuckDB CLI is not installed: pip install duckdb-cli")
    return Path(found)


def shell_command(settings: Settings) -> list[str]:
    """The analysts' interactive session: the lake attached read-only, then safe mode.

    Safe mode (after the attach, which reads the catalog and the extensions) shuts off every
    file outside the lake, the shell escapes and ``.output``, and locks the configuration.
    """
    lake = lakes.lake_of(settings)
    with lake.read_only():  # fails clearly if there is no lake; installs the extensions
        pass
    return [str(duckdb_cli_binary()), "-cmd", lake.shell_setup(), "-cmd", ".safe_mode"]


def cmd_shell(settings: Settings, args: argparse.Namespace) -> None:
    command = shell_command(settings)
    os.execv(command[0], command)


def print_model(settings: Settings, use_case: UseCase, status: str = registry.CHAMPION) -> None:
    with lakes.lake_of(settings).read_only() as con:
        row = con.execute(
            "SELECT model_version, objective, auc, mae, threshold, valid_start, valid_end, "
            "train_start, train_end FROM models.registry WHERE use_case = ? "
            "AND status = ?", [use_case.name, status]).fetchone()
    version, objective_name, auc, mae, threshold, valid_start, valid_end, t0, t1 = row
    window = f"trained on {t0}..{t1}, " if t0 else "brought by the user, "
    quality = (f"held-out AUC {auc:.3f}, threshold {threshold:.2f}" if auc is not None
               else f"held-out MAE {mae:.3f}" if mae is not None else "no held-out metric")
    print(f"{status} {use_case.name} model {version} ({objective_name}, {window}validated on "
          f"{valid_start}..{valid_end}): {quality}")


def realised_quality(settings: Settings, use_case: UseCase) -> str | None:
    """The champion's quality on the rows scored after its validation window."""
    spec = use_case.spec
    output = "score" if spec.is_binary else "prediction"
    with lakes.lake_of(settings).read_only() as con:
        rows = con.execute(
            f'SELECT p.{output}, f."{spec.label_column}" AS outcome '
            f"FROM {use_case.predictions_table} p JOIN {use_case.features_table} f "
            f'USING ("{spec.id_column}") WHERE f."{spec.label_column}" IS NOT NULL '
            "AND p.partition_date > (SELECT valid_end FROM models.registry "
            "WHERE use_case = ? AND status = 'champion')", [use_case.name]).pl()
    if rows.height == 0:
        return None
    if spec.is_binary:
        auc = rows.select(auc_expr("score", "outcome")).item()
        return None if auc is None else f"realised AUC {auc:.3f} on {rows.height} rows"
    mae = rows.select((pl.col("prediction") - pl.col("outcome")).abs().mean()).item()
    return f"realised MAE {mae:.3f} on {rows.height} rows"


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"data directory: {settings.data_dir}")
    chosen = ([chosen_use_case(settings, args)] if getattr(args, "use_case", None)
              else declared_use_cases())
    for use_case in chosen:
        if use_case.lander is None or use_case.demo_score is None:
            print(f"{use_case.name}: no lander or demo window declared, skipped")
            continue
        first, last = use_case.partitions.start, use_case.partitions.last_day()
        print(f"{use_case.name}: landed {first}..{last}: "
              f"{land_days(settings, use_case, first, last)}")
        run_job(settings, use_case.job_name("features"), first, last, verbose=args.verbose)
        run_job(settings, use_case.job_name("train"), verbose=args.verbose)
        run_job(settings, use_case.job_name("predict"), *use_case.demo_score,
                verbose=args.verbose)
    elapsed = time.perf_counter() - started
    print()
    print(f"batch_platform demo: done in {elapsed:.0f}s")
    with lakes.lake_of(settings).read_only() as con:
        for use_case in chosen:
            if use_case.demo_score is None:
                continue
            features_days, features_rows = con.execute(
                f"SELECT count(DISTINCT partition_date), count(*) FROM "
                f"{use_case.features_table}").fetchone()
            rejected = sum(con.execute(
                f"SELECT count(*) FROM {use_case.quarantine_table(source)}").fetchone()[0]
                for source in use_case.sources)
            print(f"{use_case.name} ({use_case.spec.objective}):")
            print(f"  features:     {features_days} partitions, {features_rows} rows")
            print(f"  {scored_summary(settings, use_case, *use_case.demo_score)}")
            print(f"  rejected:     {rejected} input row(s) in quarantine")
            print("  ", end="")
            print_model(settings, use_case)
            quality = realised_quality(settings, use_case)
            if quality:
                print(f"  after the validation window: {quality}")
    shown = [use_case for use_case in chosen if use_case.demo_score is not None]
    print()
    print("Query the results (read-only, while runs keep writing):")
    print("  .venv/bin/batch-platform shell")
    if shown:
        print(f"  .venv/bin/batch-platform sql \"{example_query(shown[0])}\"")


def example_query(use_case: UseCase) -> str:
    """A first look at a use case's daily report, by its first segment: the mean output and
    the realised quality the promotion gate judges (AUC, MAE, ...) of each day."""
    kind = objective(use_case.spec.objective)
    mean, metric = f"mean_{kind.output}", kind.realised_metrics[0][0]
    segments = use_case.spec.segment_columns
    return (f"select partition_date, segment, rows, round({mean}, 3) as {mean}, "
            f"round({metric}, 3) as {metric} from {use_case.report_table} "
            f"where segment_type = '{segments[0] if segments else ALL_SEGMENT}' "
            "order by all limit 6")


def cmd_snapshots(settings: Settings, args: argparse.Namespace) -> None:
    """The lake's latest snapshots: which run committed what (time travel targets)."""
    with lakes.lake_of(settings).read_only() as con:
        shown = lakes.snapshots(con)[-args.last:]
    for snapshot in shown:
        print(f"{snapshot['snapshot_id']:>6}  {snapshot['snapshot_time']:%Y-%m-%d %H:%M:%S}  "
              f"{snapshot['message'] or '(schema change)'}")


def cmd_maintain(settings: Settings, args: argparse.Namespace) -> None:
    retention = dt.timedelta(days=settings.lake_retention_days)
    counts = lakes.lake_of(settings).maintain(retention)
    print(f"lake maintained (retention {settings.lake_retention_days:g} days): "
          + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items()))


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    print(migrate(settings.data_dir, lakes.lake_of(settings, migrating=True)))


def cmd_ui(settings: Settings, args: argparse.Namespace) -> None:
    root = Path(__file__).resolve().parent.parent
    workspace = root / "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-h", args.host, "-p", str(args.port)]
    if workspace.exists():
        command += ["-w", str(workspace)]
    else:
        command += ["-m", "batch_platform.definitions"]
    print(f"Dagster UI on http://{args.host}:{args.port} (instance {settings.dagster_home})")
    os.execv(command[0], command)


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2013-10-15") from None


def build_parser() -> argparse.ArgumentParser:
    # --verbose before or after the command: every subcommand has it too, without a default
    # that would undo the one given before the command.
    verbose_help = "Dagster's whole log while a run goes, and tracebacks on errors"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=verbose_help)
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    subparsers = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        # The same line heads the command's own --help.
        return subparsers.add_parser(name, help=help, description=help, parents=[common])

    def use_case(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--use-case", help="a declared use case (batch-platform use-cases); "
                         "default: BATCH_PLATFORM_USE_CASE, else the first declared")

    def days(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--date", type=_day, help="one day, e.g. 2013-10-15")
        sub.add_argument("--from", dest="start", type=_day, help="first day of a range")
        sub.add_argument("--to", dest="end", type=_day, help="last day of a range")

    listing = command("use-cases", help="the declared use cases: where each is declared, its "
                      "objective, partitions, sources, tables and jobs")
    listing.set_defaults(handler=cmd_use_cases)

    land = command(
        "land", help="lay a use case's demo landing files for a day or range (default: all)")
    use_case(land)
    days(land)
    land.set_defaults(handler=cmd_land)

    train = command(
        "train", help="build the features of the windows, train and register the champion")
    use_case(train)
    train.add_argument("--train-from", type=_day, help="default: the declaration's")
    train.add_argument("--train-to", type=_day, help="default: the declaration's")
    train.add_argument("--valid-from", type=_day, help="default: the declaration's")
    train.add_argument("--valid-to", type=_day, help="default: the declaration's")
    train.add_argument("--model-file", help="a LightGBM text model to register instead")
    train.add_argument("--rounds", type=int, help="boosting rounds; default: the declaration's")
    train.add_argument("--challenger", action="store_true",
                       help="register the model as the challenger, beside the champion, which "
                       "stays champion until a promotion (batch-platform models promote)")
    train.set_defaults(handler=cmd_train)

    models = command(
        "models", help="with no action, list every model version: status, windows, metrics "
        "and shadow record; promote a challenger through the gate, or roll back")
    use_case(models)
    models.set_defaults(handler=cmd_models, action=None)
    # --use-case after the action too, without a default that would undo one given before it.
    after = argparse.ArgumentParser(add_help=False, parents=[common])
    after.add_argument("--use-case", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = models.add_subparsers(dest="action")
    promote = actions.add_parser(
        "promote", parents=[after], help="make the challenger champion if the gate allows it",
        description="make the challenger champion if the gate allows it")
    promote.add_argument("version", help="the challenger's model version")
    promote.add_argument("--reason", required=True, help="why: recorded in models.promotions")
    promote.add_argument("--force", action="store_true",
                         help="promote even if the gate refuses; the verdict is recorded too")
    rollback = actions.add_parser(
        "rollback", parents=[after], help="make the previous champion champion again",
        description="make the previous champion champion again")
    rollback.add_argument("--reason", required=True, help="why: recorded in models.promotions")

    score = command("score", help="raw to reports for days, as one run")
    use_case(score)
    days(score)
    score.set_defaults(handler=cmd_score)

    sql = command("sql", help="a read-only query on the warehouse (the lake)")
    sql.add_argument("query", help="DuckDB SQL on the lake's tables, e.g. "
                     "\"select * from reports.<use case>_daily limit 5\"")
    sql.add_argument("--max-rows", type=int, default=40,
                     help="rows printed at most (default: 40)")
    sql.set_defaults(handler=cmd_sql)

    shell = command(
        "shell", help="an interactive DuckDB session on the warehouse (the lake), read-only")
    shell.set_defaults(handler=cmd_shell)

    history = command(
        "snapshots", help="the lake's latest snapshots and the run that committed each")
    history.add_argument("--last", type=int, default=20,
                         help="how many of the latest snapshots (default: 20)")
    history.set_defaults(handler=cmd_snapshots)

    maintain = command(
        "maintain", help="merge small files, expire snapshots older than "
        "BATCH_PLATFORM_LAKE_RETENTION_DAYS, delete files no snapshot reads")
    maintain.set_defaults(handler=cmd_maintain)

    migration = command(
        "migrate", help="import a data directory of the previous storage (pipeline.duckdb) "
        "into the lake, once")
    migration.set_defaults(handler=cmd_migrate)

    demo = command(
        "demo", help="for every use case: land, build features, train and score its demo days")
    demo.add_argument("--use-case", help="only this declared use case (batch-platform "
                      "use-cases); default: every declared one")
    demo.set_defaults(handler=cmd_demo)

    ui = command("ui", help="start the Dagster UI on the persistent instance")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=3000, help="port (default: 3000)")
    ui.set_defaults(handler=cmd_ui)
    return parser


# Failures a person can act on: one line on standard error, the traceback only with --verbose.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CliError, SettingsError, FileNotFoundError, ValueError, ConnectionError, PermissionError,
    UnwritableDirectoryError,
    lakes.PreviousStorageError, lakes.MissingExtensionError, lakes.LakeUnavailableError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        prepare_instance(settings)
        args.handler(settings, args)
    except KeyboardInterrupt:
        print("batch-platform: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the one place every error becomes one line
        if args.verbose:
            if isinstance(err, RunFailed):
                print(err.details(), file=sys.stderr)
            else:
                traceback.print_exc(file=sys.stderr)
        print(f"batch-platform: {one_line(err)}", file=sys.stderr)
        return 1
    return 0


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, EXPECTED_ERRORS):
        return text
    return f"unexpected {type(err).__name__}: {text} (--verbose shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
