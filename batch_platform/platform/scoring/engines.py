"""The scoring engine of the predictions stage, chosen by ``BATCH_PLATFORM_ENGINE``.

``local`` scores in the step's own process; ``ray`` on a Ray cluster (``ray_engine.py``).
Both return the same predictions, so the asset around them, its checks and its warehouse
write do not change with the engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from batch_platform.platform.features.spec import FeatureSpec
from batch_platform.platform.models.booster import LoadedModel
from batch_platform.platform.scoring import score as scoring
from batch_platform.platform.scoring.score import ScoringLineage, ScoringStats
from batch_platform.settings import Settings


@dataclass(frozen=True)
class EngineReport:
    """Which engine scored, how wide, and (on Ray) the job's identity and staging cost."""

    engine: str
    workers: int
    ray: Any = None  # ray_engine.RayRun when engine == "ray"

    def metadata(self) -> dict[str, object]:
        values: dict[str, object] = {"engine": self.engine, "engine_workers": self.workers}
        if self.ray is not None:
            values |= {
                "ray_address": self.ray.address,
                "ray_job_id": self.ray.job_id,
                "ray_nodes": self.ray.nodes,
                "ray_cluster_cpus": self.ray.cluster_cpus,
                "ray_cpus_per_actor": self.ray.cpus_per_actor,
                "ray_cluster_seconds": round(self.ray.cluster_seconds, 3),
                "staging_seconds": round(self.ray.staging_seconds, 3),
            }
        return values


def score(
    features: pl.DataFrame,
    model: LoadedModel,
    spec: FeatureSpec,
    lineage: ScoringLineage,
    settings: Settings,
    scope: tuple[str, dt.date, dt.date],
    warn: Callable[[str], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[pl.DataFrame, ScoringStats, EngineReport]:
    """Score ``features`` with the engine the settings name. ``scope`` (asset, first and last
    day) names the Ray engine's staging directory, together with the run id. The model reads
    its own features, by name (the actors get the narrowed spec)."""
    spec = scoring.own_features(spec, model)
    if settings.engine != "ray" or features.height == 0:  # no rows: nothing to distribute
        predictions, stats = scoring.score(
            features, model, spec, lineage, chunk_rows=settings.chunk_rows,
            explain=settings.explain, num_threads=settings.scoring_threads,
            scorer=settings.scorer, warn=warn, explain_max_rows=settings.explain_max_rows,
            on_chunk=on_chunk)
        return predictions, stats, EngineReport("local", 1)
    from batch_platform.platform.scoring import ray_engine  # Ray stays out of the default path

    assert settings.ray_address is not None  # validated with the settings
    target = ray_engine.RayTarget(settings.ray_address, settings.ray_actors,
                                  settings.staging_location, settings.ray_connect_timeout_seconds)
    asset, start, end = scope
    predictions, stats, run = ray_engine.score(
        features, model, spec, lineage, target,
        ray_engine.staging_dir(target.staging_uri, lineage.run_id, asset, start, end),
        chunk_rows=settings.chunk_rows, explain=settings.explain,
        # Each actor holds one CPU of the cluster: more threads would only contend for it.
        num_threads=settings.scoring_threads or 1, scorer=settings.scorer, warn=warn,
        explain_max_rows=settings.explain_max_rows)
    if on_chunk is not None:
        on_chunk(predictions.height)
    return predictions, stats, EngineReport("ray", settings.ray_actors, run)
