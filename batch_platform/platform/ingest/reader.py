"""Read a landing file as text columns, a block of lines at a time, with each row's line.

Whole-file problems raise ``BadInputError``, one line naming the file, the partition, the line
and column where it can, and the cause: a directory or special file where the file should be,
no header, bytes that are not UTF-8 (with the encoding they look like), a header that looks
separated by another delimiter, a row with another number of fields. Line numbers are the
file's physical lines, also after a quoted value that spans lines. Line endings may be LF,
CRLF or CR alone (old Mac files).

The reader is written here rather than taken from ``pyarrow.csv.open_csv``: on a 1M-row file
pyarrow read with about a fifth less CPU but about 130 MB more peak memory, and its streaming
reader does not tell which line a row (or, with values across lines, a bad row) came from, nor
where a byte is not UTF-8.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import itertools
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from batch_platform.platform.ingest.schema import SourceSchema

LINE_COLUMN = "_line_number"
WHOLE_FILE = 2**31 - 1
# A quoted field may span lines: a block is extended to an even number of quotes, up to this.
MAX_QUOTED_BYTES = 64 << 20
# The header line must end within this many bytes (it names the columns, nothing more).
MAX_HEADER_BYTES = 1 << 20
_READ_BYTES = 1 << 20
_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}
# What a file that is not text usually is, by its first bytes.
_MAGIC = ((b"\x1f\x8b", "a gzip-compressed file"), (b"PK\x03\x04", "a zip archive"),
          (b"PAR1", "a Parquet file"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xfe", "UTF-16 text (little-endian byte order mark)"),
          (b"\xfe\xff", "UTF-16 text (big-endian byte order mark)"))


class BadInputError(ValueError):
    """Input that cannot be loaded as it is; the message says where and what."""


def describe(path: Path, partition_date: dt.date | None) -> str:
    where = f"partition {partition_date.isoformat()}" if partition_date else "reference data"
    return f"{path} ({where})"


@dataclass(frozen=True)
class _Layout:
    header: list[str]
    cr_only: bool  # lines end with CR alone: read as if each CR were LF


def read_text(path: Path, schema: SourceSchema, partition_date: dt.date | None) -> pl.DataFrame:
    """The whole file as text columns (with line numbers); see ``text_chunks``."""
    return pl.concat(text_chunks(path, schema, partition_date, chunk_rows=WHOLE_FILE))


def text_chunks(path: Path, schema: SourceSchema, partition_date: dt.date | None,
                chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The file's rows as text columns with their line numbers, ``chunk_rows`` lines at a
    time, after checking it is a file, decodes and has the schema's header. A file of any
    size is read in a stream; a file without rows yields one empty chunk (its columns)."""
    where = describe(path, partition_date)
    layout = _read_layout(path, schema, where)
    rows, held, yielded = 0, None, False
    for batch in _csv_blocks(path, layout, chunk_rows, schema, where):
        if held is not None:
            batch, held = pl.concat([held, batch]), None
        # Blank lines at the end are an artefact of the writer, not rows: hold rows with
        # every field empty back until a row with a value follows them.
        filled = batch.select(pl.any_horizontal(pl.exclude(LINE_COLUMN).is_not_null())
                              ).to_series()
        keep = int(filled.arg_true().max()) + 1 if filled.any() else 0  # type: ignore[arg-type]
        if keep < batch.height:
            batch, held = batch.head(keep), batch.slice(keep)
        if batch.height:
            rows += batch.height
            yielded = True
            yield batch
    if rows < schema.min_rows:
        raise BadInputError(
            f"{schema.name} landing file {where} has {rows} data row(s), fewer than the "
            f"{schema.min_rows} a {schema.name} file must have (header only: truncated or "
            "sent before it was written?); the partition keeps its previous version"
        )
    if not yielded:
        yield pl.DataFrame(schema={LINE_COLUMN: pl.Int64,
                                   **dict.fromkeys(layout.header, pl.String)})


def _lines(handle: BinaryIO, cr_only: bool) -> Iterator[bytes]:
    """The file's lines, each ending in LF (but perhaps the last): CR alone ends a line in a
    CR-only file."""
    return _cr_lines(handle) if cr_only else iter(handle)


