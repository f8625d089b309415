"""The warehouse as a DuckLake: Parquet files under the data directory and a catalog database.

Every write is one DuckLake transaction (delete the partitions, insert by name, commit): a
reader sees the snapshot before it or after it, never half, and the commit is the publish;
nothing is copied. Each commit is a snapshot that names the run that made it, so analysts can
query any table as it was (``AT (VERSION => n)``).

Catalogs: a SQLite file (the default: several processes on one machine) or a PostgreSQL
database (several machines). The SQLite catalog runs in WAL mode, so readers never wait for a
commit. A DuckLake transaction reads the catalog when it starts and duckdb 1.5.5 does not retry
SQLite's "database is locked" at commit, so transactions on a SQLite catalog take turns on a
file lock, held from BEGIN to COMMIT: the rows they load are already staged as Parquet, so a
turn costs the partition's rows, not the warehouse's. PostgreSQL commits take no lock; one that
conflicts (DuckLake checks per table) runs again.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import random
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from batch_platform.platform.files import exclusive_lock, process_alive

if TYPE_CHECKING:
    from batch_platform.settings import Settings

ALIAS = "lake"  # the catalog's name in every session: tables are lake.<schema>.<table>
SQLITE_PREFIX = "sqlite:"
POSTGRES_PREFIX = "postgres:"
EXTENSIONS = ("ducklake", "sqlite_scanner", "postgres_scanner")
COMMIT_AUTHOR = "batch_platform"
# A commit that conflicts with one made since its BEGIN is run again, this many times in all.
COMMIT_ATTEMPTS = 8
CONFLICT = "Transaction conflict"  # DuckLake's words for it
# A libpq password, bare or quoted, wherever a connection string is echoed.
PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s'\"]+)")


# The pipeline's DuckDB instances of this process, by lake (see ``Lake.connect``).
_INSTANCES: dict[tuple[str, str, str, bool], duckdb.DuckDBPyConnection] = {}
_INSTANCES_PID = [os.getpid()]
_INSTANCES_LOCK = threading.Lock()


def no_progress_bar(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB draws a progress bar on standard output for any query of a connection (not of
    its cursors) over 2 s, even into a pipe: an ATTACH on a loaded machine would write one into
    whatever reads this process's output."""
    con.execute("SET enable_progress_bar = false")


class LakeUnavailableError(ConnectionError):
    """The catalog cannot be reached (a PostgreSQL server down): worth retrying."""


class MissingExtensionError(RuntimeError):
    """A DuckDB extension the lake needs is not installed: retrying cannot help."""


def extension_file(name: str) -> Path:
    """The extension shipped by the ``duckdb-extension-<name>`` wheel: never the network."""
    package = f"duckdb_extension_{name}"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise MissingExtensionError(
            f"the DuckDB extension {name} is not installed: pip install "
            f"duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__} "
            "(`make demo` and `make test` install it)") from None
    folder = Path(module.__file__ or "").parent / "extensions" / f"v{duckdb.__version__}"
    found = sorted(folder.glob(f"{name}.duckdb_extension"))
    if not found:
        raise MissingExtensionError(
            f"{package} has no build for duckdb {duckdb.__version__} under {folder}: install "
            f"duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}")
    return found[0]


