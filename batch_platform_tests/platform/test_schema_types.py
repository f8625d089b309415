"""Declared schemas: each type, value rule, SQL row rule and timestamp placement."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.ingest.schema import (
    COLUMN_TYPE_NAMES,
    DEFAULT_TEXT_MAX_LENGTH,
    Column,
    SourceSchema,
    column_type,
    declared_column,
    sql_rule,
)
from batch_platform_tests.flights import FLIGHTS_SOURCE as FLIGHTS

NY = "America/New_York"
UTC = dt.UTC


def _schema(*columns: Column, **options: object) -> SourceSchema:
    return SourceSchema(name="test", columns=columns, **options)  # type: ignore[arg-type]


def _validate(schema: SourceSchema, rows: dict[str, list[str | None]],
              day: dt.date | None = None) -> ingest.ValidatedFile:
    text = pl.DataFrame(rows, schema=dict.fromkeys(rows, pl.String))
    return ingest.validate(text, schema, day, "test.csv")


def _one(type_name: str, values: list[str], timezone: str = NY, **rules: object
         ) -> ingest.ValidatedFile:
    """``values`` as one column ``v`` of ``type_name``."""
    column = declared_column("v", type_name, timezone, **rules)  # type: ignore[arg-type]
    return _validate(_schema(column), {"v": values})


def _accepted(type_name: str, values: list[str], timezone: str = NY, **rules: object) -> list:
    validated = _one(type_name, values, timezone, **rules)
    assert validated.rejected.height == 0, validated.rejected
    return validated.good.get_column("v").to_list()


def _reasons(type_name: str, values: list[str], timezone: str = NY, **rules: object
             ) -> list[str]:
    validated = _one(type_name, values, timezone, **rules)
    assert validated.good.height == 0, validated.good
    assert validated.rejected.get_column("v").to_list() == values  # kept as it came
    return validated.rejected.get_column("reason").to_list()


# --- type names ------------------------------------------------------------------------------

def test_the_declared_type_names_and_their_polars_types() -> None:
    assert COLUMN_TYPE_NAMES == ("integer", "number", "text", "boolean", "clock_time", "date",
                                 "timestamp")
    dtypes = {name: column_type(name, NY).dtype for name in COLUMN_TYPE_NAMES}
    assert dtypes == {"integer": pl.Int32, "number": pl.Float64, "text": pl.String,
                      "boolean": pl.Boolean, "clock_time": pl.Int32, "date": pl.Date,
                      "timestamp": pl.Datetime("us", "UTC")}
    assert column_type("timestamp", NY) == column_type("timestamp", NY)


def test_an_unknown_type_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown column type 'float'; the types are integer, "
                                         "number, text, boolean, clock_time, date, timestamp"):
        column_type("float", NY)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "localtime"])
def test_an_unknown_time_zone_is_named(zone: str) -> None:
    with pytest.raises(ValueError, match=f"'{zone}' is not a time zone"):
        column_type("timestamp", zone)
    with pytest.raises(ValueError, match=f"'{zone}' is not a time zone"):
        _schema(declared_column("v", "text", NY), timezone=zone)


# --- each type -------------------------------------------------------------------------------

def test_integer() -> None:
    assert _accepted("integer", ["42", " 7 ", "-3", "0"]) == [42, 7, -3, 0]
    assert _reasons("integer", ["12.5", "abc", "99999999999"]) == [
        "v: '12.5' is not an integer", "v: 'abc' is not an integer",
        "v: '99999999999' is not an integer"]


def test_number() -> None:
    assert _accepted("number", ["1.5", "-3", "1e3"]) == [1.5, -3.0, 1000.0]
    assert _reasons("number", ["NaN", "inf", "abc"]) == [
        "v: 'NaN' is not a finite number", "v: 'inf' is not a finite number",
        "v: 'abc' is not a finite number"]


def test_text_is_kept_stripped_and_missing_tokens_are_null() -> None:
    validated = _one("text", [" EWR ", "a b", "NA", ""])
    assert validated.good.get_column("v").to_list() == ["EWR", "a b", None, None]


def test_boolean_words_in_any_case() -> None:
    words = ["true", "FALSE", "T", "f", "Yes", "no", "Y", "n", "1", "0"]
    assert _accepted("boolean", words) == [True, False] * 5
    assert _reasons("boolean", ["maybe", "2", "on"]) == [
        f"v: '{word}' is not a boolean (true/false, t/f, yes/no, y/n, 1/0)"
        for word in ("maybe", "2", "on")]


def test_clock_time() -> None:
    assert _accepted("clock_time", ["0930", "0", "2359", "2400", "517"]) == [
        930, 0, 2359, 2400, 517]
    assert _reasons("clock_time", ["2460", "2401", "-5", "12.5", "9:30"]) == [
        "v: '2460' must be a clock time HHMM between 0000 and 2400",
        "v: '2401' must be a clock time HHMM between 0000 and 2400",
        "v: '-5' must be a clock time HHMM between 0000 and 2400",
        "v: '12.5' is not a clock time HHMM",
        "v: '9:30' is not a clock time HHMM"]


def test_date() -> None:
    assert _accepted("date", ["2013-01-05", "2012-02-29"]) == [dt.date(2013, 1, 5),
                                                              dt.date(2012, 2, 29)]
    bad = ["2013-1-5", "2013-02-30", "05/01/2013", "-013-01-05", "20130-1-05",
           "2013-01-05T00:00:00"]
    assert _reasons("date", bad) == [f"v: '{value}' is not a date YYYY-MM-DD" for value in bad]


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2013-01-01T10:00:00Z", _utc(2013, 1, 1, 10)),
        ("2013-01-01 10:00:00Z", _utc(2013, 1, 1, 10)),
        ("2013-01-01T10:00:00.25Z", _utc(2013, 1, 1, 10, 0, 0, 250_000)),
        ("2013-01-01T05:00:00-05:00", _utc(2013, 1, 1, 10)),
        ("2013-01-01T11:00:00+0100", _utc(2013, 1, 1, 10)),
        ("2013-01-01T11:00:00+01", _utc(2013, 1, 1, 10)),
        ("2013-01-01T15:30:00+05:30", _utc(2013, 1, 1, 10)),
        ("2013-01-01T10:00:00+00:00", _utc(2013, 1, 1, 10)),
        ("2012-12-31T23:00:00-11:00", _utc(2013, 1, 1, 10)),
        # No offset: New York local time, EST in winter, EDT in summer.
        ("2013-01-01T05:00:00", _utc(2013, 1, 1, 10)),
        ("2013-01-01 05:00:00", _utc(2013, 1, 1, 10)),
        ("2013-07-01 06:00:00", _utc(2013, 7, 1, 10)),
        ("2013-07-01T06:00:00.5", _utc(2013, 7, 1, 10, 0, 0, 500_000)),
        # Clocks spring forward on 2013-03-10 at 02:00 (EST to EDT).
        ("2013-03-10T01:30:00", _utc(2013, 3, 10, 6, 30)),
        ("2013-03-10T03:30:00", _utc(2013, 3, 10, 7, 30)),
        # They fall back on 2013-11-03 at 02:00: 01:30 happens twice, the first (EDT) is taken;
        # an offset says which.
        ("2013-11-03T01:30:00", _utc(2013, 11, 3, 5, 30)),
        ("2013-11-03T01:30:00-04:00", _utc(2013, 11, 3, 5, 30)),
        ("2013-11-03T01:30:00-05:00", _utc(2013, 11, 3, 6, 30)),
    ],
)
def test_timestamp_forms(text: str, instant: dt.datetime) -> None:
    assert _accepted("timestamp", [text]) == [instant]


def test_timestamp_without_offset_is_in_the_declared_zone() -> None:
    assert _accepted("timestamp", ["2013-01-01T10:00:00"], timezone="UTC") == [
        _utc(2013, 1, 1, 10)]
    assert _accepted("timestamp", ["2013-01-01T10:00:00"], timezone="Europe/Paris") == [
        _utc(2013, 1, 1, 9)]


@pytest.mark.parametrize(
    "text",
    [
        "2013-03-10T02:30:00",  # skipped when clocks spring forward: no such New York time
        "garbage", "2013-01-01", "2013-01-01T10:00", "2013-01-01T10:00:00Zjunk",
        "2013-01-01T25:00:00Z", "2013-13-01T10:00:00Z", "2013-02-30T10:00:00Z",
        "2013-01-01X10:00:00Z", "2013-1-1T10:00:00Z", "2013-01-01T10:00:00.Z",
        "2013-01-01T10:00:00.1234567890Z", "2013-01-01T10:00:00+5:00",
        "2013-01-01T10:00:00+24:00", "2013-01-01T10:00:00+01:60", "2013-01-01T10:00:00+01:",
        "2013-01-01T10:00:00++100", "2013-01-01T10:00:00 +01:00", "2013-01-01T10:00:00ZZ",
        "20130-1-01T10:00:00Z", "-013-01-01T10:00:00Z",
    ],
)
def test_timestamp_rejects(text: str) -> None:
    assert _reasons("timestamp", [text]) == [
        f"v: '{text}' is not a timestamp (ISO 8601 like 2013-01-01T10:00:00Z or "
        "2013-01-01T05:00:00-05:00; without an offset, a local time in America/New_York "
        "that exists)"]


def test_a_column_of_many_forms_parses_each_row() -> None:
    forms = ["2013-01-01T10:00:00Z", "2013-01-01T05:00:00-05:00", "2013-01-01 05:00:00",
             "x", "2013-01-01T10:00:00.000001Z"]
    validated = _one("timestamp", forms)
    assert validated.good.get_column("v").to_list() == [
        _utc(2013, 1, 1, 10), _utc(2013, 1, 1, 10), _utc(2013, 1, 1, 10),
        _utc(2013, 1, 1, 10, 0, 0, 1)]
    assert validated.rejected.get_column(ingest.LINE_COLUMN).to_list() == [5]


# --- value rules -----------------------------------------------------------------------------

def test_min_and_max() -> None:
    # YAML may give 1900.0: the reason shows the bound as it was written.
    assert _reasons("integer", ["13", "0"], min=1.0, max=12.0) == [
        "v: '13' must be between 1 and 12", "v: '0' must be between 1 and 12"]
    assert _reasons("number", ["-0.5"], min=0) == ["v: '-0.5' must be at least 0"]
    assert _reasons("number", ["100.5"], max=100) == ["v: '100.5' must be at most 100"]
    assert _reasons("number", ["0.1"], min=0.25, max=0.75) == [
        "v: '0.1' must be between 0.25 and 0.75"]
    assert _accepted("integer", ["1", "12"], min=1, max=12) == [1, 12]
    assert _accepted("clock_time", ["0600"], min=500, max=2200) == [600]


def test_one_of() -> None:
    assert _accepted("text", ["EWR", "LGA"], one_of=["EWR", "JFK", "LGA"]) == ["EWR", "LGA"]
    assert _reasons("text", ["XXX", "ewr"], one_of=["EWR", "JFK", "LGA"]) == [
        "v: 'XXX' must be one of EWR, JFK, LGA", "v: 'ewr' must be one of EWR, JFK, LGA"]
    assert _reasons("text", ["XXX"], one_of=["EWR", "JFK"], describe="a New York airport"
                    ) == ["v: 'XXX' must be a New York airport"]
    # Values of another type may be written as text, as in the file.
    assert _accepted("integer", ["1", "3"], one_of=["1", "2", "3"]) == [1, 3]
    assert _reasons("integer", ["4"], one_of=[1, 2, 3]) == ["v: '4' must be one of 1, 2, 3"]


def test_pattern() -> None:
    assert _accepted("text", ["AA", "9E"], pattern=r"^[A-Z0-9]{2}$") == ["AA", "9E"]
    assert _reasons("text", ["AAA"], pattern=r"^[A-Z0-9]{2}$") == [
        "v: 'AAA' must match ^[A-Z0-9]{2}$"]
    assert _reasons("text", ["A"], pattern=r"^[A-Z0-9]{2}$",
                    describe="a 2-character carrier code") == [
        "v: 'A' must be a 2-character carrier code"]
    # The whole value must match, anchors or not.
    assert _reasons("text", ["XAAX"], pattern="[A-Z]{2}") == ["v: 'XAAX' must match [A-Z]{2}"]


def test_every_broken_rule_of_a_value_is_listed() -> None:
    assert _reasons("text", ["ZZZ"], one_of=["AA", "BB"], pattern="^[A-Z]{2}$") == [
        "v: 'ZZZ' must be one of AA, BB; v: 'ZZZ' must match ^[A-Z]{2}$"]


def test_max_length_counts_characters_and_defaults_for_text() -> None:
    assert declared_column("v", "text", NY).max_length == DEFAULT_TEXT_MAX_LENGTH
    assert declared_column("v", "integer", NY).max_length is None
    assert _accepted("text", ["ÉÉÉ", "abc"], max_length=3) == ["ÉÉÉ", "abc"]
    assert _reasons("text", ["abcd"], max_length=3) == [
        "v: 4 characters, more than the 3 allowed (starts 'abcd')"]
    long = "x" * (DEFAULT_TEXT_MAX_LENGTH + 1)
    validated = _one("text", [long])
    assert validated.rejected.get_column("reason").item() == (
        f"v: {len(long)} characters, more than the {DEFAULT_TEXT_MAX_LENGTH} allowed "
        f"(starts '{'x' * ingest.SHOWN_CHARACTERS}...')")
    # Too long is the one reason: the pattern is not also tried on the value.
    assert _reasons("text", ["ABCD"], max_length=3, pattern="^[a-z]+$") == [
        "v: 4 characters, more than the 3 allowed (starts 'ABCD')"]


def test_line_breaks_are_text_only_where_the_column_is_multiline() -> None:
    values = ["two\nlines", "crlf\r\nends", "one line"]
    assert _accepted("text", values, multiline=True) == values
    assert _reasons("text", ["two\nlines"]) == [
        "v: 'two\\nlines' has a line break (a quoted value across lines); the column does not "
        "allow multi-line text"]
    # Other control characters are refused in a multiline column too.
    assert _reasons("text", ["a\x00\nb"], multiline=True) == [
        "v: 'a\\x00\\nb' holds control character U+0000"]


def test_a_long_value_is_shown_and_kept_in_part() -> None:
    value = "9" * 5000
    validated = _one("integer", [value])
    assert validated.rejected.get_column("reason").item() == (
        f"v: '{'9' * ingest.SHOWN_CHARACTERS}...' is not an integer")
    assert validated.rejected.get_column("v").item() == (
        "9" * ingest.KEPT_CHARACTERS + "... [5000 characters in all]")


def test_required() -> None:
    column = declared_column("v", "integer", NY, required=True)
    validated = _validate(_schema(column), {"v": ["1", "", "NA", None]})
    assert validated.good.get_column("v").to_list() == [1]
    assert validated.rejected.get_column("reason").to_list() == [
        "v: required value is missing"] * 3


@pytest.mark.parametrize(
    ("type_name", "rules", "message"),
    [
        ("text", {"min": 1}, "column 'v': min and max bound numbers"),
        ("integer", {"min": 5, "max": 1}, "column 'v': min 5 is above max 1"),
        ("integer", {"min": "1"}, "column 'v': min and max must be numbers"),
        ("integer", {"pattern": "^1$"}, "column 'v': a pattern matches text, not integer"),
        ("text", {"pattern": "^[A-$"}, "column 'v': pattern '\\^\\[A-\\$' is not a regular"),
        ("text", {"one_of": [1, 2]}, "one_of values of a text column must be text"),
        ("text", {"one_of": []}, "one_of must be a non-empty list"),
        ("integer", {"one_of": ["1", "x"]}, "one_of value\\(s\\) 'x' are not an integer"),
        ("text", {"describe": "a code"}, "describe says what pattern or one_of allows"),
        ("integer", {"max_length": 3}, "column 'v': max_length bounds text, not integer"),
        ("text", {"max_length": 0}, "max_length must be a positive whole number"),
        ("text", {"max_length": 2.5}, "max_length must be a positive whole number"),
        ("number", {"multiline": True}, "multiline allows line breaks in text, not in number"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused(type_name: str, rules: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        declared_column("v", type_name, NY, **rules)  # type: ignore[arg-type]


# --- row rules -------------------------------------------------------------------------------

def _times() -> SourceSchema:
    return _schema(
        declared_column("hour", "integer", NY, required=True),
        declared_column("minute", "integer", NY),
        declared_column("sched_dep_time", "clock_time", NY, required=True),
        row_rules=(sql_rule("hour * 100 + minute = sched_dep_time",
                            "hour and minute disagree with sched_dep_time"),))


def test_sql_rule_names_its_columns() -> None:
    rule = sql_rule("hour * 100 + minute = sched_dep_time", "disagree")
    assert rule.columns == ("hour", "minute", "sched_dep_time")
    assert rule.expression == "hour * 100 + minute = sched_dep_time"


def test_sql_rule_judges_typed_values_and_skips_rows_with_a_null() -> None:
    validated = _validate(_times(), {"hour": ["5", "5", "5", "5"],
                                     "minute": ["15", "16", "NA", "x"],
                                     "sched_dep_time": ["0515", "0515", "0515", "0515"]})
    assert validated.good.get_column("minute").to_list() == [15, None]  # null: not judged
    assert validated.rejected.get_column("reason").to_list() == [
        "row: hour and minute disagree with sched_dep_time",
        "minute: 'x' is not an integer"]  # a value that does not parse is not judged either


def test_sql_rule_on_text_and_with_sql_operators() -> None:
    schema = _schema(declared_column("origin", "text", NY), declared_column("dest", "text", NY),
                     declared_column("seats", "integer", NY),
                     row_rules=(sql_rule("origin <> dest", "a flight goes somewhere"),
                                sql_rule("seats BETWEEN 1 AND 900 OR origin = 'TST'",
                                         "seats out of range")))
    validated = _validate(schema, {"origin": ["EWR", "JFK", "TST", "LGA"],
                                   "dest": ["ORD", "JFK", "ORD", "ORD"],
                                   "seats": ["100", "100", "0", "0"]})
    assert validated.good.get_column("origin").to_list() == ["EWR", "TST"]
    assert validated.rejected.get_column("reason").to_list() == [
        "row: a flight goes somewhere", "row: seats out of range"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("hour * ", "row rule 'hour \\* ' is not a SQL expression Polars can read"),
        ("1 = 1", "row rule '1 = 1' names no column"),
        ("", "a row rule needs a SQL expression"),
    ],
)
def test_a_sql_rule_that_does_not_parse_is_refused(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sql_rule(expression, "reason")


def test_a_sql_rule_naming_an_unknown_column_is_refused() -> None:
    rule = sql_rule("hour * 100 + minuet = sched_dep_time", "disagree")
    with pytest.raises(ValueError, match="source 'test': row rule 'hour \\* 100 \\+ minuet = "
                                         "sched_dep_time' names unknown column\\(s\\) 'minuet'"):
        _schema(*_times().columns, row_rules=(rule,))


def test_a_sql_rule_that_is_not_a_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="row rule 'hour \\+ 1' gives Int32, not a true/false"):
        _schema(*_times().columns, row_rules=(sql_rule("hour + 1", "not a condition"),))


# --- placing a row in its partition by a timestamp --------------------------------------------

ORDERS = _schema(
    declared_column("order_id", "integer", NY, required=True),
    declared_column("placed_at", "timestamp", NY, required=True),
    key=("order_id",),
    timestamp_column="placed_at",
    timezone=NY,
)


def test_a_row_of_another_day_is_not_taken_into_the_partition() -> None:
    # An order of 5 January in the file of 25 February: the bug of placing by date columns
    # alone (there are none here) is that nothing said it was not of that day.
    validated = _validate(ORDERS, {"order_id": ["1", "2", "3"],
                                   "placed_at": ["2013-02-25T09:00:00-05:00",
                                                 "2013-01-05T10:00:00-05:00",
                                                 "2013-02-25 23:59:59"]},
                          day=dt.date(2013, 2, 25))
    assert validated.good.get_column("order_id").to_list() == [1, 3]
    assert validated.rejected.row(0, named=True) == {
        ingest.LINE_COLUMN: 3, "order_id": "2", "placed_at": "2013-01-05T10:00:00-05:00",
        "reason": "date: placed_at 2013-01-05 10:00 (America/New_York) is not partition "
                  "2013-02-25"}


def test_the_local_date_places_a_row_not_the_utc_date() -> None:
    # 03:00 UTC on 1 January is 22:00 on 31 December in New York.
    rows = {"order_id": ["1"], "placed_at": ["2013-01-01T03:00:00Z"]}
    assert _validate(ORDERS, rows, day=dt.date(2012, 12, 31)).good.height == 1
    rejected = _validate(ORDERS, rows, day=dt.date(2013, 1, 1)).rejected
    assert rejected.get_column("reason").to_list() == [
        "date: placed_at 2012-12-31 22:00 (America/New_York) is not partition 2013-01-01"]


def test_without_a_partition_date_nothing_is_placed() -> None:
    validated = _validate(ORDERS, {"order_id": ["1"], "placed_at": ["2013-01-05T10:00:00Z"]})
    assert (validated.good.height, validated.rejected.height) == (1, 0)


HOURLY = _schema(
    declared_column("year", "integer", NY, required=True),
    declared_column("month", "integer", NY, required=True),
    declared_column("day", "integer", NY, required=True),
    declared_column("hour", "integer", NY, required=True, min=0, max=23),
    declared_column("time_hour", "timestamp", NY, required=True),
    key=("time_hour",),
    date_columns=("year", "month", "day"),
    timestamp_column="time_hour",
    hour_column="hour",
    timezone=NY,
)


def _hourly(day: dt.date, rows: list[tuple[int, int, int, int, str]]) -> ingest.ValidatedFile:
    columns = dict(zip(("year", "month", "day", "hour", "time_hour"), zip(*rows, strict=True),
                       strict=True))
    return _validate(HOURLY, {k: [str(v) for v in values] for k, values in columns.items()},
                     day)


def test_the_local_hour_must_be_the_rows_hour() -> None:
    validated = _hourly(dt.date(2013, 1, 1), [(2013, 1, 1, 5, "2013-01-01T10:00:00Z"),
                                              (2013, 1, 1, 5, "2013-01-01T11:00:00Z")])
    assert validated.good.height == 1
    assert validated.rejected.get_column("reason").to_list() == [
        "row: time_hour 2013-01-01 06:00 (America/New_York) is not in the row's hour (hour 5)"]


def test_a_row_of_another_day_gets_one_date_reason() -> None:
    validated = _hourly(dt.date(2013, 1, 1), [(2013, 1, 2, 5, "2013-01-02T10:00:00Z"),
                                              (2013, 1, 1, 5, "2013-01-02T10:00:00Z")])
    assert validated.rejected.get_column("reason").to_list() == [
        "date: row date 2013-1-2 is not partition 2013-01-01",
        "date: time_hour 2013-01-02 05:00 (America/New_York) is not partition 2013-01-01"]


def test_the_hour_that_repeats_when_clocks_fall_back_is_placed_twice() -> None:
    fall_back = dt.date(2013, 11, 3)
    validated = _hourly(fall_back, [(2013, 11, 3, 0, "2013-11-03T04:00:00Z"),
                                    (2013, 11, 3, 1, "2013-11-03T05:00:00Z"),  # 01:00 EDT
                                    (2013, 11, 3, 1, "2013-11-03T06:00:00Z"),  # 01:00 EST
                                    (2013, 11, 3, 2, "2013-11-03T07:00:00Z"),
                                    (2013, 11, 3, 23, "2013-11-04T04:00:00Z")])
    assert validated.rejected.height == 0
    assert validated.good.get_column("hour").to_list() == [0, 1, 1, 2, 23]


def test_flights_are_placed_by_time_hour_in_new_york() -> None:
    assert (FLIGHTS.timestamp_column, FLIGHTS.hour_column, FLIGHTS.timezone) == (
        "time_hour", "hour", NY)
    assert FLIGHTS.date_columns == ("year", "month", "day")
    assert FLIGHTS.row_rules[0].columns == ("hour", "minute", "sched_dep_time")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hour_column": "order_id"}, "hour_column 'order_id' is the local hour of a "
                                      "timestamp_column, and there is none"),
        ({"timestamp_column": "order_id"}, "timestamp_column 'order_id' is Int32, not a "
                                           "timestamp"),
        ({"timestamp_column": "placed"}, "timestamp_column names unknown column\\(s\\) "
                                         "'placed'"),
        ({"key": ("id",)}, "key names unknown column\\(s\\) 'id'"),
        ({"date_columns": ("order_id", "placed_at", "order_id")},
         "date column 'placed_at' is Datetime"),
    ],
)
def test_a_placement_that_cannot_work_is_refused(options: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _schema(*ORDERS.columns, **options)


@pytest.mark.parametrize("name", ["reason", "partition_date", "_line_number", "__text_x"])
def test_reserved_column_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"column name\\(s\\) {name} are reserved"):
        _schema(declared_column(name, "text", NY))


def test_a_repeated_column_is_refused() -> None:
    with pytest.raises(ValueError, match="source 'test' repeats column\\(s\\) v"):
        _schema(declared_column("v", "text", NY), declared_column("v", "integer", NY))
