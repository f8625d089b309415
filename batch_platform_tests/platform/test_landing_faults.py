"""Damaged landing files: each is read, or fails with one line naming file, line, column and
cause; a damaged row is quarantined at its physical line, and nothing else is lost."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from batch_platform.platform.ingest import landing
from batch_platform.platform.ingest import validate as ingest
from batch_platform_tests.flights import FLIGHTS_SOURCE as FLIGHTS
from batch_platform_tests.flights import PLANES, SOURCES, read_source_text
from batch_platform_tests.platform.support import DAY_1

TAILNUM = FLIGHTS.column_names.index("tailnum")


@pytest.fixture(scope="module")
def real_lines(landing_dir: Path) -> list[bytes]:
    """The lines (with their LF) of a real landed day: the header, then 842 flights."""
    return landing.landing_file(landing_dir, "flights", DAY_1).read_bytes().splitlines(
        keepends=True)


@pytest.fixture(scope="module")
def real(landing_dir: Path) -> ingest.ValidatedFile:
    validated = ingest.validate_file(landing.landing_file(landing_dir, "flights", DAY_1),
                                     FLIGHTS, DAY_1)
    assert validated.rejected.height == 0
    return validated


def _write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "flights" / f"{DAY_1}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def _with_field(lines: list[bytes], line: int, column: int, value: bytes) -> list[bytes]:
    """``lines`` with field ``column`` of (1-based) line ``line`` replaced by ``value``."""
    fields = lines[line - 1].rstrip(b"\n").split(b",")
    fields[column] = value
    return [*lines[:line - 1], b",".join(fields) + b"\n", *lines[line:]]


def _fails(path: Path, schema=FLIGHTS) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, schema, DAY_1)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and f"partition {DAY_1}" in message
    return message


def _only_rejected(validated: ingest.ValidatedFile, real: ingest.ValidatedFile,
                   lines: list[int]) -> pl.DataFrame:
    """The rejected rows, after checking they are exactly ``lines`` and every other row of
    the real day is good."""
    assert validated.rejected.get_column(ingest.LINE_COLUMN).to_list() == lines
    assert validated.good.height == real.good.height - len(lines)
    return validated.rejected


# --- text values -----------------------------------------------------------------------------

def test_a_50_mb_tail_number_is_quarantined_as_a_truncated_copy_with_its_length(
        tmp_path: Path, real_lines: list[bytes], real: ingest.ValidatedFile) -> None:
    size = 50 << 20
    path = _write(tmp_path, _with_field(real_lines, 5, TAILNUM, b"N" * size))
    validated = ingest.validate_file(path, FLIGHTS, DAY_1)
    rejected = _only_rejected(validated, real, [5])
    assert rejected.get_column("reason").item() == (
        f"tailnum: {size} characters, more than the 1000 allowed (starts '{'N' * 60}...')")
    kept = rejected.get_column("tailnum").item()
    assert kept == "N" * ingest.KEPT_CHARACTERS + f"... [{size} characters in all]"


@pytest.mark.parametrize(("value", "shown", "code_point"), [
    (b"N1\x004228", "N1\\x004228", "U+0000"),
    (b"N14228\x1b", "N14228\\x1b", "U+001B"),
    (b"N14\t228", "N14\\t228", "U+0009"),
    ("N14\u0085228".encode(), "N14\\x85228", "U+0085"),
])
def test_a_control_character_rejects_the_value(tmp_path: Path, real_lines: list[bytes],
                                               real: ingest.ValidatedFile, value: bytes,
                                               shown: str, code_point: str) -> None:
    path = _write(tmp_path, _with_field(real_lines, 7, TAILNUM, value))
    rejected = _only_rejected(ingest.validate_file(path, FLIGHTS, DAY_1), real, [7])
    assert rejected.get_column("reason").item() == (
        f"tailnum: '{shown}' holds control character {code_point}")
    assert rejected.get_column("tailnum").item() == value.decode()  # kept as it came


def test_a_control_character_in_a_number_fails_its_type(
        tmp_path: Path, real_lines: list[bytes], real: ingest.ValidatedFile) -> None:
    # Only spaces are stripped: a tab or NUL around a number is no number.
    distance = FLIGHTS.column_names.index("distance")
    path = _write(tmp_path, _with_field(real_lines, 4, distance, b"\t1400"))
    rejected = _only_rejected(ingest.validate_file(path, FLIGHTS, DAY_1), real, [4])
    assert rejected.get_column("reason").item() == "distance: '\\t1400' is not a finite number"


def test_a_value_across_lines_is_quarantined_at_its_line_and_later_lines_keep_theirs(
        tmp_path: Path, real_lines: list[bytes], real: ingest.ValidatedFile) -> None:
    carrier = FLIGHTS.column_names.index("carrier")
    lines = _with_field(real_lines, 3, TAILNUM, b'"N14\n228"')  # line 3 becomes lines 3-4
    lines = _with_field(lines, 10, carrier, b"zz")  # the 10th record: physical line 11
    path = _write(tmp_path, lines)
    validated = ingest.validate_file(path, FLIGHTS, DAY_1)
    rejected = _only_rejected(validated, real, [3, 11])
    assert rejected.get_column("reason").to_list() == [
        "tailnum: 'N14\\n228' has a line break (a quoted value across lines); the column does "
        "not allow multi-line text",
        "carrier: 'zz' must be a 2-character carrier code"]
    # The good rows after the value keep the file's line numbers, whatever the chunking.
    assert validated.good_lines is not None
    assert validated.good_lines.to_list()[:4] == [2, 5, 6, 7]
    for chunk_rows in (1, 2, 3, 100):
        lines_read = pl.concat(ingest.text_chunks(path, FLIGHTS, DAY_1, chunk_rows)
                               ).get_column(ingest.LINE_COLUMN)
        assert lines_read.to_list() == [2, 3, *range(5, len(real_lines) + 2)]


def test_a_lone_cr_inside_a_line_of_an_lf_file_rejects_its_value(
        tmp_path: Path, real_lines: list[bytes], real: ingest.ValidatedFile) -> None:
    path = _write(tmp_path, _with_field(real_lines, 6, TAILNUM, b"N14\r228"))
    rejected = _only_rejected(ingest.validate_file(path, FLIGHTS, DAY_1), real, [6])
    assert rejected.get_column("reason").item().startswith("tailnum: 'N14\\r228' has a line break")


def test_a_ragged_row_after_a_value_across_lines_names_its_physical_line(
        tmp_path: Path, real_lines: list[bytes]) -> None:
    lines = _with_field(real_lines, 3, TAILNUM, b'"N14\n228"')
    lines[7] = lines[7].rstrip(b"\n") + b",surplus\n"  # the 8th line of the file: line 9 now
    message = _fails(_write(tmp_path, lines))
    assert message.endswith("cannot be read as CSV: line 9 has 20 fields, the header has 19")


# --- line endings ----------------------------------------------------------------------------

@pytest.mark.parametrize("ending", [b"\r", b"\r\n"], ids=["CR only", "CRLF"])
def test_any_line_ending_reads_the_same_rows_and_lines(
        tmp_path: Path, real_lines: list[bytes], real: ingest.ValidatedFile,
        ending: bytes) -> None:
    path = _write(tmp_path, [line.replace(b"\n", ending) for line in real_lines])
    for chunk_rows in (7, ingest.WHOLE_FILE):
        chunks = list(ingest.text_chunks(path, FLIGHTS, DAY_1, chunk_rows))
        validated = ingest.validate(pl.concat(chunks), FLIGHTS, DAY_1, str(path))
        assert validated.rejected.height == 0
        assert validated.good.equals(real.good)
        assert validated.good_lines is not None and real.good_lines is not None
        assert validated.good_lines.equals(real.good_lines)


def test_a_cr_only_file_names_the_line_of_a_bad_row(tmp_path: Path, real_lines: list[bytes]
                                                    ) -> None:
    lines = [line.replace(b"\n", b"\r") for line in real_lines]
    lines[5] = lines[5].rstrip(b"\r") + b",surplus\r"
    message = _fails(_write(tmp_path, lines))
    assert message.endswith("line 6 has 20 fields, the header has 19")


def test_mixed_line_endings_read_every_row(tmp_path: Path, real_lines: list[bytes],
                                           real: ingest.ValidatedFile) -> None:
    lines = [line.replace(b"\n", b"\r\n") if number % 2 else line
             for number, line in enumerate(real_lines)]
    validated = ingest.validate_file(_write(tmp_path, lines), FLIGHTS, DAY_1)
    assert validated.rejected.height == 0 and validated.good.equals(real.good)


# --- what is at the path ---------------------------------------------------------------------

@pytest.mark.parametrize(("make", "kind"), [
    (Path.mkdir, "a directory"),
    (os.mkfifo, "a named pipe (FIFO)"),
])
def test_something_else_where_the_file_should_be_is_named(
        tmp_path: Path, make: Callable[[Path], object], kind: str) -> None:
    path = tmp_path / "flights" / f"{DAY_1}.csv"
    path.parent.mkdir()
    make(path)
    message = _fails(path)
    assert message.endswith(f"is {kind}, not a file: replace it with the day's CSV file")


def test_a_link_to_nothing_is_missing(tmp_path: Path) -> None:
    path = tmp_path / f"{DAY_1}.csv"
    path.symlink_to(tmp_path / "gone.csv")
    assert _fails(path).endswith("is missing (a link to nothing)")


# --- encodings and delimiters ----------------------------------------------------------------

def test_a_utf16_file_is_named(tmp_path: Path, real_lines: list[bytes]) -> None:
    path = _write(tmp_path, [b"".join(real_lines).decode().encode("utf-16")])
    message = _fails(path)
    assert "is not UTF-8 text: line 1, column 1: byte 0xFF; the file looks like UTF-16 text" \
        in message


def test_a_latin1_reference_file_names_line_column_field_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "planes.csv"
    path.write_bytes(",".join(PLANES.column_names).encode() + b"\n"
                     + "N10156,2004,Fixed wing,EMBRAER,ERJ 190-100 IGW,2,55,,Turbo-fan\n"
                       "N102UW,1998,Fixed wing,AÉROSPATIALE,A320-214,2,182,,Turbo-fan\n"
                     .encode("latin-1"))
    with pytest.raises(ingest.BadInputError) as raised:
        ingest.read_text(path, PLANES, None)
    assert str(raised.value) == (
        f"planes landing file {path} (reference data) is not UTF-8 text: line 3, column 25 "
        "(field manufacturer): byte 0xC9; it looks like Windows-1252, where it is 'É' (in "
        "'AÉROSPATIALE'): save the file as UTF-8")


@pytest.mark.parametrize(("delimiter", "named"), [(b";", "';'"), (b"\t", "tab"), (b"|", "'|'")])
def test_a_header_of_another_delimiter_is_named(tmp_path: Path, real_lines: list[bytes],
                                                delimiter: bytes, named: str) -> None:
    path = _write(tmp_path, [line.replace(b",", delimiter) for line in real_lines])
    message = _fails(path)
    assert (f"is missing column(s) 'year', 'month', 'day', ... (the header looks "
            f"{named}-separated; landing files are comma-separated)") in message


def test_a_header_without_a_line_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / f"{DAY_1}.csv"
    path.write_bytes(b"year" * (1 << 19))
    assert "line 1 (the header) has no line end within its first" in _fails(path)


@pytest.mark.parametrize("source", ["flights", "planes", "airports", "airlines"])
def test_every_real_code_of_2013_passes_the_declared_rules(source: str) -> None:
    """The whole year as shipped: the tail number, carrier and airport patterns quarantine no
    real row (keys repeat across days: not judged here)."""
    schema = dataclasses.replace(SOURCES[source], key=())
    text = read_source_text(source)
    validated = ingest.validate(text, schema, None, f"{source}.csv")
    assert validated.rejected.height == 0, validated.rejected.head()
    assert validated.good.height == text.height
