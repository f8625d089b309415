"""Enforce a source schema on landing files, and split rows into good and rejected.

Whole-file problems (missing, empty, unreadable, wrong header: see ``reader``) raise
``BadInputError`` naming the file, the partition, the line and the column. Row problems never
raise: the row goes to quarantine, as it came, with every reason it was rejected; a value too
long to keep is kept truncated, with its length.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.ingest.reader import (  # noqa: F401 (the module's interface)
    LINE_COLUMN,
    WHOLE_FILE,
    BadInputError,
    check_header,
    describe,
    read_text,
    text_chunks,
)
from batch_platform.platform.ingest.schema import MISSING_TOKENS, Column, SourceSchema
from batch_platform.platform.storage.lake import no_progress_bar
from batch_platform.platform.storage.staging import StagedTable, chunks

REASON_COLUMN = "reason"
LINEAGE_COLUMNS = ("_source_file", "_ingested_at", "_run_id")
# Working columns of files validated together: which file a row is of, and its partition.
FILE_INDEX = "__file"
DAY_COLUMN = "__partition_date"


@dataclass(frozen=True)
class Lineage:
    run_id: str
    ingested_at: dt.datetime


@dataclass(frozen=True)
class ValidatedFile:
    """One landing file after schema enforcement."""

    source_file: str
    partition_date: dt.date | None
    good: pl.DataFrame  # typed columns of the schema
    rejected: pl.DataFrame  # the rows as they came (text), with line number and reason
    ignored_columns: tuple[str, ...]
    good_lines: pl.Series | None = None  # the line of each good row

    @property
    def rows_in(self) -> int:
        return self.good.height + self.rejected.height

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        return self.tally().top_reasons(n)

    def tally(self) -> FileTally:
        return FileTally(self.source_file, self.partition_date).add(self)


@dataclass
class FileTally:
    """What the reject limit and the raw audits need of a file validated chunk by chunk."""

    source_file: str
    partition_date: dt.date | None
    rows_in: int = 0
    rejected: int = 0
    ignored_columns: tuple[str, ...] = ()
    reasons: Counter[str] = field(default_factory=Counter)  # by column ("row", "key", ...)
    missing_required: Counter[str] = field(default_factory=Counter)  # rows, by column
    first_rejected: dict[str, object] | None = None  # the first rejected row (line, reason)
    chunks: int = 0  # chunks validated one after another (a key may repeat between them)
    # Good lines whose key an earlier chunk had: quarantined, to drop with ``without_lines``.
    repeated_lines: pl.Series | None = None

    def add(self, validated: ValidatedFile) -> FileTally:
        return self.add_chunk(validated.good.height, validated.rejected,
                              validated.ignored_columns)

    def add_chunk(self, good_rows: int, rejected: pl.DataFrame,
                  ignored_columns: tuple[str, ...]) -> FileTally:
        self.rows_in += good_rows + rejected.height
        self.ignored_columns = ignored_columns
        self.count_rejected(rejected)
        return self

    def count_rejected(self, rejected: pl.DataFrame) -> None:
        if rejected.height == 0:
            return
        self.rejected += rejected.height
        reasons = rejected.get_column(REASON_COLUMN)
        for reason in reasons.to_list():
            self.reasons.update(part.split(":")[0] for part in reason.split("; "))
        for column, count in reasons.str.extract_all(r"(\w+): required value is missing"
                                                     ).explode().drop_nulls().value_counts(
                                                     ).iter_rows():
            self.missing_required[column.split(":")[0]] += count
        first = rejected.sort(LINE_COLUMN).row(0, named=True)
        if self.first_rejected is None or first[LINE_COLUMN] < self.first_rejected[LINE_COLUMN]:
            self.first_rejected = {LINE_COLUMN: first[LINE_COLUMN],
                                   REASON_COLUMN: first[REASON_COLUMN]}

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        return self.reasons.most_common(n)


def validate(
    text: pl.DataFrame,
    schema: SourceSchema,
    partition_date: dt.date | None,
    source_file: str,
) -> ValidatedFile:
    """Type every column, apply the schema's rules, and split good rows from rejected ones."""
    return validate_files([(source_file, partition_date, text)], schema)[0]


