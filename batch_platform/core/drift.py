"""Distribution drift: a reference profile of a window of data, and PSI against it.

The population stability index compares the share of rows per bin: bins are the reference's
deciles for numbers (plus one for missing values) and its levels for categories (plus one for
levels it never saw, and one for missing). Profiles are plain JSON, stored beside the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from batch_platform.core.landing import write_bytes_atomic

QUANTILES = tuple(q / 10 for q in range(1, 10))
# Shares are floored so an empty bin on either side gives a large but finite PSI.
MIN_SHARE = 1e-4
PROFILE_SUFFIX = ".profile.json"


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
        return ColumnProfile("categorical", levels, _categorical_shares(values, levels))
    present = values.drop_nulls().cast(pl.Float64)
    edges = sorted({float(present.quantile(q, interpolation="linear"))
                    for q in QUANTILES} if present.len() else set())
    return ColumnProfile("numeric", edges, _numeric_shares(values, edges))


def build_profile(frame: pl.DataFrame, columns: Sequence[str], window: str) -> Profile:
    return Profile(frame.height, window, {c: profile_column(frame.get_column(c)) for c in columns})


def psi(reference: ColumnProfile, values: pl.Series) -> float:
    actual = (_categorical_shares(values, reference.bins) if reference.kind == "categorical"
              else _numeric_shares(values, reference.bins))
    return float(sum((a - e) * math.log(a / e) for a, e in
                     zip(_floored(actual), _floored(reference.shares), strict=True)))


def psi_by_column(profile: Profile, frame: pl.DataFrame) -> dict[str, float]:
    return {name: psi(column, frame.get_column(name)) for name, column in profile.columns.items()}


def _numeric_shares(values: pl.Series, edges: list[float]) -> list[float]:
    total = values.len()
    if total == 0:
        return [0.0] * (len(edges) + 2)
    present = values.drop_nulls().cast(pl.Float64).to_numpy()
    counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="left"),
                         minlength=len(edges) + 1)
    return [float(c) / total for c in counts] + [(total - len(present)) / total]


def _categorical_shares(values: pl.Series, levels: list[str]) -> list[float]:
    total = values.len()
    if total == 0:
        return [0.0] * (len(levels) + 2)
    counts = dict(values.value_counts().iter_rows())
    known = [counts.get(level, 0) / total for level in levels]
    missing = counts.get(None, 0) / total
    return [*known, max(0.0, 1.0 - sum(known) - missing), missing]


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
