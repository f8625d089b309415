"""The Dagster instance's SQLite storage, with event writes several times cheaper.

Dagster's SQLite event log creates a SQLAlchemy engine, opens a connection and fsyncs for every
event, twice for asset events (the run's database and the cross-run index). A range run writes
one materialization event per asset and day, and one check record per check and day, so a year
of a use case (365 days, 5 daily assets) spent more time recording events than computing. This
storage is Dagster's own, with these changes:

- one engine per database file, reused, and SQLite's ``synchronous=NORMAL`` (in WAL mode, which
  Dagster already uses: a commit survives a crash of the process, only the last commits may be
  lost on power failure);
- the tables that exist are remembered: Dagster asks before every check record and asset event
  whether a table exists, each time through a new engine and connection;
- a batch of events (a range run's planned events, its materializations of one asset) is
  written in one transaction per database, and the asset's row in the cross-run index
  (``asset_keys``: its latest materialization) is written once, for the batch's last event of
  each asset and kind, which is the row Dagster's event-by-event writes leave. Dagster hands
  the storage batches only when ``DAGSTER_EVENT_BATCH_SIZE`` is set: this storage sets it
  (unless set already) when the instance loads it;
- a planned check's rows (one per day of the run) share one serialization of its event;
- a run's check records (one per check and day in a range run, which Dagster hands over one
  by one) are held back and written as one batch just before this storage next opens a
  connection, for any other event or any read, or when ``EVENT_BATCH_SIZE`` are waiting, or
  when it is disposed. The step always records another event after its checks (its
  materialization, output or failure), so they reach the database within the step; only a
  process killed in between loses them, with the events that would have followed.

Same files, same schema, same rows: an instance can switch back and forth with its
``dagster.yaml``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import sqlalchemy as sa
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData, serialize_value

# Run databases are written while their run lasts; keep the engines of the latest few open.
OPEN_ENGINES = 16
# Events Dagster hands over at once: a year's planned events (8 assets x 365 days) in three.
EVENT_BATCH_SIZE = 1000


def _relaxed_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class ReusedConnectionEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, with one engine per shard kept open."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, sa.engine.Engine] = OrderedDict()
        self._tables: set[str] = set()  # tables known to exist (none is ever dropped but by wipe)
        # Per thread, while a batch is written: its open connection per database, and the
        # events whose asset_keys row a later event of the batch overwrites.
        self._batch = threading.local()
        self._held: list[EventLogEntry] = []  # check records not written yet
        self._held_lock = threading.Lock()
        super().__init__(base_dir, inst_data)
        # Dagster holds this lock while a connection is open; a batch holds two at once.
        self._db_lock = threading.RLock()  # type: ignore[assignment]

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,  # type: ignore[override]
                          config_value: dict[str, Any]) -> ReusedConnectionEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.engine.Connection]:
        batch: dict[str, sa.engine.Connection] | None = getattr(self._batch, "connections", None)
        if batch is not None:
            if shard not in batch:
                batch[shard] = self._batch.stack.enter_context(self._new_connection(shard))
            yield batch[shard]
            return
        self.flush()  # whatever this connection reads or writes comes after the held records
        with self._new_connection(shard) as conn:
            yield conn

    @contextmanager
    def _new_connection(self, shard: str) -> Iterator[sa.engine.Connection]:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = sa.create_engine(self.conn_string_for_shard(shard),
                                          connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                sa.event.listen(engine, "connect", _relaxed_sync)
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                self._engines[shard] = engine
                while len(self._engines) > OPEN_ENGINES:
                    self._engines.popitem(last=False)[1].dispose()
            else:
                self._engines.move_to_end(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def store_event(self, event: EventLogEntry) -> None:
        if (event.run_id and event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                and getattr(self._batch, "connections", None) is None):
            with self._held_lock:
                self._held.append(event)
                full = len(self._held) >= EVENT_BATCH_SIZE
            if full:
                self.flush()
            return
        super().store_event(event)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        self.flush()
        self._write_batch(events)

    def flush(self) -> None:
        """Write the held check records, in one batch (one by one if the batch fails)."""
        if getattr(self._batch, "connections", None) is not None:
            return  # inside a batch: its connections are the ones in use
        with self._held_lock:
            held, self._held = self._held, []
        if not held:
            return
        try:
            self._write_batch(held)
        except Exception:
            for event in held:  # the batch rolled back: nothing of it was written
                super().store_event(event)

    def _write_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Dagster's writes of each event, in one transaction per database: all or none."""
        if getattr(self._batch, "connections", None) is not None:  # already inside a batch
            for event in events:
                super().store_event(event)
            return
        with ExitStack() as stack:
            self._batch.stack, self._batch.connections = stack, {}
            self._batch.superseded = _superseded_asset_rows(events)
            try:
                for event in events:
                    super().store_event(event)
            finally:
                # ExitStack commits each database's transaction (or rolls it back on error).
                self._batch.connections = None
                self._batch.superseded = set()

    def _store_asset_event(self, conn: sa.engine.Connection, event: EventLogEntry,
                           event_id: int) -> None:
        if id(event) in getattr(self._batch, "superseded", ()):
            return  # a later event of this batch writes the same row of asset_keys
        super()._store_asset_event(conn, event, event_id)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry,
                                              event_id: int | None) -> None:
        """Dagster's rows of a planned check, one per partition of the run, with the event
        serialized once rather than once a row (a year's run plans 365 rows a check)."""
        planned = event.dagster_event.event_specific_data  # type: ignore[union-attr]
        keys = (planned.partitions_subset.get_partition_keys() if planned.partitions_subset
                else [None])
        row = {"asset_key": planned.asset_key.to_string(), "check_name": planned.check_name,
               "run_id": event.run_id,
               "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
               "evaluation_event": serialize_value(event),
               "evaluation_event_timestamp": self._event_insert_timestamp(event),
               "evaluation_event_storage_id": event_id}
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert().values(
                [{**row, "partition": key} for key in keys]))

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def delete_events(self, run_id: str) -> None:
        self.flush()
        self._dispose_engines()  # never write through a connection to a deleted file
        super().delete_events(run_id)

    def wipe(self) -> None:
        self.flush()
        self._dispose_engines()
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        self.flush()
        self._dispose_engines()
        super().dispose()


def _superseded_asset_rows(events: Sequence[EventLogEntry]) -> set[int]:
    """The events (by ``id``) after which the batch has another event of the same asset and
    type: each writes the whole asset_keys row of its kind, so only the last one's write stays."""
    later: set[tuple[str, str]] = set()
    superseded: set[int] = set()
    for event in reversed(events):
        dagster_event = event.dagster_event
        if dagster_event is None or dagster_event.asset_key is None:
            continue
        kind = (dagster_event.asset_key.to_string(), dagster_event.event_type_value)
        if kind in later:
            superseded.add(id(event))
        later.add(kind)
    return superseded


class BatchPlatformSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (same directories), with the cheaper event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Read by the instance at every event: without it, Dagster stores batches event by event.
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
        super().__init__(base_dir, inst_data)
        self._event_log_storage.dispose()
        self._event_log_storage = ReusedConnectionEventLogStorage(
            _event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,  # type: ignore[override]
                          config_value: dict[str, Any]) -> BatchPlatformSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
