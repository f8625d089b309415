"""The batch-platform command against the session's data directory."""

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from batch_platform import catalog, cli
from batch_platform.orchestration.instance_storage import ReusedConnectionEventLogStorage
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import Platform


@pytest.fixture
def cli_env(own_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The command on a copy of the prepared slice: some of these runs change it."""
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(own_platform.settings.data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(own_platform.settings.dagster_home))
    return own_platform


def test_sql_answers_read_only_queries(cli_env: Platform, capsys) -> None:
    assert cli.main(["sql", "SELECT count(*) AS scored FROM predictions.flights"]) == 0
    expected = cli_env.query("SELECT count(*) FROM predictions.flights").item()
    assert str(expected) in capsys.readouterr().out


def test_the_demos_example_query_answers_on_the_lake(cli_env: Platform, capsys) -> None:
    """The query the demo's closing lines give analysts, derived from the use case."""
    [flights] = [d.use_case for d in catalog.load()[1] if d.use_case.name == "flights"]
    query = cli.example_query(flights)
    assert "from reports.flights_daily where segment_type = 'carrier'" in query
    assert cli.main(["sql", query]) == 0
    shown = capsys.readouterr().out
    carriers = cli_env.query("SELECT DISTINCT segment FROM reports.flights_daily WHERE "
                             "segment_type = 'carrier'")["segment"].to_list()
    assert "mean_score" in shown and "auc" in shown
    assert any(f" {carrier} " in shown for carrier in carriers)


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("DELETE FROM predictions.flights", "read-only"),
        ("ATTACH '{elsewhere}' AS p (READ_WRITE); CREATE TABLE p.t AS SELECT 1",
         "disabled"),
        ("COPY (SELECT 1 AS x) TO '{catalog}' (FORMAT csv)", "disabled"),
        ("SET enable_external_access = true", "configuration"),
    ],
)
def test_sql_cannot_change_the_warehouse(cli_env: Platform, capsys, statement: str,
                                         refusal: str) -> None:
    settings = cli_env.settings
    before = cli_env.query("SELECT count(*) FROM predictions.flights").item()
    query = statement.format(elsewhere=settings.data_dir / "elsewhere.duckdb",
                             catalog=lake_of(settings).sqlite_path)
    assert cli.main(["sql", query]) == 1
    assert refusal in capsys.readouterr().err
    assert cli_env.query("SELECT count(*) FROM predictions.flights").item() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score"], "give --date DAY or --from DAY --to DAY"),
        (["score", "--from", "2013-01-05"], "--from and --to go together"),
        (["score", "--from", "2013-01-05", "--to", "2013-01-01"], "is before --from"),
        (["score", "--date", "2014-02-01"], "within the partitions"),
    ],
)
def test_score_refuses_bad_days(cli_env: Platform, capsys, argv: list[str], message: str) -> None:
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err


def test_an_invalid_setting_names_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BATCH_PLATFORM_MAX_REJECT_FRACTION", "2")
    assert cli.main(["land", "--date", "2013-01-01"]) == 1
    assert "BATCH_PLATFORM_MAX_REJECT_FRACTION='2'" in capsys.readouterr().err.replace("2.0", "'2'")


def test_score_a_day_through_the_command(cli_env: Platform, capsys) -> None:
    assert cli.main(["score", "--date", "2013-01-20"]) == 0
    out = capsys.readouterr().out
    expected = cli_env.query("SELECT count(*) FROM predictions.flights "
                             "WHERE partition_date = DATE '2013-01-20'").item()
    assert f"scored {expected} rows of flights from 2013-01-20 to 2013-01-20" in out


