"""Ingest: file problems raise naming file, partition and column; bad rows go to quarantine."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform.platform.storage import staging
from batch_platform_tests.flights import FLIGHTS_SOURCE as FLIGHTS
from batch_platform_tests.flights import PLANES, WEATHER
from batch_platform_tests.platform.support import DAY_1, LINEAGE, data_lines, validate_file

WHERE = "partition 2013-01-01"


@pytest.fixture(scope="module")
def day_file(landing_dir: Path) -> Path:
    return landing.landing_file(landing_dir, "flights", DAY_1)


@pytest.fixture(scope="module")
def header(day_file: Path) -> str:
    return day_file.read_text().splitlines()[0]


@pytest.fixture(scope="module")
def first_row(day_file: Path) -> dict[str, str]:
    return pl.read_csv(day_file, infer_schema=False, n_rows=1).row(0, named=True)


@pytest.fixture(scope="module")
def clean(day_file: Path) -> ingest.ValidatedFile:
    return validate_file(day_file, FLIGHTS, DAY_1)


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _line(row: dict[str, str], **changes: str) -> str:
    values = {**row, **changes}
    return ",".join(values[c] for c in FLIGHTS.column_names)


def _validate_rows(tmp_path: Path, header: str, rows: list[str]) -> ingest.ValidatedFile:
    return validate_file(_write(tmp_path / "2013-01-01.csv", header, rows), FLIGHTS, DAY_1)


# --- a real day ------------------------------------------------------------------------------

def test_real_day_is_all_good_and_typed(clean: ingest.ValidatedFile, day_file: Path) -> None:
    assert clean.rejected.height == 0
    assert clean.good.height == len(data_lines(day_file))
    assert clean.rows_in == clean.good.height
    assert clean.ignored_columns == ()
    assert clean.partition_date == DAY_1
    assert clean.source_file == str(day_file)
    schema = clean.good.schema
    assert list(schema) == list(FLIGHTS.column_names)
    assert schema["year"] == pl.Int32
    assert schema["sched_dep_time"] == pl.Int32
    assert schema["arr_delay"] == pl.Float64
    assert schema["carrier"] == pl.String
    assert schema["time_hour"] == pl.Datetime("us", "UTC")


def test_real_day_values_are_parsed(clean: ingest.ValidatedFile, first_row: dict[str, str]
                                    ) -> None:
    row = clean.good.row(0, named=True)
    assert row["year"] == int(first_row["year"])
    assert row["sched_dep_time"] == int(first_row["sched_dep_time"])
    assert row["arr_delay"] == float(first_row["arr_delay"])
    assert row["carrier"] == first_row["carrier"]
    expected_hour = dt.datetime.strptime(first_row["time_hour"], "%Y-%m-%dT%H:%M:%SZ")
    assert row["time_hour"] == expected_hour.replace(tzinfo=dt.UTC)
    # "NA" in the file is a missing value, not text and not a rejection.
    arr_delay_field = FLIGHTS.column_names.index("arr_delay")
    na_lines = [line for line in data_lines(Path(clean.source_file))
                if line.split(",")[arr_delay_field] == "NA"]
    assert na_lines
    assert clean.good.get_column("arr_delay").null_count() == len(na_lines)


# --- whole-file problems ---------------------------------------------------------------------

def _assert_names_file_and_partition(message: str, path: Path) -> None:
    assert str(path) in message
    assert WHERE in message
    assert message.startswith("flights landing file ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "flights" / "2013-01-01.csv"
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    _assert_names_file_and_partition(str(raised.value), path)
    assert str(raised.value).endswith("is missing")


@pytest.mark.parametrize("payload", [b"", b"  \n\n"])
def test_empty_file(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "2013-01-01.csv"
    path.write_bytes(payload)
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    _assert_names_file_and_partition(str(raised.value), path)
    assert "is empty: no header line" in str(raised.value)


def test_non_utf8_file(tmp_path: Path, header: str) -> None:
    path = tmp_path / "2013-01-01.csv"
    path.write_bytes(header.encode() + b"\n2013,1,1,\xff\xfe,515\n")
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    message = str(raised.value)
    _assert_names_file_and_partition(message, path)
    # The line and column of the byte, the field it is in, and what it would be in Latin-1.
    assert message.endswith("is not UTF-8 text: line 2, column 10 (field dep_time): byte 0xFF; "
                            "it looks like Windows-1252, where it is 'ÿ' (in 'ÿþ'): save the "
                            "file as UTF-8")


def test_a_latin1_file_names_the_line_column_and_the_encoding(tmp_path: Path, header: str,
                                                              first_row: dict[str, str]) -> None:
    path = tmp_path / "2013-01-01.csv"
    bad = _line(first_row, tailnum="NÉ4228")
    path.write_bytes("\n".join([header, _line(first_row), _line(first_row), bad, ""]).encode(
        "latin-1"))
    column = bad.index("É") + 1
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    message = str(raised.value)
    _assert_names_file_and_partition(message, path)
    assert (f"is not UTF-8 text: line 4, column {column} (field tailnum): byte 0xC9; it looks "
            "like Windows-1252, where it is 'É' (in 'NÉ4228')") in message


@pytest.mark.parametrize(("payload", "kind"), [
    (b"\xff\xfe\x00\x01PK\x03\x04", "UTF-16 text (little-endian byte order mark)"),
    (b"\x1f\x8b\x08\x00\x00\x00", "a gzip-compressed file"),
])
def test_binary_file_is_not_read_as_csv(tmp_path: Path, payload: bytes, kind: str) -> None:
    path = tmp_path / "2013-01-01.csv"
    path.write_bytes(payload)
    expected = rf"is not UTF-8 text: line 1, column \d: .*looks like {re.escape(kind)}"
    with pytest.raises(ingest.BadInputError, match=expected):
        ingest.read_text(path, FLIGHTS, DAY_1)


def test_misspelt_header_column(tmp_path: Path, header: str, first_row: dict[str, str]) -> None:
    bad_header = header.replace("dep_time,", "dep_tme,", 1)
    assert bad_header.startswith("year,month,day,dep_tme,sched_dep_time,")
    path = _write(tmp_path / "2013-01-01.csv", bad_header, [_line(first_row)])
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    message = str(raised.value)
    _assert_names_file_and_partition(message, path)
    assert "is missing column(s) 'dep_time'" in message
    assert "'dep_tme' looks like a misspelling of 'dep_time'" in message
    assert "expected columns: year, month, day, dep_time" in message


def test_missing_column_without_lookalike(tmp_path: Path, header: str) -> None:
    columns = [c for c in header.split(",") if c not in ("tailnum", "carrier")]
    path = _write(tmp_path / "2013-01-01.csv", ",".join(columns), [])
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    message = str(raised.value)
    assert "is missing column(s) 'carrier', 'tailnum'" in message
    assert "misspelling" not in message


def test_reordered_header_gives_the_same_rows(tmp_path: Path, day_file: Path,
                                              clean: ingest.ValidatedFile) -> None:
    text = pl.read_csv(day_file, infer_schema=False)
    path = tmp_path / "2013-01-01.csv"
    text.select(reversed(text.columns)).write_csv(path)
    assert path.read_text().startswith("time_hour,minute,hour,")
    reordered = validate_file(path, FLIGHTS, DAY_1)
    assert reordered.rejected.height == 0
    assert reordered.good.equals(clean.good)


def test_extra_column_is_ignored_and_reported(tmp_path: Path, day_file: Path,
                                              clean: ingest.ValidatedFile) -> None:
    text = pl.read_csv(day_file, infer_schema=False)
    path = tmp_path / "2013-01-01.csv"
    text.with_columns(pl.lit("free text").alias("remarks")).write_csv(path)
    extended = validate_file(path, FLIGHTS, DAY_1)
    assert extended.ignored_columns == ("remarks",)
    assert extended.good.equals(clean.good)
    assert "remarks" not in extended.rejected.columns


def test_row_with_too_many_fields_fails_the_file(tmp_path: Path, header: str,
                                                 first_row: dict[str, str]) -> None:
    path = _write(tmp_path / "2013-01-01.csv", header, [_line(first_row) + ",surplus"])
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    _assert_names_file_and_partition(str(raised.value), path)
    assert "cannot be read as CSV" in str(raised.value)


def test_repeated_header_column_fails_the_file(tmp_path: Path, header: str,
                                               first_row: dict[str, str]) -> None:
    path = _write(tmp_path / "2013-01-01.csv", header + ",carrier", [_line(first_row) + ",XX"])
    with pytest.raises(ingest.BadInputError, match="repeats column\\(s\\) 'carrier'") as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    _assert_names_file_and_partition(str(raised.value), path)


def test_trailing_blank_lines_and_a_byte_order_mark_are_not_rows(
    tmp_path: Path, header: str, first_row: dict[str, str]
) -> None:
    path = tmp_path / "2013-01-01.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{header}\r\n{_line(first_row)}\r\n\r\n\n".encode())
    validated = ingest.validate(ingest.read_text(path, FLIGHTS, DAY_1), FLIGHTS, DAY_1, str(path))
    assert validated.good.height == 1
    assert validated.rejected.height == 0


def test_header_only_flights_file_fails_instead_of_emptying_the_day(tmp_path: Path,
                                                                    header: str) -> None:
    path = _write(tmp_path / "2013-01-01.csv", header, [])
    with pytest.raises(ingest.BadInputError, match="has 0 data row") as raised:
        ingest.read_text(path, FLIGHTS, DAY_1)
    _assert_names_file_and_partition(str(raised.value), path)


def test_header_only_weather_file_is_a_day_without_observations(tmp_path: Path) -> None:
    path = tmp_path / "2013-12-31.csv"
    path.write_text(",".join(WEATHER.column_names) + "\n")
    day = dt.date(2013, 12, 31)
    validated = ingest.validate(ingest.read_text(path, WEATHER, day), WEATHER, day, str(path))
    assert validated.good.height == validated.rejected.height == 0
    assert validated.good.schema == pl.Schema(WEATHER.polars_schema)


def test_a_row_with_an_extra_field_names_its_line(tmp_path: Path, header: str,
                                                  first_row: dict[str, str]) -> None:
    path = _write(tmp_path / "2013-01-01.csv", header, [_line(first_row), _line(first_row) + ","])
    with pytest.raises(ingest.BadInputError, match="line 3 has 20 fields, the header has 19"):
        ingest.read_text(path, FLIGHTS, DAY_1)


@pytest.mark.parametrize("value", ["NaN", "inf", "-inf"])
def test_non_finite_numbers_are_rejected(tmp_path: Path, header: str,
                                         first_row: dict[str, str], value: str) -> None:
    validated = _validate_rows(tmp_path, header, [_line(first_row, arr_delay=value)])
    assert validated.good.height == 0
    assert validated.rejected.get_column("reason").to_list() == [
        f"arr_delay: '{value}' is not a finite number"]


def test_time_hour_must_be_the_rows_local_date_and_hour(tmp_path: Path, header: str,
                                                        first_row: dict[str, str]) -> None:
    assert (first_row["hour"], first_row["time_hour"]) == ("5", "2013-01-01T10:00:00Z")
    validated = _validate_rows(tmp_path, header, [
        _line(first_row),
        _line(first_row, flight="9998", time_hour="2013-01-02T10:00:00Z"),
        _line(first_row, flight="9999", time_hour="2013-01-01T11:00:00Z"),
    ])
    assert validated.good.height == 1
    assert validated.rejected.get_column("reason").to_list() == [
        "date: time_hour 2013-01-02 05:00 (America/New_York) is not partition 2013-01-01",
        "row: time_hour 2013-01-01 06:00 (America/New_York) is not in the row's hour (hour 5)",
    ]


# --- row problems ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("changes", "column", "reason"),
    [
        ({"distance": "abc"}, "distance", "distance: 'abc' is not a finite number"),
        ({"distance": "-5"}, "distance", "distance: '-5' must be between 1 and 10000"),
        ({"hour": "27"}, "hour", "hour: '27' must be between 0 and 23"),
        ({"origin": "XXX"}, "origin",
         "origin: 'XXX' must be one of the New York airports EWR, JFK, LGA"),
        ({"carrier": ""}, "carrier", "carrier: required value is missing"),
        ({"carrier": "NA"}, "carrier", "carrier: required value is missing"),
        ({"flight": "12.5"}, "flight", "flight: '12.5' is not an integer"),
        ({"dep_time": "2475"}, "dep_time",
         "dep_time: '2475' must be a clock time HHMM between 0000 and 2400"),
        ({"dep_time": "12.5"}, "dep_time", "dep_time: '12.5' is not a clock time HHMM"),
        ({"time_hour": "2013-01-01 25:00:00"}, "time_hour",
         "time_hour: '2013-01-01 25:00:00' is not a timestamp (ISO 8601"),
        ({"minute": "16"}, "minute", "row: hour and minute disagree with sched_dep_time"),
    ],
)
def test_bad_value_rejects_the_row_with_its_reason(
    tmp_path: Path, header: str, first_row: dict[str, str],
    changes: dict[str, str], column: str, reason: str,
) -> None:
    good_line, bad_line = _line(first_row, flight="1"), _line(first_row, **changes)
    validated = _validate_rows(tmp_path, header, [good_line, bad_line])
    assert validated.good.height == 1
    assert validated.rejected.height == 1
    rejected = validated.rejected.row(0, named=True)
    assert reason in rejected["reason"]
    assert rejected["_line_number"] == 3  # the header is line 1, the good row line 2
    # The row is kept as it came: the original text, not the parsed value.
    assert rejected[column] == (changes[column] or None)


def test_rejected_rows_keep_the_original_text(tmp_path: Path, header: str,
                                              first_row: dict[str, str]) -> None:
    validated = _validate_rows(tmp_path, header, [_line(first_row, distance="abc")])
    rejected = validated.rejected
    assert rejected.columns == ["_line_number", *FLIGHTS.column_names, "reason"]
    assert all(rejected.schema[c] == pl.String for c in FLIGHTS.column_names)
    assert rejected.row(0, named=True) == {"_line_number": 2, **first_row, "distance": "abc",
                                           "reason": "distance: 'abc' is not a finite number"}


def test_every_reason_of_a_row_is_listed(tmp_path: Path, header: str,
                                         first_row: dict[str, str]) -> None:
    validated = _validate_rows(tmp_path, header,
                               [_line(first_row, distance="abc", origin="XXX", carrier="")])
    reason = validated.rejected.get_column("reason").item()
    parts = reason.split("; ")
    assert len(parts) == 3
    assert {p.split(":")[0] for p in parts} == {"distance", "origin", "carrier"}
    assert dict(validated.top_reasons()) == {"distance": 1, "origin": 1, "carrier": 1}


def test_row_of_another_day_is_rejected(tmp_path: Path, header: str,
                                        first_row: dict[str, str]) -> None:
    next_day_hour = first_row["time_hour"].replace("2013-01-01", "2013-01-02")
    validated = _validate_rows(tmp_path, header, [
        _line(first_row), _line(first_row, day="2", flight="2", time_hour=next_day_hour)])
    assert validated.good.height == 1
    reason = validated.rejected.get_column("reason").item()
    assert reason.startswith("date: row date ")
    assert "is not partition 2013-01-01" in reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"month": "13"}, "month: '13' must be between 1 and 12"),
        ({"month": "2", "day": "31"}, "date: row date 2013-2-31 is not partition 2013-01-01"),
        ({"day": "32"}, "day: '32' must be between 1 and 31"),
    ],
)
def test_impossible_date_rejects_the_row(tmp_path: Path, header: str, first_row: dict[str, str],
                                         changes: dict[str, str], reason: str) -> None:
    # A date that does not exist is a row problem, not a reason to fail the whole file.
    validated = _validate_rows(tmp_path, header, [_line(first_row),
                                                  _line(first_row, flight="2", **changes)])
    assert validated.good.height == 1
    assert validated.rejected.height == 1
    assert reason in validated.rejected.get_column("reason").item()


def test_duplicate_row_keeps_the_first(tmp_path: Path, header: str,
                                       first_row: dict[str, str]) -> None:
    line = _line(first_row)
    validated = _validate_rows(tmp_path, header, [line, _line(first_row, flight="2"), line])
    assert validated.good.height == 2
    assert validated.good.get_column("flight").to_list() == [int(first_row["flight"]), 2]
    rejected = validated.rejected.row(0, named=True)
    assert rejected["_line_number"] == 4
    assert rejected["reason"] == ("key: duplicate of line 2 "
                                  "(same carrier, flight, origin, sched_dep_time)")


def test_invalid_row_does_not_claim_a_key(tmp_path: Path, header: str,
                                          first_row: dict[str, str]) -> None:
    # Only rows that pass every other rule compete for a key: the later valid copy is kept.
    validated = _validate_rows(tmp_path, header, [_line(first_row, distance="abc"),
                                                  _line(first_row)])
    assert validated.good.height == 1
    assert validated.rejected.get_column("reason").to_list() == [
        "distance: 'abc' is not a finite number"]


def test_truncated_last_line_loses_no_other_row(tmp_path: Path, day_file: Path, header: str,
                                                clean: ingest.ValidatedFile) -> None:
    lines = data_lines(day_file)
    last = lines[-1]
    cut = last[: len(last) // 2]
    path = tmp_path / "2013-01-01.csv"
    path.write_text("\n".join([header, *lines[:-1], cut]))  # no final newline: cut mid-write
    validated = validate_file(path, FLIGHTS, DAY_1)
    assert validated.good.height + validated.rejected.height == len(lines)
    assert validated.good.equals(clean.good.head(len(lines) - 1))
    rejected = validated.rejected.row(0, named=True)
    assert rejected["_line_number"] == len(lines) + 1
    assert "required value is missing" in rejected["reason"]
    # The fields that arrived are kept as text; the ones cut off are missing.
    arrived = cut.split(",")
    assert len(FLIGHTS.column_names) > len(arrived) > 1
    expected = arrived + [None] * (len(FLIGHTS.column_names) - len(arrived))
    assert [rejected[c] for c in FLIGHTS.column_names] == [v or None for v in expected]


# --- reject threshold and lineage ------------------------------------------------------------

def _with_bad_rows(tmp_path: Path, header: str, first_row: dict[str, str], good: int, bad: int
                   ) -> ingest.ValidatedFile:
    rows = [_line(first_row, flight=str(i + 1)) for i in range(good)]
    rows += [_line(first_row, flight=str(1000 + i), distance="abc") for i in range(bad)]
    return _validate_rows(tmp_path, header, rows)


def test_reject_threshold_fails_above_the_limit(tmp_path: Path, header: str,
                                                first_row: dict[str, str]) -> None:
    validated = _with_bad_rows(tmp_path, header, first_row, good=3, bad=2)
    where = ingest.describe(Path(validated.source_file), DAY_1)
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.enforce_reject_threshold(validated, 0.05, where)
    message = str(raised.value)
    assert message.startswith(f"{validated.source_file} ({WHERE}): ")
    assert "2 of 5 rows rejected (40.0%), above the limit of 5.0%" in message
    assert "most common reasons: distance (2); first, line 5: distance: " in message
    assert "Nothing was written" in message


def test_reject_threshold_passes_at_or_below_the_limit(tmp_path: Path, header: str,
                                                       first_row: dict[str, str]) -> None:
    validated = _with_bad_rows(tmp_path, header, first_row, good=19, bad=1)
    ingest.enforce_reject_threshold(validated, 0.05, "here")  # exactly 5%: allowed
    ingest.enforce_reject_threshold(validated, 0.5, "here")
    with pytest.raises(ingest.BadInputError, match="1 of 20 rows rejected"):
        ingest.enforce_reject_threshold(validated, 0.04, "here")


def test_reject_threshold_ignores_files_without_rows_or_rejections(
    tmp_path: Path, header: str, clean: ingest.ValidatedFile
) -> None:
    empty_day = tmp_path / "2013-12-31.csv"
    empty_day.write_text(",".join(WEATHER.column_names) + "\n")
    day = dt.date(2013, 12, 31)
    no_rows = ingest.validate(ingest.read_text(empty_day, WEATHER, day), WEATHER, day, "x")
    ingest.enforce_reject_threshold(no_rows, 0.0, "here")
    ingest.enforce_reject_threshold(clean, 0.0, "here")


def test_with_lineage_puts_lineage_first(clean: ingest.ValidatedFile) -> None:
    framed = ingest.with_lineage(clean.good, clean, LINEAGE)
    assert framed.columns == ["partition_date", "_source_file", "_ingested_at", "_run_id",
                              *FLIGHTS.column_names]
    assert framed.height == clean.good.height
    assert framed.schema["partition_date"] == pl.Date
    assert framed.schema["_ingested_at"] == pl.Datetime("us", "UTC")
    assert framed.get_column("partition_date").unique().to_list() == [DAY_1]
    assert framed.get_column("_source_file").unique().to_list() == [clean.source_file]
    assert framed.get_column("_run_id").unique().to_list() == ["test-run"]
    assert framed.get_column("_ingested_at").unique().to_list() == [LINEAGE.ingested_at]
    assert framed.drop("partition_date", *ingest.LINEAGE_COLUMNS).equals(clean.good)


def test_reference_file_has_no_partition(landing_dir: Path) -> None:
    path = landing.reference_file(landing_dir, "planes")
    validated = validate_file(path, PLANES, None)
    assert validated.rejected.height == 0
    assert validated.good.height == len(data_lines(path))
    framed = ingest.with_lineage(validated.good, validated, LINEAGE)
    assert framed.columns[:3] == list(ingest.LINEAGE_COLUMNS)
    assert "partition_date" not in framed.columns
    assert ingest.describe(path, None) == f"{path} (reference data)"


# --- streaming: a file of any size, chunk by chunk -----------------------------------------

def _stage(path: Path, chunk_rows: int, folder: Path
           ) -> tuple[pl.DataFrame, pl.DataFrame, ingest.FileTally]:
    """Good and rejected rows of ``path`` as the raw step stages them, duplicates included."""
    good = staging.StagedTable(folder / "good", chunk_rows, exclude=(ingest.LINE_COLUMN,))
    rejected = staging.StagedTable(folder / "rejected", chunk_rows)
    tally = ingest.stage_file(path, FLIGHTS, DAY_1, LINEAGE, good, rejected, chunk_rows, folder)
    if tally.repeated_lines is not None:
        good = ingest.without_lines(good, {str(path): tally.repeated_lines},
                                    staging.StagedTable(folder / "kept", chunk_rows))
    read = [pl.concat(staging.chunks(t.close().files, 10**6)) for t in (good, rejected)]
    return read[0].drop(ingest.LINE_COLUMN), read[1].sort(ingest.LINE_COLUMN), tally


def test_chunks_of_a_file_are_its_rows_with_their_lines(day_file: Path) -> None:
    whole = ingest.read_text(day_file, FLIGHTS, DAY_1)
    chunks = list(ingest.text_chunks(day_file, FLIGHTS, DAY_1, chunk_rows=97))
    assert max(c.height for c in chunks) == 97
    assert len(chunks) == -(-whole.height // 97)
    assert_frame_equal(pl.concat(chunks), whole)
    assert whole.get_column(ingest.LINE_COLUMN).to_list() == list(range(2, whole.height + 2))


def test_trailing_blank_lines_are_dropped_whatever_the_chunking(tmp_path: Path, header: str,
                                                                  first_row: dict[str, str]
                                                                  ) -> None:
    rows = [_line(first_row, flight=str(n)) for n in range(1, 6)]
    path = tmp_path / "2013-01-01.csv"
    path.write_text("\n".join([header, *rows[:2], "", *rows[2:]]) + "\n\n\n\n")
    for chunk_rows in (1, 2, 3, 100):
        text = pl.concat(ingest.text_chunks(path, FLIGHTS, DAY_1, chunk_rows))
        # The blank line between rows is a (rejected) row; the ones at the end are not rows.
        assert text.get_column(ingest.LINE_COLUMN).to_list() == [2, 3, 4, 5, 6, 7], chunk_rows


def test_streamed_validation_equals_validating_the_whole_file(
        tmp_path: Path, day_file: Path, header: str) -> None:
    lines = data_lines(day_file)
    # A bad row, and a repeat of the first row 500 lines later: in another chunk.
    bad = lines[3].replace(",EWR,", ",XXXX,", 1)
    damaged = [*lines[:3], bad, *lines[3:500], lines[0], *lines[500:]]
    path = _write(tmp_path / "2013-01-01.csv", header, damaged)
    whole = validate_file(path, FLIGHTS, DAY_1)
    assert whole.rejected.height == 2
    good, rejected, tally = _stage(path, 97, tmp_path / "stage")
    assert tally.chunks > 5
    expected_good = ingest.with_lineage(whole.good, whole, LINEAGE)
    assert_frame_equal(good, expected_good)
    assert_frame_equal(rejected, ingest.with_lineage(whole.rejected, whole, LINEAGE))
    assert rejected.get_column("reason").to_list()[1].startswith("key: duplicate of line 2 ")
    assert (tally.rows_in, tally.rejected) == (whole.rows_in, 2)
    assert tally.top_reasons() == whole.top_reasons()