def _cr_lines(handle: BinaryIO) -> Iterator[bytes]:
    pending: list[bytes] = []
    for block in iter(lambda: handle.read(_READ_BYTES), b""):
        if block.endswith(b"\r"):  # keep a CRLF split between blocks whole
            block += handle.read(1)
        parts = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for part in parts[:-1]:
            pending.append(part)
            yield b"".join(pending) + b"\n"
            pending = []
        pending.append(parts[-1])
    if any(pending):
        yield b"".join(pending)


def _csv_blocks(path: Path, layout: _Layout, chunk_rows: int, schema: SourceSchema, where: str
                ) -> Iterator[pl.DataFrame]:
    """Blocks of ``chunk_rows`` lines parsed as text with their line numbers, read with a
    buffered file, not mapped: the memory of a block, never of the file."""
    with open(path, "rb") as handle:
        lines = _lines(handle, layout.cr_only)
        header = next(lines).rstrip(b"\r\n") + b"\n"
        first_line = 2
        while block_lines := list(itertools.islice(lines, chunk_rows)):
            block = b"".join(block_lines)
            physical = len(block_lines)
            extended = 0
            while block.count(b'"') % 2 and extended < MAX_QUOTED_BYTES:
                more = next(lines, b"")
                if not more:
                    break
                block += more
                extended += len(more)
                physical += 1
            try:
                frame = pl.read_csv(header + block, infer_schema=False)
            except pl.exceptions.PolarsError as err:
                undecodable = _not_utf8(path, layout.cr_only, layout.header)
                if undecodable:
                    raise BadInputError(f"{schema.name} landing file {where} is not UTF-8 "
                                        f"text: {undecodable}") from None
                cause = _ragged_line(path, len(layout.header)) or str(err).strip().splitlines(
                    )[0]
                raise BadInputError(f"{schema.name} landing file {where} cannot be read as "
                                    f"CSV: {cause}") from None
            yield _numbered(frame, first_line, physical)
            first_line += physical


def _numbered(frame: pl.DataFrame, first_line: int, physical_lines: int) -> pl.DataFrame:
    """``frame`` with the line each row starts on: a value across lines moves the rows after
    it down by the line breaks it holds."""
    if frame.height == physical_lines:
        return frame.with_row_index(LINE_COLUMN, offset=first_line).with_columns(
            pl.col(LINE_COLUMN).cast(pl.Int64))
    spans = pl.sum_horizontal(pl.col(c).str.count_matches("\n", literal=True).fill_null(0)
                              for c in frame.columns) + 1
    return frame.select(
        (first_line + spans.cum_sum() - spans).cast(pl.Int64).alias(LINE_COLUMN), pl.all())


def _read_layout(path: Path, schema: SourceSchema, where: str) -> _Layout:
    """The header and line endings of the file, after checking it is a file that has them."""
    problem = _not_a_file(path)
    if problem:
        raise BadInputError(f"{schema.name} landing file {where} {problem}")
    with open(path, "rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES)
        if not first.strip() and not any(block.strip() for block in
                                         iter(lambda: handle.read(_READ_BYTES), b"")):
            raise BadInputError(f"{schema.name} landing file {where} is empty: no header line")
    # A CR inside the first line (not the CR of a CRLF) ends the header: CR-only line endings.
    cr_only = b"\r" in first.rstrip(b"\r\n")
    if cr_only:
        first = first.split(b"\r")[0]
    elif not first.endswith(b"\n") and len(first) == MAX_HEADER_BYTES:
        raise BadInputError(f"{schema.name} landing file {where}: line 1 (the header) has no "
                            f"line end within its first {MAX_HEADER_BYTES} bytes; is it a CSV "
                            "file?")
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{schema.name} landing file {where} is not UTF-8 text: "
                            f"{_not_utf8(path, cr_only, [])}") from None
    # Polars renames a repeated column ("x_duplicated_0"): check the header as written.
    header = next(csv.reader([line.rstrip("\r\n")]), [])
    check_header(header, schema, where)
    return _Layout(header, cr_only)


