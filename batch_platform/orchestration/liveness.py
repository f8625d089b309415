"""Runs whose process died: marked failed, and their commits undone, within a minute.

A run killed with SIGKILL (or lost with its machine) runs no more code: Dagster keeps it
STARTED for ever, the automation sees its partitions in progress, and what its earlier steps
committed stays. Dagster's own run monitoring cannot see it with the default run launcher
(``supports_check_run_worker_health`` is False): it only fails runs that never start or never
finish cancelling, and the code server fails a run whose worker it launched only while that
code server lives. So the platform sweeps (``sweep``): at the start of every command that runs
a job, and every minute in the daemon (``run_sweeper``).

- A STARTED run whose process is gone is dead. Its process is the one that recorded its start
  (Dagster's RUN_START event carries its pid; the command line also tags its runs with pid and
  host). A run tagged with another host is left to that host's sweep; a pid now held by a
  process that started after the run did was reused.
- Its commits are undone as a failed step undoes them (``platform/storage/rollback.py``), then
  it is reported failed (reason ``UNEXPECTED_TERMINATION``), tagged ``batch_platform/process_died``.
- A run failed or cancelled in the last day that committed something and was never undone (a
  run worker failed by the code server, a multiprocess step killed, a cancelled step, the
  maximum runtime) is undone too.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import JobFailureData, RunFailureReason  # not exported in 1.13

from batch_platform.orchestration.resources import PlatformResource
from batch_platform.platform.files import process_gone
from batch_platform.platform.storage import rollback
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings

HOST_TAG = "batch_platform/host"
PID_TAG = "batch_platform/pid"
DIED_TAG = "batch_platform/process_died"
SWEEP_SECONDS = 60
# How far back a failed run is checked for commits never undone.
FAILED_WITHIN = dt.timedelta(days=1)


def worker_tags() -> dict[str, str]:
    """The tags naming this process as the run's: for runs executed in this process."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def run_process(instance: dg.DagsterInstance, record: dg.RunRecord) -> tuple[str, int | None]:
    """The host and pid of the process executing a run: its tags, else the pid that recorded
    the run's start, on this host (the default run launcher runs on the daemon's host)."""
    tags = record.dagster_run.tags
    host = tags.get(HOST_TAG, socket.gethostname())
    if PID_TAG in tags:
        return host, int(tags[PID_TAG])
    starts = instance.get_records_for_run(record.dagster_run.run_id,
                                          of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = starts[0].event_log_entry.dagster_event if starts else None
    return host, event.pid if event is not None else None


@dataclass(frozen=True)
class Swept:
    run_id: str
    job_name: str
    marked_failed: bool  # False: it was already failed, only undone
    restored: tuple[rollback.Restored, ...]

    def __str__(self) -> str:
        what = ("marked failed, its process gone" if self.marked_failed
                else "ended earlier, failed or cancelled")
        undone = "; ".join(str(r) for r in self.restored) or "nothing of it to undo"
        return f"run {self.run_id} of {self.job_name} {what}: {undone}"


def dead_runs(instance: dg.DagsterInstance) -> dict[str, tuple[dg.RunRecord, str]]:
    """STARTED runs of this host whose process is gone, by run id, with that process."""
    here = socket.gethostname()
    dead = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        host, pid = run_process(instance, record)
        started = record.start_time or record.create_timestamp.timestamp()
        if host == here and pid is not None and process_gone(pid, started):
            dead[record.dagster_run.run_id] = (record, f"process {pid} on {host}")
    return dead


def sweep(instance: dg.DagsterInstance, settings: Settings,
          log: Callable[[str], None] | None = None) -> list[Swept]:
    """Undo and fail the dead runs; undo the runs that ended in the last day, failed or
    cancelled, and were never undone. Idempotent."""
    dead = dead_runs(instance)
    # Cancelled runs too: a cancelled step is interrupted, and the interrupt skips its undo.
    failed = list(instance.get_run_records(dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        updated_after=dt.datetime.now(dt.UTC) - FAILED_WITHIN)))
    if not dead and not failed:
        return []
    lake = lake_of(settings)
    to_undo = pending_undo(settings, [*dead, *(record.dagster_run.run_id for record in failed)])
    swept = []
    for record in [record for record, _ in dead.values()] + failed:
        run = record.dagster_run
        marked = run.run_id in dead
        if not marked and run.run_id not in to_undo:
            continue
        cause = "its process died" if marked else "it ended without undoing its commits"
        restored: list[rollback.Restored] | None = []
        if run.run_id in to_undo:
            try:
                restored = rollback.undo(lake.commit, run.run_id, f"run failed: {cause}", cause)
            except Exception as err:  # the lake busy or away: the next sweep undoes it
                if log:
                    log(f"run {run.run_id} could not be undone yet ({err}); the next sweep "
                        "tries again")
                if not marked:
                    continue
                restored = None
        if marked:
            _report_failed(instance, run, dead[run.run_id][1], restored)
        swept.append(Swept(run.run_id, run.job_name, marked, tuple(restored or ())))
        if log:
            log(str(swept[-1]))
    return swept


def pending_undo(settings: Settings, run_ids: list[str]) -> set[str]:
    """Of ``run_ids``, those whose commits are still to be undone (by the next sweep)."""
    lake = lake_of(settings)
    if not run_ids or not lake.exists():
        return set()
    with lake.read_only() as con:
        return rollback.never_undone(con, run_ids)


def _report_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, process: str,
                   restored: list[rollback.Restored] | None) -> None:
    """``restored`` None: the undo failed, and waits for the next sweep."""
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.status != dg.DagsterRunStatus.STARTED:
        return  # it ended (or was failed by its code server) meanwhile
    undone = ("not yet, the next sweep undoes it" if restored is None
              else "; ".join(str(r) for r in restored) or "it had committed nothing")
    instance.add_run_tags(run.run_id, {DIED_TAG: "true"})
    instance.report_run_failed(
        current, f"the run's {process} is gone (killed, or lost with its machine): marked "
                 f"failed by the platform's sweep; undone: {undone}",
        JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))


def sweeper_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="platform_run_sweeper", minimum_interval_seconds=SWEEP_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every minute: a run whose process died (killed, or lost with its machine) "
                    "is marked failed and what it committed is undone, as a failed step undoes "
                    "it; so is a failed run that never undid its commits.",
    )
    def _sensor(context: dg.SensorEvaluationContext, platform: PlatformResource
                ) -> dg.SkipReason:
        swept = sweep(context.instance, platform.settings, context.log.warning)
        return dg.SkipReason(f"{len(swept)} run(s) swept" if swept else "no dead run")

    return _sensor
