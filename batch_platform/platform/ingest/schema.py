"""Input schemas of the landing sources: names, types, required values and valid ranges.

A schema is data, not code paths: ``ingest.validate`` enforces any ``SourceSchema`` the same
way, so a new source is a new schema, not new validation logic. A use case declares its
sources in YAML; ``column_type``, ``declared_column`` and ``sql_rule`` turn the words of that
declaration (``type: clock_time``, ``min``, ``one_of``, ``pattern``, ``max_length``, a SQL row
rule) into one.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

MISSING_TOKENS = ("", "NA")
# A text column's longest value unless it declares ``max_length``: far above any code or name,
# far below a value that would bloat every table holding it.
DEFAULT_TEXT_MAX_LENGTH = 1000
# The raw and quarantine tables put these beside a source's columns (and lineage, "_..."); the
# validator's own working columns start with "__". A source may not use them.
RESERVED_COLUMN_NAMES = ("reason", "partition_date")

Parser = Callable[[pl.Expr], pl.Expr]
Condition = Callable[[pl.Expr], pl.Expr]


@functools.cache
def check_timezone(name: str) -> str:
    """``name`` if both zoneinfo and Polars know the time zone; a ValueError naming it if not."""
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
        pl.Series([None], dtype=pl.Datetime("us")).dt.replace_time_zone(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError):
        raise ValueError(f"{name!r} is not a time zone (IANA names such as America/New_York "
                         "or UTC)") from None
    return name


# --- types -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValueRule:
    """A condition on a column's typed, non-null value. A value that breaks it rejects the row
    with ``column: 'value' <description>``."""

    condition: Condition
    description: str  # e.g. "must be between 1 and 12"


@dataclass(frozen=True)
class ColumnType:
    name: str  # what the reason says a bad value is not, e.g. "an integer"
    dtype: pl.DataType
    parse: Parser  # stripped, non-missing text to the typed value; null when it is not one
    check: ValueRule | None = None  # what every parsed value of the type must also be
    declared: str = ""  # the name a schema declares it by, e.g. "integer"


def _integer(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Int64, strict=False).cast(pl.Int32, strict=False)


def _number(expr: pl.Expr) -> pl.Expr:
    number = expr.cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)  # NaN and inf are not measurements


def _text(expr: pl.Expr) -> pl.Expr:
    return expr


_BOOLEAN_WORDS = {**dict.fromkeys(("true", "t", "yes", "y", "1"), True),
                  **dict.fromkeys(("false", "f", "no", "n", "0"), False)}


def _boolean(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().replace_strict(_BOOLEAN_WORDS, default=None,
                                                  return_dtype=pl.Boolean)


_SECONDS = "%Y-%m-%dT%H:%M:%S"
_FRACTION = r"^\.(\d{1,6})\d{0,3}(?:[Z+-]|$)"  # up to nanoseconds, kept to microseconds
_OFFSET = r"^[+-]\d{2}(?::?\d{2})?$"


def _in_years(instant: pl.Expr) -> pl.Expr:
    # Years a reader can hold (Python's datetime): the parser takes 20130-1-01 as year 20130.
    return pl.when(instant.dt.year().is_between(1, 9999)).then(instant)


def _date(expr: pl.Expr) -> pl.Expr:
    # Exactly YYYY-MM-DD: the parser alone takes 2013-1-5.
    parsed = pl.when(expr.str.len_bytes() == 10).then(expr).str.strptime(
        pl.Date, "%Y-%m-%d", strict=False)
    return _in_years(parsed)


def _timestamp(timezone: str) -> Parser:
    """ISO 8601 to UTC: ``Z``, an offset (``-05:00``, ``+0100``, ``+01``) or none, which is a
    local time in ``timezone``; ``T`` or a space between date and time, fractional seconds
    optional. A local time a clock change repeats is its first (earliest) occurrence; one it
    skips (02:30 when clocks spring forward) does not exist: null, so the row is rejected."""

    def parse(expr: pl.Expr) -> pl.Expr:
        # Step by step on the whole column (see ``_parse_timestamps``): as one expression,
        # each intermediate would be computed again by every expression that reads it.
        return expr.map_batches(functools.partial(_parse_timestamps, timezone=timezone),
                                return_dtype=pl.Datetime("us", "UTC"), is_elementwise=True)

    return parse


def _parse_timestamps(values: pl.Series, timezone: str) -> pl.Series:
    """The UTC instants of ``values`` (see ``_timestamp``), null where a value is not one.

    The two common forms are told apart by their length and each parser runs on its own rows
    (null elsewhere, which costs next to nothing): no format is tried and dropped (a failed
    strptime is slow), and only other forms pay for the general parse.
    """
    c = pl.col
    steps = [
        {"text": c("text").str.replace(" ", "T", literal=True)},
        {"length": c("text").str.len_bytes()},
        {"utc_form": (c("length") == 20) & c("text").str.ends_with("Z"),
         "local_form": c("length") == 19},
        {"utc": pl.when("utc_form").then("text").str.strptime(
            pl.Datetime("us"), _SECONDS + "Z", strict=False),
         "local": pl.when("local_form").then("text").str.strptime(
             pl.Datetime("us"), _SECONDS, strict=False),
         "other": pl.when(~c("utc_form") & ~c("local_form")).then("text")},
        # Fractional seconds or an offset.
        {"naive": c("other").str.slice(0, 19).str.strptime(pl.Datetime("us"), _SECONDS,
                                                           strict=False),
         "rest": c("other").str.slice(19)},
        {"dotted": c("rest").str.starts_with(".")},
        {"fraction": pl.when("dotted").then("rest").str.extract(_FRACTION),
         "zone": pl.when("dotted").then(c("rest").str.strip_chars_start(".0123456789"))
         .otherwise("rest")},
        {"naive": c("naive") + pl.duration(
            microseconds=c("fraction").str.pad_end(6, "0").cast(pl.Int64).fill_null(0)),
         "whole": ~c("dotted") | c("fraction").is_not_null(),  # not "." alone, nor 10 digits
         "offset": pl.when((c("zone") != "Z") & (c("zone") != "")).then("zone")},
        {"hours": c("offset").str.slice(1, 2).cast(pl.Int32, strict=False),
         "minutes": pl.when(c("offset").str.len_bytes() > 3).then(c("offset").str.slice(-2))
         .otherwise(pl.lit("0")).cast(pl.Int32, strict=False)},
        {"offset_ok": c("offset").str.contains(_OFFSET) & (c("hours") < 24)
         & (c("minutes") < 60),
         "ahead": pl.when(c("offset").str.starts_with("-")).then(-1).otherwise(1)
         * (c("hours") * 60 + c("minutes"))},
        {"utc": pl.coalesce(
            "utc",
            pl.when(c("whole") & (c("zone") == "Z")).then("naive")
            .when(c("whole") & c("offset_ok")).then(c("naive") - pl.duration(minutes="ahead"))),
         "local": pl.coalesce("local", pl.when(c("whole") & (c("zone") == "")).then("naive"))},
        {"instant": pl.coalesce(
            c("utc").dt.replace_time_zone("UTC"),
            c("local").dt.replace_time_zone(timezone, ambiguous="earliest",
                                            non_existent="null").dt.convert_time_zone("UTC"))},
    ]
    frame = values.to_frame("text")
    for step in steps:
        frame = frame.with_columns(**step)
    return frame.select(_in_years(c("instant"))).to_series()


INTEGER = ColumnType("an integer", pl.Int32(), _integer, declared="integer")
NUMBER = ColumnType("a finite number", pl.Float64(), _number, declared="number")
TEXT = ColumnType("text", pl.String(), _text, declared="text")
BOOLEAN = ColumnType("a boolean (true/false, t/f, yes/no, y/n, 1/0)", pl.Boolean(), _boolean,
                     declared="boolean")
# An integer HHMM, as schedules often have it: 2400 is midnight at the end of the day.
CLOCK_TIME = ColumnType(
    "a clock time HHMM", pl.Int32(), _integer,
    check=ValueRule(lambda c: (c >= 0) & (c <= 2400) & (c % 100 < 60),
                    "must be a clock time HHMM between 0000 and 2400"),
    declared="clock_time")
DATE = ColumnType("a date YYYY-MM-DD", pl.Date(), _date, declared="date")

_FIXED_TYPES = {t.declared: t for t in (INTEGER, NUMBER, TEXT, BOOLEAN, CLOCK_TIME, DATE)}
COLUMN_TYPE_NAMES: tuple[str, ...] = (*_FIXED_TYPES, "timestamp")
_NUMERIC_TYPES = ("integer", "number", "clock_time")


@functools.cache
def _timestamp_type(timezone: str) -> ColumnType:
    # Cached: one type per zone, so two schemas declaring the same columns are equal.
    return ColumnType(
        "a timestamp (ISO 8601 like 2013-01-01T10:00:00Z or 2013-01-01T05:00:00-05:00; "
        f"without an offset, a local time in {timezone} that exists)",
        pl.Datetime("us", "UTC"), _timestamp(timezone), declared="timestamp")


def column_type(name: str, timezone: str) -> ColumnType:
    """The type a schema declares as ``name``; ``timezone`` is the local time of a timestamp
    without an offset."""
    check_timezone(timezone)
    if name == "timestamp":
        return _timestamp_type(timezone)
    if not isinstance(name, str) or name not in _FIXED_TYPES:
        raise ValueError(f"unknown column type {name!r}; the types are "
                         f"{', '.join(COLUMN_TYPE_NAMES)}")
    return _FIXED_TYPES[name]


# --- columns ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    rules: tuple[ValueRule, ...] = ()  # beside the type's own check
    # Characters a text value may have (the validator rejects longer ones before any rule).
    max_length: int | None = None
    # Whether a value may hold a line break (a quoted field across lines); other control
    # characters are rejected in every column.
    multiline: bool = False

    def __post_init__(self) -> None:
        if self.max_length is None and self.type.dtype == pl.String:
            object.__setattr__(self, "max_length", DEFAULT_TEXT_MAX_LENGTH)

    @property
    def value_rules(self) -> tuple[ValueRule, ...]:
        """The type's check, then the column's own rules: what the validator applies."""
        return ((self.type.check,) if self.type.check else ()) + self.rules


def _show(number: float) -> str:
    # 1900.0 (YAML read as a float) reads as 1900, as it was written.
    return str(int(number)) if float(number).is_integer() else str(number)


def between(low: float, high: float) -> ValueRule:
    return ValueRule(lambda c: c.is_between(low, high),
                     f"must be between {_show(low)} and {_show(high)}")


def at_least(low: float) -> ValueRule:
    return ValueRule(lambda c: c >= low, f"must be at least {_show(low)}")


def at_most(high: float) -> ValueRule:
    return ValueRule(lambda c: c <= high, f"must be at most {_show(high)}")


def allowed(values: Sequence[object], type_: ColumnType = TEXT,
            describe: str | None = None) -> ValueRule:
    """The value must be one of ``values``, given as text (as they would be written in the
    file, parsed by ``type_``) or as values of the type."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"one_of must be a non-empty list of values, not {values!r}")
    if type_.dtype == pl.String and not all(isinstance(v, str) for v in values):
        raise ValueError(f"one_of values of a text column must be text (quote them in YAML): "
                         f"{list(values)!r}")
    written = pl.Series([str(v).lower() if isinstance(v, bool) else str(v) for v in values],
                        dtype=pl.String)
    typed = pl.select(type_.parse(pl.lit(written).str.strip_chars()).cast(type_.dtype)
                      ).to_series()
    bad = [v for v, t in zip(values, typed, strict=True) if t is None]
    if bad:
        raise ValueError(f"one_of value(s) {', '.join(map(repr, bad))} are not {type_.name}")
    shown = ", ".join(str(v) for v in values)
    return ValueRule(lambda c: c.is_in(typed.implode()), f"must be {describe or f'one of {shown}'}")


