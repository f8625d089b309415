"""Settings come from the environment once, and a bad value names the variable that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_platform.platform.models.gate import GateThresholds
from batch_platform.platform.models.lifecycle import gate_thresholds
from batch_platform.settings import Settings, SettingsError
from batch_platform_tests.flights import flights_use_case


def test_defaults_when_nothing_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    # The data directory defaults to ./data, made absolute against the working directory.
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.data_dir.is_absolute()
    assert settings.chunk_rows == 100_000
    assert settings.scoring_threads == 0
    assert settings.lock_timeout_seconds == 300.0
    assert settings.model_version is None
    # What a use case declares stays unset here: the declaration decides.
    assert (settings.max_reject_fraction, settings.explain, settings.scorer) == (None, None, None)


def test_a_use_case_fills_what_is_unset_and_the_environment_overrides_it() -> None:
    flights = flights_use_case()
    resolved = Settings.from_env({}).resolved(flights)
    assert resolved.max_reject_fraction == flights.checks.max_reject_fraction == 0.05
    assert (resolved.explain, resolved.scorer, resolved.engine) == ("all", "lightgbm", "local")
    assert resolved.audit_thresholds() == flights.checks.thresholds
    overridden = Settings.from_env({"BATCH_PLATFORM_PSI_ERROR": "100",
                                    "BATCH_PLATFORM_EXPLAIN": "riskiest"}).resolved(flights)
    assert overridden.audit_thresholds().psi_error == 100.0
    assert overridden.explain == "riskiest"
    assert overridden.audit_thresholds().psi_warn == flights.checks.thresholds.psi_warn


def test_blank_values_fall_back_to_defaults() -> None:
    settings = Settings.from_env({"BATCH_PLATFORM_CHUNK_ROWS": "  ",
                                  "BATCH_PLATFORM_EXPLAIN": ""})
    assert settings.chunk_rows == 100_000
    assert settings.explain is None


def test_data_dir_override_moves_every_path(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCH_PLATFORM_DATA_DIR": str(tmp_path / "elsewhere")})
    root = (tmp_path / "elsewhere").resolve()
    assert settings.data_dir == root
    assert settings.landing_dir == root / "landing"
    assert settings.lake_dir == root / "lake"
    assert settings.lake_catalog_uri == f"sqlite:{root / 'lake' / 'catalog.sqlite'}"
    assert settings.models_dir == root / "models"
    assert settings.dagster_home == root / "dagster"


def test_valid_overrides_are_parsed() -> None:
    settings = Settings.from_env({
        "BATCH_PLATFORM_MAX_REJECT_FRACTION": "0.2",
        "BATCH_PLATFORM_CHUNK_ROWS": " 70 ",
        "BATCH_PLATFORM_SCORING_THREADS": "2",
        "BATCH_PLATFORM_LOCK_TIMEOUT_SECONDS": "1.5",
        "BATCH_PLATFORM_MODEL_VERSION": "0123456789abcdef",
        "BATCH_PLATFORM_EXPLAIN": "predicted_positive",
        "BATCH_PLATFORM_SCORER": "compiled",
        "BATCH_PLATFORM_EXPLAIN_MAX_ROWS": "50",
        "BATCH_PLATFORM_DUCKDB_MEMORY_LIMIT": "2GB",
    })
    assert settings.duckdb_memory_limit == "2GB"
    assert settings.max_reject_fraction == 0.2
    assert settings.chunk_rows == 70
    assert settings.scoring_threads == 2
    assert settings.lock_timeout_seconds == 1.5
    assert settings.model_version == "0123456789abcdef"
    assert settings.explain == "predicted_positive"
    assert settings.scorer == "compiled"
    assert settings.explain_max_rows == 50


def test_the_gate_thresholds_come_from_the_settings() -> None:
    assert gate_thresholds(Settings.from_env({})) == GateThresholds()
    chosen = gate_thresholds(Settings.from_env({
        "BATCH_PLATFORM_GATE_MIN_DAYS": "30", "BATCH_PLATFORM_GATE_MIN_MARGIN": "0.01",
        "BATCH_PLATFORM_GATE_CONFIDENCE": "0.99", "BATCH_PLATFORM_GATE_RESAMPLES": "500"}))
    assert chosen == GateThresholds(min_days=30, min_margin=0.01, confidence=0.99,
                                    resamples=500)


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = Settings.from_env({"CHUNK_ROWS": "0", "EXPLAIN": "some"})
    assert settings.chunk_rows == 100_000
    assert settings.explain is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("MAX_REJECT_FRACTION", "1.5", "must be between 0 and 1"),
        ("MAX_REJECT_FRACTION", "-0.1", "must be between 0 and 1"),
        ("MAX_REJECT_FRACTION", "abc", "is not a valid float"),
        ("CHUNK_ROWS", "0", "must be at least 50 rows"),
        ("CHUNK_ROWS", "1", "smaller chunks spend their time on per-chunk work"),
        ("MIN_FREE_DISK_MB", "-1", "must be 0 or more megabytes"),
        ("CHUNK_ROWS", "1e3", "is not a valid int"),
        ("SCORING_THREADS", "-1", "must be 0 (all cores) or a positive number of threads"),
        ("LOCK_TIMEOUT_SECONDS", "0", "must be a positive number of seconds"),
        ("DUCKDB_MEMORY_LIMIT", "lots", "must be a size like 512MB or 2GB"),
        ("EXPLAIN", "some", "must be one of all, predicted_positive, riskiest, none"),
        ("EXPLAIN_MAX_ROWS", "0", "must be a positive number of rows"),
        ("SCORER", "lleaves", "must be one of lightgbm, compiled"),
        ("MODEL_VERSION", "xyz", "16 hex characters"),
        ("MODEL_VERSION", "0123456789ABCDEF", "16 hex characters"),
        ("GATE_MIN_DAYS", "0", "must be a positive number of days"),
        ("GATE_CONFIDENCE", "1", "must be at least 0.5 and below 1"),
        ("GATE_CONFIDENCE", "0.4", "must be at least 0.5 and below 1"),
        ("GATE_RESAMPLES", "99", "must be at least 100 resamples"),
        ("GATE_MIN_MARGIN", "a lot", "is not a valid float"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({f"BATCH_PLATFORM_{name}": value})
    message = str(raised.value)
    assert f"BATCH_PLATFORM_{name}=" in message
    assert value.strip() in message
    assert fragment in message


def test_settings_error_is_a_value_error() -> None:
    # Callers that catch ValueError (argument parsing) also catch bad settings.
    with pytest.raises(ValueError, match="BATCH_PLATFORM_EXPLAIN"):
        Settings.from_env({"BATCH_PLATFORM_EXPLAIN": "some"})


def test_with_overrides_validates(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCH_PLATFORM_DATA_DIR": str(tmp_path)})
    changed = settings.with_overrides(chunk_rows=50)
    assert changed.chunk_rows == 50
    assert changed.data_dir == settings.data_dir
    assert settings.chunk_rows == 100_000  # the original is untouched
    with pytest.raises(SettingsError, match="BATCH_PLATFORM_CHUNK_ROWS=0"):
        settings.with_overrides(chunk_rows=0)


def test_the_engine_is_local_unless_set(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCH_PLATFORM_DATA_DIR": str(tmp_path)})
    assert settings.engine is None
    assert settings.resolved(flights_use_case()).engine == "local"
    assert settings.ray_address is None
    assert settings.ray_actors == 2
    assert settings.staging_location == str(tmp_path.resolve() / "staging")


def test_ray_settings_are_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({
        "BATCH_PLATFORM_ENGINE": "ray",
        "BATCH_PLATFORM_RAY_ADDRESS": "ray://head.example:10001",
        "BATCH_PLATFORM_RAY_ACTORS": "8",
        "BATCH_PLATFORM_STAGING_URI": "relative/staging",
        "BATCH_PLATFORM_RAY_CONNECT_TIMEOUT_SECONDS": "2.5",
    })
    assert (settings.engine, settings.ray_address, settings.ray_actors) == (
        "ray", "ray://head.example:10001", 8)
    # Every node must find the same path: a relative one is made absolute here.
    assert settings.staging_location == str(tmp_path.resolve() / "relative" / "staging")
    assert settings.ray_connect_timeout_seconds == 2.5
    for address in ("auto", "10.0.0.5:6379", "127.0.0.2:40001"):
        assert Settings.from_env({"BATCH_PLATFORM_ENGINE": "ray",
                                  "BATCH_PLATFORM_RAY_ADDRESS": address}).ray_address == address
    uri = Settings.from_env({"BATCH_PLATFORM_STAGING_URI": "s3://bucket/staging"})
    assert uri.staging_location == "s3://bucket/staging"


@pytest.mark.parametrize(
    ("env", "name", "fragment"),
    [
        ({"BATCH_PLATFORM_ENGINE": "spark"}, "ENGINE", "must be one of local, ray"),
        ({"BATCH_PLATFORM_ENGINE": "ray"}, "RAY_ADDRESS", "must be set when "
         "BATCH_PLATFORM_ENGINE=ray"),
        ({"BATCH_PLATFORM_RAY_ADDRESS": "head"}, "RAY_ADDRESS",
         "must be auto, host:port or ray://host:port"),
        ({"BATCH_PLATFORM_RAY_ADDRESS": "http://head:8265"}, "RAY_ADDRESS",
         "must be auto, host:port or ray://host:port"),
        ({"BATCH_PLATFORM_RAY_ACTORS": "0"}, "RAY_ACTORS", "must be a positive number of actors"),
        ({"BATCH_PLATFORM_RAY_ACTORS": "two"}, "RAY_ACTORS", "is not a valid int"),
        ({"BATCH_PLATFORM_RAY_CONNECT_TIMEOUT_SECONDS": "0"}, "RAY_CONNECT_TIMEOUT_SECONDS",
         "must be a positive number of seconds"),
    ],
)
def test_invalid_ray_settings_name_the_variable(env: dict[str, str], name: str,
                                                fragment: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert f"BATCH_PLATFORM_{name}=" in str(raised.value)
    assert fragment in str(raised.value)


def test_a_relative_staging_path_given_in_code_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BATCH_PLATFORM_STAGING_URI='staging' must be a URI"):
        Settings(data_dir=tmp_path, staging_uri="staging").validated()


def test_a_data_directory_that_cannot_take_the_work_is_refused_before_any(tmp_path: Path
                                                                         ) -> None:
    in_a_file = tmp_path / "a-file"
    in_a_file.write_text("")
    with pytest.raises(OSError, match=(
            rf"^data directory {in_a_file}/data cannot be written \(Not a directory\): point "
            "BATCH_PLATFORM_DATA_DIR at a writable directory")):
        Settings(data_dir=in_a_file / "data").validated().require_writable_data_dir()
    huge = Settings(data_dir=tmp_path / "data", min_free_disk_mb=1e12).validated()
    with pytest.raises(OSError, match=r"MB free, below the 1,000,000,000,000 MB a run needs"):
        huge.require_writable_data_dir()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # the probe is gone
    Settings(data_dir=tmp_path / "data").validated().require_writable_data_dir()
