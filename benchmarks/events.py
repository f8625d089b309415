"""What recording a run's events costs: the run's events replayed into a fresh event log.

    .venv/bin/python benchmarks/events.py .benchmark/dagster      # the instance's latest run
    .venv/bin/python benchmarks/events.py DAGSTER_HOME RUN_ID --stock

Replays the events as Dagster hands them to the storage: a range run's planned events and each
asset's materializations in batches (of at most ``EVENT_BATCH_SIZE``), every other event one
by one; into this platform's storage and, with ``--stock``, into Dagster's own
``SqliteEventLogStorage`` (which commits and syncs every event; slow). CPU seconds, so that a
busy machine does not distort the comparison.
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import deserialize_value

from batch_platform.orchestration.instance_storage import (
    EVENT_BATCH_SIZE,
    ReusedConnectionEventLogStorage,
)

BATCHED = (DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION)


def run_events(dagster_home: Path, run_id: str | None) -> list[EventLogEntry]:
    runs = dagster_home / "history" / "runs"
    if run_id is None:
        candidates = [p for p in runs.glob("*.db") if p.stem != "index"]
        if not candidates:
            raise SystemExit(f"no run databases under {runs}")
        path = max(candidates, key=lambda p: p.stat().st_mtime)
    else:
        path = runs / f"{run_id}.db"
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT event FROM event_logs ORDER BY id").fetchall()
    finally:
        connection.close()
    return [deserialize_value(row[0], EventLogEntry) for row in rows]


def handed_over(events: list[EventLogEntry]) -> Iterator[list[EventLogEntry]]:
    """The events in the groups Dagster passes to the storage."""
    def group(event: EventLogEntry) -> tuple[object, object]:
        batched = event.dagster_event_type in BATCHED
        return (event.dagster_event_type if batched else object(),
                event.dagster_event.asset_key if batched and event.dagster_event else None)

    for _, grouped in itertools.groupby(events, key=group):
        batch = list(grouped)
        for start in range(0, len(batch), EVENT_BATCH_SIZE):
            yield batch[start:start + EVENT_BATCH_SIZE]


def replay(storage_class: type[SqliteEventLogStorage], events: list[EventLogEntry]
           ) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        storage = storage_class(folder)
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in handed_over(events):
            if len(batch) > 1:
                storage.store_event_batch(batch)
            else:
                storage.store_event(batch[0])
        storage.dispose()
        return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dagster_home", type=Path)
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--stock", action="store_true", help="also Dagster's own storage")
    args = parser.parse_args()
    events = run_events(args.dagster_home, args.run_id)
    kinds = {kind: sum(1 for _ in group) for kind, group in itertools.groupby(
        sorted(str(e.dagster_event_type) for e in events))}
    print(f"{len(events):,} events: {kinds}")
    print("| storage | CPU s | wall s | CPU ms per event |\n|---|---:|---:|---:|")
    contenders = [("batch_platform", ReusedConnectionEventLogStorage)]
    if args.stock:
        contenders.append(("Dagster's SqliteEventLogStorage", SqliteEventLogStorage))
    for name, storage_class in contenders:
        cpu, wall = replay(storage_class, events)
        print(f"| {name} | {cpu:.1f} | {wall:.1f} | {1000 * cpu / len(events):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
