"""One day, one version across the layers: a run that fails undoes what its earlier steps
committed.

Each step of a run commits its own tables (raw, then features, predictions, reports), so a run
that fails at a later step would leave its earlier tables newer than the rest: raw rows that
never passed the features' checks, read by the next day's statistics. When a run fails,
``undo_run`` restores, in one commit, every table and day the run's commits changed to the
snapshot before that commit (time travel), and records the run in ``platform.rolled_back_runs``;
a step of that run that commits afterwards (a parallel branch still going) is refused by
``refuse_rolled_back``. A table that another run changed since, for the same days, is left as
it is and said so: undoing would lose that run's rows.

Commits marked ``kept_if_the_run_fails`` (the rows of a refused delivery, kept for reading)
are not undone. Everything here runs inside the lake's commit transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import duckdb

from batch_platform.platform.dates import days_between
from batch_platform.platform.storage.lake import ALIAS
from batch_platform.platform.storage.warehouse import table_exists, table_name

ROLLED_BACK_TABLE = "platform.rolled_back_runs"
KEPT = "kept_if_the_run_fails"  # a commit detail: this commit stays when its run is undone
UNDO = "undoes_run"  # the detail of an undo's own commit
METADATA = f"__ducklake_metadata_{ALIAS}"
# The kinds of change a snapshot lists that touch a table's rows: by table id, except a table
# created (by name); small writes are inlined into the catalog instead of a data file.
ROW_CHANGES = ("tables_created", "tables_inserted_into", "tables_deleted_from",
               "inlined_insert", "inlined_delete")


class RunRolledBackError(RuntimeError):
    """A step of a run that was already undone tried to commit."""


@dataclass(frozen=True)
class Commit:
    snapshot_id: int
    run_id: str
    partitions: tuple[dt.date, dt.date] | None  # None: an unpartitioned table, replaced whole
    tables: tuple[str, ...]
    kept: bool
    undo: bool


@dataclass(frozen=True)
class Restored:
    table: str
    days: tuple[dt.date, ...] | None  # None: an unpartitioned table, restored whole
    to_snapshot: int
    left_as_is: str | None = None  # why it was not restored

    def __str__(self) -> str:
        days = f" {describe(self.days)}" if self.days else ""
        if self.left_as_is:
            return f"{self.table}{days} left as is: {self.left_as_is}"
        return f"{self.table}{days} restored to snapshot {self.to_snapshot}"


def commits(con: duckdb.DuckDBPyConnection, since: int = 0) -> list[Commit]:
    """The lake's data commits after snapshot ``since``, oldest first, with the tables each
    changed (by name) and the run and days its details name."""
    names = dict(con.execute(
        f"SELECT t.table_id::VARCHAR, s.schema_name || '.' || t.table_name "
        f"FROM {METADATA}.ducklake_table t JOIN {METADATA}.ducklake_schema s "
        "USING (schema_id)").fetchall())
    rows = con.execute(
        f"SELECT snapshot_id, changes, commit_extra_info FROM {ALIAS}.snapshots() "
        "WHERE snapshot_id > $since AND commit_extra_info IS NOT NULL ORDER BY snapshot_id",
        {"since": since}).fetchall()
    found = []
    for snapshot_id, changes, extra in rows:
        details = json.loads(extra)
        if "run_id" not in details:
            continue
        tables = sorted({names.get(table, table) for kind in ROW_CHANGES
                         for table in (changes or {}).get(kind, [])})
        found.append(Commit(snapshot_id, details["run_id"], _days(details.get("partitions")),
                            tuple(tables), details.get(KEPT) == "true", UNDO in details))
    return found


def undo_run(con: duckdb.DuckDBPyConnection, run_id: str, reason: str,
             days: Sequence[dt.date] | None = None) -> list[Restored]:
    """Restore what ``run_id`` committed (since its last undo) and record the run as rolled
    back; with ``days``, only those days of its partitioned tables (a range run whose other
    days were published). Nothing to undo: nothing changes. Inside the commit's transaction."""
    history = commits(con)
    last_undo = max((c.snapshot_id for c in history if c.run_id == run_id and c.undo),
                    default=0)
    mine = [c for c in history if c.run_id == run_id and not c.kept and not c.undo
            and c.snapshot_id > last_undo]
    restored: list[Restored] = []
    done: set[tuple[str, tuple[dt.date, ...] | None]] = set()
    for commit in mine:  # oldest first: each table goes back to before the run's first write
        undone = _days_to_undo(commit.partitions, days)
        if undone == ():
            continue
        for table in commit.tables:
            if (table, undone) in done or table == ROLLED_BACK_TABLE:
                continue
            done.add((table, undone))
            before = commit.snapshot_id - 1
            since = [c for c in history if c.snapshot_id > commit.snapshot_id
                     and c.run_id != run_id and table in c.tables
                     and _overlap(c.partitions, undone)]
            if since:
                restored.append(Restored(table, undone, before,
                                         f"run {since[-1].run_id} wrote it since"))
                continue
            _restore(con, table, undone, before)
            restored.append(Restored(table, undone, before))
    if mine:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ROLLED_BACK_TABLE.split('.')[0]}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {ROLLED_BACK_TABLE} (run_id VARCHAR, "
                    "rolled_back_at TIMESTAMPTZ, reason VARCHAR, restored VARCHAR[], "
                    "days DATE[])")
        con.execute(f"INSERT INTO {ROLLED_BACK_TABLE} VALUES ($run, now(), $reason, $restored, "
                    "$days)", {"run": run_id, "reason": reason,
                               "restored": [str(r) for r in restored],
                               "days": list(days) if days is not None else None})
    return restored


