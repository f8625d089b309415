"""Input schemas of the landing sources: names, types, required values and valid ranges.

A schema is data, not code paths: ``core.ingest`` enforces any ``SourceSchema`` the same way,
so a new source is a new schema here, not new validation logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

NYC_AIRPORTS = ("EWR", "JFK", "LGA")
LOCAL_TIMEZONE = "America/New_York"
MISSING_TOKENS = ("", "NA")

Parser = Callable[[pl.Expr], pl.Expr]


def _integer(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Int64, strict=False).cast(pl.Int32, strict=False)


def _number(expr: pl.Expr) -> pl.Expr:
    number = expr.cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)  # NaN and inf are not measurements


def _text(expr: pl.Expr) -> pl.Expr:
    return expr


def _utc_timestamp(expr: pl.Expr) -> pl.Expr:
    parsed = expr.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%SZ", strict=False)
    return parsed.dt.replace_time_zone("UTC")


@dataclass(frozen=True)
class ColumnType:
    name: str  # what the reason says a bad value is not, e.g. "an integer"
    dtype: pl.DataType
    parse: Parser


INTEGER = ColumnType("an integer", pl.Int32(), _integer)
NUMBER = ColumnType("a finite number", pl.Float64(), _number)
TEXT = ColumnType("text", pl.String(), _text)
UTC_TIMESTAMP = ColumnType("a UTC timestamp like 2013-01-01T10:00:00Z", pl.Datetime("us", "UTC"),
                           _utc_timestamp)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    # A condition on the typed value and how the reason describes it.
    valid: Callable[[pl.Expr], pl.Expr] | None = None
    valid_description: str = ""


@dataclass(frozen=True)
class RowRule:
    """A condition across columns of one row, on typed values; rows that break it are rejected.

    ``condition`` receives a function that returns the typed expression of a column by name.
    """

    columns: tuple[str, ...]
    condition: Callable[[Callable[[str], pl.Expr]], pl.Expr]
    reason: str


@dataclass(frozen=True)
class SourceSchema:
    name: str
    columns: tuple[Column, ...]
    # Columns that identify a row; a second row with the same key is rejected as a duplicate.
    key: tuple[str, ...] = ()
    row_rules: tuple[RowRule, ...] = ()
    # Columns holding the local calendar date of the row, checked against the partition.
    date_columns: tuple[str, str, str] | None = None
    partitioned: bool = True
    # A landing file with fewer data rows fails as a whole instead of emptying its partition.
    min_rows: int = 0
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.type.dtype for c in self.columns}


Rule = tuple[Callable[[pl.Expr], pl.Expr], str]


def between(low: float, high: float) -> Rule:
    return (lambda c: c.is_between(low, high)), f"must be between {low:g} and {high:g}"


def _col(name: str, type_: ColumnType, required: bool = False,
         rule: Rule | None = None) -> Column:
    if rule is None:
        return Column(name, type_, required)
    return Column(name, type_, required, valid=rule[0], valid_description=rule[1])


def _clock_time() -> Rule:
    return ((lambda c: (c >= 0) & (c <= 2400) & (c % 100 < 60)),
            "must be a clock time HHMM between 0000 and 2400")


_NYC_ORIGIN: Rule = ((lambda c: c.is_in(list(NYC_AIRPORTS))),
               f"must be one of the New York airports {', '.join(NYC_AIRPORTS)}")
_AIRPORT_CODE: Rule = ((lambda c: c.str.contains(r"^[A-Z0-9]{3}$")),
                       "must be a 3-character airport code")

def _local(c: Callable[[str], pl.Expr]) -> pl.Expr:
    return c("time_hour").dt.convert_time_zone(LOCAL_TIMEZONE)


# time_hour (UTC) is what weather joins on: it must be the row's own local date and hour.
_TIME_HOUR_IS_LOCAL_HOUR = RowRule(
    ("time_hour", "year", "month", "day", "hour"),
    lambda c: ((_local(c).dt.year() == c("year")) & (_local(c).dt.month() == c("month"))
               & (_local(c).dt.day() == c("day")) & (_local(c).dt.hour() == c("hour"))),
    f"time_hour is not the row's local date and hour ({LOCAL_TIMEZONE})",
)

FLIGHTS = SourceSchema(
    name="flights",
    columns=(
        _col("year", INTEGER, True, between(1900, 2100)),
        _col("month", INTEGER, True, between(1, 12)),
        _col("day", INTEGER, True, between(1, 31)),
        _col("dep_time", INTEGER, False, _clock_time()),
        _col("sched_dep_time", INTEGER, True, _clock_time()),
        _col("dep_delay", NUMBER),
        _col("arr_time", INTEGER, False, _clock_time()),
        _col("sched_arr_time", INTEGER, True, _clock_time()),
        _col("arr_delay", NUMBER),
        _col("carrier", TEXT, True, ((lambda c: c.str.contains(r"^[A-Z0-9]{2}$")),
                                     "must be a 2-character carrier code")),
        _col("flight", INTEGER, True, between(1, 99999)),
        _col("tailnum", TEXT),
        _col("origin", TEXT, True, _NYC_ORIGIN),
        _col("dest", TEXT, True, _AIRPORT_CODE),
        _col("air_time", NUMBER, False, between(0, 1440)),
        _col("distance", NUMBER, True, between(1, 10000)),
        _col("hour", INTEGER, True, between(0, 23)),
        _col("minute", INTEGER, True, between(0, 59)),
        _col("time_hour", UTC_TIMESTAMP, True),
    ),
    key=("carrier", "flight", "origin", "sched_dep_time"),
    row_rules=(
        RowRule(("hour", "minute", "sched_dep_time"),
                lambda c: c("hour") * 100 + c("minute") == c("sched_dep_time"),
                "hour and minute disagree with sched_dep_time"),
        _TIME_HOUR_IS_LOCAL_HOUR,
    ),
    date_columns=("year", "month", "day"),
    min_rows=1,
)

WEATHER = SourceSchema(
    name="weather",
    columns=(
        _col("origin", TEXT, True, _NYC_ORIGIN),
        _col("year", INTEGER, True, between(1900, 2100)),
        _col("month", INTEGER, True, between(1, 12)),
        _col("day", INTEGER, True, between(1, 31)),
        _col("hour", INTEGER, True, between(0, 23)),
        _col("temp", NUMBER, False, between(-80, 140)),
        _col("dewp", NUMBER, False, between(-80, 140)),
        _col("humid", NUMBER, False, between(0, 100)),
        _col("wind_dir", NUMBER, False, between(0, 360)),
        _col("wind_speed", NUMBER, False, between(0, 300)),
        _col("wind_gust", NUMBER, False, between(0, 300)),
        _col("precip", NUMBER, False, between(0, 20)),
        _col("pressure", NUMBER, False, between(800, 1100)),
        _col("visib", NUMBER, False, between(0, 100)),
        _col("time_hour", UTC_TIMESTAMP, True),
    ),
    # Local hours repeat when clocks fall back; the UTC hour does not.
    key=("origin", "time_hour"),
    row_rules=(_TIME_HOUR_IS_LOCAL_HOUR,),
    date_columns=("year", "month", "day"),
)

PLANES = SourceSchema(
    name="planes",
    columns=(
        _col("tailnum", TEXT, True),
        _col("year", INTEGER, False, between(1900, 2100)),
        _col("type", TEXT),
        _col("manufacturer", TEXT),
        _col("model", TEXT),
        _col("engines", INTEGER, False, between(0, 8)),
        _col("seats", INTEGER, False, between(0, 1000)),
        _col("speed", NUMBER),
        _col("engine", TEXT),
    ),
    key=("tailnum",),
    partitioned=False,
)

AIRPORTS = SourceSchema(
    name="airports",
    columns=(
        _col("faa", TEXT, True),
        _col("name", TEXT),
        _col("lat", NUMBER, False, between(-90, 90)),
        _col("lon", NUMBER, False, between(-180, 180)),
        _col("alt", NUMBER),
        _col("tz", NUMBER, False, between(-12, 14)),
        _col("dst", TEXT),
        _col("tzone", TEXT),
    ),
    key=("faa",),
    partitioned=False,
)

AIRLINES = SourceSchema(
    name="airlines",
    columns=(_col("carrier", TEXT, True), _col("name", TEXT, True)),
    key=("carrier",),
    partitioned=False,
)

SOURCES: dict[str, SourceSchema] = {
    s.name: s for s in (FLIGHTS, WEATHER, PLANES, AIRPORTS, AIRLINES)
}
