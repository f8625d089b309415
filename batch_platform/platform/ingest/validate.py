"""Read landing files, enforce a source schema, and split rows into good and rejected.

Whole-file problems (missing, empty, unreadable, wrong header) raise ``BadInputError`` naming
the file, the partition and the column. Row problems never raise: the row goes to quarantine,
as it came, with every reason it was rejected.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.ingest.schema import MISSING_TOKENS, SourceSchema
from batch_platform.platform.storage.staging import StagedTable, chunks

LINE_COLUMN = "_line_number"
REASON_COLUMN = "reason"
LINEAGE_COLUMNS = ("_source_file", "_ingested_at", "_run_id")


class BadInputError(ValueError):
    """Input that cannot be loaded as it is; the message says where and what."""


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
        self.rows_in += validated.rows_in
        self.ignored_columns = validated.ignored_columns
        self.count_rejected(validated.rejected)
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


def describe(path: Path, partition_date: dt.date | None) -> str:
    where = f"partition {partition_date.isoformat()}" if partition_date else "reference data"
    return f"{path} ({where})"


def read_text(path: Path, schema: SourceSchema, partition_date: dt.date | None) -> pl.DataFrame:
    """The whole file as text columns (with line numbers); see ``text_chunks``."""
    return pl.concat(text_chunks(path, schema, partition_date, chunk_rows=WHOLE_FILE))


WHOLE_FILE = 2**31 - 1


def text_chunks(path: Path, schema: SourceSchema, partition_date: dt.date | None,
                chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The file's rows as text columns with their line numbers, ``chunk_rows`` at a time,
    after checking it exists, decodes and has the schema's header. A file of any size is read
    in a stream; a file without rows yields one empty chunk (its columns)."""
    where = describe(path, partition_date)
    header = _read_header(path, schema, where)
    rows, held, yielded = 0, None, False
    for batch in _csv_blocks(path, chunk_rows, schema, where, len(header)):
        batch = batch.with_row_index(LINE_COLUMN, offset=2 + rows + (
            held.height if held is not None else 0)).with_columns(pl.col(LINE_COLUMN).cast(
                pl.Int64))
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
        yield pl.DataFrame(schema={LINE_COLUMN: pl.Int64, **dict.fromkeys(header, pl.String)})


# A quoted field may span lines: a block is extended to an even number of quotes, up to this.
MAX_QUOTED_BYTES = 64 << 20


def _csv_blocks(path: Path, chunk_rows: int, schema: SourceSchema, where: str, width: int
                ) -> Iterator[pl.DataFrame]:
    """Blocks of ``chunk_rows`` lines parsed as text, read with a buffered file, not mapped:
    the memory of a block, never of the file."""
    with open(path, "rb") as handle:
        header = handle.readline().rstrip(b"\r\n") + b"\n"
        while lines := list(itertools.islice(handle, chunk_rows)):
            block = b"".join(lines)
            extended = 0
            while block.count(b'"') % 2 and extended < MAX_QUOTED_BYTES:
                more = handle.readline()
                if not more:
                    break
                block += more
                extended += len(more)
            try:
                yield pl.read_csv(header + block, infer_schema=False)
            except pl.exceptions.PolarsError as err:
                first_line = str(err).strip().splitlines()[0]
                raise BadInputError(
                    f"{schema.name} landing file {where} cannot be read as CSV: "
                    f"{_not_utf8(path) or _ragged_line(path, width) or first_line}"
                ) from None


def _read_header(path: Path, schema: SourceSchema, where: str) -> list[str]:
    if not path.is_file():
        raise BadInputError(f"{schema.name} landing file {where} is missing")
    with open(path, "rb") as handle:
        first = handle.readline()
        if not first.strip() and not any(block.strip() for block in
                                         iter(lambda: handle.read(1 << 20), b"")):
            raise BadInputError(f"{schema.name} landing file {where} is empty: no header line")
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadInputError(
            f"{schema.name} landing file {where} is not UTF-8 text "
            f"(byte {err.start}: {first[err.start:err.start + 1]!r}); is it a CSV file?"
        ) from None
    # Polars renames a repeated column ("x_duplicated_0"): check the header as written.
    header = next(csv.reader([line.rstrip("\r\n")]))
    check_header(header, schema, where)
    return header


