"""Files that are whole or absent, and a lock that dies with its holder.

Every file the platform writes outside DuckDB (landing files, model files, drift profiles,
compiled scorers, the instance's config) goes through ``write_bytes_atomic``: a temporary file
named after its writer's pid, fsynced, then renamed. A writer killed half-way leaves only a
temporary file, which the next writer removes once its pid is gone. ``exclusive_lock`` is an
``flock``: the kernel releases it when its holder dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_FILE_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class UnwritableDirectoryError(OSError):
    """The data directory cannot take the work: read-only, not a directory, or nearly full."""


def require_writable(directory: Path, min_free_bytes: int, what: str, remedy: str) -> None:
    """Refuse before any work a ``directory`` that cannot be created, written or that has
    less than ``min_free_bytes`` free, rather than failing half-way through a run."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"probe")  # no fsync: a read-only file system refuses the open itself
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UnwritableDirectoryError(
            f"{what} {directory} cannot be written ({reason}): {remedy}") from None
    free = shutil.disk_usage(directory).free
    if free < min_free_bytes:
        raise UnwritableDirectoryError(
            f"{what} {directory} has {free / 1e6:,.0f} MB free, below the "
            f"{min_free_bytes / 1e6:,.0f} MB a run needs to start: free some space, or {remedy}")


class LockTimeout(TimeoutError):
    """Another process held a lock longer than the configured wait; the message names it."""


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(path: Path, any_owner: bool = False) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that died (SIGKILL, power loss).

    A temporary file names its writer's pid; one whose writer still runs is left alone, unless
    ``any_owner`` says the caller holds a lock that excludes every other writer.
    """
    removed = []
    for entry in path.parent.glob(f".{path.name}.*.tmp"):
        match = TEMP_FILE_PATTERN.match(entry.name)
        if not match or match.group("name") != path.name:
            continue
        if any_owner or not process_alive(int(match.group("pid"))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` of this machine started (a UNIX time, to the clock tick), from
    ``/proc``; None where there is no ``/proc`` or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # Field 22, counted after the command name, which is in parentheses and may hold spaces.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def process_gone(pid: int, since: float) -> bool:
    """Whether the process ``pid`` of this machine that was running at ``since`` (a UNIX time)
    has ended: no such process, or one that started after ``since`` (the pid was reused)."""
    if not process_alive(pid):
        return True
    started = process_started_at(pid)
    return started is not None and started > since + 1.0  # /proc rounds to clock ticks



@contextmanager
def exclusive_lock(lock_path: Path, timeout_seconds: float, purpose: str) -> Iterator[None]:
    """Hold ``lock_path`` exclusively; wait at most ``timeout_seconds``, then name the holder.

    ``flock`` is released by the kernel when its holder dies, so a crash leaves no stale lock.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_seconds
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"waited {timeout_seconds:g}s for {lock_path} to {purpose}; it is held by "
                        f"{_read_holder(lock_path)}. Wait for that run to finish, or raise "
                        "BATCH_PLATFORM_LOCK_TIMEOUT_SECONDS."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                  "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "another process"
    return (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('purpose')}, "
            f"since {holder.get('since')})")