def validate_files(texts: Sequence[tuple[str, dt.date | None, pl.DataFrame]],
                   schema: SourceSchema) -> list[ValidatedFile]:
    """``validate`` of each (source file, partition date, text) in one pass over all of them.

    A pass costs a few dozen Polars queries whatever its rows, so many small files cost about
    one pass; each file's rows are still judged alone (keys repeat within a file, dates are
    its own partition's), and each file's result is what ``validate`` of it alone gives.
    """
    checked = _validate_pass(texts, schema)
    good, rejected = _by_file(checked.good, len(texts)), _by_file(checked.rejected, len(texts))
    return [ValidatedFile(source_file, partition_date, good[i].drop(LINE_COLUMN), rejected[i],
                          checked.ignored[i], good[i].get_column(LINE_COLUMN))
            for i, (source_file, partition_date, _) in enumerate(texts)]


@dataclass(frozen=True)
class _Pass:
    """Files validated together; each row names its file by its place (``FILE_INDEX``)."""

    good: pl.DataFrame  # FILE_INDEX, LINE_COLUMN, the typed columns
    rejected: pl.DataFrame  # FILE_INDEX, LINE_COLUMN, the text as it came, the reason; in order
    ignored: list[tuple[str, ...]]  # by file: its columns the schema does not have


