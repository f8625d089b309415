"""Security: servers on 127.0.0.1, no pickle, models only from where they belong, SQL values as
values, and an analysts' shell that cannot change anything.

A test that plants a file, edits the registry or runs anything does it on its own copy of the
platform (``own_platform``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from batch_platform import cli
from batch_platform.definitions import build_definitions
from batch_platform.orchestration.jobs import partition_range_tags
from batch_platform.platform.ingest import landing
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models import registry
from batch_platform.platform.storage.lake import extension_file, lake_of
from batch_platform.platform.storage.warehouse import MissingDataError
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.conftest import Platform, failure_messages, seal
from batch_platform_tests.flights import FLIGHTS

PACKAGE = Path(cli.__file__).resolve().parent
DAY = dt.date(2013, 1, 19)
INJECTION = "2013-01-19' OR TRUE; DROP TABLE raw.flights; --"


def table_counts(platform: Platform) -> dict[str, int]:
    tables = ("raw.flights", "quarantine.flights", "raw.weather", "features.flights",
              "predictions.flights", "reports.flights_daily", "models.registry")
    return {t: platform.query(f"SELECT count(*) FROM {t}").item() for t in tables}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- servers -------------------------------------------------------------------------------

def test_the_ui_host_is_localhost_unless_the_user_says_otherwise(monkeypatch, tmp_path: Path
                                                                  ) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(argv))
    settings = Settings(data_dir=tmp_path).validated()
    for argv in (["ui"], ["ui", "--host", "0.0.0.0"]):
        cli.cmd_ui(settings, cli.build_parser().parse_args(argv))
    assert started[0][started[0].index("-h") + 1] == "127.0.0.1"
    assert started[1][started[1].index("-h") + 1] == "0.0.0.0"


# --- models ------------------------------------------------------------------------------

def test_nothing_in_the_package_can_unpickle() -> None:
    unpicklers = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|joblib|cloudpickle|dill)\b"
                            r"|pickle\.loads?\(|model_file\s*=", re.MULTILINE)
    # The compiled scorer hands lleaves the path of the registered model, whose content hash
    # was checked when it was loaded (LoadedModel.path): lleaves parses LightGBM's text too.
    allowed = "lleaves.Model(model_file=str(model_path))"
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if unpicklers.search(path.read_text().replace(allowed, ""))]
    assert offenders == []
    # The one way a model is built from bytes: LightGBM's own text, already read and checked.
    booster_module = PACKAGE / "platform" / "models" / "booster.py"
    loads = re.findall(r"lgb\.Booster\(([^)]*)\)", booster_module.read_text())
    assert loads == ["model_str=text"]


def test_a_model_linked_into_the_model_directory_from_elsewhere_is_refused(
    own_platform: Platform, tmp_path: Path
) -> None:
    settings = own_platform.settings
    record = own_platform.query("SELECT model_version, model_path, threshold FROM models.registry "
                                "WHERE status = 'champion'").row(0, named=True)
    outside = tmp_path / "outside.txt"
    shutil.copyfile(settings.data_dir / record["model_path"], outside)
    linked = settings.models_dir / "flights" / "linked.txt"
    linked.symlink_to(outside)
    with pytest.raises(model_core.ModelError, match="outside the model directory"):
        model_core.load_registered(settings.data_dir, settings.models_dir,
                                   str(linked.relative_to(settings.data_dir)),
                                   record["model_version"], record["threshold"], FLIGHTS)


def test_a_registry_row_pointing_outside_the_model_directory_is_not_loaded(
    own_platform: Platform
) -> None:
    """Even an intact copy of the champion is refused when the registry names a path outside."""
    settings = own_platform.settings
    record = own_platform.query("SELECT model_version, model_path FROM models.registry "
                                "WHERE status = 'champion'").row(0, named=True)
    outside = settings.data_dir / "outside.txt"
    shutil.copyfile(settings.data_dir / record["model_path"], outside)
    warehouse = build_definitions(settings).resources["warehouse"]

    def point_at(path: str):
        return lambda con: con.execute(
            "UPDATE models.registry SET model_path = ? WHERE model_version = ?",
            [path, record["model_version"]])

    warehouse.commit(point_at("outside.txt"), "point the registry outside", {})
    result = own_platform.run("flights_predict", DAY, raise_on_error=False)
    assert not result.success
    assert (f"registered model path {outside} is outside the model directory "
            f"{settings.models_dir}") in failure_messages(result)


# --- SQL values ----------------------------------------------------------------------------

def test_an_injected_partition_key_is_refused_and_changes_nothing(own_platform: Platform) -> None:
    before = table_counts(own_platform)
    job = build_definitions(own_platform.settings).resolve_job_def("flights_daily")
    try:
        result = job.execute_in_process(instance=own_platform.instance, raise_on_error=False,
                                        tags=partition_range_tags(INJECTION, INJECTION))
    except (dg.DagsterError, ValueError) as err:  # refused before the run started
        message = str(err)
    else:
        assert not result.success
        message = failure_messages(result)
    assert "OR TRUE; DROP TABLE raw.flights" in message  # the error shows the key it refused
    assert table_counts(own_platform) == before


def test_the_cli_refuses_a_date_that_is_not_a_date(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["score", "--date", INJECTION])
    assert "is not a date like 2013-10-15" in capsys.readouterr().err


def test_versions_and_use_cases_are_values_not_sql(platform: Platform) -> None:
    with lake_of(platform.settings).read_only() as con:
        with pytest.raises(MissingDataError, match=r"is not in models\.registry"):
            registry.resolve(con, "flights", "0' OR '1'='1")
        with pytest.raises(MissingDataError, match="no champion model for use case"):
            registry.resolve(con, "flights' OR '1'='1", None)


def test_a_landing_path_full_of_sql_is_just_a_path(tmp_path: Path) -> None:
    """A data directory (so every landing file name) with quotes and SQL in it loads as data."""
    data_dir = tmp_path / "x'); DROP TABLE raw.flights; --" / 'd"ata'
    settings = Settings(data_dir=data_dir).validated()
    flights_landing.land(settings.landing_dir, [DAY], with_reference=False)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        raw = [defs.resolve_assets_def(dg.AssetKey(["raw", s])) for s in ("flights", "weather")]
        result = dg.materialize(raw, partition_key=DAY.isoformat(), instance=instance)
    assert result.success
    with lake_of(settings).read_only() as con:
        files = con.execute("SELECT DISTINCT _source_file FROM raw.flights").fetchall()
        rows = con.execute("SELECT count(*) FROM raw.flights").fetchone()[0]
    assert files == [(str(landing.landing_file(settings.landing_dir, "flights", DAY)),)]
    landed = landing.landing_file(settings.landing_dir, "flights", DAY).read_text()
    assert rows == len(landed.splitlines()) - 1


def test_a_column_name_full_of_sql_is_ignored_and_reported(own_platform: Platform) -> None:
    path = landing.landing_file(own_platform.settings.landing_dir, "flights", DAY)
    evil = "x INT); DROP TABLE raw.flights; --"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([f"{lines[0]},{evil}"] + [f"{line},1" for line in lines[1:]])
                    + "\n")
    seal(path)
    columns = own_platform.query("DESCRIBE raw.flights")["column_name"].to_list()
    rows = own_platform.query("SELECT count(*) FROM raw.flights WHERE partition_date = ?", [DAY])
    result = own_platform.run("flights_daily", DAY)
    metadata = result.asset_materializations_for_node("raw__flights")[0].metadata
    assert metadata["ignored_columns"].value == evil
    assert own_platform.query("DESCRIBE raw.flights")["column_name"].to_list() == columns
    assert own_platform.query("SELECT count(*) FROM raw.flights WHERE partition_date = ?",
                              [DAY]).equals(rows)


# --- the analysts' commands ----------------------------------------------------------------

SHELL_ATTEMPTS = [
    ("DELETE FROM predictions.flights;", "read-only"),
    ("ATTACH '{elsewhere}' AS p (READ_WRITE);", "disabled by configuration"),
    ("COPY (SELECT 1 AS x) TO '{catalog}' (FORMAT csv);", "disabled by configuration"),
    ("SET enable_external_access = true;", "the configuration has been locked"),
    ("SELECT * FROM read_csv('{landing}');", "disabled by configuration"),
    (".shell touch {landing}", "cannot be used in -safe mode"),
    (".output {catalog}", "cannot be used in -safe mode"),
    (".open {elsewhere}", "cannot be used in -safe mode"),
]


def test_the_analysts_shell_cannot_change_or_lock_anything(own_platform: Platform) -> None:
    settings = own_platform.settings
    catalog = lake_of(settings).sqlite_path
    assert catalog is not None
    paths = {"catalog": catalog,
             "landing": landing.landing_file(settings.landing_dir, "flights", DAY)}
    before = {name: sha256(path) for name, path in paths.items()}
    elsewhere = settings.data_dir / "elsewhere.duckdb"
    script = "\n".join(attempt.format(elsewhere=elsewhere, **paths)
                       for attempt, _ in SHELL_ATTEMPTS)
    shell = subprocess.run([str(Path(sys.executable).with_name("batch-platform")), "shell"],
                           input=script + "\nSELECT count(*) AS scored FROM predictions.flights;\n",
                           env=os.environ | {"BATCH_PLATFORM_DATA_DIR": str(settings.data_dir)},
                           capture_output=True, text=True, timeout=120)
    output = shell.stdout + shell.stderr
    for _, refusal in SHELL_ATTEMPTS:
        assert refusal in output
    assert output.count("cannot be used in -safe mode") == 3
    assert str(table_counts(own_platform)["predictions.flights"]) in shell.stdout  # queries work
    assert {name: sha256(path) for name, path in paths.items()} == before
    assert not elsewhere.exists()
    # The shell holds no lock: a run goes straight through.
    impatient = dataclasses.replace(settings, lock_timeout_seconds=2.0)
    assert own_platform.run("flights_predict", DAY, settings=impatient).success


def test_only_the_pipelines_user_may_write_the_lake(platform: Platform) -> None:
    """What keeps an analyst (another OS user) from changing the lake outside DuckDB's
    sandbox: its catalog and data files are writable by their owner alone."""
    lake = lake_of(platform.settings)
    assert lake.sqlite_path is not None
    files = [lake.sqlite_path, *lake.data_path.rglob("*.parquet")]
    assert len(files) > 10
    writable = [f for f in files if f.stat().st_mode & 0o022]
    assert not writable, f"writable by group or others: {writable[:3]}"


@pytest.mark.parametrize(
    "statement",
    ["SELECT * FROM read_csv('{landing}')", "EXPORT DATABASE '{export}'",
     "INSTALL httpfs", "LOAD '{extension}'", "LOAD postgres_scanner",
     "SET allow_unsigned_extensions = false"],
)
def test_sql_can_neither_read_files_nor_write_anywhere(platform: Platform, capsys,
                                                       monkeypatch, tmp_path: Path,
                                                       statement: str) -> None:
    settings = platform.settings
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    catalog = lake_of(settings).sqlite_path
    assert catalog is not None
    before = sha256(catalog)
    # The session loaded its extensions unsigned; no other file may be loaded after it.
    foreign = tmp_path / "foreign.duckdb_extension"
    foreign.write_bytes(extension_file("ducklake").read_bytes())
    query = statement.format(landing=landing.landing_file(settings.landing_dir, "flights", DAY),
                             export=tmp_path / "export", extension=foreign)
    assert cli.main(["sql", query]) == 1
    assert "query failed" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
    assert sha256(catalog) == before
