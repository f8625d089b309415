"""Read landing files, enforce a source schema, and split rows into good and rejected.

Whole-file problems (missing, empty, unreadable, wrong header) raise ``BadInputError`` naming
the file, the partition and the column. Row problems never raise: the row goes to quarantine,
as it came, with every reason it was rejected.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batch_platform.core.schema import MISSING_TOKENS, SourceSchema

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

    @property
    def rows_in(self) -> int:
        return self.good.height + self.rejected.height

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        counts: Counter[str] = Counter()
        for reason in self.rejected.get_column(REASON_COLUMN).to_list():
            counts.update(part.split(":")[0] for part in reason.split("; "))
        return counts.most_common(n)


def describe(path: Path, partition_date: dt.date | None) -> str:
    where = f"partition {partition_date.isoformat()}" if partition_date else "reference data"
    return f"{path} ({where})"


def read_text(path: Path, schema: SourceSchema, partition_date: dt.date | None) -> pl.DataFrame:
    """The file as text columns, after checking it exists, decodes and has the schema's header."""
    where = describe(path, partition_date)
    if not path.is_file():
        raise BadInputError(f"{schema.name} landing file {where} is missing")
    payload = path.read_bytes()
    if not payload.strip():
        raise BadInputError(f"{schema.name} landing file {where} is empty: no header line")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInputError(
            f"{schema.name} landing file {where} is not UTF-8 text "
            f"(byte {err.start}: {payload[err.start:err.start + 1]!r}); is it a CSV file?"
        ) from None
    # Polars renames a repeated column ("x_duplicated_0"): check the header as written.
    header = next(csv.reader([payload.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")]))
    check_header(header, schema, where)
    try:
        # Trailing blank lines are an artefact of the writer, not rows.
        text = pl.read_csv(payload.rstrip() + b"\n", infer_schema=False)
    except pl.exceptions.PolarsError as err:
        first_line = str(err).strip().splitlines()[0]
        raise BadInputError(
            f"{schema.name} landing file {where} cannot be read as CSV: "
            f"{_ragged_line(payload, len(header)) or first_line}"
        ) from None
    if text.height < schema.min_rows:
        raise BadInputError(
            f"{schema.name} landing file {where} has {text.height} data row(s), fewer than the "
            f"{schema.min_rows} a {schema.name} file must have (header only: truncated or "
            "sent before it was written?); the partition keeps its previous version"
        )
    return text


def _ragged_line(payload: bytes, width: int) -> str | None:
    """Where a row has another number of fields than the header, for the error message."""
    lines = payload.decode("utf-8-sig").splitlines()
    for number, fields in enumerate(csv.reader(lines), start=1):
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
    ignored = tuple(c for c in text.columns if c not in schema.column_names)
    text = text.select(schema.column_names).with_row_index(LINE_COLUMN, offset=2).with_columns(
        pl.col(LINE_COLUMN).cast(pl.Int64))

    typed_names = {c.name: f"__typed_{c.name}" for c in schema.columns}
    work = text.with_columns(
        pl.when(_is_missing(pl.col(c.name)))
        .then(None)
        .otherwise(c.type.parse(pl.col(c.name).str.strip_chars()))
        .cast(c.type.dtype)
        .alias(typed_names[c.name])
        for c in schema.columns
    )

    reasons: list[pl.Expr] = []
    for c in schema.columns:
        raw, typed = pl.col(c.name), pl.col(typed_names[c.name])
        if c.required:
            reasons.append(pl.when(_is_missing(raw)).then(
                pl.lit(f"{c.name}: required value is missing")))
        reasons.append(pl.when(~_is_missing(raw) & typed.is_null()).then(
            pl.format(f"{c.name}: '{{}}' is not {c.type.name}", raw)))
        if c.valid is not None:
            reasons.append(pl.when(typed.is_not_null() & ~c.valid(typed)).then(
                pl.format(f"{c.name}: '{{}}' {c.valid_description}", raw)))

    def typed_column(name: str) -> pl.Expr:
        return pl.col(typed_names[name])

    for rule in schema.row_rules:
        usable = pl.all_horizontal(typed_column(n).is_not_null() for n in rule.columns)
        reasons.append(pl.when(usable & ~rule.condition(typed_column)).then(
            pl.lit(f"row: {rule.reason}")))

    if schema.date_columns and partition_date is not None:
        y, m, d = (pl.col(typed_names[n]) for n in schema.date_columns)
        # Compare components: building a date from them would raise on, say, February 30.
        other_day = ((y != partition_date.year) | (m != partition_date.month)
                     | (d != partition_date.day))
        reasons.append(pl.when(y.is_not_null() & m.is_not_null() & d.is_not_null()
                               & other_day).then(
            pl.format(f"date: row date {{}}-{{}}-{{}} is not partition {partition_date}", y, m, d)))

    reason = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    work = work.with_columns(pl.when(reason != "").then(reason).alias(REASON_COLUMN))

    if schema.key:
        key = [pl.col(typed_names[k]) for k in schema.key]
        first_line = pl.col(LINE_COLUMN).first().over(key)
        # Only rows that passed every other rule compete for a key.
        clean = work.filter(pl.col(REASON_COLUMN).is_null()).with_columns(
            first_line.alias("__first_line"))
        duplicates = clean.filter(pl.col("__first_line") != pl.col(LINE_COLUMN)).select(
            LINE_COLUMN,
            pl.format(f"key: duplicate of line {{}} (same {', '.join(schema.key)})",
                      pl.col("__first_line")).alias("__dup"),
        )
        work = work.join(duplicates, on=LINE_COLUMN, how="left").with_columns(
            pl.coalesce(REASON_COLUMN, "__dup").alias(REASON_COLUMN)
        ).drop("__dup")

    good = work.filter(pl.col(REASON_COLUMN).is_null()).select(
        pl.col(typed_names[n]).alias(n) for n in schema.column_names
    )
    rejected = work.filter(pl.col(REASON_COLUMN).is_not_null()).select(
        LINE_COLUMN, *schema.column_names, REASON_COLUMN
    )
    return ValidatedFile(source_file, partition_date, good, rejected, ignored)


def _is_missing(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | expr.str.strip_chars().is_in(list(MISSING_TOKENS))


def validate_file(path: Path, schema: SourceSchema, partition_date: dt.date | None
                  ) -> ValidatedFile:
    """Read one landing file, check its header and validate its rows."""
    return validate(read_text(path, schema, partition_date), schema, partition_date, str(path))


def enforce_reject_threshold(validated: ValidatedFile, max_fraction: float, where: str) -> None:
    """Fail the partition when too many rows were rejected; nothing is written then."""
    if validated.rows_in == 0 or validated.rejected.height == 0:
        return
    fraction = validated.rejected.height / validated.rows_in
    if fraction > max_fraction:
        top = ", ".join(f"{reason} ({n})" for reason, n in validated.top_reasons())
        # The column alone ("date (936)") does not say what is wrong: show the first row's reason.
        first = validated.rejected.row(0, named=True)
        raise BadInputError(
            f"{where}: {validated.rejected.height} of {validated.rows_in} rows rejected "
            f"({fraction:.1%}), above the limit of {max_fraction:.1%}; most common reasons: {top}; "
            f"first, line {first[LINE_COLUMN]}: {first[REASON_COLUMN]}. "
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
