"""The batch-platform command: land, train, score, sql, shell, demo and ui.

Runs go through the persistent Dagster instance under the data directory, so everything done
here also shows in the UI's run history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from batch_platform.platform.ingest import landing
from batch_platform.platform.models.booster import auc_expr
from batch_platform.platform.storage.warehouse import exclusive_lock, read_only
from batch_platform.settings import Settings, SettingsError

FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 12, 31)
DEMO_SCORED_FROM = dt.date(2013, 9, 1)
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
# turns on the warehouse lock; more would only compete for the cores).
concurrency:
  runs:
    max_concurrent_runs: 4
"""


class CliError(Exception):
    """A failure the user can act on; printed without a traceback."""


def prepare_instance(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the data directory's instance, creating it once.

    Runs started at the same time on a new instance would each create its SQLite storage and
    stamp its schema version: two stamps make every later run fail ("alembic_version has more
    than one head"). So the first caller creates the storage under a lock, and marks it done.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)  # the instance's dagster.yaml reads it
    config = home / "dagster.yaml"
    created = home / ".storage-created"
    if not created.exists():
        with exclusive_lock(home / ".create.lock", settings.lock_timeout_seconds,
                            "create the Dagster instance"):
            if not config.exists():
                landing.write_bytes_atomic(config, INSTANCE_YAML.encode())
            if not created.exists():
                from dagster import DagsterInstance

                with DagsterInstance.from_config(str(home)):
                    pass  # opening it creates and stamps the storage
                landing.write_bytes_atomic(created, b"")
    # Dagster's code servers are subprocesses: hand them the same, absolute, data directory.
    os.environ["BATCH_PLATFORM_DATA_DIR"] = str(settings.data_dir)
    return home


def date_range(args: argparse.Namespace, default_all: bool) -> tuple[dt.date, dt.date]:
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if getattr(args, "date", None):
        if start or end:
            raise CliError("give either --date or --from/--to, not both")
        start = end = args.date
    if start is None and end is None:
        if default_all:
            return FIRST_DAY, LAST_DAY
        raise CliError("give --date DAY or --from DAY --to DAY")
    if start is None or end is None:
        raise CliError("--from and --to go together")
    if end < start:
        raise CliError(f"--to {end} is before --from {start}")
    if start < FIRST_DAY or end > LAST_DAY:
        raise CliError(f"days must be within the partitions {FIRST_DAY}..{LAST_DAY}")
    return start, end


def run_job(settings: Settings, job_name: str, start: dt.date | None = None,
            end: dt.date | None = None, run_config: dict | None = None) -> str:
    """Execute a job of the project's definitions in this process against the instance."""
    from dagster import DagsterInstance

    from batch_platform.definitions import build_definitions
    from batch_platform.orchestration.jobs import partition_range_tags, run_failure_messages

    tags = {}
    if start is not None and end is not None:
        tags = partition_range_tags(start.isoformat(), end.isoformat())
    what = f"{job_name} {start}..{end}" if start else job_name
    print(f"→ {what}", flush=True)
    started = time.perf_counter()
    with DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(job_name)
        result = job.execute_in_process(
            instance=instance, tags=tags, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}}
            | (run_config or {}))
    if not result.success:
        detail = "\n".join(f"  {message}" for message in run_failure_messages(result))
        detail = detail or "  see the run in the UI"
        raise CliError(f"run {result.run_id} of {what} failed:\n{detail}")
    print(f"  done in {time.perf_counter() - started:.1f}s (run {result.run_id})", flush=True)
    return result.run_id


def cmd_land(settings: Settings, args: argparse.Namespace) -> None:
    start, end = date_range(args, default_all=True)
    summary = landing.land(settings.landing_dir, landing.days_between(start, end))
    print(f"landed {start}..{end} into {settings.landing_dir}: {summary.files_written} file(s) "
          f"written, {summary.files_unchanged} unchanged, {summary.rows} daily rows")


def cmd_train(settings: Settings, args: argparse.Namespace) -> None:
    from batch_platform.orchestration.assets import ModelConfig

    config = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in {
        "train_start": args.train_from, "train_end": args.train_to,
        "valid_start": args.valid_from, "valid_end": args.valid_to,
        "model_file": str(Path(args.model_file).resolve()) if args.model_file else None,
    }.items() if v is not None}
    windows = ModelConfig(**config)
    # The features of both windows, built (or rebuilt, idempotently) from the landing files.
    first = windows.window("valid")[0] if args.model_file else windows.window("train")[0]
    run_job(settings, "flights_features", first, windows.window("valid")[1])
    run_job(settings, "flights_train", run_config={"ops": {"models__flights": {"config": config}}})
    print_model(settings)


def cmd_score(settings: Settings, args: argparse.Namespace) -> None:
    start, end = date_range(args, default_all=False)
    run_job(settings, "flights_daily", start, end)
    with read_only(settings.warehouse_path) as con:
        rows = con.execute(
            "SELECT count(*), avg(score), avg(label::INT) FROM predictions.flights "
            "WHERE partition_date BETWEEN ? AND ?", [start, end]).fetchone()
    print(f"scored {rows[0]} flights from {start} to {end}: mean score {rows[1]:.3f}, "
          f"predicted late {rows[2]:.1%}")


