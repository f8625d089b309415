"""The instance storage with reused connections records and reads events as Dagster's does."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from batch_platform.orchestration.instance_storage import (
    OPEN_ENGINES,
    ReusedConnectionEventLogStorage,
)

KEY = dg.AssetKey(["predictions", "flights"])


def materialization(run_id: str, partition: str) -> EventLogEntry:
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value, job_name="flights_daily",
        step_key="predictions__flights",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=KEY, partition=partition, metadata={"rows": 1})))
    return EventLogEntry(error_info=None, level=20, user_message="", run_id=run_id,
                         timestamp=time.time(), step_key="predictions__flights",
                         job_name="flights_daily", dagster_event=event)


def test_events_written_by_one_storage_are_read_by_another(tmp_path: Path) -> None:
    writer = ReusedConnectionEventLogStorage(str(tmp_path))
    reader = ReusedConnectionEventLogStorage(str(tmp_path))  # another process, say
    days = [f"2013-01-{day:02d}" for day in range(1, 11)]
    for day in days:
        writer.store_event(materialization("run-a", day))
    assert len(reader.get_logs_for_run("run-a")) == len(days)
    assert set(reader.get_materialized_partitions(KEY)) == set(days)
    writer.dispose()
    reader.dispose()


def test_old_engines_are_closed_and_deleted_runs_stay_deleted(tmp_path: Path) -> None:
    storage = ReusedConnectionEventLogStorage(str(tmp_path))
    runs = [f"run-{n}" for n in range(OPEN_ENGINES + 4)]
    for run_id in runs:
        storage.store_event(materialization(run_id, "2013-01-01"))
    # One engine per run database at most OPEN_ENGINES of them, plus the index.
    assert len(storage._engines) <= OPEN_ENGINES
    storage.delete_events(runs[-1])
    assert storage.get_logs_for_run(runs[-1]) == []
    assert len(storage.get_logs_for_run(runs[0])) == 1
    storage.dispose()