def _not_a_file(path: Path) -> str | None:
    """What is at ``path`` when it is not a regular file, for the error message."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is missing" if not path.is_symlink() else "is missing (a link to nothing)"
    except OSError as err:
        return f"cannot be opened: {err.strerror}"
    if stat.S_ISREG(mode):
        return None if os.access(path, os.R_OK) else "cannot be read: permission denied"
    kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "not a regular file")
    return f"is {kind}, not a file: replace it with the day's CSV file"


def _not_utf8(path: Path, cr_only: bool, header: list[str]) -> str | None:
    """Where the file stops being UTF-8 (line, column, field) and what it looks like instead,
    for the error message; read in blocks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newline = b"\r" if cr_only else b"\n"
    offset, line, line_start = 0, 1, 0
    with open(path, "rb") as handle:
        start = handle.read(16)
        handle.seek(0)
        for block in iter(lambda: handle.read(_READ_BYTES), b""):
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the last block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                bad = offset + max(err.start - pending, 0)
                before = block[:bad - offset]
                line += before.count(newline)
                if newline in before:
                    line_start = offset + before.rindex(newline) + 1
                handle.seek(line_start)
                prefix = handle.read(bad - line_start)
                rest = handle.read(64)
                return _undecodable(prefix, rest, line, header, start)
            line += block.count(newline)
            if newline in block:
                line_start = offset + block.rindex(newline) + 1
            offset += len(block)
    return None


def _undecodable(prefix: bytes, rest: bytes, line: int, header: list[str], start: bytes) -> str:
    """The message for the byte at the start of ``rest``, after ``prefix`` on line ``line``."""
    text = prefix.decode("utf-8-sig", errors="replace")
    column = len(text) + 1
    field = None
    if line > 1 and header:
        try:
            fields = next(csv.reader([text]), None) or [""]
        except csv.Error:  # a lone CR before the byte: no field to name
            fields = []
        if 0 < len(fields) <= len(header):
            field = header[len(fields) - 1]
    where = f"line {line}, column {column}" + (f" (field {field})" if field else "")
    byte = rest[:1]
    kind = next((name for magic, name in _MAGIC if start.startswith(magic)), None)
    if kind is None and start.count(b"\x00") >= len(start) // 4 > 0:
        kind = "UTF-16 text (every other byte is zero)"
    if kind:
        return f"{where}: byte 0x{byte.hex().upper()}; the file looks like {kind}, not CSV"
    word = (prefix.rsplit(b",", 1)[-1] + rest.split(b",", 1)[0]).split(b"\n")[0].strip(b'"\r')
    for encoding, name in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1 (ISO 8859-1)")):
        try:
            shown = byte.decode(encoding)
            in_word = word.decode(encoding)
        except UnicodeDecodeError:
            continue
        if shown.isprintable():
            return (f"{where}: byte 0x{byte.hex().upper()}; it looks like {name}, where it is "
                    f"{shown!r} (in {in_word[:40]!r}): save the file as UTF-8")
    return f"{where}: byte 0x{byte.hex().upper()}; is it a CSV file?"


def _ragged_line(path: Path, width: int) -> str | None:
    """Where a row has another number of fields than the header, for the error message."""
    start = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            for fields in reader:
                if fields and len(fields) != width:
                    return f"line {start} has {len(fields)} fields, the header has {width}"
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as err:
        return f"line {start}: {err}"
    return None


def check_header(columns: list[str], schema: SourceSchema, where: str) -> None:
    duplicated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if duplicated:
        raise BadInputError(f"{schema.name} landing file {where} repeats column(s) "
                            f"{', '.join(map(repr, duplicated))}")
    missing = [c for c in schema.column_names if c not in columns]
    if not missing:
        return
    unexpected = [c for c in columns if c not in schema.column_names]
    hints = []
    delimiter = _other_delimiter(columns, schema)
    if delimiter:
        hints.append(f"the header looks {delimiter}-separated; landing files are "
                     "comma-separated")
    else:
        for name in missing:
            close = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.6)
            if close:
                hints.append(f"'{close[0]}' looks like a misspelling of '{name}'")
    hint = f" ({'; '.join(hints)})" if hints else ""
    # With another delimiter every column is missing: the first few say enough.
    names = ", ".join(map(repr, missing[:3] if delimiter else missing))
    if delimiter and len(missing) > 3:
        names += ", ..."
    raise BadInputError(
        f"{schema.name} landing file {where} is missing column(s) {names}{hint}; expected "
        f"columns: {', '.join(schema.column_names)}"
    )


def _other_delimiter(columns: list[str], schema: SourceSchema) -> str | None:
    """The delimiter (named) that splits the header into more of the schema's columns than
    commas do, if one does."""
    line = ",".join(columns)
    found = sum(c in schema.column_names for c in columns)
    for delimiter, name in _DELIMITERS.items():
        split = next(csv.reader([line], delimiter=delimiter), [])
        if sum(c in schema.column_names for c in split) > max(found, 1):
            return name
    return None
