"""Process-wide paths and tunables, read from the environment once and validated.

Every piece of state lives under one data directory (``BATCH_PLATFORM_DATA_DIR``, default
``./data``): landing files, the warehouse (a DuckLake: catalog and Parquet files), model
files and the Dagster instance home. What belongs to one use case (its check
thresholds, how it explains and scores) is declared in its ``defs.yaml``; the variables of the
same name below override the declaration for every use case when set (``resolved``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch_platform.platform.files import require_writable
from batch_platform.platform.monitoring.audits import AuditThresholds

if TYPE_CHECKING:
    from batch_platform.platform.use_case import UseCase

ENV_PREFIX = "BATCH_PLATFORM_"
MODEL_VERSION_PATTERN = re.compile(r"^[0-9a-f]{16}$")
EXPLAIN_CHOICES = ("all", "predicted_positive", "riskiest", "none")
# "compiled": lleaves native code, used only after a parity check against LightGBM.
SCORER_CHOICES = ("lightgbm", "compiled")
# "ray": the scoring of the predictions stage runs on a Ray cluster (the `ray` extra).
ENGINE_CHOICES = ("local", "ray")
# "auto" (a node of the cluster), "host:port" of the head's GCS, or "ray://host:port" (Ray Client).
RAY_ADDRESS_PATTERN = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-]+:[0-9]{1,5})$")
URI_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
USE_CASE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
LAKE_CATALOGS = ("sqlite:", "postgres:")


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # Which use case a command means when none is named (BATCH_PLATFORM_USE_CASE).
    use_case: str | None = None
    # A partition fails when more than this fraction of a landing file's rows is rejected.
    max_reject_fraction: float | None = None
    # Rows every stage holds at a time (read, validate, features, score, write): peak memory
    # follows this, not the partition's size.
    chunk_rows: int = 100_000
    # Refuse to start work with less free disk than this under the data directory.
    min_free_disk_mb: float = 200.0
    # LightGBM threads; 0 lets LightGBM use every core.
    scoring_threads: int = 0
    # How long a commit waits for the lake's writer lock before failing with the holder's name.
    lock_timeout_seconds: float = 300.0
    # The lake's catalog: unset, a SQLite file under the data directory (processes of one
    # machine); "postgres:dbname=… host=… user=…" (libpq) for runs on several machines.
    lake_catalog: str | None = None
    # A PostgreSQL catalog that does not answer within this fails the step, naming the address.
    lake_connect_timeout_seconds: float = 10.0
    # Maintenance keeps every snapshot younger than this (time travel) and the files they read.
    lake_retention_days: float = 7.0
    # DuckDB's memory per pipeline connection; past it, joins and sorts spill to disk.
    duckdb_memory_limit: str = "512MB"
    # Score with this registry version instead of the champion.
    model_version: str | None = None
    # Which rows get top reasons (pred_contrib costs ~50x a plain predict).
    explain: str | None = None
    # With explain=riskiest: how many of each day's highest scores get top reasons.
    explain_max_rows: int | None = None
    # Which scorer computes the scores: LightGBM itself, or the model compiled to native code.
    scorer: str | None = None
    # Where the predictions stage scores: in the step's process, or on a Ray cluster.
    engine: str | None = None
    ray_address: str | None = None
    # Scoring actors in the pool; each loads the model once and takes one CPU.
    ray_actors: int = 2
    # Features and predictions on their way to and from the cluster: a directory every node
    # reads, or any URI pyarrow opens (s3://, gs://, ...). Unset: <data_dir>/staging.
    staging_uri: str | None = None
    # How long to wait for the cluster's address to answer before failing with a clear error.
    ray_connect_timeout_seconds: float = 10.0
    # Audits (docs/operators.md): feature drift warns above psi_warn and blocks publishing
    # above psi_error; days with fewer rows than psi_min_rows are not judged; score drift only
    # warns. Unset: the use case's declaration (checks).
    psi_warn: float | None = None
    psi_error: float | None = None
    psi_min_rows: int | None = None
    score_psi_warn: float | None = None
    # Largest share of a day's input rows that may miss a required value before it is blocked.
    max_null_fraction: float | None = None
    # How far (a fraction) a day's rows may be from its history where a source declares
    # rows_vs_history, for every such source; unset: each declaration's tolerance. A day known
    # to be unusual (a holiday, a scaled benchmark day) is published with a larger one.
    rows_vs_history_tolerance: float | None = None
    # A landed partition must be scored and reported within this many minutes of landing.
    freshness_lag_minutes: float | None = None
    # The landing sensor leaves files younger than this alone: they may still be written.
    landing_settle_seconds: float = 10.0
    # The promotion gate (platform/models/gate.py): a challenger is promoted only when it beat
    # the champion on at least gate_min_days days of realised outcomes, and the paired
    # bootstrap's one-sided lower bound (at gate_confidence, over gate_resamples resamples of
    # days) of its mean daily improvement in the primary metric clears gate_min_margin.
    gate_min_days: int = 14
    gate_min_margin: float = 0.0
    gate_confidence: float = 0.95
    gate_resamples: int = 2000

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def lake_dir(self) -> Path:
        """The warehouse: its SQLite catalog, Parquet files and the DuckDB extensions."""
        return self.data_dir / "lake"

    @property
    def lake_catalog_uri(self) -> str:
        return self.lake_catalog or f"sqlite:{self.lake_dir / 'catalog.sqlite'}"

    @property
    def staging_dir(self) -> Path:
        """Where steps stage Parquet chunks; each step removes its own directory."""
        return self.data_dir / "staging"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        """The monitoring pages: ``<use case>/monitoring.html``, rewritten with each report."""
        return self.data_dir / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def staging_location(self) -> str:
        """The staging root of the Ray engine: a URI or an absolute local path."""
        return self.staging_uri or str(self.data_dir / "staging")

    def require_writable_data_dir(self) -> None:
        """Before any work: the data directory can be written and has room to start."""
        require_writable(self.data_dir, int(self.min_free_disk_mb * 1e6), "data directory",
                         f"point {ENV_PREFIX}DATA_DIR at a writable directory with room "
                         f"(or lower {ENV_PREFIX}MIN_FREE_DISK_MB)")

    def with_overrides(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values).validated()

    def validated(self) -> Settings:
        _require(self.use_case is None or bool(USE_CASE_PATTERN.match(self.use_case)),
                 "USE_CASE", self.use_case, "must be the name of a declared use case")
        _require(_unset_or(self.max_reject_fraction, lambda v: 0.0 <= v <= 1.0),
                 "MAX_REJECT_FRACTION",
                 self.max_reject_fraction, "must be between 0 and 1")
        # Each chunk costs about 0.1 s of fixed work (a staged file, a DuckDB pass): one-row
        # chunks took a 900-row day 104 s instead of 6 s, and a year never finished.
        _require(self.chunk_rows >= MIN_CHUNK_ROWS, "CHUNK_ROWS", self.chunk_rows,
                 f"must be at least {MIN_CHUNK_ROWS} rows: smaller chunks spend their time on "
                 "per-chunk work, not rows (the default is 100000)")
        _require(self.min_free_disk_mb >= 0, "MIN_FREE_DISK_MB", self.min_free_disk_mb,
                 "must be 0 or more megabytes")
        _require(self.scoring_threads >= 0, "SCORING_THREADS", self.scoring_threads,
                 "must be 0 (all cores) or a positive number of threads")
        _require(self.lock_timeout_seconds > 0, "LOCK_TIMEOUT_SECONDS",
                 self.lock_timeout_seconds, "must be a positive number of seconds")
        _require(self.lake_catalog is None or self.lake_catalog.startswith(LAKE_CATALOGS),
                 "LAKE_CATALOG", self.lake_catalog,
                 "must start with sqlite: (a file) or postgres: (a libpq connection string)")
        _require(self.lake_connect_timeout_seconds > 0, "LAKE_CONNECT_TIMEOUT_SECONDS",
                 self.lake_connect_timeout_seconds, "must be a positive number of seconds")
        _require(self.lake_retention_days >= 0, "LAKE_RETENTION_DAYS",
                 self.lake_retention_days, "must be zero or a positive number of days")
        _require(bool(MEMORY_SIZE.match(self.duckdb_memory_limit)), "DUCKDB_MEMORY_LIMIT",
                 self.duckdb_memory_limit, "must be a size like 512MB or 2GB")
        pinned_ok = self.model_version is None or bool(
            MODEL_VERSION_PATTERN.match(self.model_version))
        _require(pinned_ok, "MODEL_VERSION", self.model_version,
                 "must be a model version from models.registry (16 hex characters)")
        _require(self.explain is None or self.explain in EXPLAIN_CHOICES, "EXPLAIN", self.explain,
                 f"must be one of {', '.join(EXPLAIN_CHOICES)}")
        _require(_unset_or(self.psi_warn, lambda v: v > 0), "PSI_WARN", self.psi_warn,
                 "must be positive")
        _require(_unset_or(self.psi_error, lambda v: v > 0), "PSI_ERROR", self.psi_error,
                 "must be positive")
        _require(self.psi_warn is None or self.psi_error is None
                 or self.psi_warn <= self.psi_error, "PSI_WARN", self.psi_warn,
                 f"must be at most PSI_ERROR ({self.psi_error})")
        _require(_unset_or(self.psi_min_rows, lambda v: v >= 1), "PSI_MIN_ROWS",
                 self.psi_min_rows, "must be a positive number of rows")
        _require(_unset_or(self.score_psi_warn, lambda v: v > 0), "SCORE_PSI_WARN",
                 self.score_psi_warn, "must be positive")
        _require(_unset_or(self.max_null_fraction, lambda v: 0.0 <= v <= 1.0),
                 "MAX_NULL_FRACTION", self.max_null_fraction, "must be between 0 and 1")
        _require(_unset_or(self.rows_vs_history_tolerance, lambda v: v > 0),
                 "ROWS_VS_HISTORY_TOLERANCE", self.rows_vs_history_tolerance, "must be positive")
        _require(_unset_or(self.freshness_lag_minutes, lambda v: v > 0), "FRESHNESS_LAG_MINUTES",
                 self.freshness_lag_minutes, "must be a positive number of minutes")
        _require(self.landing_settle_seconds >= 0, "LANDING_SETTLE_SECONDS",
                 self.landing_settle_seconds, "must be 0 or more seconds")
        _require(_unset_or(self.explain_max_rows, lambda v: v >= 1), "EXPLAIN_MAX_ROWS",
                 self.explain_max_rows, "must be a positive number of rows")
        _require(self.scorer is None or self.scorer in SCORER_CHOICES, "SCORER", self.scorer,
                 f"must be one of {', '.join(SCORER_CHOICES)}")
        _require(self.engine is None or self.engine in ENGINE_CHOICES, "ENGINE", self.engine,
                 f"must be one of {', '.join(ENGINE_CHOICES)}")
        _require(self.engine != "ray" or self.ray_address is not None, "RAY_ADDRESS",
                 self.ray_address, "must be set when BATCH_PLATFORM_ENGINE=ray (the cluster's "
                 "head, e.g. 10.0.0.5:6379, ray://head:10001, or auto)")
        _require(self.ray_address is None or bool(RAY_ADDRESS_PATTERN.match(self.ray_address)),
                 "RAY_ADDRESS", self.ray_address,
                 "must be auto, host:port or ray://host:port")
        _require(self.ray_actors >= 1, "RAY_ACTORS", self.ray_actors,
                 "must be a positive number of actors")
        _require(self.staging_uri is None or bool(URI_PATTERN.match(self.staging_uri))
                 or Path(self.staging_uri).is_absolute(), "STAGING_URI", self.staging_uri,
                 "must be a URI (s3://bucket/path, file:///path) or an absolute path")
        _require(self.ray_connect_timeout_seconds > 0, "RAY_CONNECT_TIMEOUT_SECONDS",
                 self.ray_connect_timeout_seconds, "must be a positive number of seconds")
        _require(self.gate_min_days >= 1, "GATE_MIN_DAYS", self.gate_min_days,
                 "must be a positive number of days")
        _require(0.5 <= self.gate_confidence < 1, "GATE_CONFIDENCE", self.gate_confidence,
                 "must be at least 0.5 and below 1, e.g. 0.95")
        _require(self.gate_resamples >= 100, "GATE_RESAMPLES", self.gate_resamples,
                 "must be at least 100 resamples")
        return self

    def resolved(self, use_case: UseCase) -> Settings:
        """These settings with every value left unset taken from ``use_case``'s declaration."""
        declared = use_case.checks.thresholds
        values = {
            "max_reject_fraction": use_case.checks.max_reject_fraction,
            "explain": use_case.scoring.explain,
            "explain_max_rows": use_case.scoring.explain_max_rows,
            "scorer": use_case.scoring.scorer, "engine": use_case.scoring.engine,
            "psi_warn": declared.psi_warn, "psi_error": declared.psi_error,
            "psi_min_rows": declared.psi_min_rows, "score_psi_warn": declared.score_psi_warn,
            "max_null_fraction": declared.max_null_fraction,
            "freshness_lag_minutes": use_case.checks.freshness_lag_minutes,
        }
        return self.with_overrides(**{name: value for name, value in values.items()
                                      if getattr(self, name) is None})

    def audit_thresholds(self) -> AuditThresholds:
        """The audit thresholds of ``resolved`` settings."""
        assert None not in (self.psi_warn, self.psi_error, self.psi_min_rows,
                            self.score_psi_warn, self.max_null_fraction), "resolve first"
        return AuditThresholds(psi_warn=self.psi_warn, psi_error=self.psi_error,
                               psi_min_rows=self.psi_min_rows,
                               score_psi_warn=self.score_psi_warn,
                               max_null_fraction=self.max_null_fraction)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def read(name: str, parse: Callable[[str], Any], default: Any) -> Any:
            raw = env.get(ENV_PREFIX + name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except ValueError:
                raise SettingsError(
                    f"{ENV_PREFIX}{name}={raw!r} is not a valid {parse.__name__}"
                ) from None

        defaults = cls(data_dir=Path("data"))
        return cls(
            data_dir=Path(read("DATA_DIR", str, "data")).expanduser().resolve(),
            use_case=read("USE_CASE", str, None),
            max_reject_fraction=read("MAX_REJECT_FRACTION", float, None),
            chunk_rows=read("CHUNK_ROWS", int, defaults.chunk_rows),
            min_free_disk_mb=read("MIN_FREE_DISK_MB", float, defaults.min_free_disk_mb),
            scoring_threads=read("SCORING_THREADS", int, defaults.scoring_threads),
            lock_timeout_seconds=read("LOCK_TIMEOUT_SECONDS", float,
                                      defaults.lock_timeout_seconds),
            duckdb_memory_limit=read("DUCKDB_MEMORY_LIMIT", str, defaults.duckdb_memory_limit),
            lake_catalog=read("LAKE_CATALOG", str, None),
            lake_connect_timeout_seconds=read("LAKE_CONNECT_TIMEOUT_SECONDS", float,
                                              defaults.lake_connect_timeout_seconds),
            lake_retention_days=read("LAKE_RETENTION_DAYS", float, defaults.lake_retention_days),
            model_version=read("MODEL_VERSION", str, None),
            explain=read("EXPLAIN", str, None),
            psi_warn=read("PSI_WARN", float, None),
            psi_error=read("PSI_ERROR", float, None),
            psi_min_rows=read("PSI_MIN_ROWS", int, None),
            score_psi_warn=read("SCORE_PSI_WARN", float, None),
            max_null_fraction=read("MAX_NULL_FRACTION", float, None),
            rows_vs_history_tolerance=read("ROWS_VS_HISTORY_TOLERANCE", float, None),
            freshness_lag_minutes=read("FRESHNESS_LAG_MINUTES", float, None),
            landing_settle_seconds=read("LANDING_SETTLE_SECONDS", float,
                                        defaults.landing_settle_seconds),
            explain_max_rows=read("EXPLAIN_MAX_ROWS", int, None),
            scorer=read("SCORER", str, None),
            engine=read("ENGINE", str, None),
            ray_address=read("RAY_ADDRESS", str, None),
            ray_actors=read("RAY_ACTORS", int, defaults.ray_actors),
            staging_uri=read("STAGING_URI", staging, None),
            ray_connect_timeout_seconds=read("RAY_CONNECT_TIMEOUT_SECONDS", float,
                                             defaults.ray_connect_timeout_seconds),
            gate_min_days=read("GATE_MIN_DAYS", int, defaults.gate_min_days),
            gate_min_margin=read("GATE_MIN_MARGIN", float, defaults.gate_min_margin),
            gate_confidence=read("GATE_CONFIDENCE", float, defaults.gate_confidence),
            gate_resamples=read("GATE_RESAMPLES", int, defaults.gate_resamples),
        ).validated()


MIN_CHUNK_ROWS = 50
MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


def staging(text: str) -> str:
    """A URI as it is; a local path made absolute, as every node must find the same path."""
    return text if URI_PATTERN.match(text) else str(Path(text).expanduser().resolve())


def _unset_or(value: Any, ok: Callable[[Any], bool]) -> bool:
    return value is None or ok(value)


def _require(ok: bool, name: str, value: object, what: str) -> None:
    if not ok:
        raise SettingsError(f"{ENV_PREFIX}{name}={value!r} {what}")