@dataclass(frozen=True)
class Lake:
    """Where the lake lives and how sessions attach it."""

    catalog: str  # "sqlite:<path>" or "postgres:<libpq connection string>"
    data_path: Path  # the Parquet files
    lock_timeout_seconds: float = 300.0
    memory_limit: str = "512MB"  # DuckDB's, per instance (a process's sessions share one)
    connect_timeout_seconds: float = 10.0  # a PostgreSQL catalog that does not answer
    # The previous storage's file: while it exists, sessions are refused (``migrate``).
    previous_storage: Path | None = None

    @property
    def sqlite_path(self) -> Path | None:
        if self.catalog.startswith(SQLITE_PREFIX):
            return Path(self.catalog.removeprefix(SQLITE_PREFIX))
        return None

    @property
    def lock_path(self) -> Path:
        return self.data_path.parent / "commit.lock"

    @property
    def extension_dir(self) -> Path:
        """The extensions, installed beside the lake so any DuckDB 1.5.5 client autoloads them."""
        return self.data_path.parent / "extensions"

    def attach_sql(self, read_only: bool) -> str:
        """The ATTACH statement a session runs; a copied data directory attaches where it is."""
        options = [f"DATA_PATH {sql_literal(str(self.data_path) + '/')}", "OVERRIDE_DATA_PATH true"]
        if read_only:
            options.append("READ_ONLY")
        target = self.catalog
        if self.catalog.startswith(POSTGRES_PREFIX):
            target = f"{self.catalog} connect_timeout={max(1, round(self.connect_timeout_seconds))}"
        return f"ATTACH {sql_literal('ducklake:' + target)} AS {ALIAS} ({', '.join(options)})"

    def exists(self) -> bool:
        """Whether anything was ever committed (a PostgreSQL catalog is assumed to exist)."""
        return self.sqlite_path is None or self.sqlite_path.exists()

    def shell_setup(self) -> str:
        """What the analysts' DuckDB CLI runs first: the attach, then files beyond the lake off."""
        allowed = sql_literal(str(self.data_path) + "/")
        return (f"SET extension_directory = {sql_literal(str(self.extension_dir))}; "
                f"{self.attach_sql(read_only=True)}; USE {ALIAS}; "
                f"SET allowed_directories = [{allowed}];")

    def describe(self) -> str:
        return str(self.sqlite_path) if self.sqlite_path else _without_password(self.catalog)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A pipeline session: the lake attached read-write and in use; always closed."""
        with self._session(read_only=False) as con:
            yield con

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A session as analysts get it: the lake read-only, and no file but its data files.

        Two gaps remain in duckdb 1.5.5: its SQLite extension ignores
        ``enable_external_access`` (ATTACH of a SQLite file by path works, read-write), and
        COPY may write inside the data directory. The sandbox stops accidents, not intent: to
        keep analysts from the lake by the operating system, give them a PostgreSQL catalog
        with a read-only role (a SQLite catalog in WAL mode needs its readers to write the
        directory, for the -shm index).
        """
        with self._session(read_only=True) as con:
            yield con

    @contextmanager
    def _session(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of this process's DuckDB instance for the lake (one read-write, one
        read-only), which loads the extensions and attaches once (about 0.05 s of CPU). Each
        cursor has its own transactions."""
        if self.previous_storage is not None and self.previous_storage.exists():
            raise PreviousStorageError(
                f"{self.previous_storage} is the previous storage (one DuckDB file): import "
                "it into the lake once with `batch-platform migrate`")
        if self.sqlite_path is not None:
            if read_only and not self.sqlite_path.exists():
                raise FileNotFoundError(
                    f"no warehouse at {self.sqlite_path}: run `make demo` or materialize a "
                    "partition")
            self._prepare_sqlite_catalog(self.sqlite_path)
        with _INSTANCES_LOCK:
            if _INSTANCES_PID[0] != os.getpid():  # a forked child: the parent's are not ours
                _INSTANCES.clear()
                _INSTANCES_PID[0] = os.getpid()
            key = (self.catalog, str(self.data_path), self.memory_limit, read_only)
            instance = _INSTANCES.get(key)
            if instance is None:
                instance = _INSTANCES[key] = self._open_instance(read_only)
            con = instance.cursor()
        try:
            con.execute(f"USE {ALIAS}")
            yield con
        finally:
            con.close()

    def _open_instance(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        self.data_path.mkdir(parents=True, exist_ok=True)
        # Unsigned: this process loads the extensions from the installed wheels' own files
        # (``_load_extensions``), trusted as the duckdb module itself is; DuckDB's signature
        # check of them would cost 0.45 s of CPU per instance. A read-only instance is locked
        # below, so it can load nothing else.
        con = duckdb.connect(config={"memory_limit": self.memory_limit,
                                     "extension_directory": str(self.extension_dir),
                                     "allow_unsigned_extensions": True,
                                     "temp_directory": str(self._temp_directory())})
        try:
            no_progress_bar(con)
            self._load_extensions(con)
            con.execute(self.attach_sql(read_only))
            if read_only:
                # Only now: the attach itself reads the catalog and the extensions. The data
                # files only, not the catalog beside them: COPY there is refused.
                con.execute("SET allowed_directories = $dirs",
                            {"dirs": [str(self.data_path) + "/"]})
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
        except duckdb.Error as err:
            con.close()
            # DuckDB's message quotes the whole connection string, password included.
            raise LakeUnavailableError(
                f"cannot attach the lake's catalog {self.describe()}: "
                f"{_without_password(str(err).splitlines()[0])}") from None
        except BaseException:
            con.close()
            raise
        return con

    def _temp_directory(self) -> Path:
        """Where this process's instances spill, one directory per process: DuckDB names its
        spill files alike in every process, and an instance that closes deletes every such
        file in its directory, another process's in the middle of a sort included. The
        directories of processes that no longer exist (killed mid-sort) are removed."""
        base = self.data_path.parent / "tmp"
        try:
            base.mkdir(parents=True, exist_ok=True)  # DuckDB creates only the last directory
            for folder in base.iterdir():
                if folder.name.isdigit() and not process_alive(int(folder.name)):
                    shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # a reader who may not write here: only a query that must spill fails, saying so
        return base / str(os.getpid())

    def commit(self, write: Callable[[duckdb.DuckDBPyConnection], None], message: str,
               details: dict[str, str]) -> float:
        """Run ``write`` in one transaction and commit it as a snapshot named by ``message``;
        return the seconds the turn on the writer lock took (0 without one).

        ``write`` may run more than once: DuckLake checks conflicts per table, so on a
        PostgreSQL catalog (no lock) a commit that inserts into a table fails if another one
        deleted from it since BEGIN, even other partitions, and DuckLake never retries that
        (``ducklake_max_retry_count`` covers only snapshot-id races); so does a second first
        CREATE of a schema or table. The write then runs again on the newer snapshot.
        """
        with self.connect() as con, self._turn(f"commit {message}") as turn:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                con.execute("BEGIN TRANSACTION")
                try:
                    write(con)
                    con.execute(f"CALL {ALIAS}.set_commit_message($author, $message, "
                                "extra_info => $details)",
                                {"author": COMMIT_AUTHOR, "message": message,
                                 "details": json.dumps(details, sort_keys=True)})
                    con.execute("COMMIT")
                    return turn()
                except duckdb.TransactionException as err:
                    _rollback(con)
                    if CONFLICT not in str(err) or attempt == COMMIT_ATTEMPTS:
                        raise
                except BaseException:
                    _rollback(con)
                    raise
                # Jittered backoff, so writers that collided do not collide again in step.
                time.sleep(random.uniform(0.05, 0.1) * 2 ** attempt)
            raise AssertionError("unreachable: the last attempt returns or raises")

    def maintain(self, retention: dt.timedelta) -> dict[str, int]:
        """Merge small files, expire snapshots older than ``retention`` and delete the files
        no snapshot within it reads (and files of transactions that never committed)."""
        cutoff = dt.datetime.now(dt.UTC) - retention
        counts: dict[str, int] = {}
        steps = {
            "files_merged": f"CALL ducklake_merge_adjacent_files('{ALIAS}')",
            "snapshots_expired": f"CALL ducklake_expire_snapshots('{ALIAS}', "
                                 "older_than => $cutoff)",
            "files_deleted": f"CALL ducklake_cleanup_old_files('{ALIAS}', "
                             "older_than => $cutoff)",
            "orphan_files_deleted": f"CALL ducklake_delete_orphaned_files('{ALIAS}', "
                                    "older_than => $cutoff)",
        }
        with self.connect() as con:
            for name, sql in steps.items():
                with self._turn(f"maintain the lake ({name})"):
                    params = {"cutoff": cutoff} if "$cutoff" in sql else {}
                    counts[name] = len(con.execute(sql, params).fetchall())
        return counts

    @contextmanager
    def _turn(self, purpose: str) -> Iterator[Callable[[], float]]:
        """The writer lock of a SQLite catalog; yields a clock of how long it has been held."""
        locked = (exclusive_lock(self.lock_path, self.lock_timeout_seconds, purpose)
                  if self.sqlite_path is not None else nullcontext())
        with locked:
            started = time.perf_counter()
            yield (lambda: time.perf_counter() - started) if self.sqlite_path else (lambda: 0.0)

    def _load_extensions(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load the extensions from the wheels' files, and install copies into the lake's
        extension directory for the analysts' clients (which verify their signatures)."""
        wanted = ["ducklake", "sqlite_scanner" if self.sqlite_path else "postgres_scanner"]
        for name in wanted:
            shipped = sql_literal(str(extension_file(name)))
            installed = self.extension_dir / f"v{duckdb.__version__}"
            if not any(installed.glob(f"*/{name}.duckdb_extension")):
                con.execute(f"INSTALL {shipped}")
            con.execute(f"LOAD {shipped}")

    @staticmethod
    def _prepare_sqlite_catalog(path: Path) -> None:
        """Create the catalog in WAL mode, so a commit never makes a reader fail with
        "database is locked"; WAL mode is a property of the file, set once.

        Only a file that does not exist yet is opened with Python's own SQLite: closing a
        second SQLite library's handle on a file DuckDB's SQLite has open would drop DuckDB's
        POSIX locks on it (they are per process), and break its open transactions.
        """
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()


