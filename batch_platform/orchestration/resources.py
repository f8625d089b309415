"""Resources: the warehouse (a DuckDBResource with a lock and publishing) and the settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import duckdb
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from batch_platform.platform.storage.warehouse import Warehouse
from batch_platform.settings import Settings


class WarehouseResource(DuckDBResource):
    """The pipeline database: steps share it one at a time, then publish the analysts' snapshot.

    Unlike the stock resource, a connection holds a cross-process lock (waiting up to
    ``lock_timeout_seconds``, then naming the holder) and is closed on every path.
    """

    published_database: str
    lock_timeout_seconds: float = 300.0
    memory_limit: str = "512MB"

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.database), Path(self.published_database),
                         self.lock_timeout_seconds, self.memory_limit)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:  # type: ignore[override]
        with self.warehouse.connect("run a pipeline step") as con:
            yield con

    def write_and_publish(self, write: Callable[[duckdb.DuckDBPyConnection], None]) -> float:
        """Write and publish the analysts' snapshot in one turn on the lock; seconds publishing."""
        return self.warehouse.write_and_publish(write, "write and publish a pipeline step")


class PlatformResource(ConfigurableResource):
    """Paths and tunables of a deployment (see ``batch_platform.settings``)."""

    data_dir: str
    use_case: str | None = None
    max_reject_fraction: float | None = None
    chunk_rows: int
    scoring_threads: int
    lock_timeout_seconds: float
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
    freshness_lag_minutes: float | None = None
    landing_settle_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        values = asdict(settings) | {"data_dir": str(settings.data_dir)}
        return cls(**{name: list(value) if isinstance(value, tuple) else value
                      for name, value in values.items()})

    @property
    def settings(self) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(Settings)}
        values = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in values.items()}
        return Settings(**(values | {"data_dir": Path(self.data_dir)})).validated()


def warehouse_resource(settings: Settings) -> WarehouseResource:
    return WarehouseResource(
        database=str(settings.pipeline_db_path),
        published_database=str(settings.warehouse_path),
        lock_timeout_seconds=settings.lock_timeout_seconds,
        memory_limit=settings.duckdb_memory_limit,
    )