def matching(pattern: str, describe: str | None = None) -> ValueRule:
    """The whole text must match the regular expression ``pattern`` (Rust regex syntax)."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a regular expression, not {pattern!r}")
    anchored = f"^(?:{pattern})$"  # the whole value, as a reader of "pattern" expects
    try:
        pl.select(pl.lit("").str.contains(anchored))
    except pl.exceptions.PolarsError as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"pattern {pattern!r} is not a regular expression: {detail}") from None
    return ValueRule(lambda c: c.str.contains(anchored),
                     f"must be {describe}" if describe else f"must match {pattern}")


def declared_column(name: str, type_name: str, timezone: str, required: bool = False,
                    min: float | None = None, max: float | None = None,
                    one_of: Sequence[object] | None = None, pattern: str | None = None,
                    describe: str | None = None, max_length: int | None = None,
                    multiline: bool = False) -> Column:
    """A column as a schema declares it. ``min``/``max`` bound a numeric value (integer, number,
    clock_time); ``one_of`` lists the allowed values; ``pattern`` is a regular expression the
    whole text must match. ``describe`` says in words what ``pattern`` (or, without one,
    ``one_of``) allows, for the reason: "a 2-letter code" gives "must be a
    2-letter code". ``max_length`` (text; default ``DEFAULT_TEXT_MAX_LENGTH``) is the most
    characters a value may have; ``multiline`` (text) allows line breaks in a value."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a column needs a name, not {name!r}")
    type_ = column_type(type_name, timezone)
    if max_length is not None:
        if type_name != "text":
            raise ValueError(f"column {name!r}: max_length bounds text, not {type_name}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"column {name!r}: max_length must be a positive whole number of "
                             f"characters, not {max_length!r}")
    if multiline and type_name != "text":
        raise ValueError(f"column {name!r}: multiline allows line breaks in text, not in "
                         f"{type_name}")
    rules: list[ValueRule] = []
    if min is not None or max is not None:
        if type_name not in _NUMERIC_TYPES:
            raise ValueError(f"column {name!r}: min and max bound numbers ("
                             f"{', '.join(_NUMERIC_TYPES)}), not {type_name}")
        for bound in (min, max):
            if bound is not None and (isinstance(bound, bool) or not isinstance(
                    bound, int | float) or not math.isfinite(bound)):
                raise ValueError(f"column {name!r}: min and max must be numbers, not {bound!r}")
        if min is not None and max is not None:
            if min > max:
                raise ValueError(f"column {name!r}: min {_show(min)} is above max {_show(max)}")
            rules.append(between(min, max))
        else:
            rules.append(at_least(min) if min is not None else at_most(max))  # type: ignore[arg-type]
    if describe is not None and pattern is None and one_of is None:
        raise ValueError(f"column {name!r}: describe says what pattern or one_of allows; "
                         "it has neither")
    if describe is not None and pattern is not None and one_of is not None:
        raise ValueError(f"column {name!r}: describe would say what both pattern and one_of "
                         "allow; keep one of them")
    if one_of is not None:
        try:
            rules.append(allowed(one_of, type_, describe if pattern is None else None))
        except ValueError as err:
            raise ValueError(f"column {name!r}: {err}") from None
    if pattern is not None:
        if type_name != "text":
            raise ValueError(f"column {name!r}: a pattern matches text, not {type_name}")
        try:
            rules.append(matching(pattern, describe))
        except ValueError as err:
            raise ValueError(f"column {name!r}: {err}") from None
    return Column(name, type_, bool(required), tuple(rules), max_length, bool(multiline))