@pytest.mark.slow
def test_the_documented_dagster_command_materializes_a_range(cli_env: Platform) -> None:
    """`dagster asset materialize` of a use case's flow over a range, as docs/operators.md
    shows it, from the project's root (two days of the slice, 2013-01-18...2013-01-19)."""
    root = Path(__file__).resolve().parent.parent
    dagster = Path(sys.executable).with_name("dagster")
    env = os.environ | {"BATCH_PLATFORM_DATA_DIR": str(cli_env.settings.data_dir),
                        "DAGSTER_HOME": str(cli_env.settings.dagster_home)}
    cli.prepare_instance(cli_env.settings)
    result = subprocess.run(
        [str(dagster), "asset", "materialize", "--select", "tag:flow=flights",
         "--partition-range", "2013-01-18...2013-01-19", "-m", "batch_platform.definitions"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = cli_env.query("SELECT DISTINCT run_id FROM predictions.flights "
                         "WHERE partition_date BETWEEN DATE '2013-01-18' AND DATE '2013-01-19'")
    assert runs.height == 1
    assert runs.item() in result.stderr + result.stdout


@pytest.mark.slow
def test_land_train_score_on_a_fresh_data_directory(tmp_path: Path, monkeypatch,
                                                    capsys) -> None:
    """The daily flow from nothing, with the project's command only."""
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["land", "--from", "2013-02-01", "--to", "2013-02-10"]) == 0
    assert cli.main(["train", "--train-from", "2013-02-01", "--train-to", "2013-02-07",
                     "--valid-from", "2013-02-08", "--valid-to", "2013-02-10"]) == 0
    assert cli.main(["score", "--date", "2013-02-10"]) == 0
    out = capsys.readouterr().out
    assert "champion flights model" in out
    landed = len((tmp_path / "data/landing/flights/2013-02-10.csv").read_text().splitlines()) - 1
    assert f"scored {landed} rows of flights from 2013-02-10 to 2013-02-10" in out
    assert (tmp_path / "data/dagster/dagster.yaml").is_file()
    # The run went through the instance's storage with reused connections, day by day.
    with DagsterInstance.from_config(str(tmp_path / "data/dagster")) as instance:
        assert isinstance(instance.event_log_storage, ReusedConnectionEventLogStorage)
        assert instance.get_materialized_partitions(AssetKey(["predictions", "flights"])) == {
            "2013-02-10"}
    # Progress: each step's end, and the stages' own counts with rows/s (not a terminal here).
    assert "  raw__flights: done in" in out and "1/1 files validated" in out
    assert "rows/s" in out

    # A run that fails: one line on standard error naming the file and the partition.
    weather = tmp_path / "data/landing/weather/2013-02-10.csv"
    kept = weather.read_bytes()
    weather.unlink()
    assert cli.main(["score", "--date", "2013-02-10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"batch-platform: weather landing file {weather} "
                          "(partition 2013-02-10) is missing (run ")
    assert "Traceback" not in err
    # --verbose: every failed step's traceback first, the same line last.
    assert cli.main(["score", "--date", "2013-02-10", "--verbose"]) == 1
    verbose = capsys.readouterr().err
    assert "Stack Trace:" in verbose and "raw__weather:" in verbose
    assert verbose.splitlines()[-1].startswith(err.split(" (run ")[0])
    weather.write_bytes(kept)


def test_a_refused_model_file_is_one_line_before_any_run(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    model = tmp_path / "model.txt"
    model.write_text("tree\nversion=v4\nobjective=multiclass num_class:3\nend of trees\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--model-file", "model.txt"]) == 1  # relative to where it is typed
    captured = capsys.readouterr()
    assert captured.out == ""  # no run started
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"batch-platform: model {model}") or \
        captured.err.startswith(f"batch-platform: model file {model}")
    with DagsterInstance.from_config(str(tmp_path / "data/dagster")) as instance:
        assert instance.get_runs() == []


def subcommands(parser: argparse.ArgumentParser, prefix: str = ""
                ) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its path, e.g. ``models promote``."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found |= subcommands(sub, f"{prefix}{name} ")
    return found


def test_help_describes_every_command_and_option() -> None:
    """Each command's --help starts with what it does, and every option and argument says
    what it is (and its default, where it has one)."""
    commands = subcommands(cli.build_parser())
    assert {"demo", "sql", "snapshots", "ui", "models", "models promote"} <= set(commands)
    for path, sub in commands.items():
        assert sub.description, f"{path} --help has no summary"
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(
                    action, argparse._SubParsersAction):
                continue
            assert action.help, f"{path}: {action.dest} has no help"
            if action.default not in (None, False, argparse.SUPPRESS):
                assert f"default: {action.default}" in action.help, (path, action.dest)
    assert "every declared one" in commands["demo"].format_help()
    assert "with no action, list every model version" in commands["models"].format_help()


def test_an_unexpected_error_is_one_line_and_the_traceback_needs_verbose(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    def broken(*_: object) -> None:
        raise RuntimeError("the disk said\nno")

    monkeypatch.setattr(cli, "cmd_use_cases", broken)
    assert cli.main(["use-cases"]) == 1
    assert capsys.readouterr().err == ("batch-platform: unexpected RuntimeError: the disk said "
                                       "no (--verbose shows the traceback)\n")
    assert cli.main(["--verbose", "use-cases"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_rewrites_one_status_line_on_a_terminal_and_prints_lines_otherwise(
        terminal: bool) -> None:
    import io

    import dagster as dg

    from batch_platform.orchestration.progress import RunProgress, progress_logger

    @dg.asset
    def first(context: dg.AssetExecutionContext) -> None:
        context.log.info("first: 3/3 files validated, 30 rows, 10 rows/s")

    @dg.asset(deps=[first])
    def second(context: dg.AssetExecutionContext) -> None:
        context.log.warning("something to know")

    stream = io.StringIO()
    progress = RunProgress(stream, terminal, steps=2, partitions=0)
    job = dg.Definitions(assets=[first, second], jobs=[dg.define_asset_job("both")]
                         ).resolve_job_def("both").with_logger_defs(
        {"progress": progress_logger(progress)})
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance,
                                      run_config={"loggers": {"progress": {}}}).success
    progress.clear()
    out = stream.getvalue()
    lines = [line for line in out.replace("\r\x1b[K", "\n").split("\n") if line]
    assert "  first: done in" in out and "  second: done in" in out
    assert "  warning: second: something to know" in lines
    assert "  [0/2] first: first: 3/3 files validated, 30 rows, 10 rows/s" in lines
    if terminal:
        assert "  [0/2] first: started" in lines and "  [1/2] second: started" in lines
        assert out.endswith("\r\x1b[K") or out.endswith("\n")
    else:
        assert "\r" not in out and "started" not in out


def test_a_data_directory_without_room_is_refused_before_any_work(tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    in_a_file = tmp_path / "a-file"
    in_a_file.write_text("")
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(in_a_file / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["score", "--date", "2013-01-20"]) == 1
    assert capsys.readouterr().err == (
        f"batch-platform: data directory {in_a_file}/data cannot be written (Not a directory): "
        "point BATCH_PLATFORM_DATA_DIR at a writable directory with room (or lower "
        "BATCH_PLATFORM_MIN_FREE_DISK_MB)\n")


def test_a_run_whose_data_directory_fills_up_fails_its_steps_before_they_write(
        cli_env: Platform) -> None:
    """A run started elsewhere (the UI, a sensor): every step checks the directory first."""
    from batch_platform_tests.conftest import failure_messages

    before = cli_env.query("SELECT count(*), max(scored_at) FROM predictions.flights").row(0)
    full = cli_env.settings.with_overrides(min_free_disk_mb=1e12)
    result = cli_env.run("flights_daily", dt.date(2013, 1, 20), settings=full,
                         raise_on_error=False)
    assert not result.success
    assert "MB free, below the 1,000,000,000,000 MB a run needs to start" in \
        failure_messages(result)
    assert cli_env.query("SELECT count(*), max(scored_at) FROM predictions.flights").row(0) == \
        before
