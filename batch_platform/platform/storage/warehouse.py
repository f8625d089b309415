"""Tables of the warehouse: partition writes by name, and the reads steps make.

Writes run inside the transaction ``lake.Lake.commit`` opens, so what they change becomes
visible at once, in one snapshot, or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import duckdb
import polars as pl

from batch_platform.platform.dates import days_between
from batch_platform.platform.storage.staging import StagedTable

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class SchemaMismatchError(ValueError):
    """A frame does not have the columns of the table it is written to."""


class MissingDataError(LookupError):
    """Upstream data a step needs is not in the warehouse."""


def table_name(qualified: str) -> str:
    """Validate ``schema.table`` against a strict pattern before it goes into SQL."""
    parts = qualified.split(".")
    if len(parts) != 2 or not all(IDENTIFIER.match(p) for p in parts):
        raise ValueError(f"invalid table name {qualified!r}: expected schema.table in lower case")
    return qualified


def ensure_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Create ``table`` from the frame's schema if absent; refuse a silent schema change.

    Tables are not DuckLake-partitioned: a write of many days then makes one file, not one per
    day (365 days of 26,000 rows: 0.05 s against 1.5 s partitioned), and a day's replacement
    still costs that day alone: each commit's rows are files of their own, the catalog's
    per-file min/max of ``partition_date`` skips every other file, and rows of the day inside
    a file of many days are ended by a small delete file, not a rewrite.
    """
    table = table_name(table)
    schema_name = table.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_name}")
    if table_exists(con, table):
        existing = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
    else:
        con.register("__frame", frame.head(0).to_arrow())
        try:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM __frame")
        finally:
            con.unregister("__frame")
        existing = frame.columns
    if sorted(existing) != sorted(frame.columns):
        missing = sorted(set(existing) - set(frame.columns))
        extra = sorted(set(frame.columns) - set(existing))
        raise SchemaMismatchError(
            f"{table} has columns the new data does not match (missing {missing}, new {extra}); "
            "schema changes must be deliberate: migrate or drop the table first"
        )


Rows = pl.DataFrame | StagedTable  # in memory, or staged as Parquet parts


def replace_partitions(
    con: duckdb.DuckDBPyConnection,
    writes: Sequence[tuple[str, Rows | None]],
    partition_dates: Sequence[dt.date],
    publish: Sequence[dt.date] | None = None,
) -> None:
    """Replace ``partition_dates`` of every table in ``writes``; with ``publish``, only those
    of them (the days the audits let through). Rows of None empty those days of their table,
    if it exists (a companion table with nothing to say for them now). Inside the commit's
    transaction: either every table holds exactly the new rows of those dates, or nothing
    changed.
    """
    for table, rows in writes:
        if rows is None:
            continue
        ensure_table(con, table, rows.empty() if isinstance(rows, StagedTable) else rows)
        outside = _rows_outside(con, rows, partition_dates)
        if outside:
            raise ValueError(f"{outside} row(s) for {table} fall outside the partitions "
                             f"being written ({partition_dates[0]}..{partition_dates[-1]})")
    dates = list(partition_dates if publish is None else publish)
    only = None if publish is None or set(publish) == set(partition_dates) else dates
    for table, rows in writes:
        if rows is None:
            delete_partitions(con, table, dates)
            continue
        con.execute(f"DELETE FROM {table} WHERE partition_date = ANY($dates)", {"dates": dates})
        insert(con, table, rows, only)


def delete_partitions(con: duckdb.DuckDBPyConnection, table: str,
                      partition_dates: Sequence[dt.date]) -> None:
    """Remove ``partition_dates`` from ``table``, if it exists; inside the commit."""
    if table_exists(con, table):
        con.execute(f"DELETE FROM {table} WHERE partition_date = ANY($dates)",
                    {"dates": list(partition_dates)})


