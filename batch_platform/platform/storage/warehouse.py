"""The DuckDB warehouse: transactional partition writes and a published read-only snapshot.

DuckDB lets one process open a file read-write, and then nobody else may open it at all. So
the pipeline writes a private database (``pipeline.duckdb``), one step at a time under a file
lock, and after each write publishes a copy as ``warehouse.duckdb`` with an atomic rename.
Analysts open the published file: an open session keeps reading the version it opened, a new
one sees the latest, and neither ever waits for, or blocks, a run.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from batch_platform.platform.dates import days_between
from batch_platform.platform.files import exclusive_lock, remove_stale_temp_files
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


@dataclass(frozen=True)
class Warehouse:
    """The pipeline database, its lock, and the snapshot analysts read."""

    pipeline_path: Path
    published_path: Path
    lock_timeout_seconds: float = 300.0
    memory_limit: str = "512MB"  # DuckDB's, per connection of a pipeline step

    @property
    def lock_path(self) -> Path:
        return self.pipeline_path.with_name(self.pipeline_path.name + ".lock")

    @contextmanager
    def connect(self, purpose: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to the pipeline database, held under the lock, always closed."""
        with (exclusive_lock(self.lock_path, self.lock_timeout_seconds, purpose),
              self._open() as con):
            yield con

    def write_and_publish(self, write: Callable[[duckdb.DuckDBPyConnection], None],
                          purpose: str) -> float:
        """Run ``write``, then publish, under one hold of the lock; return seconds publishing.

        Analysts see a write only once it is published: doing both here means no step can
        write and forget to publish, and no other step's write slips in between.
        """
        with exclusive_lock(self.lock_path, self.lock_timeout_seconds, purpose):
            with self._open() as con:
                write(con)
                con.execute("CHECKPOINT")  # fold the WAL into the file about to be copied
            return self._copy_to_published()

    def publish(self) -> float:
        """Publish the pipeline database as it is; return seconds spent (0 if there is none)."""
        with exclusive_lock(self.lock_path, self.lock_timeout_seconds, "publish the warehouse"):
            if not self.pipeline_path.exists():
                return 0.0
            with self._open() as con:
                con.execute("CHECKPOINT")
            return self._copy_to_published()

    @contextmanager
    def _open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.pipeline_path.parent.mkdir(parents=True, exist_ok=True)
        # A bounded buffer pool: joins, sorts and loads of any size spill to disk instead.
        con = duckdb.connect(str(self.pipeline_path),
                             config={"memory_limit": self.memory_limit})
        try:
            yield con
        finally:
            con.close()

    def _copy_to_published(self) -> float:
        """Copy the (closed, checkpointed) pipeline file and rename it over the published one."""
        started = time.perf_counter()
        # Callers hold the lock, so any copy in progress was left by a publisher that died.
        remove_stale_temp_files(self.published_path, any_owner=True)
        tmp = self.published_path.with_name(f".{self.published_path.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(self.pipeline_path, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.published_path)
            _fsync_directory(self.published_path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return time.perf_counter() - started


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (it lives in the directory, not the file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Create ``table`` from the frame's schema if absent; refuse a silent schema change."""
    table = table_name(table)
    schema_name = table.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_name}")
    con.register("__frame", frame.head(0).to_arrow())
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM __frame")
    finally:
        con.unregister("__frame")
    existing = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
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
    writes: Sequence[tuple[str, Rows]],
    partition_dates: Sequence[dt.date],
    publish: Sequence[dt.date] | None = None,
) -> None:
    """Replace ``partition_dates`` of every table in ``writes`` in one transaction; with
    ``publish``, only those of them (the days the audits let through).

    Either every table holds exactly the new rows of those dates, or nothing changed.
    """
    for table, rows in writes:
        ensure_table(con, table, rows.empty() if isinstance(rows, StagedTable) else rows)
        outside = _rows_outside(con, rows, partition_dates)
        if outside:
            raise ValueError(f"{outside} row(s) for {table} fall outside the partitions "
                             f"being written ({partition_dates[0]}..{partition_dates[-1]})")
    dates = list(partition_dates if publish is None else publish)
    only = None if publish is None or set(publish) == set(partition_dates) else dates
    with transaction(con):
        for table, rows in writes:
            con.execute(f"DELETE FROM {table} WHERE partition_date = ANY($dates)",
                        {"dates": dates})
            insert(con, table, rows, only)


def _rows_outside(con: duckdb.DuckDBPyConnection, rows: Rows,
                  partition_dates: Sequence[dt.date]) -> int:
    if isinstance(rows, pl.DataFrame):
        return rows.filter(~pl.col("partition_date").is_in(list(partition_dates))).height
    return con.execute("SELECT count(*) FROM read_parquet($files) "
                       "WHERE NOT partition_date = ANY($dates)",
                       {"files": [str(f) for f in rows.files],
                        "dates": list(partition_dates)}).fetchone()[0]


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Replace every row of an unpartitioned table in one transaction."""
    ensure_table(con, table, frame)
    with transaction(con):
        con.execute(f"DELETE FROM {table}")
        insert(con, table, frame)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Commit what the block does, or roll all of it back if anything fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


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
    schema_name, name = table_name(table).split(".")
    return con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema_name, name],
    ).fetchone()[0] > 0


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


@contextmanager
def read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only session on the published warehouse, as analysts open it."""
    if not path.exists():
        raise FileNotFoundError(
            f"no warehouse at {path}: run `make demo` or materialize a partition")
    # read_only alone still allows ATTACH … (READ_WRITE) and COPY … TO: shut the file system off.
    con = duckdb.connect(str(path), read_only=True,
                         config={"enable_external_access": False, "lock_configuration": True})
    try:
        yield con
    finally:
        con.close()
