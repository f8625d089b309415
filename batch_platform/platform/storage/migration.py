"""Importing a data directory of the previous storage (one DuckDB file) into the lake, once."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb

from batch_platform.platform.storage.lake import PREVIOUS_STORAGE, Lake, sql_literal
from batch_platform.platform.storage.warehouse import table_exists

PUBLISHED_COPY = "warehouse.duckdb"  # the previous storage's analysts' copy
MIGRATED_SUFFIX = ".migrated"


def migrate(data_dir: Path, lake: Lake) -> str:
    """Copy every table of ``pipeline.duckdb`` into the lake in one commit, then set the old
    files aside (renamed ``*.migrated``). Refuses a lake that already holds one of the tables."""
    previous = data_dir / PREVIOUS_STORAGE
    if not previous.exists():
        return f"nothing to migrate: {previous} does not exist"
    copied: dict[str, int] = {}

    def copy_tables(con: duckdb.DuckDBPyConnection) -> None:
        copied.clear()  # a commit that conflicts runs this again
        con.execute(f"ATTACH IF NOT EXISTS {sql_literal(str(previous))} AS previous (READ_ONLY)")
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = 'previous' AND table_type = 'BASE TABLE' ORDER BY ALL"
        ).fetchall()
        for schema, name in tables:
            table = f"{schema}.{name}"
            if table_exists(con, table):
                raise ValueError(f"the lake already has {table}: it was migrated before, or "
                                 f"written since; move {previous} aside to keep the lake")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM previous.{table} LIMIT 0")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM previous.{table}")
            copied[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    lake.commit(copy_tables, f"migrate {previous}",
                {"migrated_from": str(previous),
                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    for name in (PREVIOUS_STORAGE, PUBLISHED_COPY):
        old = data_dir / name
        if old.exists():
            os.replace(old, old.with_name(old.name + MIGRATED_SUFFIX))
    rows = sum(copied.values())
    return (f"migrated {len(copied)} table(s), {rows} rows, from {previous} into the lake "
            f"{lake.describe()}; the old files are now *{MIGRATED_SUFFIX}")