# --- rows ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowRule:
    """A condition across columns of one row, on typed values; rows that break it are rejected.

    ``condition`` receives a function that returns the typed expression of a column by name
    (typed columns carry their own names, so an expression over ``pl.col(name)`` works too).
    A row with a null in any of ``columns`` is not judged.
    """

    columns: tuple[str, ...]
    condition: Callable[[Callable[[str], pl.Expr]], pl.Expr]
    reason: str
    expression: str = ""  # the SQL it was declared as, if it was

    @property
    def label(self) -> str:
        return repr(self.expression) if self.expression else f"'{self.reason}'"


def sql_rule(expression: str, reason: str) -> RowRule:
    """A row rule declared as a SQL boolean expression over the row's typed columns, e.g.
    ``hour * 100 + minute = departs_at``. ``SourceSchema`` checks the columns it names."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"a row rule needs a SQL expression, not {expression!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"row rule {expression!r} needs a reason, not {reason!r}")
    try:
        condition = pl.sql_expr(expression)
    except pl.exceptions.PolarsError as err:
        raise ValueError(f"row rule {expression!r} is not a SQL expression Polars can read: "
                         f"{' '.join(str(err).split())}") from None
    columns = tuple(dict.fromkeys(condition.meta.root_names()))
    if not columns:
        raise ValueError(f"row rule {expression!r} names no column: it would judge every row "
                         "the same")
    return RowRule(columns, lambda _: condition, reason.strip(), expression)


# --- sources ---------------------------------------------------------------------------------

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
    # A timestamp placing the row: its local date (in ``timezone``) must be the partition's,
    # and its local hour the value of ``hour_column``.
    timestamp_column: str | None = None
    hour_column: str | None = None
    timezone: str = "UTC"
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Lists (as a declaration gives them) become tuples: a schema is hashable data.
        for name in ("columns", "key", "row_rules", "date_columns"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))
        self._check()

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.type.dtype for c in self.columns}

    def _check(self) -> None:
        """Raise ValueError, naming the source, for a schema the validator could not apply."""
        where = f"source {self.name!r}"
        if not self.columns:
            raise ValueError(f"{where} has no columns")
        names = self.column_names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{where} repeats column(s) {', '.join(repeated)}")
        reserved = [n for n in names if n in RESERVED_COLUMN_NAMES or n.startswith("_")]
        if reserved:
            raise ValueError(f"{where}: column name(s) {', '.join(reserved)} are reserved "
                             f"({', '.join(RESERVED_COLUMN_NAMES)} and names starting with _)")
        check_timezone(self.timezone)
        types = self.polars_schema

        def known(role: str, columns: Sequence[str]) -> None:
            unknown = [c for c in columns if c not in types]
            if unknown:
                raise ValueError(f"{where}: {role} names unknown column(s) "
                                 f"{', '.join(map(repr, unknown))}; columns: {', '.join(names)}")

        def integer(role: str, column: str) -> None:
            if not types[column].is_integer():
                raise ValueError(f"{where}: {role} {column!r} is {types[column]}, not an integer")

        known("key", self.key)
        if self.date_columns is not None:
            if len(self.date_columns) != 3:
                raise ValueError(f"{where}: date_columns name three columns: year, month, day")
            known("date_columns", self.date_columns)
            for column in self.date_columns:
                integer("date column", column)
        if self.hour_column is not None and self.timestamp_column is None:
            raise ValueError(f"{where}: hour_column {self.hour_column!r} is the local hour of "
                             "a timestamp_column, and there is none")
        if self.timestamp_column is not None:
            known("timestamp_column", [self.timestamp_column])
            if not isinstance(types[self.timestamp_column], pl.Datetime):
                raise ValueError(f"{where}: timestamp_column {self.timestamp_column!r} is "
                                 f"{types[self.timestamp_column]}, not a timestamp")
        if self.hour_column is not None:
            known("hour_column", [self.hour_column])
            integer("hour_column", self.hour_column)
        empty = pl.DataFrame(schema=types)
        for rule in self.row_rules:
            known(f"row rule {rule.label}", rule.columns)
            try:
                result = empty.select(rule.condition(pl.col)).to_series()
            except pl.exceptions.PolarsError as err:
                raise ValueError(f"{where}: row rule {rule.label} cannot be evaluated on the "
                                 f"columns' types: {' '.join(str(err).split())}") from None
            if result.dtype != pl.Boolean:
                raise ValueError(f"{where}: row rule {rule.label} gives {result.dtype}, not a "
                                 "true/false condition")
