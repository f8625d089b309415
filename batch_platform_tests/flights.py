"""The shipped flights use case, as tests use it: its declaration resolved once."""

from functools import cache

from batch_platform import catalog
from batch_platform.platform.use_case import UseCase
from batch_platform.use_cases.flights import landing as flights_landing


@cache
def flights_use_case() -> UseCase:
    return catalog.use_case("flights")


USE_CASE = flights_use_case()
FLIGHTS = USE_CASE.spec
FLIGHTS_SOURCE = USE_CASE.sources["flights"].schema
WEATHER = USE_CASE.sources["weather"].schema
PLANES = USE_CASE.references["planes"].schema
AIRPORTS = USE_CASE.references["airports"].schema
AIRLINES = USE_CASE.references["airlines"].schema
SOURCES = {"flights": FLIGHTS_SOURCE, "weather": WEATHER, "planes": PLANES,
           "airports": AIRPORTS, "airlines": AIRLINES}
land = flights_landing.land
read_source_text = flights_landing.read_source_text