def _validate_pass(texts: Sequence[tuple[str, dt.date | None, pl.DataFrame]],
                   schema: SourceSchema) -> _Pass:
    ignored = [tuple(c for c in text.columns if c not in (*schema.column_names, LINE_COLUMN))
               for _, _, text in texts]
    dated = any(day is not None for _, day, _ in texts)
    # Typed columns carry the schema's names (so a SQL row rule reads them as declared), the
    # text as it came is kept beside them for the reasons and the quarantine.
    text_names = {n: f"__text_{n}" for n in schema.column_names}
    work = pl.concat([
        # A frame, not a file, has no line numbers: number its rows as lines.
        (text if LINE_COLUMN in text.columns else text.with_row_index(LINE_COLUMN, offset=2))
        .select(pl.col(LINE_COLUMN).cast(pl.Int64), pl.lit(index, pl.Int32).alias(FILE_INDEX),
                *([pl.lit(day, pl.Date).alias(DAY_COLUMN)] if dated else []),
                *(pl.col(n).alias(text_names[n]) for n in schema.column_names))
        # One contiguous frame: on one chunk a file, every expression would run chunk by chunk.
        for index, (_, day, text) in enumerate(texts)], rechunk=True)
    # A text value too long or holding a control character is not read at all: one reason
    # says so. Other types need no such check: spaces alone are stripped, so a control
    # character anywhere makes the value fail its type.
    unreadable = {c.name: f"__unreadable_{c.name}" for c in schema.columns
                  if c.type.dtype == pl.String}
    work = work.with_columns(_unreadable(c, pl.col(text_names[c.name])).alias(unreadable[c.name])
                             for c in schema.columns if c.name in unreadable)
    work = work.with_columns(
        pl.when(_is_missing(pl.col(text_names[c.name]))
                | (pl.col(unreadable[c.name]) if c.name in unreadable else False))
        .then(None)
        .otherwise(c.type.parse(pl.col(text_names[c.name]).str.strip_chars(" ")))
        .cast(c.type.dtype)
        .alias(c.name)
        for c in schema.columns
    )

    reasons: list[Reason] = []
    for c in schema.columns:
        raw, typed = pl.col(text_names[c.name]), pl.col(c.name)
        bad_text = pl.col(unreadable[c.name]) if c.name in unreadable else pl.lit(False)
        missing = _is_missing(raw) & ~bad_text
        if c.name in unreadable:
            reasons.extend(_unreadable_reasons(c, raw, bad_text))
        if c.required:
            reasons.append(Reason(missing, pl.lit(f"{c.name}: required value is missing")))
        reasons.append(Reason(~missing & ~bad_text & typed.is_null(),
                              _say(f"{c.name}: '", _shown(raw), f"' is not {c.type.name}")))
        for rule in c.value_rules:
            reasons.append(Reason(typed.is_not_null() & ~rule.condition(typed),
                                  _say(f"{c.name}: '", _shown(raw), f"' {rule.description}")))

    for rule in schema.row_rules:
        usable = pl.all_horizontal(pl.col(n).is_not_null() for n in rule.columns)
        reasons.append(Reason(usable & ~rule.condition(pl.col), pl.lit(f"row: {rule.reason}")))

    # Each row's own partition (null for a file without one: no date reason then).
    day = pl.col(DAY_COLUMN)
    day_text = day.cast(pl.String)
    dated_elsewhere = pl.lit(False)
    if schema.date_columns and dated:
        y, m, d = (pl.col(n) for n in schema.date_columns)
        # Compare components: building a date from them would raise on, say, February 30.
        other_day = (y != day.dt.year()) | (m != day.dt.month()) | (d != day.dt.day())
        dated_elsewhere = other_day.fill_null(False)
        reasons.append(Reason(dated_elsewhere, _say("date: row date ", y, "-", m, "-", d,
                                                    " is not partition ", day_text)))
    if schema.timestamp_column is not None:
        work = work.with_columns(_wall_clock(schema).alias(WALL_CLOCK))
        reasons.extend(_placement_reasons(schema, day if dated else None, day_text,
                                          dated_elsewhere))

    # Which rows are rejected is decided on every row; the reasons' text is built only for
    # those rows.
    work = work.with_columns(pl.any_horizontal(r.when for r in reasons).fill_null(False)
                             .alias("__rejected"))
    flagged = work.filter(pl.col("__rejected"))
    flagged = flagged.with_columns(pl.concat_str(
        [pl.when(r.when).then(r.says) for r in reasons], separator="; ", ignore_nulls=True
    ).alias(REASON_COLUMN))
    passed = work.filter(~pl.col("__rejected"))

    rejected = [flagged]
    if schema.key:
        # Only rows that passed every other rule compete for a key, within their own file.
        passed = passed.with_columns(
            pl.col(LINE_COLUMN).first().over(FILE_INDEX, *schema.key).alias("__first_line"))
        repeated = pl.col("__first_line") != pl.col(LINE_COLUMN)
        rejected.append(passed.filter(repeated).with_columns(
            duplicate_reason(schema, pl.col("__first_line")).alias(REASON_COLUMN)))
        passed = passed.filter(~repeated)

    kept = [FILE_INDEX, LINE_COLUMN,
            *(_kept(pl.col(text_names[n])).alias(n) for n in schema.column_names), REASON_COLUMN]
    return _Pass(passed.select(FILE_INDEX, LINE_COLUMN, *schema.column_names),
                 pl.concat([part.select(kept) for part in rejected]).sort(FILE_INDEX, LINE_COLUMN),
                 ignored)


def _by_file(frame: pl.DataFrame, files: int) -> list[pl.DataFrame]:
    """``frame`` split by ``FILE_INDEX`` (dropped), in order: one frame a file, empty or not."""
    if files == 1:
        return [frame.drop(FILE_INDEX)]
    parts = frame.partition_by(FILE_INDEX, as_dict=True, include_key=False, maintain_order=True)
    empty = frame.clear().drop(FILE_INDEX)
    return [parts.get((i,), empty) for i in range(files)]


@dataclass(frozen=True)
class Reason:
    """Why a row is rejected: ``when`` says which rows, ``says`` the text on those rows."""

    when: pl.Expr
    says: pl.Expr


WALL_CLOCK = "__wall_clock"  # the timestamp as the local clock shows it, without a zone


