"""The predictions stage on a real two-node Ray cluster: the local engine's rows, row for row.

One cluster serves the module: a head and a second node started with ``ray start`` on
loopback, two (logical) CPUs each, stopped by PID afterwards. Needs the ``ray`` extra (``make test``
installs it). A test that writes predictions writes them to its own copy of the platform
(``own_platform``); the others score the features of one copy for the module
(``scoring_platform``), beside whose model file the compiled scorer caches its code.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.dates import days_between
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models import registry
from batch_platform.platform.scoring import engines, ray_engine, ray_local, shadow
from batch_platform.platform.scoring.partition import score_staged
from batch_platform.platform.scoring.score import ScoringLineage
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.storage.staging import staging
from batch_platform.platform.storage.warehouse import read_partitions
from batch_platform.settings import Settings
from batch_platform_tests.conftest import (
    Platform,
    PreparedSlice,
    failure_messages,
    platform_at,
)
from batch_platform_tests.flights import FLIGHTS, USE_CASE
from batch_platform_tests.orchestration.test_compiled_scoring import predictions_metadata

pytest.importorskip("ray", reason="the ray extra is not installed (make test installs it)")
pytestmark = pytest.mark.slow  # a two-node cluster started for the module

# Columns that name the run rather than the prediction.
RUN_SPECIFIC = ("run_id", "scored_at")
# Small batches: every actor of both nodes gets work, and a kill lands mid-partition.
CHUNK_ROWS = 500
# Three days of the scored week (2,372 flights): a range, in under half the week's time.
DAYS = (dt.date(2013, 1, 19), dt.date(2013, 1, 21))


@pytest.fixture(scope="module")
def cluster() -> Iterator[ray_local.LocalRayCluster]:
    # Ray's Unix socket paths must stay under 107 bytes: a pytest tmp_path is too long.
    temp_dir = Path(tempfile.mkdtemp(prefix="bp-ray-", dir="/tmp"))
    # Two CPUs a node: one actor each, and one for Ray Data's read and write tasks.
    started = ray_local.start(temp_dir / "r", nodes=2, cpus_per_node=2, log_dir=temp_dir)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def on_ray(platform: Platform, cluster: ray_local.LocalRayCluster, **changes: object
           ) -> Settings:
    return platform.settings.with_overrides(**{
        "engine": "ray", "ray_address": cluster.address, "ray_actors": 2,
        "chunk_rows": CHUNK_ROWS, **changes})


def range_predictions(platform: Platform) -> pl.DataFrame:
    return platform.query("SELECT * FROM predictions.flights WHERE partition_date BETWEEN ? "
                          "AND ? ORDER BY partition_date, flight_id", list(DAYS))


def assert_same_rows(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Every column but the run's own, equal row for row (floats bit for bit), same types."""
    assert actual.columns == expected.columns
    assert actual.schema == expected.schema
    assert actual.height == expected.height > 0
    assert actual.drop(RUN_SPECIFIC).equals(expected.drop(RUN_SPECIFIC), null_equal=True)


def staging_left(settings: Settings) -> list[Path]:
    root = Path(settings.staging_location)
    return list(root.rglob("*")) if root.exists() else []


def test_days_scored_on_two_nodes_equal_the_local_engine(
    own_platform: Platform, cluster: ray_local.LocalRayCluster
) -> None:
    local = range_predictions(own_platform)  # as the local engine scored it
    assert set(local["scorer"]) == {"lightgbm"}
    assert local["reason_1"].null_count() < local.height  # explain=all: reasons to compare
    settings = on_ray(own_platform, cluster)
    result = own_platform.run("flights_predict", *DAYS, settings=settings)
    assert result.success, failure_messages(result)
    on_cluster = range_predictions(own_platform)
    assert_same_rows(on_cluster, local)
    assert set(on_cluster["run_id"]) == {result.run_id}
    metadata = predictions_metadata(result)
    assert metadata["engine"] == "ray"
    assert metadata["engine_workers"] == 2
    assert metadata["ray_nodes"] == 2
    assert metadata["ray_cluster_cpus"] == 4
    assert metadata["ray_address"] == cluster.address
    assert len(metadata["ray_job_id"]) >= 8
    assert metadata["staging_seconds"] > 0
    assert metadata["range_rows_scored"] == local.height
    assert staging_left(settings) == []


