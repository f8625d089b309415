"""Paths and tunables, read from the environment once and validated.

Every piece of state lives under one data directory (``BATCH_PLATFORM_DATA_DIR``, default
``./data``): landing files, the pipeline's working database, the published warehouse,
model files and the Dagster instance home.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "BATCH_PLATFORM_"
MODEL_VERSION_PATTERN = re.compile(r"^[0-9a-f]{16}$")
EXPLAIN_CHOICES = ("all", "predicted_late", "riskiest", "none")
# "compiled": lleaves native code, used only after a parity check against LightGBM.
SCORER_CHOICES = ("lightgbm", "compiled")


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # A partition fails when more than this fraction of a landing file's rows is rejected.
    max_reject_fraction: float = 0.05
    # Rows scored per LightGBM call: bounds scoring memory independently of partition size.
    score_chunk_rows: int = 100_000
    # LightGBM threads; 0 lets LightGBM use every core.
    scoring_threads: int = 0
    # How long a step waits for the pipeline database before failing with the holder's name.
    lock_timeout_seconds: float = 300.0
    # Score with this registry version instead of the champion.
    model_version: str | None = None
    # Which rows get top reasons (pred_contrib costs ~50x a plain predict).
    explain: str = "all"
    # With explain=riskiest: how many of each day's highest scores get top reasons.
    explain_max_rows: int = 1_000
    # Which scorer computes the scores: LightGBM itself, or the model compiled to native code.
    scorer: str = "lightgbm"

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def pipeline_db_path(self) -> Path:
        """The pipeline's private working database: only pipeline steps open it."""
        return self.data_dir / "pipeline.duckdb"

    @property
    def warehouse_path(self) -> Path:
        """The published read-only snapshot that analysts open."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    def with_overrides(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values).validated()

    def validated(self) -> Settings:
        _require(0.0 <= self.max_reject_fraction <= 1.0, "MAX_REJECT_FRACTION",
                 self.max_reject_fraction, "must be between 0 and 1")
        _require(self.score_chunk_rows >= 1, "SCORE_CHUNK_ROWS", self.score_chunk_rows,
                 "must be a positive number of rows")
        _require(self.scoring_threads >= 0, "SCORING_THREADS", self.scoring_threads,
                 "must be 0 (all cores) or a positive number of threads")
        _require(self.lock_timeout_seconds > 0, "LOCK_TIMEOUT_SECONDS",
                 self.lock_timeout_seconds, "must be a positive number of seconds")
        pinned_ok = self.model_version is None or bool(
            MODEL_VERSION_PATTERN.match(self.model_version))
        _require(pinned_ok, "MODEL_VERSION", self.model_version,
                 "must be a model version from models.registry (16 hex characters)")
        _require(self.explain in EXPLAIN_CHOICES, "EXPLAIN", self.explain,
                 f"must be one of {', '.join(EXPLAIN_CHOICES)}")
        _require(self.explain_max_rows >= 1, "EXPLAIN_MAX_ROWS", self.explain_max_rows,
                 "must be a positive number of rows")
        _require(self.scorer in SCORER_CHOICES, "SCORER", self.scorer,
                 f"must be one of {', '.join(SCORER_CHOICES)}")
        return self

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
            max_reject_fraction=read("MAX_REJECT_FRACTION", float, defaults.max_reject_fraction),
            score_chunk_rows=read("SCORE_CHUNK_ROWS", int, defaults.score_chunk_rows),
            scoring_threads=read("SCORING_THREADS", int, defaults.scoring_threads),
            lock_timeout_seconds=read("LOCK_TIMEOUT_SECONDS", float,
                                      defaults.lock_timeout_seconds),
            model_version=read("MODEL_VERSION", str, None),
            explain=read("EXPLAIN", str, defaults.explain),
            explain_max_rows=read("EXPLAIN_MAX_ROWS", int, defaults.explain_max_rows),
            scorer=read("SCORER", str, defaults.scorer),
        ).validated()


def _require(ok: bool, name: str, value: object, what: str) -> None:
    if not ok:
        raise SettingsError(f"{ENV_PREFIX}{name}={value!r} {what}")