def _rows_outside(con: duckdb.DuckDBPyConnection, rows: Rows,
                  partition_dates: Sequence[dt.date]) -> int:
    if isinstance(rows, pl.DataFrame):
        return rows.filter(~pl.col("partition_date").is_in(list(partition_dates))).height
    return con.execute("SELECT count(*) FROM read_parquet($files) "
                       "WHERE NOT partition_date = ANY($dates)",
                       {"files": [str(f) for f in rows.files],
                        "dates": list(partition_dates)}).fetchone()[0]


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Replace every row of an unpartitioned table (inside the commit's transaction)."""
    ensure_table(con, table, frame)
    con.execute(f"DELETE FROM {table}")
    insert(con, table, frame)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: Rows,
           only: Sequence[dt.date] | None = None) -> None:
    """Insert by column name, so a frame's column order never matters; staged parts are
    streamed by DuckDB, never held in memory whole. ``only``: the rows of those days."""
    if isinstance(rows, StagedTable):
        where = "" if only is None else " WHERE partition_date = ANY($only)"
        con.execute(f"INSERT INTO {table} BY NAME {rows.select_sql()}{where}",
                    {"files": [str(f) for f in rows.files]}
                    | ({} if only is None else {"only": list(only)}))
        return
    if only is not None:
        rows = rows.filter(pl.col("partition_date").is_in(list(only)))
    con.register("__frame", rows.to_arrow())
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __frame")
    finally:
        con.unregister("__frame")


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` (or a view of that name) exists. Binding the name costs a quarter of
    asking ``information_schema``, which gathers every table of the lake; a failed bind
    leaves an open transaction usable."""
    try:
        con.execute(f"SELECT 1 FROM {table_name(table)} LIMIT 0")
    except duckdb.CatalogException:
        return False
    return True


def read_table(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str] = ()
               ) -> pl.DataFrame:
    if not table_exists(con, table):
        raise MissingDataError(f"{table} does not exist yet: materialize it first")
    selected = ", ".join(_quoted(c) for c in columns) if columns else "*"
    return con.execute(f"SELECT {selected} FROM {table_name(table)}").pl()


def partitions_query(table: str, columns: Sequence[str] = (), order_by: Sequence[str] = ()
                     ) -> str:
    """SELECT of ``columns`` (all by default) of the partitions $start..$end of ``table``."""
    selected = ", ".join(_quoted(c) for c in columns) if columns else "*"
    order = f" ORDER BY {', '.join(_quoted(c) for c in order_by)}" if order_by else ""
    return (f"SELECT {selected} FROM {table_name(table)} "
            f"WHERE partition_date BETWEEN $start AND $end{order}")


def read_partitions(
    con: duckdb.DuckDBPyConnection,
    table: str,
    start: dt.date,
    end: dt.date,
    order_by: Sequence[str] = (),
) -> pl.DataFrame:
    if not table_exists(con, table):
        raise MissingDataError(f"{table} does not exist yet: materialize it first")
    return con.execute(partitions_query(table, order_by=order_by),
                       {"start": start, "end": end}).pl()


def partition_counts(con: duckdb.DuckDBPyConnection, table: str, start: dt.date, end: dt.date
                     ) -> dict[dt.date, int]:
    if not table_exists(con, table):
        return {}
    rows = con.execute(
        f"SELECT partition_date, count(*) FROM {table_name(table)} "
        "WHERE partition_date BETWEEN $start AND $end GROUP BY ALL",
        {"start": start, "end": end},
    ).fetchall()
    return dict(rows)


def partition_times(con: duckdb.DuckDBPyConnection, table: str, column: str, newest: bool
                    ) -> dict[dt.date, dt.datetime]:
    """Per partition of ``table``, the newest (or oldest) value of timestamp ``column``."""
    if not table_exists(con, table):
        return {}
    aggregate = "max" if newest else "min"
    return dict(con.execute(f"SELECT partition_date, {aggregate}({_quoted(column)}) "
                            f"FROM {table_name(table)} GROUP BY ALL").fetchall())


def require_partitions(con: duckdb.DuckDBPyConnection, table: str, start: dt.date,
                       end: dt.date) -> None:
    """Fail, naming the days, unless every day from ``start`` to ``end`` has rows in ``table``."""
    counts = partition_counts(con, table, start, end)
    missing = [d for d in days_between(start, end) if not counts.get(d)]
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingDataError(
            f"{table} has no rows for {shown}{more}: materialize those partitions upstream first"
        )


def _quoted(column: str) -> str:
    if not IDENTIFIER.match(column):
        raise ValueError(f"invalid column name {column!r}")
    return f'"{column}"'
