"""Scale data: any number of real-looking flights for a day, through the real schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.completeness import MANIFEST, incomplete, read_manifest
from batch_platform.platform.ingest.schema import SourceSchema
from batch_platform.use_cases.flights import features, scale
from batch_platform.use_cases.flights import landing as flights_landing
from batch_platform_tests.flights import FLIGHTS_SOURCE, PLANES, WEATHER
from batch_platform_tests.platform.support import LINEAGE

DAY = dt.date(2013, 3, 10)  # the spring-forward day: local hours must still line up


@pytest.fixture(scope="module")
def scaled_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scaled") / "landing"
    scale.land_scaled(folder, DAY, 30_000)
    return folder


def test_scaled_day_passes_the_real_schema_with_unique_keys(scaled_landing: Path) -> None:
    validated = ingest.validate_file(landing.landing_file(scaled_landing, "flights", DAY),
                                     FLIGHTS_SOURCE, DAY)
    assert validated.rejected.height == 0, validated.rejected.head()
    assert validated.good.height == 30_000
    assert validated.good.select(FLIGHTS_SOURCE.key).is_duplicated().sum() == 0


def test_a_scaled_day_is_a_whole_delivery(scaled_landing: Path) -> None:
    """The feed declares manifests: a scaled day without one would never be read."""
    path = landing.landing_file(scaled_landing, "flights", DAY)
    assert read_manifest(path).rows == 30_000
    assert incomplete(path, MANIFEST, dt.datetime.now(dt.UTC), 10) is None


def test_scaled_rows_are_real_flights_of_the_season() -> None:
    scaled = scale.scaled_flights(DAY, 5_000, seed=1)
    real = flights_landing.read_source_text("flights").filter(pl.col("month") == "3")
    route = ["carrier", "origin", "dest", "sched_dep_time", "sched_arr_time", "distance"]
    unseen = scaled.select(route).join(real.select(route).unique(), on=route, how="anti")
    assert unseen.height == 0  # every schedule and route is a real March one
    assert scaled.select("year", "month", "day").unique().rows() == [("2013", "3", "10")]
    assert scaled.equals(scale.scaled_flights(DAY, 5_000, seed=1))  # reproducible
    assert not scaled.equals(scale.scaled_flights(DAY, 5_000, seed=2))


def test_scaled_day_builds_features_with_weather_and_previous_day(scaled_landing: Path) -> None:
    def raw(schema: SourceSchema, day: dt.date) -> pl.DataFrame:
        validated = ingest.validate_file(landing.landing_file(scaled_landing, schema.name, day),
                                         schema, day)
        return ingest.with_lineage(validated.good, validated, LINEAGE)

    previous = DAY - dt.timedelta(days=1)
    flights = pl.concat([raw(FLIGHTS_SOURCE, previous), raw(FLIGHTS_SOURCE, DAY)])
    planes = ingest.validate_file(landing.reference_file(scaled_landing, "planes"), PLANES,
                                  None).good
    built = features.build_flight_features(flights, raw(WEATHER, DAY), planes, DAY, DAY)
    assert built.height == 30_000
    assert built.get_column("flight_id").n_unique() == 30_000
    assert built.get_column("temp").null_count() < built.height * 0.05
    assert built.get_column("prev_day_origin_late_rate").null_count() == 0


def test_a_day_needs_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="rows must be positive"):
        scale.scaled_flights(DAY, 0)