def _wall_clock(schema: SourceSchema) -> pl.Expr:
    # Converted once: the date, the hour and the reasons all read this column.
    return (pl.col(schema.timestamp_column).dt.convert_time_zone(schema.timezone)  # type: ignore[arg-type]
            .dt.replace_time_zone(None))


def _placement_reasons(schema: SourceSchema, partition_date: pl.Expr | None,
                       partition_text: pl.Expr, dated_elsewhere: pl.Expr) -> list[Reason]:
    """A timestamp places its row: its local date must be the partition's (unless the date
    columns already say the row is of another day: one date reason a row), and its local
    hour the row's ``hour_column``."""
    stamp, zone, wall = schema.timestamp_column, schema.timezone, pl.col(WALL_CLOCK)
    shown = wall.dt.strftime("%Y-%m-%d %H:%M")
    reasons = []
    if partition_date is not None:
        other_day = (wall.dt.date() != partition_date) & ~dated_elsewhere
        reasons.append(Reason(other_day, _say(f"date: {stamp} ", shown,
                                              f" ({zone}) is not partition ", partition_text)))
    if schema.hour_column is not None:
        hour = pl.col(schema.hour_column)
        reasons.append(Reason(wall.dt.hour() != hour, _say(
            f"row: {stamp} ", shown, f" ({zone}) is not in the row's hour "
            f"({schema.hour_column} ", hour, ")")))
    return reasons


# Control characters (C0, DEL, C1) are never data; line breaks are, in a multiline column.
_CONTROL = r"[\x00-\x1F\x7F-\x9F]"
_CONTROL_BUT_LINE_BREAKS = r"[\x00-\x09\x0B\x0C\x0E-\x1F\x7F-\x9F]"
_CONTROL_CHARACTERS = [chr(i) for i in (*range(0x20), *range(0x7F, 0xA0))]
_ESCAPES = [{"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}")
            for c in _CONTROL_CHARACTERS]
_CODE_POINTS = {c: f"U+{ord(c):04X}" for c in _CONTROL_CHARACTERS}
SHOWN_CHARACTERS = 60  # of a value quoted in a reason
# Of a rejected value kept in quarantine: enough to explain the row, not a huge value twice.
KEPT_CHARACTERS = 1000


def _unreadable(column: Column, raw: pl.Expr) -> pl.Expr:
    """True where the text is longer than the column allows or holds a control character."""
    control = raw.str.contains(_CONTROL_BUT_LINE_BREAKS if column.multiline else _CONTROL)
    if column.max_length is not None:
        control = control | (raw.str.len_chars() > column.max_length)
    return control.fill_null(False)


def _unreadable_reasons(column: Column, raw: pl.Expr, bad_text: pl.Expr) -> list[Reason]:
    """One reason for a value ``_unreadable`` found: its length, else its first control
    character (a line break, in a column that is not multiline, has its own words)."""
    name = column.name
    too_long = pl.lit(False)
    reasons = []
    if column.max_length is not None:
        too_long = raw.str.len_chars() > column.max_length
        reasons.append(Reason(bad_text & too_long, _say(
            f"{name}: ", raw.str.len_chars().cast(pl.String),
            f" characters, more than the {column.max_length} allowed (starts '", _shown(raw),
            "')")))
    control = raw.str.extract(f"({_CONTROL_BUT_LINE_BREAKS if column.multiline else _CONTROL})")
    line_break = control.is_in(["\n", "\r"])
    reasons.append(Reason(bad_text & ~too_long & line_break, _say(
        f"{name}: '", _shown(raw), "' has a line break (a quoted value across lines); the "
        "column does not allow multi-line text")))
    reasons.append(Reason(bad_text & ~too_long & ~line_break, _say(
        f"{name}: '", _shown(raw), "' holds control character ",
        control.replace_strict(_CODE_POINTS, default=None, return_dtype=pl.String))))
    return reasons


