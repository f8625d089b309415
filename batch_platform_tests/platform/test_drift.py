"""Drift profiles and PSI: zero for the same distribution, large for a shifted one."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from batch_platform.platform.monitoring import drift


def numbers(values) -> pl.Series:
    return pl.Series("x", values, dtype=pl.Float64)


@pytest.fixture
def reference() -> pl.Series:
    return numbers(np.random.default_rng(1).normal(100, 10, 5000))


def test_same_distribution_has_psi_near_zero(reference: pl.Series) -> None:
    fresh = numbers(np.random.default_rng(2).normal(100, 10, 2000))
    assert drift.psi(drift.profile_column(reference), fresh) < 0.02


def test_shifted_distribution_has_large_psi(reference: pl.Series) -> None:
    shifted = numbers(np.random.default_rng(2).normal(130, 10, 2000))
    assert drift.psi(drift.profile_column(reference), shifted) > 1.0


def test_values_turning_missing_count_as_drift(reference: pl.Series) -> None:
    half_missing = numbers([*reference.head(1000).to_list(), *[None] * 1000])
    assert drift.psi(drift.profile_column(reference), half_missing) > 1.0


def test_categorical_profile_counts_unseen_levels() -> None:
    reference = pl.Series("c", ["AA", "UA", "B6", "AA"] * 250)
    profile = drift.profile_column(reference)
    assert profile.kind == "categorical"
    assert profile.bins == ["AA", "B6", "UA"]
    assert profile.shares == [0.5, 0.25, 0.25, 0.0, 0.0]
    same = pl.Series("c", ["AA", "UA", "B6", "AA"] * 100)
    assert drift.psi(profile, same) == pytest.approx(0.0, abs=1e-9)
    unseen = pl.Series("c", ["ZZ"] * 400)
    assert drift.psi(profile, unseen) > 5.0


def test_profile_round_trips_through_its_file(tmp_path, reference: pl.Series) -> None:
    frame = pl.DataFrame({"x": reference, "c": ["a", "b"] * 2500})
    profile = drift.ModelProfile(
        features=drift.build_profile(frame, ["x", "c"], "2013-01-01..2013-08-31"),
        scores=drift.build_profile(pl.DataFrame({"score": [0.1, 0.2, 0.9]}), ["score"], "v"))
    path = drift.profile_path(tmp_path / "0123456789abcdef.txt")
    assert path.name == "0123456789abcdef.profile.json"
    drift.save_profile(profile, path)
    assert drift.load_profile(path) == profile
    assert drift.psi_by_column(profile.features, frame) == {
        "x": pytest.approx(0.0, abs=1e-9), "c": pytest.approx(0.0, abs=1e-9)}


def test_a_model_without_a_profile_has_none(tmp_path) -> None:
    assert drift.load_profile(tmp_path / "missing.profile.json") is None


def test_counts_added_over_chunks_give_each_days_psi(reference: pl.Series) -> None:
    rng = np.random.default_rng(3)
    days = [dt.date(2013, 1, 1), dt.date(2013, 1, 2)]
    frame = pl.DataFrame({
        "partition_date": [days[0]] * 1500 + [days[1]] * 1500,
        "x": [*rng.normal(100, 10, 1500), *rng.normal(115, 10, 1400), *[None] * 100],
        "c": (["AA", "UA", "ZZ", None] * 750),
    }).sample(fraction=1.0, shuffle=True, seed=4)
    profile = drift.build_profile(
        pl.DataFrame({"x": reference, "c": ["AA", "UA", "B6", "AA"] * 1250}), ["x", "c"], "ref")
    counter = drift.DriftCounter(profile)
    for offset in range(0, frame.height, 77):
        counter.add(frame.slice(offset, 77))
    by_day = counter.psi_by_day()
    assert list(by_day) == days
    for day in days:
        whole = drift.psi_by_column(profile, frame.filter(pl.col("partition_date") == day))
        assert by_day[day] == pytest.approx(whole, rel=1e-12)
        assert counter.rows[day] == 1500
    assert by_day[days[1]]["x"] > by_day[days[0]]["x"] > 0


def test_the_counter_counts_each_day_as_bin_counts_counts_its_rows(
        reference: pl.Series) -> None:
    frame = pl.DataFrame({"x": reference, "c": ["a", "b", "c", "d"] * 1250})
    profile = drift.build_profile(frame, ["x", "c"], "w")
    days = [dt.date(2013, 1, 15), dt.date(2013, 1, 16), dt.date(2013, 1, 17)]
    rng = np.random.default_rng(3)
    # Unseen levels, missing values, NaN and values beyond the edges, days out of order.
    fresh = pl.DataFrame({
        "partition_date": [days[i] for i in rng.integers(0, 3, 600)],
        "x": [None if i % 7 == 0 else float("nan") if i % 11 == 0 else v
              for i, v in enumerate(rng.normal(105, 30, 600))],
        "c": [None if i % 5 == 0 else ["a", "b", "zz"][i % 3] for i in range(600)]})
    counter = drift.DriftCounter(profile).add(fresh.head(250)).add(fresh.tail(350))
    for day in days:
        rows = fresh.filter(pl.col("partition_date") == day)
        assert counter.rows[day] == rows.height
        for name, column in profile.columns.items():
            assert counter.counts[day][name].tolist() == drift.bin_counts(
                column, rows.get_column(name)).tolist()
    assert list(counter.psi_by_day()) == days
