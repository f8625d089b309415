"""The batch-platform command against the session's data directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from batch_platform import cli
from batch_platform.orchestration.instance_storage import ReusedConnectionEventLogStorage
from batch_platform.platform.storage.lake import lake_of
from batch_platform_tests.conftest import Platform


@pytest.fixture
def cli_env(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(platform.settings.dagster_home))
    return platform


def test_sql_answers_read_only_queries(cli_env: Platform, capsys) -> None:
    assert cli.main(["sql", "SELECT count(*) AS scored FROM predictions.flights"]) == 0
    expected = cli_env.query("SELECT count(*) FROM predictions.flights").item()
    assert str(expected) in capsys.readouterr().out


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


def test_the_readme_dagster_command_materializes_a_range(cli_env: Platform) -> None:
    """`dagster asset materialize` as the README shows it, from the project's root."""
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
