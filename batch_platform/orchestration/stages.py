"""What every stage of the flow shares: retries of transient failures, and progress logs."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import random
import time
from collections.abc import Callable, Iterator

import dagster as dg
import duckdb

from batch_platform.orchestration.checks import AuditsBlockedPublishing
from batch_platform.orchestration.resources import WarehouseResource
from batch_platform.platform.files import LockTimeout
from batch_platform.platform.scoring.ray_engine import RayClusterUnavailable
from batch_platform.platform.storage import rollback
from batch_platform.platform.storage.lake import LakeUnavailableError

# Failures that go away by themselves: the lake's writer lock held by someone else for too long,
# its PostgreSQL catalog unreachable, a file locked by another program, a Ray cluster
# unreachable or losing a node (a head restarting, a KubeRay pod rescheduled: the retry scores
# the whole partition again). Bad data, missing
# upstream data and failed audits are not here: retrying cannot fix them.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    LockTimeout, LakeUnavailableError, BlockingIOError, InterruptedError, duckdb.IOException,
    RayClusterUnavailable)
MAX_RETRIES = 3
FIRST_RETRY_SECONDS = 5.0


def retry_delay(retry_number: int) -> float:
    """Exponential backoff with jitter: about 5 s, 10 s, 20 s."""
    return FIRST_RETRY_SECONDS * 2 ** retry_number * random.uniform(0.8, 1.2)


def stage(compute: Callable[..., object]) -> Callable[..., Iterator[object]]:
    """Wrap an asset's compute function: retry transient failures with backoff, and record the
    check results of a publish that audits blocked before the step fails."""

    @functools.wraps(compute)
    def wrapper(context: dg.AssetExecutionContext, *args: object,
                **kwargs: object) -> Iterator[object]:
        warehouse = kwargs.get("warehouse")
        try:
            outcome = compute(context, *args, **kwargs)
            if inspect.isgenerator(outcome):
                yield from outcome
            else:
                yield outcome
        except AuditsBlockedPublishing as blocked:
            yield from blocked.results
            undo_run(context, warehouse, blocked, blocked.withheld)
            raise
        except TRANSIENT_ERRORS as err:
            if context.retry_number >= MAX_RETRIES:
                undo_run(context, warehouse, err)
                raise
            seconds = retry_delay(context.retry_number)
            context.log.warning(f"transient failure, retry {context.retry_number + 1} of "
                                f"{MAX_RETRIES} in {seconds:.0f}s: {err}")
            raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=seconds) from err
        except Exception as err:
            undo_run(context, warehouse, err)
            raise

    return wrapper


def undo_run(context: dg.AssetExecutionContext, warehouse: object, error: BaseException,
             days: list[dt.date] | None = None) -> None:
    """The step failed for good, so its run fails: undo what the run's earlier steps
    committed (``platform/storage/rollback.py``), so every table of its days is as before.
    With ``days`` (a range whose other days were published), only those days."""
    if not isinstance(warehouse, WarehouseResource):
        return
    run_id = context.run.run_id
    step = context.asset_key.to_user_string()
    reason = f"{step} failed: {' '.join(str(error).split())[:300]}"
    try:
        restored = rollback.undo(warehouse.commit, run_id, reason, f"{step} failed", days,
                                 asset=step)
    except Exception as err:  # the step's own error is what the operator must see first
        context.log.error(f"run {run_id} could not be rolled back ({err}); rerun its days")
        return
    if restored:
        context.log.warning(f"run rolled back after {step} failed: "
                            + "; ".join(str(r) for r in restored))


class Progress:
    """Logs ``done of total`` with throughput at most every ``every_seconds``, and at the end."""

    def __init__(self, log: dg.DagsterLogManager, what: str, total: int, unit: str,
                 every_seconds: float = 5.0) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_seconds = every_seconds
        self.started = self.last = time.perf_counter()
        self.done = self.rows = 0

    def advance(self, items: int = 1, rows: int = 0) -> None:
        self.done += items
        self.rows += rows
        now = time.perf_counter()
        if now - self.last >= self.every_seconds or self.done >= self.total:
            self.last = now
            rate = self.rows / (now - self.started) if now > self.started else 0.0
            self.log.info(f"{self.what}: {self.done}/{self.total} {self.unit}, "
                          f"{self.rows:,} rows, {rate:,.0f} rows/s")
