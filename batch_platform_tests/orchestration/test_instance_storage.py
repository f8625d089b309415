"""The instance storage with reused connections records and reads events as Dagster's does."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationPlanned,
)
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from batch_platform.orchestration.instance_storage import (
    OPEN_ENGINES,
    ReusedConnectionEventLogStorage,
)

KEY = dg.AssetKey(["predictions", "flights"])


def entry(run_id: str, event_type: DagsterEventType, data: object) -> EventLogEntry:
    event = DagsterEvent(event_type_value=event_type.value, job_name="flights_daily",
                         step_key="predictions__flights", event_specific_data=data)
    return EventLogEntry(error_info=None, level=20, user_message="", run_id=run_id,
                         timestamp=time.time(), step_key="predictions__flights",
                         job_name="flights_daily", dagster_event=event)


def materialization(run_id: str, partition: str, rows: int = 1) -> EventLogEntry:
    return entry(run_id, DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(
        dg.AssetMaterialization(asset_key=KEY, partition=partition, metadata={"rows": rows})))


def check_record(run_id: str, partition: str, passed: bool) -> EventLogEntry:
    return entry(run_id, DagsterEventType.ASSET_CHECK_EVALUATION, dg.AssetCheckEvaluation(
        asset_key=KEY, check_name="one_per_feature_row", passed=passed, partition=partition,
        blocking=True, metadata={"range": "2013-01-01..2013-01-10"}))


DAYS = [f"2013-01-{day:02d}" for day in range(1, 11)]
CHECK = dg.AssetCheckKey(KEY, "one_per_feature_row")


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


def what_was_stored(storage: ReusedConnectionEventLogStorage, run_id: str) -> dict:
    latest = storage.get_latest_materialization_events([KEY])[KEY]
    assert latest is not None and latest.dagster_event is not None
    return {
        "events": [(e.dagster_event_type, e.dagster_event.partition if e.dagster_event else None)
                   for e in storage.get_logs_for_run(run_id)],
        "partitions": storage.get_materialized_partitions(KEY),
        "latest": (latest.run_id, latest.dagster_event.partition,
                   latest.dagster_event.event_specific_data.materialization.metadata["rows"]),
        "checks": sorted((r.partition, r.status.value) for r in
                         storage.get_asset_check_execution_history(CHECK, limit=100)),
    }


def test_a_batch_leaves_what_the_same_events_one_by_one_leave(tmp_path: Path) -> None:
    events = [materialization("run-a", day, rows=n) for n, day in enumerate(DAYS)]
    checks = [check_record("run-a", day, passed=day != DAYS[3]) for day in DAYS]
    one_by_one = ReusedConnectionEventLogStorage(str(tmp_path / "one_by_one"))
    for event in [*checks, *events]:
        one_by_one.store_event(event)
    batched = ReusedConnectionEventLogStorage(str(tmp_path / "batched"))
    for event in checks:
        batched.store_event(event)
    batched.store_event_batch(events)
    expected = what_was_stored(one_by_one, "run-a")
    assert expected["latest"] == ("run-a", DAYS[-1], dg.MetadataValue.int(len(DAYS) - 1))
    assert (DAYS[3], "FAILED") in expected["checks"] and len(expected["checks"]) == len(DAYS)
    assert what_was_stored(batched, "run-a") == expected
    one_by_one.dispose()
    batched.dispose()


def test_held_check_records_are_written_before_anything_that_follows(tmp_path: Path) -> None:
    writer = ReusedConnectionEventLogStorage(str(tmp_path))
    reader = ReusedConnectionEventLogStorage(str(tmp_path))  # another process, say
    for day in DAYS[:3]:
        writer.store_event(check_record("run-a", day, passed=True))
    writer.store_event(materialization("run-a", DAYS[0]))  # the step's next event
    assert [e.dagster_event_type for e in reader.get_logs_for_run("run-a")] == [
        DagsterEventType.ASSET_CHECK_EVALUATION] * 3 + [DagsterEventType.ASSET_MATERIALIZATION]
    writer.store_event(check_record("run-a", DAYS[3], passed=False))
    assert len(writer.get_asset_check_execution_history(CHECK, limit=100)) == 4  # its own read
    writer.store_event(check_record("run-a", DAYS[4], passed=True))
    writer.dispose()  # an instance closing writes what it holds
    assert len(reader.get_asset_check_execution_history(CHECK, limit=100)) == 5
    reader.dispose()


def test_a_failed_batch_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = ReusedConnectionEventLogStorage(str(tmp_path))
    events = [materialization("run-a", day) for day in DAYS]
    real_store = type(storage).__mro__[1].store_event
    stored = []

    def fail_at_the_fifth(self: ReusedConnectionEventLogStorage, event: EventLogEntry) -> None:
        if len(stored) == 4:
            raise RuntimeError("disk full")
        stored.append(event)
        real_store(self, event)

    monkeypatch.setattr(type(storage).__mro__[1], "store_event", fail_at_the_fifth)
    with pytest.raises(RuntimeError, match="disk full"):
        storage.store_event_batch(events)
    monkeypatch.undo()
    assert storage.get_logs_for_run("run-a") == []
    assert storage.get_materialized_partitions(KEY) == set()
    storage.dispose()


def test_a_planned_range_check_leaves_the_rows_dagsters_storage_leaves(tmp_path: Path) -> None:
    """One row per planned day, then each day's record, as Dagster's own storage has them."""
    subset = dg.DailyPartitionsDefinition(start_date="2013-01-01").subset_with_partition_keys(
        DAYS).to_serializable_subset()  # as a run's planned events carry it
    planned = entry("run-a", DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                    AssetCheckEvaluationPlanned(asset_key=KEY, check_name=CHECK.name,
                                                partitions_subset=subset))
    checks = [check_record("run-a", day, passed=day != DAYS[3]) for day in DAYS[:4]]
    stored = []
    for storage in (SqliteEventLogStorage(str(tmp_path / "stock")),
                    ReusedConnectionEventLogStorage(str(tmp_path / "platform"))):
        for event in (planned, *checks):
            storage.store_event(event)
        with storage.index_connection() as conn:
            stored.append(conn.execute(sa.text(
                "SELECT asset_key, check_name, partition, run_id, execution_status, "
                "evaluation_event, evaluation_event_timestamp FROM asset_check_executions "
                "ORDER BY partition")).all())
        storage.dispose()
    assert len(stored[0]) == len(DAYS)
    assert [row.execution_status for row in stored[0]] == [
        "SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", *["PLANNED"] * (len(DAYS) - 4)]
    assert stored[1] == stored[0]