@pytest.fixture(scope="module")
def scoring_platform(prepared_slice: PreparedSlice, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Platform]:
    with platform_at(prepared_slice.copy_to(tmp_path_factory.mktemp("ray") / "slice")
                     ) as platform:
        yield platform


@pytest.fixture(scope="module")
def scored_range(scoring_platform: Platform) -> tuple[pl.DataFrame, model_core.LoadedModel]:
    settings = scoring_platform.settings
    with lake_of(settings).read_only() as con:
        record = registry.resolve(con, FLIGHTS.use_case, None)
        frame = read_partitions(con, "features.flights", *DAYS,
                                order_by=("partition_date", FLIGHTS.id_column))
    loaded = model_core.load_registered(settings.data_dir, settings.models_dir,
                                        record["model_path"], record["model_version"],
                                        registry.calibration(record), FLIGHTS)
    return frame, loaded


LINEAGE = ScoringLineage("v", "code", "run-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize(("explain", "scorer"), [("riskiest", "lightgbm"),
                                                 ("predicted_positive", "compiled")])
def test_every_explain_mode_and_scorer_match_the_local_engine(
    scoring_platform: Platform, cluster: ray_local.LocalRayCluster,
    scored_range: tuple[pl.DataFrame, model_core.LoadedModel], explain: str, scorer: str
) -> None:
    frame, loaded = scored_range
    lineage = ScoringLineage(loaded.version, "code", "run-1", LINEAGE.scored_at)
    changes = {"explain": explain, "explain_max_rows": 40, "scorer": scorer}
    scope = ("predictions/flights", *DAYS)
    local_settings = scoring_platform.settings.with_overrides(**changes)
    local, local_stats, _ = engines.score(frame, loaded, FLIGHTS, lineage, local_settings, scope)
    remote, stats, report = engines.score(frame, loaded, FLIGHTS, lineage,
                                          on_ray(scoring_platform, cluster, **changes), scope)
    assert report.engine == "ray" and report.ray.nodes == 2
    assert remote.equals(local, null_equal=True)
    assert remote.schema == local.schema
    assert stats.explained_rows == local_stats.explained_rows > 0
    assert stats.unknown_categories == local_stats.unknown_categories
    assert stats.scorer.used == local_stats.scorer.used == scorer
    if explain == "riskiest":  # 40 a day, chosen over the whole day, not per batch
        assert stats.explained_rows == 40 * len(days_between(*DAYS))


def test_an_actor_that_cannot_load_the_model_fails_clearly_and_writes_nothing(
    scoring_platform: Platform, cluster: ray_local.LocalRayCluster,
    scored_range: tuple[pl.DataFrame, model_core.LoadedModel], tmp_path: Path
) -> None:
    frame, loaded = scored_range
    assert loaded.path is not None
    tampered = tmp_path / loaded.path.name
    tampered.write_text(loaded.path.read_text().replace("tree\n", "tree\n\n", 1))
    moved = model_core.LoadedModel(loaded.version, loaded.booster, loaded.calibration,
                                   loaded.categorical_levels, tampered)
    settings = on_ray(scoring_platform, cluster)
    staging = ray_engine.staging_dir(settings.staging_location, "bad-model", "p", *DAYS)
    target = ray_engine.RayTarget(cluster.address, 2, settings.staging_location)
    started = time.monotonic()
    with pytest.raises(ray_engine.ModelLoadError) as raised:
        ray_engine.score(frame, moved, FLIGHTS, LINEAGE, target, staging, chunk_rows=CHUNK_ROWS)
    message = str(raised.value)
    assert f"cannot load model {loaded.version} from {tampered}" in message
    assert "does not match its registered version" in message
    assert time.monotonic() - started < 120  # Ray gave up; it did not restart actors forever
    assert staging_left(settings) == []