def _not_utf8(path: Path) -> str | None:
    """Where the file stops being UTF-8, for the error message; read in blocks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                byte = block[err.start:err.start + 1]
                return (f"it is not UTF-8 text (byte {offset + err.start}: {byte!r}); "
                        "is it a CSV file?")
            offset += len(block)
    return None


def _ragged_line(path: Path, width: int) -> str | None:
    """Where a row has another number of fields than the header, for the error message."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle), start=1):
            if fields and len(fields) != width:
                return f"line {number} has {len(fields)} fields, the header has {width}"
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
    for name in missing:
        close = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.6)
        if close:
            hints.append(f"'{close[0]}' looks like a misspelling of '{name}'")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise BadInputError(
        f"{schema.name} landing file {where} is missing column(s) "
        f"{', '.join(map(repr, missing))}{hint}; expected columns: {', '.join(schema.column_names)}"
    )


def validate(
    text: pl.DataFrame,
    schema: SourceSchema,
    partition_date: dt.date | None,
    source_file: str,
) -> ValidatedFile:
    """Type every column, apply the schema's rules, and split good rows from rejected ones."""
    ignored = tuple(c for c in text.columns if c not in (*schema.column_names, LINE_COLUMN))
    if LINE_COLUMN not in text.columns:  # a frame, not a file: number its rows as lines
        text = text.with_row_index(LINE_COLUMN, offset=2)
    # Typed columns carry the schema's names (so a SQL row rule reads them as declared), the
    # text as it came is kept beside them for the reasons and the quarantine.
    text_names = {n: f"__text_{n}" for n in schema.column_names}
    work = text.select(pl.col(LINE_COLUMN).cast(pl.Int64),
                       *(pl.col(n).alias(text_names[n]) for n in schema.column_names))
    work = work.with_columns(
        pl.when(_is_missing(pl.col(text_names[c.name])))
        .then(None)
        .otherwise(c.type.parse(pl.col(text_names[c.name]).str.strip_chars()))
        .cast(c.type.dtype)
        .alias(c.name)
        for c in schema.columns
    )

    # Each reason is null on a row it does not concern. Its values are taken only where it
    # does (``pl.when(bad).then(value)``): no text is built for the millions of good rows.
    reasons: list[pl.Expr] = []
    for c in schema.columns:
        raw, typed = pl.col(text_names[c.name]), pl.col(c.name)
        if c.required:
            reasons.append(pl.when(_is_missing(raw)).then(
                pl.lit(f"{c.name}: required value is missing")))
        not_parsed = ~_is_missing(raw) & typed.is_null()
        reasons.append(_say(f"{c.name}: '", pl.when(not_parsed).then(raw),
                            f"' is not {c.type.name}"))
        for rule in c.value_rules:
            broken = typed.is_not_null() & ~rule.condition(typed)
            reasons.append(_say(f"{c.name}: '", pl.when(broken).then(raw),
                                f"' {rule.description}"))

    for rule in schema.row_rules:
        usable = pl.all_horizontal(pl.col(n).is_not_null() for n in rule.columns)
        reasons.append(pl.when(usable & ~rule.condition(pl.col)).then(
            pl.lit(f"row: {rule.reason}")))

    dated_elsewhere = pl.lit(False)
    if schema.date_columns and partition_date is not None:
        y, m, d = (pl.col(n) for n in schema.date_columns)
        # Compare components: building a date from them would raise on, say, February 30.
        other_day = ((y != partition_date.year) | (m != partition_date.month)
                     | (d != partition_date.day))
        dated_elsewhere = other_day.fill_null(False)
        reasons.append(_say("date: row date ", *_where(dated_elsewhere, y, "-", m, "-", d),
                            f" is not partition {partition_date}"))
    if schema.timestamp_column is not None:
        work = work.with_columns(_wall_clock(schema).alias(WALL_CLOCK))
        reasons.extend(_placement_reasons(schema, partition_date, dated_elsewhere))

    reason = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    work = work.with_columns(pl.when(reason != "").then(reason).alias(REASON_COLUMN))

    if schema.key:
        key = [pl.col(k) for k in schema.key]
        first_line = pl.col(LINE_COLUMN).first().over(key)
        # Only rows that passed every other rule compete for a key.
        clean = work.filter(pl.col(REASON_COLUMN).is_null()).with_columns(
            first_line.alias("__first_line"))
        duplicates = clean.filter(pl.col("__first_line") != pl.col(LINE_COLUMN)).select(
            LINE_COLUMN,
            duplicate_reason(schema, pl.col("__first_line")).alias("__dup"),
        )
        work = work.join(duplicates, on=LINE_COLUMN, how="left").with_columns(
            pl.coalesce(REASON_COLUMN, "__dup").alias(REASON_COLUMN)
        ).drop("__dup")

    passed = work.filter(pl.col(REASON_COLUMN).is_null())
    good = passed.select(schema.column_names)
    rejected = work.filter(pl.col(REASON_COLUMN).is_not_null()).select(
        LINE_COLUMN, *(pl.col(text_names[n]).alias(n) for n in schema.column_names),
        REASON_COLUMN,
    )
    return ValidatedFile(source_file, partition_date, good, rejected, ignored,
                         passed.get_column(LINE_COLUMN))


