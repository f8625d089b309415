"""Score a partition (or a range) on a Ray cluster with Ray Data, with the local engine's code.

The features go to staging as Parquet, on storage every node reads (a local directory, or any
URI pyarrow opens: ``s3://``, ``gs://``, ...). Ray Data reads them, ``map_batches`` scores each
batch on a pool of actors that each load the registered model file once (by path, its content
hash checked, never a pickled booster) and call ``scoring.score`` on it, and writes the
predictions as Parquet. The driver reads them back in the input's order and hands them to the
caller, which writes them in the same atomic partition write as the local engine. The staging
directory is removed whatever happens.

``explain="riskiest"`` is a top-N per day over the whole range, which no single batch can
know: batches are scored without reasons, and the driver picks and explains those rows
(``scoring.Riskiest``).

Ray is an optional extra: it is imported only when this engine runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models.booster import LoadedModel
from batch_platform.platform.models.objectives import Calibration, objective
from batch_platform.platform.scoring import compiled
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring.compiled import COMPILED, LIGHTGBM, ScorerReport
from batch_platform.platform.scoring.score import ScoringLineage, ScoringStats

ENGINE = "ray"
# Carried through the cluster so the predictions come back in the features' order.
ROW = "__batch_platform_row"
# One JSON object per batch (on its first row): what scoring.score reports besides rows.
STATS = "__batch_platform_stats"
LOG = logging.getLogger(__name__)


class RayEngineError(RuntimeError):
    """The Ray engine cannot score this partition; the message says why and what to check."""


class RayClusterUnavailable(ConnectionError):
    """The cluster cannot be reached or lost what it was running: worth a retry later."""


class ModelLoadError(RayEngineError):
    """A scoring actor could not load the model: retrying on the same cluster will not help."""


@dataclass(frozen=True)
class RayTarget:
    """Where and how wide to score."""

    address: str
    actors: int
    staging_uri: str
    connect_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class RayRun:
    """What a partition's Ray job was, for metadata and logs."""

    address: str
    job_id: str
    actors: int
    nodes: int
    cluster_cpus: float
    cpus_per_actor: float
    # Writing the features to staging and reading the predictions back (the engine's overhead).
    staging_seconds: float
    # Ray Data: read the features, score on the actors, write the predictions.
    cluster_seconds: float
    staging_dir: str


def staging_dir(root: str, run_id: str, asset: str, start: dt.date, end: dt.date) -> str:
    """A directory no other run or range uses: ``<root>/<run_id>/<asset>/<start>_<end>``."""
    slug = asset.replace("/", "__")
    return f"{root.rstrip('/')}/{run_id}/{slug}/{start.isoformat()}_{end.isoformat()}"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError) as err:
        raise RayEngineError(f"staging location {uri} cannot be opened by pyarrow: {err}"
                             ) from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayEngineError(
            "BATCH_PLATFORM_ENGINE=ray needs Ray: pip install 'batch_platform[ray]' (or "
            "pip install -r requirements-ray.lock)") from None
    return ray


def _unreachable(address: str, detail: str) -> RayClusterUnavailable:
    return RayClusterUnavailable(
        f"cannot reach the Ray cluster at {address} (BATCH_PLATFORM_RAY_ADDRESS): {detail}. "
        "Check that the cluster is up (`ray status` on its head), that the address is the "
        "head's GCS address (host:6379 by default) or its Ray Client address "
        "(ray://host:10001), and that this machine may connect to that port")