def kill_an_actor_mid_partition(cluster: ray_local.LocalRayCluster, killed: list[int],
                                stop: threading.Event) -> None:
    """SIGKILL a scoring actor once it has had a moment to load the model and start scoring."""
    while not stop.is_set():
        actors = cluster.worker_pids("ChunkScorer")
        if actors:
            time.sleep(0.3)
            try:
                os.kill(actors[0], signal.SIGKILL)
            except ProcessLookupError:  # it finished first: try the next one
                continue
            killed.append(actors[0])
            return
        time.sleep(0.02)


def test_a_worker_killed_mid_partition_never_leaves_half_a_partition(
    own_platform: Platform, cluster: ray_local.LocalRayCluster
) -> None:
    local = range_predictions(own_platform)  # as the local engine scored it
    # Small batches make the partition long enough on the cluster to be killed in the middle.
    settings = on_ray(own_platform, cluster, chunk_rows=100)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_an_actor_mid_partition, args=(cluster, killed, stop))
    killer.start()
    try:
        result = own_platform.run("flights_predict", *DAYS, settings=settings, raise_on_error=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no scoring actor was seen to kill"
    after = range_predictions(own_platform)
    if result.success:  # Ray restarted the actor and retried its batches
        assert set(after["run_id"]) == {result.run_id}
    else:  # the partition is exactly what it was before
        assert after.equals(local, null_equal=True), failure_messages(result)
    assert_same_rows(after, local)
    assert staging_left(settings) == []
    # In the other tests' batches: the rows do not depend on their size.
    rerun = own_platform.run("flights_predict", *DAYS, settings=on_ray(own_platform, cluster))
    assert rerun.success, failure_messages(rerun)
    assert_same_rows(range_predictions(own_platform), local)
    print(f"killed actor {killed[0]}: the run {'succeeded' if result.success else 'failed'}")


def test_the_shadow_scored_on_the_cluster_equals_the_local_engine(
    scoring_platform: Platform, cluster: ray_local.LocalRayCluster,
    scored_range: tuple[pl.DataFrame, model_core.LoadedModel], tmp_path: Path
) -> None:
    """The champion and, in the shadow, a challenger scored one after the other in one run and
    range on the cluster: each in its own staging, each the local engine's rows. The champion's
    own file stands in for the challenger."""
    frame, loaded = scored_range
    changes = {"explain": "riskiest", "explain_max_rows": 40}  # few explanations: fast
    settings = on_ray(scoring_platform, cluster, **changes).resolved(USE_CASE)
    features_file = tmp_path / "features.parquet"
    frame.write_parquet(features_file)
    with lake_of(settings).read_only() as con:
        record = registry.resolve(con, FLIGHTS.use_case, None)
    lineage = ScoringLineage(loaded.version, "code", "run-1", LINEAGE.scored_at)
    scope = ("predictions/flights", *DAYS)
    warnings: list[str] = []
    with staging(tmp_path / "staging", "run-1", "predictions", settings.chunk_rows) as folder:
        scored = score_staged(settings, FLIGHTS, folder, features_file, loaded, None, lineage,
                              "the days", scope, warnings.append)
        outcome = shadow.score_shadow(settings, FLIGHTS, folder, features_file, record, scored,
                                      lineage, "the days", scope, warnings.append)
        assert outcome.withheld is None and outcome.scores is not None
        assert (scored.engine.engine, outcome.scores.engine.engine) == ("ray", "ray")
        champion_rows = pl.read_parquet(scored.predictions.files)
        shadow_rows = pl.read_parquet(outcome.scores.predictions.files)
    local, _, _ = engines.score(frame, loaded, FLIGHTS, lineage, scoring_platform.settings
                                .with_overrides(**changes).resolved(USE_CASE), scope)
    assert champion_rows.equals(local, null_equal=True)
    assert shadow_rows.equals(local, null_equal=True)
    assert staging_left(settings) == []