WALL_CLOCK = "__wall_clock"  # the timestamp as the local clock shows it, without a zone


def _wall_clock(schema: SourceSchema) -> pl.Expr:
    # Converted once: the date, the hour and the reasons all read this column.
    return (pl.col(schema.timestamp_column).dt.convert_time_zone(schema.timezone)  # type: ignore[arg-type]
            .dt.replace_time_zone(None))


def _placement_reasons(schema: SourceSchema, partition_date: dt.date | None,
                       dated_elsewhere: pl.Expr) -> list[pl.Expr]:
    """A timestamp places its row: its local date must be the partition's (unless the date
    columns already say the row is of another day: one date reason a row), and its local
    hour the row's ``hour_column``."""
    stamp, zone, wall = schema.timestamp_column, schema.timezone, pl.col(WALL_CLOCK)

    def shown(bad: pl.Expr) -> pl.Expr:
        return pl.when(bad).then(wall).dt.strftime("%Y-%m-%d %H:%M")

    reasons = []
    if partition_date is not None:
        other_day = (wall.dt.date() != partition_date) & ~dated_elsewhere
        reasons.append(_say(f"date: {stamp} ", shown(other_day),
                            f" ({zone}) is not partition {partition_date}"))
    if schema.hour_column is not None:
        hour = pl.col(schema.hour_column)
        other_hour = wall.dt.hour() != hour
        reasons.append(_say(f"row: {stamp} ", shown(other_hour),
                            f" ({zone}) is not in the row's hour ({schema.hour_column} ",
                            pl.when(other_hour).then(hour), ")"))
    return reasons


def _say(*parts: str | pl.Expr) -> pl.Expr:
    """Text from literal parts and values; null if a value is. Not ``pl.format``: declared
    text (a pattern like ``^[A-Z]{2}$``) may hold braces."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def _where(condition: pl.Expr, *parts: str | pl.Expr) -> list[str | pl.Expr]:
    """``parts`` with each value taken only where ``condition`` holds (null elsewhere)."""
    return [p if isinstance(p, str) else pl.when(condition).then(p) for p in parts]


def duplicate_reason(schema: SourceSchema, first_line: pl.Expr) -> pl.Expr:
    return _say("key: duplicate of line ", first_line, f" (same {', '.join(schema.key)})")


def _is_missing(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | expr.str.strip_chars().is_in(list(MISSING_TOKENS))


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
    tally = FileTally(str(path), partition_date)
    for text in text_chunks(path, schema, partition_date, chunk_rows):
        validated = validate(text, schema, partition_date, str(path))
        tally.add(validated)
        tally.chunks += 1
        good.write(with_lineage(validated.good, validated, lineage)
                   .with_columns(validated.good_lines))
        rejected.write(with_lineage(validated.rejected, validated, lineage))
    if tally.chunks > 1:
        duplicates = duplicates_across_chunks(good, str(path), schema, spill_dir, memory_limit)
        if duplicates.height:
            _quarantine_duplicates(path, schema, partition_date, lineage, duplicates, rejected,
                                   tally, chunk_rows)
            tally.repeated_lines = duplicates.get_column(LINE_COLUMN)
    return tally


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


def _quarantine_duplicates(path: Path, schema: SourceSchema, partition_date: dt.date,
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


def with_lineage(frame: pl.DataFrame, validated: ValidatedFile, lineage: Lineage) -> pl.DataFrame:
    """Add the partition date and the lineage columns every raw and quarantine row carries."""
    columns = [
        pl.lit(validated.source_file).alias("_source_file"),
        pl.lit(lineage.ingested_at).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(lineage.run_id).alias("_run_id"),
    ]
    if validated.partition_date is not None:
        columns.insert(0, pl.lit(validated.partition_date).alias("partition_date"))
    return frame.select(*columns, pl.all())
