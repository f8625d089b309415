"""Run a job of the project for real, and SIGKILL this process at a chosen point of a write.

    python -m batch_platform_tests.orchestration.crash_run DATA_DIR JOB START END TABLE POINT CONFIG

Nothing under test is replaced: the job runs its real assets, warehouse and registry code. The
connection each write receives is wrapped in a tripwire that watches the SQL going by and kills
the process when the write to TABLE reaches POINT:

- ``before_delete``: the first DELETE of TABLE, before it runs (inside the transaction);
- ``after_delete``: right after that DELETE, before the insert;
- ``mid_insert``: while INSERT … BY NAME streams the frame (or the staged parts), after two
  of its batches;
- ``before_commit``: the transaction that wrote TABLE done, its COMMIT not yet sent;
- ``during_commit``: a few milliseconds into that COMMIT (the old or the new version may win);
- ``after_commit``: the commit returned, before the step reports anything to Dagster;
- ``mid_training``: LightGBM at its fifth boosting round;
- ``model_file``: the model's temporary file written, not yet renamed into place.

Exit code 3 means the run ended without reaching the point: the test must fail then.

The run goes to an ephemeral instance, unless ``CRASH_RUN_INSTANCE`` holds a serialized
``InstanceRef``: then the killed run stays in that instance's history, STARTED, as a killed
run does. ``CRASH_RUN_TAGS`` (JSON) runs it as the landing sensor would: one partition, START,
with those tags.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.platform.storage.lake import Lake

POINTS = ("before_delete", "after_delete", "mid_insert", "before_commit", "during_commit",
          "after_commit", "mid_training", "model_file")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Tripwire:
    """A DuckDB connection that dies at ``point`` of the write to ``table``; otherwise inert."""

    def __init__(self, con, table: str, point: str) -> None:
        self._con, self._table, self._point = con, table, point
        self.touched = False

    def execute(self, sql: str, *args, **kwargs):
        statement = sql.lstrip().split(None, 1)[0].upper()
        deletes_table = statement == "DELETE" and f"FROM {self._table} " in f"{sql} "
        if deletes_table:
            self.touched = True
            if self._point == "before_delete":
                die()
        if (statement == "INSERT" and self.touched and self._point == "mid_insert"
                and "read_parquet($files)" in sql):
            # Staged parts: stream them to DuckDB through a reader that dies half-way.
            parts = pa.concat_tables(pq.read_table(f) for f in args[0]["files"])
            if parts.num_rows >= 4:
                self._con.register("__dying_parts", _dying_stream(parts))
                return self._con.execute(sql.replace("read_parquet($files)", "__dying_parts"))
        result = self._con.execute(sql, *args, **kwargs)
        if deletes_table and self._point == "after_delete":
            die()
        return result

    def register(self, name: str, table: pa.Table):
        if self.touched and self._point == "mid_insert" and table.num_rows >= 4:
            table = _dying_stream(table)
        return self._con.register(name, table)

    def __getattr__(self, name: str):
        return getattr(self._con, name)


def _dying_stream(table: pa.Table) -> pa.RecordBatchReader:
    batches = table.to_batches(max_chunksize=max(1, table.num_rows // 4))

    def batches_then_death():
        for i, batch in enumerate(batches):
            if i == 2:
                die()
            yield batch

    return pa.RecordBatchReader.from_batches(table.schema, batches_then_death())


def arm(table: str, point: str, models_dir: Path) -> None:
    original = Lake.commit

    def commit(self, write, message, details):
        touched = []

        def tripped(con):
            wire = Tripwire(con, table, point)
            write(wire)
            if wire.touched:
                touched.append(True)
                if point == "before_commit":
                    die()
                if point == "during_commit":  # Lake.commit sends COMMIT right after this
                    threading.Timer(0.003, die).start()

        seconds = original(self, tripped, message, details)
        if touched and point == "after_commit":
            die()
        return seconds

    Lake.commit = commit

    if point == "mid_training":
        import lightgbm as lgb  # only here: the other points' runs start without it

        train = lgb.train

        def dying_train(*args, **kwargs):
            def callback(env):
                if env.iteration == 5:
                    die()
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), callback]
            return train(*args, **kwargs)

        lgb.train = dying_train
    if point == "model_file":
        replace = os.replace

        def dying_replace(src, dst, *args, **kwargs):
            if Path(dst).parent.resolve().is_relative_to(models_dir.resolve()):
                die()
            return replace(src, dst, *args, **kwargs)

        os.replace = dying_replace


def main(argv: list[str]) -> int:
    data_dir, job, start, end, table, point = argv[:6]
    run_config = json.loads(argv[6]) if len(argv) > 6 else {}
    assert point in POINTS, point

    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value

    from batch_platform.definitions import build_definitions
    from batch_platform.orchestration.jobs import partition_range_tags
    from batch_platform.settings import Settings

    settings = Settings(data_dir=Path(data_dir), lock_timeout_seconds=30).validated()
    arm(table, point, settings.models_dir)
    tags = partition_range_tags(start, end) if start != "-" else {}
    partition = None
    if "CRASH_RUN_TAGS" in os.environ:
        tags, partition = json.loads(os.environ["CRASH_RUN_TAGS"]), start
    ref = os.environ.get("CRASH_RUN_INSTANCE")
    with (dg.DagsterInstance.from_ref(deserialize_value(ref, InstanceRef)) if ref
          else dg.DagsterInstance.ephemeral()) as instance:
        result = build_definitions(settings).resolve_job_def(job).execute_in_process(
            instance=instance, tags=tags, partition_key=partition, run_config=run_config,
            raise_on_error=False)
    print(f"the run ended ({'success' if result.success else 'failure'}) without reaching "
          f"{point} of {table}", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
