"""Resources: the warehouse (the lake's sessions and commits) and the settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, InitResourceContext

from batch_platform.platform.storage.lake import Lake, lake_of
from batch_platform.settings import Settings


class WarehouseResource(ConfigurableResource):
    """The lake: reads need no lock; each write is one commit, named by the step's run."""

    catalog: str
    data_path: str
    lock_timeout_seconds: float = 300.0
    memory_limit: str = "512MB"
    connect_timeout_seconds: float = 10.0
    previous_storage: str | None = None

    @property
    def lake(self) -> Lake:
        return Lake(self.catalog, Path(self.data_path), self.lock_timeout_seconds,
                    self.memory_limit, self.connect_timeout_seconds,
                    Path(self.previous_storage) if self.previous_storage else None)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.lake.connect() as con:
            yield con

    def commit(self, write: Callable[[duckdb.DuckDBPyConnection], None], message: str,
               details: dict[str, str]) -> float:
        """One transaction, one snapshot; the seconds its turn on the writer lock took."""
        return self.lake.commit(write, message, details)


class PlatformResource(ConfigurableResource):
    """Paths and tunables of a deployment (see ``batch_platform.settings``)."""

    data_dir: str
    use_case: str | None = None
    max_reject_fraction: float | None = None
    chunk_rows: int
    min_free_disk_mb: float
    scoring_threads: int
    lock_timeout_seconds: float
    lake_catalog: str | None = None
    lake_connect_timeout_seconds: float
    lake_retention_days: float
    duckdb_memory_limit: str
    model_version: str | None = None
    explain: str | None = None
    explain_max_rows: int | None = None
    scorer: str | None = None
    engine: str | None = None
    ray_address: str | None = None
    ray_actors: int
    staging_uri: str | None = None
    ray_connect_timeout_seconds: float
    psi_warn: float | None = None
    psi_error: float | None = None
    psi_min_rows: int | None = None
    score_psi_warn: float | None = None
    max_null_fraction: float | None = None
    rows_vs_history_tolerance: float | None = None
    freshness_lag_minutes: float | None = None
    landing_settle_seconds: float
    gate_min_days: int
    gate_min_margin: float
    gate_confidence: float
    gate_resamples: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        values = asdict(settings) | {"data_dir": str(settings.data_dir)}
        return cls(**{name: list(value) if isinstance(value, tuple) else value
                      for name, value in values.items()})

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # A read-only or full data directory fails the step before it does any work.
        self.settings.require_writable_data_dir()

    @property
    def settings(self) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(Settings)}
        values = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in values.items()}
        return Settings(**(values | {"data_dir": Path(self.data_dir)})).validated()


def warehouse_resource(settings: Settings) -> WarehouseResource:
    lake = lake_of(settings)
    return WarehouseResource(
        catalog=lake.catalog, data_path=str(lake.data_path),
        lock_timeout_seconds=lake.lock_timeout_seconds, memory_limit=lake.memory_limit,
        connect_timeout_seconds=lake.connect_timeout_seconds,
        previous_storage=str(lake.previous_storage) if lake.previous_storage else None,
    )
