"""Shared fixtures: a real three-week slice of the flights year, materialized once per session.

The slice: landing files for 2013-01-01..2013-01-21, features for all of it, a model trained on
the first two weeks and validated on the third, and the third week scored from raw to reports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from batch_platform.definitions import build_definitions
from batch_platform.orchestration.jobs import partition_range_tags, run_failure_messages
from batch_platform.platform.dates import days_between
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings
from batch_platform.use_cases.flights import landing as flights_landing

# How any DuckDB 1.5.5 client attaches the lake, from the repository's root (the README's line).
ATTACH_LAKE = ("SET extension_directory = 'data/lake/extensions'; "
               "ATTACH 'ducklake:sqlite:data/lake/catalog.sqlite' AS lake (READ_ONLY); USE lake;")


def attach_lake(data_dir: Path) -> str:
    """The documented line, for the lake of ``data_dir``."""
    return ATTACH_LAKE.replace("data/", f"{data_dir}/")


FIRST = dt.date(2013, 1, 1)
LAST = dt.date(2013, 1, 21)
TRAIN = (dt.date(2013, 1, 1), dt.date(2013, 1, 14))
WEEK = (dt.date(2013, 1, 15), dt.date(2013, 1, 21))
TEST_ROUNDS = 60


def model_config(**overrides: object) -> dict:
    config = {"train_start": TRAIN[0].isoformat(), "train_end": TRAIN[1].isoformat(),
              "valid_start": WEEK[0].isoformat(), "valid_end": WEEK[1].isoformat(),
              "rounds": TEST_ROUNDS}
    return {"ops": {"models__flights": {"config": config | overrides}}}


@dataclass
class Platform:
    """A data directory with its definitions and a Dagster instance, driven like an operator."""

    settings: Settings
    instance: dg.DagsterInstance

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(self.settings)

    def run(self, job: str, start: dt.date | None = None, end: dt.date | None = None,
            run_config: dict | None = None, settings: Settings | None = None,
            raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        defs = build_definitions(settings or self.settings)
        tags = partition_range_tags(start.isoformat(), (end or start).isoformat()) if start else {}
        return defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config or {},
            raise_on_error=raise_on_error)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """What an analyst sees: the lake, read-only."""
        with lake_of(self.settings).read_only() as con:
            return con.execute(sql, params or []).pl()

    def land(self, day: dt.date) -> None:
        flights_landing.land(self.settings.landing_dir, [day], with_reference=False)


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(run_failure_messages(result))


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=data_dir).validated()
    flights_landing.land(settings.landing_dir, days_between(FIRST, LAST))
    with dg.instance_for_test() as instance:
        platform = Platform(settings, instance)
        platform.run("flights_features", FIRST, LAST)
        platform.run("flights_train", run_config=model_config())
        platform.run("flights_daily", *WEEK)
        yield platform


@pytest.fixture
def landing_restored(platform: Platform) -> Iterator[Path]:
    """The landing folder; every daily file a test damages is laid again afterwards."""
    yield platform.settings.landing_dir
    flights_landing.land(platform.settings.landing_dir, days_between(FIRST, LAST),
                 with_reference=False)
