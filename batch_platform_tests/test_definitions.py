r"""A snapshot of the asset graph: an accidental change to keys, partitions or lineage fails here.

After a deliberate change, refresh it:
UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest \
    batch_platform_tests/test_definitions.py -k asset_graph
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from batch_platform import code_version
from batch_platform.definitions import build_definitions
from batch_platform.orchestration.factory import platform_executor
from batch_platform.settings import Settings

SNAPSHOT = Path(__file__).parent / "orchestration" / "snapshots" / "asset_graph.json"


def describe_graph(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    described = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        described[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": (f"{type(partitions).__name__}({partitions.start:%Y-%m-%d}.."
                           f"{partitions.end:%Y-%m-%d}, {partitions.timezone})"
                           if isinstance(partitions, dg.TimeWindowPartitionsDefinition)
                           else None),
            "backfill_policy": str(node.backfill_policy.policy_type) if node.backfill_policy
            else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "tags": dict(sorted(node.tags.items())),
            "checks": sorted(k.name for k in node.check_keys),
            "automation": node.automation_condition.get_label()
            if node.automation_condition else None,
            "freshness": str(node.freshness_policy) if node.freshness_policy else None,
        }
    jobs = {job.name: sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
            for job in (defs.resolve_job_def(f"{use_case}_{what}")
                        for use_case in ("flights", "temperature")
                        for what in ("daily", "features", "train", "predict"))}
    repository = defs.get_repository_def()
    automation = {
        **{s.name: {"status": s.default_status.value,
                    "job": s.job_name if s.has_jobs else None}
           for s in repository.sensor_defs},
        **{s.name: {"status": s.default_status.value, "job": s.job_name,
                    "cron": s.cron_schedule, "timezone": s.execution_timezone}
           for s in repository.schedule_defs},
    }
    return {"assets": described, "jobs": jobs, "automation": automation}


def test_sensors_and_schedules_run_by_default(tmp_path: Path) -> None:
    automation = describe_graph(build_definitions(Settings(data_dir=tmp_path)))["automation"]
    assert set(automation) == {f"{use_case}_{what}" for use_case in ("flights", "temperature")
                               for what in ("landing_sensor", "refresh_features_and_reports",
                                            "rescore_stale_days", "nightly_schedule",
                                            "freshness_schedule")
                               } | {"lake_maintenance_schedule", "platform_run_sweeper"}
    assert {entry["status"] for entry in automation.values()} == {"RUNNING"}
    assert automation["lake_maintenance_schedule"]["job"] == "lake_maintenance"
    assert automation["flights_nightly_schedule"]["timezone"] == "America/New_York"
    assert automation["temperature_nightly_schedule"]["job"] == "temperature_daily"


def test_features_and_predictions_carry_the_code_version(tmp_path: Path) -> None:
    """Dagster shows a day computed by other code than the running one as unsynced."""
    graph = build_definitions(Settings(data_dir=tmp_path)).resolve_asset_graph()
    versions = {key.to_user_string(): graph.get(key).code_version
                for key in graph.get_all_asset_keys()}
    for use_case in ("flights", "temperature"):
        assert versions[f"features/{use_case}"] == versions[f"predictions/{use_case}"] == (
            code_version())
        assert versions[f"reports/{use_case}_daily"] is None


def test_asset_graph_matches_snapshot(tmp_path: Path) -> None:
    current = describe_graph(build_definitions(Settings(data_dir=tmp_path)))
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_definitions_load_from_the_workspace_module(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path))
    import importlib

    import batch_platform.definitions as module

    reloaded = importlib.reload(module)
    warehouse = reloaded.defs.load_fn().resources["warehouse"]
    assert warehouse.catalog == f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}"
    assert warehouse.data_path == str(tmp_path / "lake" / "files")


def test_loading_the_definitions_leaves_lightgbm_unimported(tmp_path: Path) -> None:
    """LightGBM brings pandas and scipy (1.2 s of CPU): every step process of a run and every
    command that neither trains nor scores starts without them."""
    code = ("import sys\n"
            "import batch_platform.definitions, batch_platform.cli\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightgbm', 'pandas', "
            "'scipy'}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={"BATCH_PLATFORM_DATA_DIR": str(tmp_path), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_multiprocess_runs_start_their_steps_from_a_fork_server(tmp_path: Path) -> None:
    """Each step of a multiprocess run forks from a server that imported the project once; the
    run config may still choose in-process execution or another start method."""
    from dagster._core.system_config.objects import ResolvedRunConfig

    defs = build_definitions(Settings(data_dir=tmp_path))
    assert {job.executor_def for job in defs.resolve_all_job_defs()} == {platform_executor}

    def engine(execution: dict | None = None) -> dict:
        run_config = {"execution": {"config": execution}} if execution else {}
        return dict(ResolvedRunConfig.build(defs.resolve_job_def("flights_daily"), run_config)
                    .execution.execution_engine_config)

    assert engine()["multiprocess"]["start_method"] == {"forkserver": {}}
    assert set(engine({"in_process": {}})) == {"in_process"}
    assert engine({"multiprocess": {"max_concurrent": 1}})["multiprocess"] == {
        "max_concurrent": 1, "start_method": {"forkserver": {}}, "retries": {"enabled": {}}}
    assert engine({"multiprocess": {"start_method": {"spawn": {}}}})["multiprocess"][
        "start_method"] == {"spawn": {}}
