"""Distribution drift: a reference profile of a window of data, and PSI against it.

The population stability index compares the share of rows per bin: bins are the reference's
deciles for numbers (plus one for missing values) and its levels for categories (plus one for
levels it never saw, and one for missing). Profiles are plain JSON, stored beside the model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from batch_platform.platform.files import write_bytes_atomic

QUANTILES = tuple(q / 10 for q in range(1, 10))
# Shares are floored so an empty bin on either side gives a large but finite PSI.
MIN_SHARE = 1e-4
PROFILE_SUFFIX = ".profile.json"
EPOCH = dt.date(1970, 1, 1)  # Polars' dates count days from it


@dataclass(frozen=True)
class ColumnProfile:
    kind: str  # "numeric" or "categorical"
    # numeric: upper edges of the bins (right-closed), last bin open; categorical: the levels
    bins: list
    # share of reference rows per bin, then unseen levels (categorical), then missing
    shares: list[float]


@dataclass(frozen=True)
class Profile:
    rows: int
    window: str
    columns: dict[str, ColumnProfile]


@dataclass(frozen=True)
class ModelProfile:
    """What a model was trained on and what it scored on validation: the drift references."""

    features: Profile
    scores: Profile


def profile_column(values: pl.Series) -> ColumnProfile:
    if values.dtype == pl.String:
        levels = sorted(v for v in values.unique().to_list() if v is not None)
        return _with_shares(ColumnProfile("categorical", levels, []), values)
    present = values.drop_nulls().cast(pl.Float64)
    edges = sorted({float(present.quantile(q, interpolation="linear"))
                    for q in QUANTILES} if present.len() else set())
    return _with_shares(ColumnProfile("numeric", edges, []), values)


def _with_shares(column: ColumnProfile, values: pl.Series) -> ColumnProfile:
    counts = bin_counts(column, values)
    total = int(counts.sum())
    return ColumnProfile(column.kind, column.bins,
                         [float(c) / total if total else 0.0 for c in counts])


def build_profile(frame: pl.DataFrame, columns: Sequence[str], window: str) -> Profile:
    return Profile(frame.height, window, {c: profile_column(frame.get_column(c)) for c in columns})


def psi(reference: ColumnProfile, values: pl.Series) -> float:
    return psi_from_counts(reference, bin_counts(reference, values))


def psi_by_column(profile: Profile, frame: pl.DataFrame) -> dict[str, float]:
    return {name: psi(column, frame.get_column(name)) for name, column in profile.columns.items()}


def bin_counts(reference: ColumnProfile, values: pl.Series) -> np.ndarray:
    """Rows per bin of ``reference``: counts add up over chunks, shares would not."""
    if reference.kind == "categorical":
        counts = dict(values.value_counts().iter_rows()) if values.len() else {}
        known = [counts.get(level, 0) for level in reference.bins]
        missing = counts.get(None, 0)
        return np.array([*known, values.len() - sum(known) - missing, missing], dtype=np.int64)
    present = values.drop_nulls().cast(pl.Float64).to_numpy()
    counts = np.bincount(np.searchsorted(np.asarray(reference.bins), present, side="left"),
                         minlength=len(reference.bins) + 1)
    return np.array([*counts, values.len() - len(present)], dtype=np.int64)


def bin_counts_by_day(reference: ColumnProfile, day_of_row: np.ndarray, days: int,
                      values: pl.Series) -> np.ndarray:
    """Rows per day (``day_of_row``: each row's day, 0 to ``days - 1``) and bin of
    ``reference``, one row per day: per day, what ``bin_counts`` counts of its values."""
    missing = len(reference.bins) + 1  # the last bin, after the unseen levels' or the open one
    if reference.kind == "categorical":
        # Unseen levels go to the bin after the known ones, missing values to the last.
        levels = {level: index for index, level in enumerate(reference.bins)}
        bins = pl.select(pl.when(values.is_null()).then(missing).otherwise(
            values.cast(pl.String).replace_strict(levels, default=len(levels),
                                                  return_dtype=pl.Int64))).to_series()
        bin_of_row = bins.to_numpy()
    else:
        present = values.is_not_null().to_numpy()
        numbers = values.cast(pl.Float64).fill_null(0.0).to_numpy()
        bin_of_row = np.where(present, np.searchsorted(np.asarray(reference.bins), numbers,
                                                       side="left"), missing)
    size = missing + 1
    return np.bincount(day_of_row * size + bin_of_row, minlength=days * size).reshape(
        days, size).astype(np.int64)


def psi_from_counts(reference: ColumnProfile, counts: np.ndarray) -> float:
    total = int(counts.sum())
    actual = [float(c) / total for c in counts] if total else [0.0] * len(counts)
    return float(sum((a - e) * math.log(a / e) for a, e in
                     zip(_floored(actual), _floored(reference.shares), strict=True)))


class DriftCounter:
    """Bin counts per day and column against a profile, added up chunk by chunk."""

    def __init__(self, profile: Profile | None) -> None:
        self.profile = profile
        self.rows: dict[dt.date, int] = {}
        self.counts: dict[dt.date, dict[str, np.ndarray]] = {}

    def add(self, frame: pl.DataFrame) -> DriftCounter:
        if self.profile is None or frame.height == 0:
            return self
        # One pass per column over every day of the frame, not a pass per day and column.
        days, day_of_row = np.unique(frame.get_column("partition_date").to_physical().to_numpy(),
                                     return_inverse=True)
        per_column = {name: bin_counts_by_day(column, day_of_row, len(days),
                                              frame.get_column(name))
                      for name, column in self.profile.columns.items()}
        for index, (code, rows) in enumerate(zip(days, np.bincount(day_of_row), strict=True)):
            day = EPOCH + dt.timedelta(days=int(code))
            self.rows[day] = self.rows.get(day, 0) + int(rows)
            counts = self.counts.setdefault(day, {})
            for name, by_day in per_column.items():
                counts[name] = counts[name] + by_day[index] if name in counts else by_day[index]
        return self

    def psi_by_day(self) -> dict[dt.date, dict[str, float]]:
        assert self.profile is not None
        columns = self.profile.columns
        return {day: {name: psi_from_counts(columns[name], counts[name]) for name in columns}
                for day, counts in sorted(self.counts.items())}


def _floored(shares: list[float]) -> list[float]:
    return [max(share, MIN_SHARE) for share in shares]


def profile_path(model_path: Path) -> Path:
    """Where the profile of the model at ``model_path`` lives: beside it, named after it."""
    return model_path.with_name(model_path.stem + PROFILE_SUFFIX)


def save_profile(profile: ModelProfile, path: Path) -> None:
    write_bytes_atomic(path, json.dumps(asdict(profile), indent=1).encode())


def load_profile(path: Path) -> ModelProfile | None:
    """The profile at ``path``; None if there is none (a model registered before profiles)."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return ModelProfile(**{part: _profile(raw[part]) for part in ("features", "scores")})


def _profile(raw: dict) -> Profile:
    return Profile(raw["rows"], raw["window"],
                   {name: ColumnProfile(**column) for name, column in raw["columns"].items()})
