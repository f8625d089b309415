"""The compiled scorer: identical scores, a parity check that catches a wrong artifact, a cache.

Compiling is real (lleaves and LLVM) on the tiny session model, which compiles in about a second.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batch_platform.platform.models import booster as model
from batch_platform.platform.scoring import compiled
from batch_platform.platform.scoring import score as scoring
from batch_platform_tests.flights import FLIGHTS
from batch_platform_tests.platform.conftest import TrainedModel
from batch_platform_tests.platform.support import DAY_3

LINEAGE = scoring.ScoringLineage("v", "0.1.0+test", "run-7",
                                 dt.datetime(2024, 5, 6, tzinfo=dt.UTC))
CATEGORICAL = [FLIGHTS.feature_columns.index(c) for c in FLIGHTS.categorical_columns]


@pytest.fixture
def on_disk(tmp_path: Path, trained: TrainedModel,
            loaded_model: model.LoadedModel) -> model.LoadedModel:
    """The session model as the registry hands it over: a file under models/flights/."""
    _, path = model.save(trained.text, tmp_path / "models" / "flights")
    compiled.clear_process_cache()  # each test starts from what is on disk
    return replace(loaded_model, path=path)


@pytest.fixture(scope="module")
def day_rows(feature_rows: pl.DataFrame) -> pl.DataFrame:
    # Unknown categories score with that feature missing: the compiled code must agree there too.
    return feature_rows.filter(pl.col("partition_date") == DAY_3).with_columns(
        pl.when(pl.int_range(pl.len()) % 50 == 0).then(pl.lit("ZZZ")).otherwise(pl.col("dest"))
        .alias("dest"))


def test_compiled_scores_equal_lightgbm_and_are_recorded(
    on_disk: model.LoadedModel, day_rows: pl.DataFrame
) -> None:
    reference, _ = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE, num_threads=2)
    predictions, stats = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE, num_threads=2,
                                       scorer="compiled")
    report = stats.scorer
    assert (report.requested, report.used, report.fallback_reason) == (
        "compiled", "compiled", None)
    assert report.parity_max_abs_diff is not None
    assert report.parity_max_abs_diff <= compiled.PARITY_TOLERANCE
    # The sample (the whole day here), again with categories missing, and one all-missing row.
    assert report.parity_rows == 2 * day_rows.height + 1
    assert stats.unknown_categories["dest"] > 0
    assert predictions.get_column("scorer").unique().to_list() == ["compiled"]
    np.testing.assert_allclose(predictions["score"].to_numpy(), reference["score"].to_numpy(),
                               rtol=0, atol=1e-12)
    assert_frame_equal(predictions.drop("score", "scorer"), reference.drop("score", "scorer"))


def test_chunked_compiled_scoring_equals_whole_partition(
    on_disk: model.LoadedModel, day_rows: pl.DataFrame
) -> None:
    whole, whole_stats = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE, scorer="compiled",
                                       explain="predicted_positive", num_threads=2)
    chunked, chunked_stats = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE,
                                           scorer="compiled", explain="predicted_positive",
                                           chunk_rows=37, num_threads=1)
    assert_frame_equal(chunked, whole)
    assert chunked_stats == whole_stats


def test_second_use_loads_the_cache_without_compiling(
    on_disk: model.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert on_disk.path is not None
    first = compiled.load_or_compile(on_disk.path, on_disk.version)
    assert first.compiled_now
    assert first.artifact == compiled.artifact_path(on_disk.path, on_disk.version)
    assert first.artifact.parent == on_disk.path.parent / "compiled"
    assert first.artifact.name.startswith(f"{on_disk.version}-")
    written = first.artifact.read_bytes()
    assert written.startswith(compiled.MAGIC)
    # In the same process the loaded model is reused as it is.
    assert compiled.load_or_compile(on_disk.path, on_disk.version).model is first.model

    def no_compiling(*args: object) -> None:
        raise AssertionError("the cached artifact should have been loaded, not recompiled")

    monkeypatch.setattr(compiled, "_compile_artifact", no_compiling)
    compiled.clear_process_cache()  # as a new process would
    second = compiled.load_or_compile(on_disk.path, on_disk.version)
    assert not second.compiled_now
    assert second.model is not first.model
    assert first.artifact.read_bytes() == written
    matrix, _ = model.feature_matrix(on_disk_rows(on_disk), FLIGHTS, on_disk.categorical_levels)
    np.testing.assert_allclose(second.model.predict(matrix), on_disk.booster.predict(matrix),
                               rtol=0, atol=1e-12)
    # Nothing but the artifact is left in the cache folder (no scratch files, no lock leftovers
    # other than the lock file itself).
    leftovers = {p.name for p in first.artifact.parent.iterdir()} - {first.artifact.name}
    assert leftovers <= {f".{first.artifact.name}.lock"}


def on_disk_rows(loaded: model.LoadedModel) -> pl.DataFrame:
    """A few hand-made rows: known and unknown categories, missing numbers."""
    rows = {c: [1.0, None, 3.0] for c in FLIGHTS.numeric_columns}
    rows |= {c: [loaded.categorical_levels[c][0], "ZZZ", None] for c in FLIGHTS.categorical_columns}
    return pl.DataFrame(rows).with_columns(pl.col(FLIGHTS.numeric_columns).cast(pl.Float64))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_version_header"])
def test_a_damaged_artifact_is_recompiled_not_loaded(
    on_disk: model.LoadedModel, damage: str
) -> None:
    assert on_disk.path is not None
    artifact = compiled.load_or_compile(on_disk.path, on_disk.version).artifact
    good = artifact.read_bytes()
    if damage == "truncated":
        artifact.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        artifact.write_bytes(b"\x7fELF" + b"\x00" * 64)
    else:
        artifact.write_bytes(good.replace(on_disk.version.encode(), b"0" * 16, 1))
    compiled.clear_process_cache()
    again = compiled.load_or_compile(on_disk.path, on_disk.version)
    assert again.compiled_now
    compiled._unpack(artifact.read_bytes(), on_disk.version, compiled.cpu_key(), artifact)
    matrix, _ = model.feature_matrix(on_disk_rows(on_disk), FLIGHTS, on_disk.categorical_levels)
    np.testing.assert_allclose(again.model.predict(matrix), on_disk.booster.predict(matrix),
                               rtol=0, atol=1e-12)


def test_code_of_another_model_fails_parity_and_falls_back_to_lightgbm(
    on_disk: model.LoadedModel, trained: TrainedModel, day_rows: pl.DataFrame, tmp_path: Path
) -> None:
    """The defect a header cannot catch: valid code under the right name, for the wrong trees."""
    assert on_disk.path is not None
    other_booster = model.train(trained.train_frame, FLIGHTS, rounds=5, num_threads=2)
    _, other_path = model.save(model.model_text(other_booster), tmp_path / "other")
    other = compiled.load_or_compile(other_path, "other")
    cpu = compiled.cpu_key()
    code = compiled._unpack(other.artifact.read_bytes(), "other", cpu, other.artifact)
    target = compiled.artifact_path(on_disk.path, on_disk.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(compiled._pack(code, on_disk.version, cpu))
    compiled.clear_process_cache()

    warnings: list[str] = []
    predictions, stats = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE, num_threads=2,
                                       scorer="compiled", warn=warnings.append)
    report = stats.scorer
    assert report.used == "lightgbm"
    assert report.requested == "compiled"
    assert report.parity_max_abs_diff is not None
    assert report.parity_max_abs_diff > compiled.PARITY_TOLERANCE
    assert report.fallback_reason is not None
    assert "parity check failed" in report.fallback_reason
    assert len(warnings) == 1
    assert "scoring with LightGBM" in warnings[0]
    reference, _ = scoring.score(day_rows, on_disk, FLIGHTS, LINEAGE, num_threads=2)
    assert_frame_equal(predictions, reference)
    assert predictions.get_column("scorer").unique().to_list() == ["lightgbm"]


def test_a_model_that_cannot_be_compiled_falls_back_with_a_warning(
    on_disk: model.LoadedModel, day_rows: pl.DataFrame, tmp_path: Path
) -> None:
    missing = replace(on_disk, path=tmp_path / "models" / "flights" / "gone.txt")
    warnings: list[str] = []
    predictions, stats = scoring.score(day_rows, missing, FLIGHTS, LINEAGE, num_threads=2,
                                       scorer="compiled", warn=warnings.append)
    assert stats.scorer.used == "lightgbm"
    assert stats.scorer.fallback_reason is not None
    assert "could not compile or load gone.txt" in stats.scorer.fallback_reason
    assert len(warnings) == 1
    assert predictions.get_column("scorer").unique().to_list() == ["lightgbm"]


def test_no_rows_need_no_compiler(on_disk: model.LoadedModel, day_rows: pl.DataFrame) -> None:
    predictions, stats = scoring.score(day_rows.head(0), on_disk, FLIGHTS, LINEAGE,
                                       scorer="compiled")
    assert predictions.height == 0
    assert stats.scorer.used == "lightgbm"
    assert stats.scorer.fallback_reason is None
    assert on_disk.path is not None
    assert not (on_disk.path.parent / "compiled").exists()


def test_parity_sample_adds_missing_category_rows() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    sample = compiled.parity_sample(matrix, [0, 2])
    assert sample.shape == (7, 4)
    assert sample.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(sample[:3], matrix)
    assert np.isnan(sample[3:6, [0, 2]]).all()
    np.testing.assert_array_equal(sample[3:6, [1, 3]], matrix[:, [1, 3]])
    assert np.isnan(sample[6]).all()


def test_stride_rows_spread_over_the_whole_partition() -> None:
    np.testing.assert_array_equal(compiled.stride_rows(5, 10), np.arange(5))
    picked = compiled.stride_rows(1_000_001, 2_000)
    assert len(picked) == 2_000
    assert picked[0] == 0
    assert picked[-1] == 1_000_000
    assert (np.diff(picked) > 0).all()


def _compile_in_child(model_path: str, version: str, queue: multiprocessing.Queue) -> None:
    queue.put(compiled.load_or_compile(Path(model_path), version).compiled_now)


def test_concurrent_processes_compile_once(on_disk: model.LoadedModel) -> None:
    assert on_disk.path is not None
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    children = [spawn.Process(target=_compile_in_child,
                              args=(str(on_disk.path), on_disk.version, queue))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in children) == [False, True]