def _shown(value: pl.Expr) -> pl.Expr:
    """A value as a reason quotes it: control characters escaped, the first
    ``SHOWN_CHARACTERS`` characters of a long one."""
    head = value.str.slice(0, SHOWN_CHARACTERS).str.replace_many(_CONTROL_CHARACTERS, _ESCAPES)
    return pl.when(value.str.len_chars() > SHOWN_CHARACTERS).then(head + "...").otherwise(head)


def _kept(value: pl.Expr) -> pl.Expr:
    """A rejected value as quarantine keeps it: whole, or its first ``KEPT_CHARACTERS``
    characters and its length."""
    length = value.str.len_chars()
    return pl.when(length > KEPT_CHARACTERS).then(pl.concat_str(
        value.str.slice(0, KEPT_CHARACTERS), pl.lit("... ["), length.cast(pl.String),
        pl.lit(" characters in all]"))).otherwise(value)


def _say(*parts: str | pl.Expr) -> pl.Expr:
    """Text from literal parts and values; null if a value is. Not ``pl.format``: declared
    text (a pattern like ``^[A-Z]{2}$``) may hold braces."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def duplicate_reason(schema: SourceSchema, first_line: pl.Expr) -> pl.Expr:
    return _say("key: duplicate of line ", first_line, f" (same {', '.join(schema.key)})")


def _is_missing(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | expr.str.strip_chars(" ").is_in(list(MISSING_TOKENS))


def validate_file(path: Path, schema: SourceSchema, partition_date: dt.date | None
                  ) -> ValidatedFile:
    """Read one landing file, check its header and validate its rows."""
    return validate(read_text(path, schema, partition_date), schema, partition_date, str(path))


def stage_file(path: Path, schema: SourceSchema, partition_date: dt.date, lineage: Lineage,
               good: StagedTable, rejected: StagedTable, chunk_rows: int, spill_dir: Path,
               memory_limit: str = "512MB") -> FileTally:
    """Validate a landing file of any size chunk by chunk into staged good and rejected rows.

    Good rows keep their line number (``LINE_COLUMN``). A key repeated in a later chunk is
    found afterwards (``duplicates_across_chunks``), its line quarantined as it came, and named
    in ``repeated_lines``: the caller drops those from ``good`` with ``without_lines``.
    """
    (tally,) = stage_files({partition_date: path}, schema, lineage, good, rejected, chunk_rows,
                           spill_dir, memory_limit)
    return tally


@dataclass
class _Batch:
    """Chunks of files read but not yet validated: at most ``chunk_rows`` rows, and at most
    one chunk of a file (a key repeated between chunks is found afterwards, as for a file
    alone)."""

    pieces: list[tuple[FileTally, pl.DataFrame]] = field(default_factory=list)
    rows: int = 0

    def has_room(self, tally: FileTally, text: pl.DataFrame, chunk_rows: int) -> bool:
        # A file's chunks come one after another: only the last piece can be of this file.
        return not self.pieces or (self.rows + text.height <= chunk_rows
                                   and self.pieces[-1][0] is not tally)

    def add(self, tally: FileTally, text: pl.DataFrame) -> None:
        self.pieces.append((tally, text))
        self.rows += text.height


def stage_files(paths: Mapping[dt.date, Path], schema: SourceSchema, lineage: Lineage,
                good: StagedTable, rejected: StagedTable, chunk_rows: int, spill_dir: Path,
                memory_limit: str = "512MB") -> Iterator[FileTally]:
    """``stage_file`` of each day's file, in order, yielding each file's tally once its rows
    are staged; the staged rows, their order and the tallies are the same.

    Chunks of consecutive files are validated together (``validate_files``) up to
    ``chunk_rows`` rows, so a range of small days costs a few passes, not one a file. A file
    that cannot be read raises once the files before it are staged and their tallies
    yielded, as if each file were staged in turn.
    """
    batch = _Batch()

    def validate_batch() -> None:
        nonlocal batch
        if not batch.pieces:
            return
        texts = [(t.source_file, t.partition_date, text) for t, text in batch.pieces]
        checked = _validate_pass(texts, schema)
        good_rows = dict(checked.good.group_by(FILE_INDEX).len().iter_rows())
        rejected_rows = (_by_file(checked.rejected, len(texts)) if checked.rejected.height
                         else [checked.rejected.drop(FILE_INDEX)] * len(texts))
        for i, (tally, _) in enumerate(batch.pieces):
            tally.add_chunk(good_rows.get(i, 0), rejected_rows[i], checked.ignored[i])
            tally.chunks += 1
        # The rows as ``with_lineage`` frames each file's: the line number last in good rows.
        good.write(_with_file_lineage(checked.good, texts, lineage)
                   .select(pl.exclude(LINE_COLUMN), LINE_COLUMN))
        rejected.write(_with_file_lineage(checked.rejected, texts, lineage))
        batch = _Batch()

    read: list[FileTally] = []  # files read whole whose tallies are not yielded yet
    for day, path in paths.items():
        tally = FileTally(str(path), day)
        chunks_read, texts = 0, text_chunks(path, schema, day, chunk_rows)
        while True:
            try:
                text = next(texts, None)
            except Exception:
                # The files before it are staged first, as they would have been one by one.
                batch.pieces = [(t, chunk) for t, chunk in batch.pieces if t is not tally]
                validate_batch()
                yield from read
                raise
            if text is None:
                break
            if not batch.has_room(tally, text, chunk_rows):
                validate_batch()
                yield from read
                read = []
            batch.add(tally, text)
            chunks_read += 1
        read.append(tally)
        if chunks_read > 1:
            # Its keys repeated between chunks go to quarantine before any later file's rows.
            validate_batch()
            _quarantine_repeated_keys(path, schema, lineage, good, rejected, tally, chunk_rows,
                                      spill_dir, memory_limit)
            yield from read
            read = []
    validate_batch()
    yield from read


def _quarantine_repeated_keys(path: Path, schema: SourceSchema, lineage: Lineage,
                              good: StagedTable, rejected: StagedTable, tally: FileTally,
                              chunk_rows: int, spill_dir: Path, memory_limit: str) -> None:
    """Lines of a file of several chunks whose key an earlier chunk has: to quarantine, and
    named in the tally's ``repeated_lines``."""
    duplicates = duplicates_across_chunks(good, str(path), schema, spill_dir, memory_limit)
    if duplicates.height:
        _quarantine_duplicates(path, schema, tally.partition_date, lineage, duplicates, rejected,
                               tally, chunk_rows)
        tally.repeated_lines = duplicates.get_column(LINE_COLUMN)