def probe(address: str, timeout_seconds: float) -> None:
    """Fail fast with a clear error when nothing listens at ``address``: ``ray.init`` would
    otherwise retry for minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_seconds):
            pass
    except OSError as err:
        raise _unreachable(address, f"{type(err).__name__}: {err}") from None


def connect(target: RayTarget) -> tuple[Any, bool]:
    """Ray connected to ``target.address``; True when this call connected (and must shut down)."""
    ray = _ray()
    if ray.is_initialized():  # a caller (a notebook, a test) connected this process already
        return ray, False
    probe(target.address, target.connect_timeout_seconds)
    host = target.address.removeprefix("ray://").rpartition(":")[0]
    # A cluster on this machine's loopback (tests, benchmarks): the driver joins as the head's
    # node. Left to itself Ray picks the machine's routable address, which no node has, and
    # actors' results never find their way back.
    local = {"_node_ip_address": host} if host.startswith("127.") and "://" not in target.address \
        else {}
    try:
        ray.init(address=target.address, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=False, **local)
    except (ConnectionError, TimeoutError, RuntimeError) as err:
        raise _unreachable(target.address, f"{type(err).__name__}: {err}") from None
    return ray, True


class ChunkScorer:
    """A Ray Data actor: loads the model once, then scores batch after batch.

    Built from the model file's path and version only; the booster itself never travels.
    """

    def __init__(self, model_path: str, version: str, calibration: Calibration, spec: FeatureSpec,
                 lineage: ScoringLineage, explain: str, scorer: str, num_threads: int) -> None:
        try:
            booster = model_core.load(Path(model_path), version)
            levels = model_core.levels_from_model(booster, spec, model_path)
        except (model_core.ModelError, OSError) as err:
            raise ModelLoadError(f"a scoring actor on {socket.gethostname()} cannot load model "
                                 f"{version} from {model_path}: {err}") from None
        self.model = LoadedModel(version, booster, calibration, levels, Path(model_path))
        self.spec, self.lineage = spec, lineage
        self.explain, self.scorer, self.num_threads = explain, scorer, num_threads
        if scorer == COMPILED:
            try:  # once per actor; on failure scoring.score falls back to LightGBM and says so
                compiled.load_or_compile(Path(model_path), version)
            except Exception as err:  # the fallback reason is reported per batch
                LOG.warning("compiled scorer unavailable in this actor: %s", err)

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        warnings: list[str] = []
        predictions, stats = scoring.score(
            frame.drop(ROW), self.model, self.spec, self.lineage, chunk_rows=max(1, frame.height),
            explain=self.explain, num_threads=self.num_threads, scorer=self.scorer,
            warn=warnings.append)
        summary = json.dumps({
            "unknown": stats.unknown_categories, "explained": stats.explained_rows,
            "used": stats.scorer.used, "parity_diff": stats.scorer.parity_max_abs_diff,
            "parity_rows": stats.scorer.parity_rows, "fallback": stats.scorer.fallback_reason,
            "warnings": warnings})
        return predictions.with_columns(
            frame.get_column(ROW),
            pl.Series(STATS, [summary] + [None] * (frame.height - 1), dtype=pl.String),
        ).to_arrow()


def _stage_features(features: pl.DataFrame, fs: pafs.FileSystem, path: str,
                    rows_per_file: int) -> None:
    """One Parquet file per ``rows_per_file`` rows: Ray Data reads files in parallel."""
    fs.create_dir(path, recursive=True)
    numbered = features.with_row_index(ROW)
    for index, offset in enumerate(range(0, numbered.height, rows_per_file)):
        pq.write_table(numbered.slice(offset, rows_per_file).to_arrow(),
                       f"{path}/part-{index:05d}.parquet", filesystem=fs)


def _read_predictions(fs: pafs.FileSystem, path: str, expected_rows: int) -> pl.DataFrame:
    table = pq.read_table(path, filesystem=fs)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if frame.height != expected_rows:
        raise RayEngineError(f"the Ray job returned {frame.height} prediction rows for "
                             f"{expected_rows} feature rows ({path})")
    return frame.sort(ROW)


def _merge_stats(frame: pl.DataFrame, spec: FeatureSpec, requested: str,
                 warn: Callable[[str], None] | None) -> ScoringStats:
    unknown = dict.fromkeys(spec.categorical_columns, 0)
    explained, parity_rows, used, diffs, fallbacks, warned = 0, 0, set(), [], set(), set()
    for text in frame.get_column(STATS).drop_nulls().to_list():
        batch = json.loads(text)
        for name, count in batch["unknown"].items():
            unknown[name] += count
        explained += batch["explained"]
        parity_rows += batch["parity_rows"]
        used.add(batch["used"])
        if batch["parity_diff"] is not None:
            diffs.append(batch["parity_diff"])
        if batch["fallback"]:
            fallbacks.add(batch["fallback"])
        warned.update(batch["warnings"])
    for message in sorted(warned):
        if warn is not None:
            warn(message)
    report = ScorerReport(requested, COMPILED if used == {COMPILED} else LIGHTGBM,
                          max(diffs) if diffs else None, parity_rows,
                          fallback_reason="; ".join(sorted(fallbacks)) or None)
    return ScoringStats(frame.height, unknown, explained, report)


def score(
    features: pl.DataFrame,
    model: LoadedModel,
    spec: FeatureSpec,
    lineage: ScoringLineage,
    target: RayTarget,
    staging: str,
    chunk_rows: int = 100_000,
    explain: str = "all",
    num_threads: int = 1,
    scorer: str = LIGHTGBM,
    warn: Callable[[str], None] | None = None,
    explain_max_rows: int = 1_000,
) -> tuple[pl.DataFrame, ScoringStats, RayRun]:
    """``scoring.score`` on a Ray cluster: the same rows, columns, types and order.

    ``staging`` is this call's own directory (see :func:`staging_dir`); it is removed on the
    way out. ``num_threads`` is per actor (each actor takes one CPU of the cluster). The model
    reads its own features, by name: the actors get the narrowed spec.
    """
    spec = scoring.own_features(spec, model)
    if model.path is None:
        raise RayEngineError(f"model {model.version} has no registered file: scoring actors "
                             "load the model from its file")
    fs, root = _filesystem(staging)
    features_path, predictions_path = f"{root}/features", f"{root}/predictions"
    try:
        started = time.perf_counter()
        # Only what scoring reads travels: not the label, not the day's other columns.
        _stage_features(features.select(spec.id_column, "partition_date", *spec.feature_columns),
                        fs, features_path, chunk_rows)
        staged = time.perf_counter() - started
        ray, connected = connect(target)
        try:
            run = _run_job(ray, target, fs, features_path, predictions_path, model, spec, lineage,
                           chunk_rows, "none" if explain == "riskiest" else explain, num_threads,
                           scorer)
        finally:
            if connected:
                ray.shutdown()
        read_started = time.perf_counter()
        frame = _read_predictions(fs, predictions_path, features.height)
        staged += time.perf_counter() - read_started
    finally:
        _remove(fs, root)
    stats = _merge_stats(frame, spec, scorer, warn)
    predictions = frame.drop(ROW, STATS)
    if explain == "riskiest":  # over whole days, which no batch sees: here, as locally
        riskiest = scoring.Riskiest(explain_max_rows, spec.id_column,
                                    objective(spec.objective).output)
        riskiest.add(predictions)
        reasons = riskiest.explain([features], model, spec, num_threads)
        predictions = scoring.fill_reasons(predictions, reasons, spec.id_column)
        stats = ScoringStats(stats.rows, stats.unknown_categories, reasons.height, stats.scorer)
    return predictions, stats, RayRun(**(run | {"staging_seconds": staged,
                                                "staging_dir": staging}))


def _run_job(ray: Any, target: RayTarget, fs: pafs.FileSystem, features_path: str,
             predictions_path: str, model: LoadedModel, spec: FeatureSpec,
             lineage: ScoringLineage, chunk_rows: int, explain: str, num_threads: int,
             scorer: str) -> dict[str, Any]:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    job_id = ray.get_runtime_context().get_job_id()
    cluster_cpus = float(sum(n["Resources"].get("CPU", 0) for n in nodes))
    cpus_per_actor = actor_cpus(cluster_cpus, target)
    started = time.perf_counter()
    try:
        # One read task per staged file: Ray Data would merge small files into one block, and
        # one block feeds one actor.
        files = len(fs.get_file_info(pafs.FileSelector(features_path)))
        (ray.data.read_parquet(features_path, filesystem=fs, override_num_blocks=files)
         .map_batches(
             ChunkScorer,
             fn_constructor_kwargs={
                 "model_path": str(model.path), "version": model.version,
                 "calibration": model.calibration, "spec": spec, "lineage": lineage,
                 "explain": explain, "scorer": scorer, "num_threads": num_threads},
             batch_size=chunk_rows, batch_format="pyarrow",
             compute=ray.data.ActorPoolStrategy(size=target.actors), num_cpus=cpus_per_actor)
         .write_parquet(predictions_path, filesystem=fs))
    except Exception as err:  # Ray Data wraps what failed where; _job_error sorts it out
        raise _job_error(err, target, job_id, ray.exceptions.RayError) from None
    return {"address": target.address, "job_id": job_id, "actors": target.actors,
            "nodes": len(nodes), "cluster_cpus": cluster_cpus, "cpus_per_actor": cpus_per_actor,
            "cluster_seconds": time.perf_counter() - started}


def actor_cpus(cluster_cpus: float, target: RayTarget) -> float:
    """One CPU per actor, and one more for Ray Data's read and write tasks: measured here, a
    pool that leaves no whole CPU free on any node waits for its input forever."""
    if cluster_cpus < target.actors + 1:
        raise RayEngineError(
            f"the Ray cluster at {target.address} has {cluster_cpus:g} CPU(s); "
            f"BATCH_PLATFORM_RAY_ACTORS={target.actors} needs {target.actors + 1}: one per "
            "actor and one for reading and writing the staged Parquet")
    return 1.0


def _job_error(err: Exception, target: RayTarget, job_id: str,
               ray_error: type[Exception]) -> Exception:
    """A failed job as an error that says what happened: the model (not retried), the cluster
    (retried by the stage), or else the error itself."""
    chain, cause = [], err
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    marker = f"{ModelLoadError.__name__}: "
    if marker in text:
        detail = text[text.index(marker) + len(marker):].splitlines()[0]
        return ModelLoadError(f"Ray job {job_id} on {target.address} failed: {detail}")
    if any(isinstance(e, ray_error) for e in chain):
        first = str(err).splitlines()[0] if str(err) else ""
        return RayClusterUnavailable(f"Ray job {job_id} on {target.address} failed "
                                     f"({type(err).__name__}); nothing was written: {first}")
    return err


def _remove(fs: pafs.FileSystem, path: str) -> None:
    """Remove this call's staging directory, and its run's directory once empty."""
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)
    for parent in (path.rsplit("/", 1)[0], path.rsplit("/", 2)[0]):
        try:
            if not fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True)):
                fs.delete_dir(parent)
        except (FileNotFoundError, OSError):
            pass
