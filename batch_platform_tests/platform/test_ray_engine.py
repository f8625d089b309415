"""The Ray engine's pieces that need no cluster: errors, staging, and Ray kept out of the default
path. The engine on a real two-node cluster is tested in ``orchestration/test_ray_engine.py``."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from batch_platform.orchestration.stages import TRANSIENT_ERRORS
from batch_platform.platform.models import booster as model
from batch_platform.platform.scoring import ray_engine
from batch_platform.platform.scoring.score import ScoringLineage
from batch_platform_tests.flights import FLIGHTS

LINEAGE = ScoringLineage("v", "code", "run", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_staging_directories_are_per_run_asset_and_range() -> None:
    first = ray_engine.staging_dir("s3://bucket/staging/", "run-1", "predictions/flights",
                                   dt.date(2013, 1, 15), dt.date(2013, 1, 21))
    assert first == "s3://bucket/staging/run-1/predictions__flights/2013-01-15_2013-01-21"
    other = ray_engine.staging_dir("s3://bucket/staging", "run-2", "predictions/flights",
                                   dt.date(2013, 1, 15), dt.date(2013, 1, 21))
    assert other != first


def test_an_unreachable_cluster_fails_fast_naming_the_address_and_what_to_check(
    feature_rows: pl.DataFrame, loaded_model: model.LoadedModel, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{closed_port()}"
    target = ray_engine.RayTarget(address, 2, str(tmp_path / "staging"), 2.0)
    with_file = model.LoadedModel(loaded_model.version, loaded_model.booster,
                                  loaded_model.calibration, loaded_model.categorical_levels,
                                  tmp_path / "model.txt")
    staging = ray_engine.staging_dir(target.staging_uri, "run", "predictions/flights",
                                     dt.date(2013, 1, 1), dt.date(2013, 1, 3))
    started = time.monotonic()
    with pytest.raises(ray_engine.RayClusterUnavailable) as raised:
        ray_engine.score(feature_rows, with_file, FLIGHTS, LINEAGE, target, staging)
    assert time.monotonic() - started < 30
    message = str(raised.value)
    assert f"cannot reach the Ray cluster at {address} (BATCH_PLATFORM_RAY_ADDRESS)" in message
    assert "Connection refused" in message or "ConnectionRefusedError" in message
    assert "ray status" in message and "ray://host:10001" in message
    # The features were staged before connecting; nothing of them is left.
    assert list((tmp_path / "staging").rglob("*")) == []


def test_an_unreachable_cluster_is_retried_by_the_stage() -> None:
    # A head restarting or a KubeRay pod rescheduled comes back; the retry rescores the whole
    # partition, which is idempotent.
    assert ray_engine.RayClusterUnavailable in TRANSIENT_ERRORS
    assert ray_engine.ModelLoadError not in TRANSIENT_ERRORS
    assert not issubclass(ray_engine.ModelLoadError, TRANSIENT_ERRORS)


def test_a_cluster_too_small_for_the_pool_is_refused_instead_of_waiting_forever() -> None:
    target = ray_engine.RayTarget("127.0.0.2:6379", 2, "/tmp/staging")
    assert ray_engine.actor_cpus(3.0, target) == 1.0
    with pytest.raises(ray_engine.RayEngineError,
                       match=r"has 2 CPU\(s\); BATCH_PLATFORM_RAY_ACTORS=2 needs 3"):
        ray_engine.actor_cpus(2.0, target)


def test_the_default_path_never_imports_ray(tmp_path: Path) -> None:
    """Definitions, the local engine and the Ray engine's module itself load without Ray."""
    code = (
        "import sys\n"
        "import batch_platform.definitions, batch_platform.platform.scoring.engines\n"
        "import batch_platform.platform.scoring.ray_engine\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={"BATCH_PLATFORM_DATA_DIR": str(tmp_path), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