def duplicates_across_chunks(good: StagedTable, source_file: str, schema: SourceSchema,
                             spill_dir: Path, memory_limit: str = "512MB") -> pl.DataFrame:
    """Good rows of ``source_file`` whose key an earlier line has: (line, first line).

    ``validate`` finds duplicates within a chunk; this finds them between chunks, with DuckDB
    over the staged rows (it spills to ``spill_dir`` rather than hold every key in memory).
    """
    good.flush()
    if not schema.key or not good.files:
        return pl.DataFrame(schema={LINE_COLUMN: pl.Int64, "first_line": pl.Int64})
    keys = ", ".join(f'"{k}"' for k in schema.key)
    con = duckdb.connect(config={"temp_directory": str(spill_dir),
                                 "memory_limit": memory_limit})
    try:
        no_progress_bar(con)
        return con.execute(
            f"""WITH rows AS (SELECT {keys}, {LINE_COLUMN} AS line FROM read_parquet($files)
                              WHERE _source_file = $file),
                firsts AS (SELECT {keys}, min(line) AS first_line FROM rows GROUP BY ALL
                           HAVING count(*) > 1)
                SELECT line AS {LINE_COLUMN}, first_line FROM rows JOIN firsts USING ({keys})
                WHERE line <> first_line ORDER BY line""",
            {"files": [str(f) for f in good.files], "file": source_file}).pl()
    finally:
        con.close()


