"""The optional compiled scorer: the LightGBM model compiled to native code with lleaves.

lleaves turns every tree into machine code for this CPU; on the shipped binary model it
scores about ten times as many rows a second as ``Booster.predict`` on the same two cores.
It is trusted only after a parity check against ``Booster.predict`` on a sample of the
partition being scored; any failure (no compiler, a compile error, a bad artifact, a
difference above ``PARITY_TOLERANCE``) falls back to LightGBM with a warning, never to an
unchecked score.

The compiled object code is cached next to the model file, under
``compiled/<model version>-<cpu>.o``, so a model is compiled once per CPU and reused by every
run and process. The artifact carries a header (model version, CPU key, SHA-256 of the code)
that is checked before LLVM ever sees the bytes: a truncated or foreign file is recompiled,
not loaded. Compilation runs under a file lock and publishes with an atomic rename, so
concurrent runs compile once and never read half a file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from batch_platform.platform.files import exclusive_lock, write_bytes_atomic

if TYPE_CHECKING:
    import lightgbm as lgb

LOG = logging.getLogger(__name__)

LIGHTGBM = "lightgbm"
COMPILED = "compiled"
# The bar for identical output; lleaves in float64 measured ~1e-15 on the shipped model.
PARITY_TOLERANCE = 1e-6
PARITY_SAMPLE_ROWS = 2_000
# Compiling the shipped 300-tree model takes ~10 s; a larger forest can take a minute or more.
COMPILE_LOCK_TIMEOUT_SECONDS = 900.0
MAGIC = b"batch_platform lleaves artifact v1\n"


class Scorer(Protocol):
    """Anything that turns a feature matrix into probabilities, one per row."""

    name: str

    def predict(self, matrix: np.ndarray, num_threads: int) -> np.ndarray: ...


@dataclass(frozen=True)
class LightGBMScorer:
    booster: lgb.Booster
    name: str = LIGHTGBM

    def predict(self, matrix: np.ndarray, num_threads: int) -> np.ndarray:
        return self.booster.predict(matrix, num_threads=num_threads)


@dataclass(frozen=True)
class CompiledScorer:
    model: Any  # lleaves.Model, compiled
    artifact: Path
    name: str = COMPILED

    def predict(self, matrix: np.ndarray, num_threads: int) -> np.ndarray:
        # lleaves hands the raw buffer to native code: it must be C-ordered float64 and stay
        # alive for the call (a temporary copy made inside lleaves would not be kept alive).
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        jobs = num_threads or os.cpu_count() or 1
        return self.model.predict(data, n_jobs=min(jobs, max(1, len(data))))


@dataclass(frozen=True)
class ScorerReport:
    """Which scorer produced a partition's scores, and the evidence for trusting it."""

    requested: str
    used: str
    parity_max_abs_diff: float | None = None
    parity_rows: int = 0
    compiled_now: bool = field(default=False, compare=False)  # this call compiled (cache miss)
    compile_seconds: float = field(default=0.0, compare=False)
    fallback_reason: str | None = None


@dataclass(frozen=True)
class CompileResult:
    model: Any
    artifact: Path
    compiled_now: bool
    seconds: float


class ArtifactError(ValueError):
    """A cached artifact that must not be loaded: truncated, foreign or for another CPU."""


