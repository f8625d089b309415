"""Staged Parquet: how a stage streams a partition of any size through bounded memory.

A stage exports what it reads from the warehouse to Parquet (DuckDB writes it in a stream, in
seconds, no lock taken), reads it back in chunks of a fixed row count, and writes each output
chunk to Parquet files of its own. The lake then loads those files in one commit
(``warehouse.replace_partitions`` inside ``lake.Lake.commit``): analysts see all of the
partition or none of it, and no step holds a whole partition in memory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from batch_platform.platform.files import process_alive

PART_SUFFIX = ".parquet"
STEP_PREFIX = "step-"  # the staging directories of steps, among whatever else shares the base


@dataclass
class StagedTable:
    """Rows written chunk by chunk to Parquet parts; small chunks are buffered into one part."""

    folder: Path
    part_rows: int
    # Columns a stage needs while it works that the table does not have (line numbers).
    exclude: tuple[str, ...] = ()
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    schema: pl.Schema | None = None
    _buffer: list[pl.DataFrame] = field(default_factory=list)
    _buffered: int = 0

    def write(self, frame: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = frame.schema
        elif frame.schema != self.schema:
            raise ValueError(f"{self.folder.name}: a chunk has columns {dict(frame.schema)}, "
                             f"the first had {dict(self.schema)}")
        self.rows += frame.height
        if frame.height:
            self._buffer.append(frame)
            self._buffered += frame.height
        if self._buffered >= self.part_rows:
            self._write_part()

    def flush(self) -> None:
        """Write what is buffered, so that every row written so far is in ``files``."""
        if self._buffer:
            self._write_part()

    def close(self) -> StagedTable:
        """Write what is buffered; a table that got no rows gets one empty part (its schema)."""
        if self._buffer or (not self.files and self.schema is not None):
            self._write_part()
        return self

    def _write_part(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{len(self.files):05d}{PART_SUFFIX}"
        frame = (pl.concat(self._buffer) if self._buffer
                 else pl.DataFrame(schema=self.schema))
        frame.write_parquet(path, compression="lz4", statistics=False)  # cheap to write and read
        self.files.append(path)
        self._buffer, self._buffered = [], 0

    def empty(self) -> pl.DataFrame:
        """No rows, the table's columns (without ``exclude``)."""
        if self.schema is None:
            raise ValueError(f"{self.folder.name}: nothing was written, the schema is unknown")
        return pl.DataFrame(schema=self.schema).drop(self.exclude)

    def select_sql(self) -> str:
        """What DuckDB reads to load the table."""
        exclude = (f" EXCLUDE ({', '.join(self.exclude)})" if self.exclude else "")
        return f"SELECT *{exclude} FROM read_parquet($files)"


@dataclass(frozen=True)
class Staging:
    """A private directory for one step of one run; removed when the step ends."""

    root: Path
    chunk_rows: int

    def table(self, name: str, exclude: tuple[str, ...] = ()) -> StagedTable:
        return StagedTable(self.root / name, self.chunk_rows, exclude)

    def export(self, con: duckdb.DuckDBPyConnection, name: str, query: str,
               params: Mapping[str, object] | None = None) -> Path:
        """The result of ``query`` as one Parquet file, streamed by DuckDB."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{name}{PART_SUFFIX}"
        literal = str(path).replace("'", "''")
        con.execute(f"COPY ({query}) TO '{literal}' (FORMAT parquet, ROW_GROUP_SIZE "
                    f"{max(self.chunk_rows, 2048)})", dict(params or {}))
        return path


def chunks(paths: Sequence[Path], chunk_rows: int, columns: Sequence[str] | None = None,
           categorical: Sequence[str] = ()) -> Iterator[pl.DataFrame]:
    """The rows of ``paths`` in order, at most ``chunk_rows`` at a time; ``categorical``
    columns come as Polars categoricals (4 bytes a row, for text of a few distinct values)."""
    selected = list(columns) if columns else None
    yielded = False
    for path in paths:
        parquet = pq.ParquetFile(path, pre_buffer=False, read_dictionary=list(categorical))
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=selected):
            if batch.num_rows:
                yielded = True
                yield pl.from_arrow(batch)  # type: ignore[misc]
    if not yielded and paths:  # no rows at all: one empty chunk still carries the schema
        empty = pq.ParquetFile(paths[0], read_dictionary=list(categorical)
                               ).schema_arrow.empty_table()
        yield pl.from_arrow(empty.select(selected) if selected else empty)  # type: ignore[misc]


def row_count(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


@contextmanager
def staging(base: Path, run_id: str, step: str, chunk_rows: int) -> Iterator[Staging]:
    """``base/step-<run>-<pid>-<random>/<step>``, removed afterwards whatever happens.

    A directory whose process died (killed mid-step) is removed by the next step to start.
    """
    remove_orphans(base)
    root = base / f"{STEP_PREFIX}{_safe(run_id)}-{os.getpid()}-{uuid.uuid4().hex[:8]}" / _safe(step)
    root.mkdir(parents=True)
    try:
        yield Staging(root, chunk_rows)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def remove_orphans(base: Path) -> list[Path]:
    """Staging directories left by processes that no longer exist."""
    removed = []
    if not base.is_dir():
        return removed
    for folder in base.iterdir():
        if not folder.name.startswith(STEP_PREFIX):  # another user of the directory (Ray's)
            continue
        parts = folder.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not process_alive(int(parts[1])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)