def _quarantine_duplicates(path: Path, schema: SourceSchema, partition_date: dt.date | None,
                          lineage: Lineage, duplicates: pl.DataFrame, rejected: StagedTable,
                          tally: FileTally, chunk_rows: int) -> None:
    """Move ``duplicates`` (from ``duplicates_across_chunks``) to quarantine, as they came."""
    validated = ValidatedFile(str(path), partition_date, pl.DataFrame(), pl.DataFrame(), ())
    for text in text_chunks(path, schema, partition_date, chunk_rows):
        rows = text.join(duplicates, on=LINE_COLUMN, how="inner").select(
            LINE_COLUMN, *schema.column_names,
            duplicate_reason(schema, pl.col("first_line")).alias(REASON_COLUMN))
        if rows.height:
            tally.count_rejected(rows)
            rejected.write(with_lineage(rows, validated, lineage))


def without_lines(good: StagedTable, lines_by_file: dict[str, pl.Series],
                  into: StagedTable) -> StagedTable:
    """``good`` without the given lines of the given files (duplicates found afterwards)."""
    drop = pl.concat([pl.DataFrame({"_source_file": file, LINE_COLUMN: lines})
                      for file, lines in lines_by_file.items()])
    for part in chunks(good.close().files, into.part_rows):
        into.write(part.join(drop, on=["_source_file", LINE_COLUMN], how="anti",
                             maintain_order="left"))
    return into.close()


def enforce_reject_threshold(validated: ValidatedFile | FileTally, max_fraction: float,
                             where: str) -> None:
    """Fail the partition when too many rows were rejected; nothing is written then."""
    tally = validated.tally() if isinstance(validated, ValidatedFile) else validated
    if tally.rows_in == 0 or tally.rejected == 0:
        return
    fraction = tally.rejected / tally.rows_in
    if fraction > max_fraction:
        top = ", ".join(f"{reason} ({n})" for reason, n in tally.top_reasons())
        # The column alone ("date (936)") does not say what is wrong: show the first row's reason.
        first = tally.first_rejected or {}
        raise BadInputError(
            f"{where}: {tally.rejected} of {tally.rows_in} rows rejected "
            f"({fraction:.1%}), above the limit of {max_fraction:.1%}; most common reasons: {top}; "
            f"first, line {first.get(LINE_COLUMN)}: {first.get(REASON_COLUMN)}. "
            "Nothing was written: the partition keeps its previous version."
        )


def _with_file_lineage(frame: pl.DataFrame,
                       texts: Sequence[tuple[str, dt.date | None, pl.DataFrame]],
                       lineage: Lineage) -> pl.DataFrame:
    """``with_lineage`` of rows of several files, each named by its ``FILE_INDEX``."""
    index = pl.col(FILE_INDEX)
    places = list(range(len(texts)))
    return frame.select(
        index.replace_strict(places, [day for _, day, _ in texts], return_dtype=pl.Date)
        .alias("partition_date"),
        index.replace_strict(places, [name for name, _, _ in texts], return_dtype=pl.String)
        .alias("_source_file"),
        *_run_columns(lineage), pl.exclude(FILE_INDEX))


def with_lineage(frame: pl.DataFrame, validated: ValidatedFile, lineage: Lineage) -> pl.DataFrame:
    """Add the partition date and the lineage columns every raw and quarantine row carries."""
    columns = [pl.lit(validated.source_file).alias("_source_file"), *_run_columns(lineage)]
    if validated.partition_date is not None:
        columns.insert(0, pl.lit(validated.partition_date).alias("partition_date"))
    return frame.select(*columns, pl.all())


def _run_columns(lineage: Lineage) -> list[pl.Expr]:
    """When and by which run a row was ingested."""
    return [pl.lit(lineage.ingested_at).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
            pl.lit(lineage.run_id).alias("_run_id")]