def cpu_key() -> str:
    """This CPU's name and a hash of its features and the compiler: what the code is built for."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot always detect features; the name still tells CPUs apart
        features = ""
    toolchain = (f"{features}|lleaves {importlib.metadata.version('lleaves')}"
                 f"|llvmlite {importlib.metadata.version('llvmlite')}")
    digest = hashlib.sha256(toolchain.encode()).hexdigest()[:8]
    return f"{llvm.get_host_cpu_name()}-{digest}"


def artifact_path(model_path: Path, version: str, cpu: str | None = None) -> Path:
    """Where the compiled code of model ``version`` for this CPU is cached."""
    return model_path.parent / "compiled" / f"{version}-{cpu or cpu_key()}.o"


def _pack(code: bytes, version: str, cpu: str) -> bytes:
    header = {"model_version": version, "cpu": cpu, "sha256": hashlib.sha256(code).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + code


def _unpack(payload: bytes, version: str, cpu: str, source: Path) -> bytes:
    if not payload.startswith(MAGIC):
        raise ArtifactError(f"{source} is not a compiled-model artifact")
    header_line, _, code = payload[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError:
        raise ArtifactError(f"{source} has an unreadable header") from None
    if header.get("model_version") != version or header.get("cpu") != cpu:
        raise ArtifactError(f"{source} was compiled for model {header.get('model_version')} on "
                            f"{header.get('cpu')}, not model {version} on {cpu}")
    if hashlib.sha256(code).hexdigest() != header.get("sha256"):
        raise ArtifactError(f"{source} is truncated or corrupted (checksum mismatch)")
    return code


def _lleaves_model(model_path: Path, object_file: Path) -> Any:
    """lleaves compiles into ``object_file`` when it is absent and loads it when present."""
    import lleaves

    compiled = lleaves.Model(model_file=str(model_path))
    compiled.compile(cache=str(object_file))
    return compiled


def _load_artifact(model_path: Path, artifact: Path, version: str, cpu: str) -> Any:
    code = _unpack(artifact.read_bytes(), version, cpu, artifact)
    # lleaves reads its cache from a path: hand it the verified bytes through a private file.
    fd, scratch = tempfile.mkstemp(prefix=".load-", suffix=".o", dir=artifact.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(code)
        return _lleaves_model(model_path, Path(scratch))
    finally:
        Path(scratch).unlink(missing_ok=True)


def _compile_artifact(model_path: Path, artifact: Path, version: str, cpu: str) -> Any:
    scratch = artifact.with_name(f".{artifact.name}.{os.getpid()}.compiling")
    scratch.unlink(missing_ok=True)  # lleaves would load a leftover file instead of compiling
    try:
        model = _lleaves_model(model_path, scratch)
        write_bytes_atomic(artifact, _pack(scratch.read_bytes(), version, cpu))
        return model
    finally:
        scratch.unlink(missing_ok=True)


# One compiled model per artifact per process: a range run or a benchmark loads it once.
_LOADED: dict[Path, Any] = {}


def clear_process_cache() -> None:
    _LOADED.clear()


def load_or_compile(model_path: Path, version: str) -> CompileResult:
    """The compiled model of ``version``: from this process, from the cache, or compiled now."""
    started = time.perf_counter()
    cpu = cpu_key()
    artifact = artifact_path(model_path, version, cpu)
    if artifact in _LOADED:
        return CompileResult(_LOADED[artifact], artifact, False, time.perf_counter() - started)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    compiled_now = False
    try:
        model = _load_artifact(model_path, artifact, version, cpu)
    except (FileNotFoundError, ArtifactError) as first:
        if not isinstance(first, FileNotFoundError):
            LOG.warning("recompiling: %s", first)
        lock = artifact.with_name(f".{artifact.name}.lock")
        with exclusive_lock(lock, COMPILE_LOCK_TIMEOUT_SECONDS, f"compile model {version}"):
            # Another process may have compiled it while this one waited for the lock.
            try:
                model = _load_artifact(model_path, artifact, version, cpu)
            except (FileNotFoundError, ArtifactError):
                model = _compile_artifact(model_path, artifact, version, cpu)
                compiled_now = True
    _LOADED[artifact] = model
    return CompileResult(model, artifact, compiled_now, time.perf_counter() - started)


def parity_sample(matrix: np.ndarray, categorical: list[int]) -> np.ndarray:
    """Rows of ``matrix`` as they are, with the categorical features missing, and all missing.

    Real rows prove the splits on the categories the partition holds; the missing variants
    prove the paths unknown categories and missing values take, which lleaves implements
    separately from LightGBM.
    """
    no_categories = matrix.copy()
    no_categories[:, categorical] = np.nan
    nothing_known = np.full_like(matrix[:1], np.nan)
    return np.ascontiguousarray(np.vstack([matrix, no_categories, nothing_known]))


def stride_rows(total: int, wanted: int = PARITY_SAMPLE_ROWS) -> np.ndarray:
    """Indices of up to ``wanted`` rows spread evenly over ``total``: every part is checked."""
    if total <= wanted:
        return np.arange(total)
    return np.linspace(0, total - 1, wanted).round().astype(np.int64)


def choose_scorer(
    requested: str,
    booster: lgb.Booster,
    model_path: Path | None,
    version: str,
    sample: np.ndarray,
    categorical: list[int],
    num_threads: int = 0,
    warn: Callable[[str], None] = LOG.warning,
) -> tuple[Scorer, ScorerReport]:
    """The scorer to use for a partition: the compiled one only if it matches LightGBM here."""
    fallback = LightGBMScorer(booster)
    if requested == LIGHTGBM or len(sample) == 0:  # no rows: nothing to score or to prove
        return fallback, ScorerReport(requested, LIGHTGBM)
    if model_path is None:
        reason = "the model has no registered file to compile"
        warn(f"compiled scorer unavailable, scoring with LightGBM: {reason}")
        return fallback, ScorerReport(requested, LIGHTGBM, fallback_reason=reason)
    try:
        result = load_or_compile(model_path, version)
    except Exception as err:  # any compiler failure must fall back, not fail the partition
        reason = f"could not compile or load {model_path.name}: {type(err).__name__}: {err}"
        warn(f"compiled scorer unavailable, scoring with LightGBM: {reason}")
        return fallback, ScorerReport(requested, LIGHTGBM, fallback_reason=reason)
    compiled = CompiledScorer(result.model, result.artifact)
    rows = parity_sample(sample, categorical)
    diff = float(np.max(np.abs(booster.predict(rows, num_threads=num_threads)
                               - compiled.predict(rows, num_threads))))
    report = ScorerReport(requested, COMPILED, diff, len(rows), result.compiled_now,
                          result.seconds)
    if not diff <= PARITY_TOLERANCE:  # NaN fails too
        reason = (f"parity check failed: max abs difference {diff:.3g} from Booster.predict on "
                  f"{len(rows)} rows exceeds {PARITY_TOLERANCE:g} ({result.artifact.name})")
        warn(f"compiled scorer rejected, scoring with LightGBM: {reason}")
        return fallback, ScorerReport(requested, LIGHTGBM, diff, len(rows), result.compiled_now,
                                      result.seconds, reason)
    return compiled, report