def snapshots(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """The lake's snapshots, oldest first, each with the run that committed it."""
    rows = con.execute(f"SELECT snapshot_id, snapshot_time, commit_message, commit_extra_info "
                       f"FROM {ALIAS}.snapshots() ORDER BY snapshot_id").fetchall()
    return [{"snapshot_id": sid, "snapshot_time": when, "message": message,
             **(json.loads(extra) if extra else {})} for sid, when, message, extra in rows]


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):  # a failed commit already ended the transaction
        con.execute("ROLLBACK")


def sql_literal(text: str) -> str:
    """A string as a SQL literal, for statements that take no parameters (ATTACH, INSTALL)."""
    return "'" + text.replace("'", "''") + "'"


def _without_password(text: str) -> str:
    return PASSWORD.sub("password=***", text)


PREVIOUS_STORAGE = "pipeline.duckdb"  # the single-file warehouse before the lake


class PreviousStorageError(RuntimeError):
    """The data directory holds the previous storage, not yet imported into the lake."""


def lake_of(settings: Settings, migrating: bool = False) -> Lake:
    """The deployment's lake; its sessions are refused while the previous storage waits to be
    imported, except the migration's."""
    return Lake(settings.lake_catalog_uri, settings.lake_dir / "files",
                settings.lock_timeout_seconds, settings.duckdb_memory_limit,
                settings.lake_connect_timeout_seconds,
                None if migrating else settings.data_dir / PREVIOUS_STORAGE)
