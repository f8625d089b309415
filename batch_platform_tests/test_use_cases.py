"""Use cases are declarations: the platform names none of them, each is its own group with its
own jobs, and a wrong declaration is refused before any run, naming its file and attribute."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from batch_platform import catalog
from batch_platform.components.use_case import DeclarationError
from batch_platform.definitions import build_definitions
from batch_platform.settings import Settings
from batch_platform_tests.test_tutorial import tutorial_files

PACKAGE = Path(__file__).parent.parent / "batch_platform"
# Words of the data sets that may stand in the platform's prose without naming a use case.
COMMON = {"day", "month", "year", "hour", "minute", "name", "type", "model", "origin", "temp",
          "rows", "items", "label", "score", "dest", "engine", "engines"}


def use_case_words() -> dict[str, set[str]]:
    """Each shipped use case's name, tables and columns: what no platform module may say."""
    words = {}
    for entry in catalog.load()[1]:
        uc = entry.use_case
        columns = {c for s in [*uc.sources.values(), *uc.references.values()]
                   for c in s.schema.column_names}
        spec = uc.spec
        columns |= {spec.id_column, spec.label_column, *spec.feature_columns, *uc.sources,
                    *uc.references}
        words[uc.name] = {uc.name, *(c for c in columns if c not in COMMON)}
    return words


def test_no_platform_module_names_a_use_case_or_its_columns() -> None:
    words = use_case_words()
    assert {"flights", "temperature"} <= set(words)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "use_cases":
            continue
        text = path.read_text()
        for use_case, names in words.items():
            found = sorted(n for n in names if re.search(rf"\b{re.escape(n)}\b", text))
            if found:
                offenders.append(f"{relative}: {use_case} {found}")
    assert offenders == []