def undo(commit: Callable[[Callable[[duckdb.DuckDBPyConnection], None], str, dict[str, str]],
                          float],
         run_id: str, reason: str, cause: str, days: Sequence[dt.date] | None = None,
         asset: str | None = None) -> list[Restored]:
    """``undo_run`` in a commit of its own, through ``commit`` (``Lake.commit`` or the
    warehouse resource's); ``cause`` ends the commit's message."""
    restored: list[Restored] = []
    details = {"run_id": run_id, UNDO: run_id} | ({"asset": asset} if asset else {})
    commit(lambda con: restored.extend(undo_run(con, run_id, reason, days)),
           f"undo run {run_id} ({cause})", details)
    return restored


def never_undone(con: duckdb.DuckDBPyConnection, run_ids: Collection[str]) -> set[str]:
    """Of ``run_ids`` (runs that failed), those that committed something to undo and were never
    undone: their process died before a step could undo them. A run undone once (its failed
    step undid it, maybe only some days of a range) is not undone again."""
    wanted = set(run_ids)
    mine = [c for c in commits(con) if c.run_id in wanted]
    undone = {c.run_id for c in mine if c.undo}
    return {c.run_id for c in mine if not c.kept and not c.undo} - undone


def refuse_rolled_back(con: duckdb.DuckDBPyConnection, run_id: str,
                       partitions: tuple[dt.date, dt.date] | None = None) -> None:
    """Inside a commit of ``partitions`` (None: unpartitioned or every day): fail it if its
    run was already undone for any of those days (a parallel step finishing after another
    one failed)."""
    if not table_exists(con, ROLLED_BACK_TABLE):
        return
    rows = con.execute(f"SELECT reason, days FROM {ROLLED_BACK_TABLE} WHERE run_id = $run",
                       {"run": run_id}).fetchall()
    for reason, days in rows:
        if days is None or partitions is None or any(
                partitions[0] <= day <= partitions[1] for day in days):
            step = reason.split(": ", 1)[0]
            raise RunRolledBackError(f"run {run_id} was rolled back after {step}: this step's "
                                     "rows are not committed; rerun the days")


def _restore(con: duckdb.DuckDBPyConnection, table: str, days: tuple[dt.date, ...] | None,
             snapshot: int) -> None:
    table = table_name(table)
    schema, name = table.split(".")
    existed = con.execute(
        f"SELECT count(*) FROM {METADATA}.ducklake_table t JOIN {METADATA}.ducklake_schema s "
        "USING (schema_id) WHERE s.schema_name = $schema AND t.table_name = $name "
        "AND t.begin_snapshot <= $at AND (t.end_snapshot IS NULL OR t.end_snapshot > $at)",
        {"schema": schema, "name": name, "at": snapshot}).fetchone()[0] > 0
    where, params = "", {}
    if days is not None:
        where, params = " WHERE partition_date = ANY($days)", {"days": list(days)}
    con.execute(f"DELETE FROM {table}{where}", params)
    if existed:
        con.execute(f"INSERT INTO {table} SELECT * FROM {table} AT (VERSION => {int(snapshot)})"
                    f"{where}", params)


def _days_to_undo(partitions: tuple[dt.date, dt.date] | None, days: Sequence[dt.date] | None
                  ) -> tuple[dt.date, ...] | None:
    """The days of a commit to undo: every day it wrote, or those of ``days`` among them (the
    days a range withheld; its published days stay). None: an unpartitioned table, whole."""
    if partitions is None:
        return None
    written = days_between(*partitions)
    return tuple(written if days is None else sorted(set(written) & set(days)))


def describe(days: Sequence[dt.date]) -> str:
    if list(days) == days_between(days[0], days[-1]):
        return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"
    return ", ".join(str(day) for day in days)


def _days(text: str | None) -> tuple[dt.date, dt.date] | None:
    if not text:
        return None
    first, _, last = text.partition("..")
    return dt.date.fromisoformat(first), dt.date.fromisoformat(last or first)


def _overlap(a: tuple[dt.date, dt.date] | None, b: tuple[dt.date, ...] | None) -> bool:
    if a is None or b is None:
        return True
    return any(a[0] <= day <= a[1] for day in b)