def cmd_sql(settings: Settings, args: argparse.Namespace) -> None:
    import duckdb

    with read_only(settings.warehouse_path) as con:
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
    """The analysts' interactive session: the published snapshot, read-only, in safe mode.

    ``-readonly`` alone still lets a session ATTACH the pipeline's database read-write (locking
    every run out) or COPY over the warehouse file; ``-safe`` shuts the file system off, as
    ``sql`` does, and locks the configuration so it cannot be switched back on.
    """
    if not settings.warehouse_path.exists():
        raise CliError(f"no warehouse at {settings.warehouse_path}: run `make demo` or "
                       "materialize a partition")
    return [str(duckdb_cli_binary()), "-safe", "-readonly", str(settings.warehouse_path)]


def cmd_shell(settings: Settings, args: argparse.Namespace) -> None:
    command = shell_command(settings)
    os.execv(command[0], command)


def print_model(settings: Settings) -> None:
    with read_only(settings.warehouse_path) as con:
        row = con.execute(
            "SELECT model_version, source, auc, threshold, valid_start, valid_end, train_start, "
            "train_end FROM models.registry WHERE use_case = 'flights' AND status = 'champion'"
        ).fetchone()
    auc = f"{row[2]:.3f}" if row[2] is not None else "n/a"
    window = f"trained on {row[6]}..{row[7]}, " if row[6] else "brought by the user, "
    print(f"champion model {row[0]} ({window}validated on {row[4]}..{row[5]}): "
          f"held-out AUC {auc}, threshold {row[3]:.2f}")


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"data directory: {settings.data_dir}")
    summary = landing.land(settings.landing_dir, landing.days_between(FIRST_DAY, LAST_DAY))
    print(f"landed {FIRST_DAY}..{LAST_DAY}: {summary.files_written} file(s) written, "
          f"{summary.files_unchanged} unchanged")
    run_job(settings, "flights_features", FIRST_DAY, LAST_DAY)
    run_job(settings, "flights_train")
    run_job(settings, "flights_predict", DEMO_SCORED_FROM, LAST_DAY)
    elapsed = time.perf_counter() - started
    with read_only(settings.warehouse_path) as con:
        features_days, features_rows = con.execute(
            "SELECT count(DISTINCT partition_date), count(*) FROM features.flights").fetchone()
        scored_days, scored_rows = con.execute(
            "SELECT count(DISTINCT partition_date), count(*) FROM predictions.flights").fetchone()
        rejected = sum(con.execute(f"SELECT count(*) FROM quarantine.{source}").fetchone()[0]
                       for source in landing.DAILY_SOURCES)
        after_validation = con.execute(
            "SELECT p.score, f.arrived_late FROM predictions.flights p "
            "JOIN features.flights f USING (flight_id) WHERE f.arrived_late IS NOT NULL "
            "AND p.partition_date > "
            "(SELECT valid_end FROM models.registry WHERE use_case = 'flights' "
            "AND status = 'champion')").pl()
    realised = after_validation.select(auc_expr("score", "arrived_late")).item()
    print()
    print(f"batch_platform demo: done in {elapsed:.0f}s")
    print(f"  features:     {features_days} partitions, {features_rows} flights")
    print(f"  predictions:  {scored_days} partitions ({DEMO_SCORED_FROM}..{LAST_DAY}), "
          f"{scored_rows} flights scored")
    print(f"  rejected:     {rejected} input row(s) in quarantine")
    print("  ", end="")
    print_model(settings)
    if realised is not None:
        print(f"  realised AUC on the {after_validation.height} flights with an outcome "
              f"scored after the validation window: {realised:.3f}")
    print(f"  warehouse:    {settings.warehouse_path}")
    shown = settings.warehouse_path
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    print(f"  try:          .venv/bin/duckdb -readonly {shown} "
          "\"SELECT partition_date, segment, flights, "
          "round(mean_score, 3) AS mean_score, round(realised_late_rate, 3) AS late_rate "
          "FROM reports.flights_daily WHERE segment_type = 'origin' ORDER BY ALL LIMIT 9\"")


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
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def days(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--date", type=_day, help="one day, e.g. 2013-10-15")
        sub.add_argument("--from", dest="start", type=_day, help="first day of a range")
        sub.add_argument("--to", dest="end", type=_day, help="last day of a range")

    land = commands.add_parser("land", help="lay landing files for a day or range (default: 2013)")
    days(land)
    land.set_defaults(handler=cmd_land)

    train = commands.add_parser(
        "train", help="build the features of the windows, train and register the champion")
    train.add_argument("--train-from", type=_day, help="default 2013-01-01")
    train.add_argument("--train-to", type=_day, help="default 2013-08-31")
    train.add_argument("--valid-from", type=_day, help="default 2013-09-01")
    train.add_argument("--valid-to", type=_day, help="default 2013-09-30")
    train.add_argument("--model-file", help="a LightGBM text model to register instead")
    train.set_defaults(handler=cmd_train)

    score = commands.add_parser("score", help="raw to reports for days, as one run")
    days(score)
    score.set_defaults(handler=cmd_score)

    sql = commands.add_parser("sql", help="a read-only query on the published warehouse")
    sql.add_argument("query")
    sql.add_argument("--max-rows", type=int, default=40)
    sql.set_defaults(handler=cmd_sql)

    shell = commands.add_parser(
        "shell", help="an interactive DuckDB session on the published warehouse, read-only")
    shell.set_defaults(handler=cmd_shell)

    demo = commands.add_parser("demo", help="land, build features, train and score the year")
    demo.set_defaults(handler=cmd_demo)

    ui = commands.add_parser("ui", help="start the Dagster UI on the persistent instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        prepare_instance(settings)
        args.handler(settings, args)
    except (CliError, SettingsError, FileNotFoundError, ValueError) as err:
        print(f"batch-platform: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