def test_each_use_case_is_a_group_with_its_own_jobs_sensors_and_schedules(tmp_path: Path
                                                                          ) -> None:
    defs = build_definitions(Settings(data_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name
              for key in graph.get_all_asset_keys()}
    assert {k for k, g in groups.items() if g == "temperature"} == {
        "raw/hourly_weather", "features/temperature", "models/temperature",
        "predictions/temperature", "reports/temperature_daily"}
    assert {k for k, g in groups.items() if g == "flights"} == {
        "raw/flights", "raw/weather", "raw/planes", "raw/airports", "raw/airlines",
        "features/flights", "models/flights", "predictions/flights", "reports/flights_daily"}
    for use_case in ("flights", "temperature"):
        for what in ("daily", "features", "train", "predict"):
            job = defs.resolve_job_def(f"{use_case}_{what}")
            keys = job.asset_layer.executable_asset_keys
            assert keys and {groups[k.to_user_string()] for k in keys} == {use_case}, job.name
        # The changes of champion: jobs of ops, one pair per use case.
        for what in ("promote", "rollback"):
            job = defs.resolve_job_def(f"{use_case}_{what}")
            assert [node.name for node in job.nodes] == [f"{use_case}_{what}_model"]
    repository = defs.get_repository_def()
    sensors = {s.name for s in repository.sensor_defs}
    schedules = {s.name: s for s in repository.schedule_defs}
    for use_case in ("flights", "temperature"):
        assert {f"{use_case}_landing_sensor", f"{use_case}_refresh_features_and_reports"} <= sensors
        assert schedules[f"{use_case}_nightly_schedule"].job_name == f"{use_case}_daily"
        assert schedules[f"{use_case}_nightly_schedule"].execution_timezone == "America/New_York"
    automation = next(s for s in repository.sensor_defs
                      if s.name == "temperature_refresh_features_and_reports")
    selected = automation.asset_selection.resolve(graph)  # type: ignore[union-attr]
    assert {groups[k.to_user_string()] for k in selected} == {"temperature"}
    # Predictions are the rescoring sensor's alone: an asset is evaluated by one sensor.
    assert dg.AssetKey(["predictions", "temperature"]) not in selected
    rescoring = next(s for s in repository.sensor_defs
                     if s.name == "temperature_rescore_stale_days")
    assert rescoring.asset_selection.resolve(graph) == {  # type: ignore[union-attr]
        dg.AssetKey(["predictions", "temperature"])}


@pytest.mark.skipif(shutil.which("dg", path=str(Path(sys.executable).parent)) is None,
                    reason="dagster-dg-cli is in the dev extra")
def test_dg_checks_and_lists_both_use_cases() -> None:
    dg_cli = str(Path(sys.executable).with_name("dg"))
    root = PACKAGE.parent
    checked = subprocess.run([dg_cli, "check", "defs"], cwd=root, capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run([dg_cli, "list", "defs", "--json"], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    for name in ("models/flights", "models/temperature", "temperature_daily",
                 "temperature_landing_sensor", "flights_nightly_schedule"):
        assert name in listed.stdout, name


# --- declarations that cannot work --------------------------------------------------------

def declared(tmp_path: Path, change: Callable[[Path], None], name: str = "cases") -> Path:
    """The tutorial's use case in a folder of its own, changed by ``change``."""
    root = tmp_path / name
    (root / "orders").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    for file, content in tutorial_files().items():
        (root / file).write_text(content)
    change(root / "orders")
    sys.modules.pop(name, None)
    return root


def edit(pattern: str, replacement: str, file: str = "defs.yaml") -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / file
        text = path.read_text()
        assert re.search(pattern, text), pattern
        path.write_text(re.sub(pattern, replacement, text, count=1))
    return change


def load_error(root: Path) -> str:
    with pytest.raises(Exception) as raised:
        catalog.load([root])
    messages, seen, error = [], set(), raised.value
    while error is not None and id(error) not in seen:  # a context chain may loop
        seen.add(id(error))
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


@pytest.mark.parametrize(("change", "expected"), [
    (edit(r"type: batch_platform.components.UseCase", "type: batch_platform.components.Usecase"),
     r"Usecase"),
    (edit(r"    rows_from: orders", "    rows_form: orders"), r"defs\.yaml:\d+"),
    (edit(r"columns: \[channel, items", "columns: [channel, colour, items"),
     r"features\.columns: .*does not produce \['colour'\]"),
    (edit(r"columns: \[channel, items", "columns: [channel, returned, items"),
     r"features\.columns: \['returned'\] are outcomes"),
    (edit(r"categorical: \[channel\]", "categorical: [channel, items]"),
     r"features\.categorical: \['items'\] must be text"),
    (edit(r"start: 2024-03-01\n    end: 2024-03-28", "start: 2024-03-28\n    end: 2024-03-01"),
     r"partitions\.end: 2024-03-01 is before partitions\.start 2024-03-28"),
    (edit(r"timezone: Europe/Paris", "timezone: Europe/Lutetia"),
     r"partitions\.timezone: 'Europe/Lutetia' is not a time zone"),
    (edit(r"module: features\.py", "module: featurs.py"),
     r"features\.module: .*featurs\.py does not exist"),
    (edit(r"import polars as pl", "import polars as pl\nimport not_a_module", "features.py"),
     r"features\.module: .*cannot be imported: ModuleNotFoundError"),
    (edit(r"type: boolean, required: true", "type: bool, required: true"),
     r"sources\.orders\.columns\.first_order: .*bool"),
    (edit(r"validation: \{start: 2024-03-15", "validation: {start: 2024-03-10"),
     r"training\.validation: starts \(2024-03-10\) before the training window ends"),
    (edit(r"\n  partitions:", "\n  automation:\n    retraining: {window_days: 28, "
          "validation_days: 28}\n  partitions:"),
     r"automation\.retraining\.validation_days: 28 leaves no training day in window_days 28"),
    (edit(r"\n  partitions:", "\n  automation:\n    retraining: {cron: monthly}\n  partitions:"),
     r"automation\.retraining\.cron: 'monthly' is not a cron schedule"),
    (edit(r"    rounds: 60\n", "    rounds: 60\n    columns: [channel, colour]\n"),
     r"training\.columns: \['colour'\] are not in features\.columns"),
    (edit(r"    rounds: 60\n", "    rounds: 60\n    challenger: {columns: [channel, channel]}\n"),
     r"training\.challenger\.columns: \['channel'\] are listed twice"),
    (edit(r"    rounds: 60\n", "    rounds: 60\n    challenger: {params: {objective: huber}}\n"),
     r"training\.challenger\.params: \['objective'\] are set by the platform"),
])
def test_a_wrong_declaration_names_its_file_and_attribute(
        tmp_path: Path, change: Callable[[Path], None], expected: str) -> None:
    root = declared(tmp_path, change)
    message = load_error(root)
    assert re.search(expected, message), message
    assert str(root / "orders" / "defs.yaml") in message or "defs.yaml" in message


def test_two_use_cases_may_not_claim_the_same_table(tmp_path: Path) -> None:
    root = declared(tmp_path, lambda folder: None)
    shutil.copytree(root / "orders", root / "orders_again")
    (root / "orders_again" / "defs.yaml").write_text(
        (root / "orders_again" / "defs.yaml").read_text().replace("name: orders",
                                                                  "name: orders_again"))
    with pytest.raises(DeclarationError, match=r"table raw\.orders is already claimed by "
                                               r".*orders/defs\.yaml"):
        catalog.load([root])


def test_a_use_case_may_not_take_a_shipped_source(tmp_path: Path) -> None:
    root = declared(tmp_path, edit(r"    orders:\s+# table raw.orders.*\n      path: \"orders/",
                                   "    flights:\n      path: \"flights/"))
    (root / "orders" / "defs.yaml").write_text((root / "orders" / "defs.yaml").read_text()
                                               .replace("rows_from: orders",
                                                        "rows_from: flights"))
    with pytest.raises(DeclarationError, match=r"table raw\.flights is already claimed by "
                                               r".*flights/defs\.yaml"):
        catalog.load([catalog.SHIPPED, root])


def test_a_feature_function_that_fails_fails_its_partition_and_writes_nothing(
        tmp_path: Path) -> None:
    """Raised on real rows (not at declaration time): the run fails naming the function."""
    from batch_platform_tests.test_tutorial import FIRST

    root = declared(tmp_path, edit(
        r"def order_rows\(chunk: pl.DataFrame, context: None\) -> pl.DataFrame:\n",
        "def order_rows(chunk: pl.DataFrame, context: None) -> pl.DataFrame:\n"
        "    if chunk.height:\n        raise ValueError('no basket column today')\n",
        "features.py"))
    settings = Settings(data_dir=tmp_path / "data").validated()
    use_cases, [declared_orders] = catalog.load([root])
    lander = declared_orders.use_case.lander
    assert lander is not None
    lander(settings.landing_dir, [FIRST])  # the page's own lander
    from batch_platform.orchestration.factory import platform_resources
    from batch_platform.orchestration.jobs import partition_range_tags, run_failure_messages

    defs = dg.Definitions.merge(use_cases, dg.Definitions(resources=platform_resources(
        settings)))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("orders_features").execute_in_process(
            instance=instance, raise_on_error=False,
            tags=partition_range_tags(FIRST.isoformat(), FIRST.isoformat()))
    assert not result.success
    message = "\n".join(run_failure_messages(result))
    assert "order_rows failed: ValueError: no basket column today" in message
    assert "features.py" in message
    from batch_platform.platform.storage.lake import lake_of

    with lake_of(settings).read_only() as con:
        tables = {r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM "
                                            "duckdb_tables() WHERE database_name = 'lake'"
                                            ).fetchall()}
    assert "raw.orders" in tables and "features.orders" not in tables


def test_the_command_refuses_a_wrong_declaration_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from batch_platform import cli

    root = declared(tmp_path, edit(r"    rows_from: orders", "    rows_form: orders"))
    monkeypatch.setenv("BATCH_PLATFORM_USE_CASES_DIR", str(root))
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster"))
    assert cli.main(["use-cases"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"{root}/orders/defs.yaml:" in err and "rows_form" in err


def test_the_flights_champion_keeps_its_features_and_the_challenger_takes_them_all() -> None:
    """The features table holds every declared column; the champion trains (and a champion
    registered before the table grew scores) on the first 27, the challenger on all of them,
    with the champion's rounds and parameters."""
    flights = catalog.use_case("flights")
    champion, challenger = flights.training(), flights.training(challenger=True)
    assert champion.spec.feature_columns == flights.spec.feature_columns[:27]
    assert champion.spec.feature_columns[-1] == "prev_day_carrier_late_rate"
    assert challenger.spec.feature_columns == flights.spec.feature_columns
    assert len(challenger.spec.feature_columns) > len(champion.spec.feature_columns)
    assert (champion.rounds, dict(champion.params)) == (challenger.rounds,
                                                         dict(challenger.params))
    assert champion.spec.categorical_columns == challenger.spec.categorical_columns
    assert [s.feature_columns for s in flights.feature_sets(challenger=True)] == [
        challenger.spec.feature_columns, champion.spec.feature_columns]
    # A model naming a column the table lacks cannot score it.
    with pytest.raises(ValueError, match=r"features \['secret'\] are not columns of "
                                         r"features\.flights"):
        flights.spec.for_model(["carrier", "secret"])
    # Without a declared set, a use case's models use every feature column.
    temperature = catalog.use_case("temperature")
    assert temperature.feature_sets() == [temperature.spec]
