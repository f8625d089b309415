"""The models over time, as an operator drives them: ``train --challenger``, ``models``,
``models promote`` and ``models rollback``, and the same changes as Dagster jobs.

The judged slice: the prepared three-week slice with a weak champion (three rounds, trained on
2013-01-01..07, validated on 01-08..10) and a proper challenger (trained on 01-01..10,
validated on 01-11..14), registered directly, then 01-15..21 scored by the predict job: the
champion's predictions, and the challenger's in the shadow. So the gate has seven days of real
outcomes after both validation windows. It is built once per module; every test
takes its own copy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from batch_platform import cli
from batch_platform.platform.models import booster as model_core
from batch_platform.platform.models import gate, lifecycle, registry
from batch_platform.platform.models.training import BuiltModel, build_model
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.storage.warehouse import read_partitions
from batch_platform.settings import Settings
from batch_platform_tests.conftest import (
    TRAIN,
    WEEK,
    Platform,
    PreparedSlice,
    copy_platform,
    failure_messages,
    platform_at,
)
from batch_platform_tests.flights import FLIGHTS, USE_CASE

JUDGED = WEEK  # 2013-01-15..21: after both validation windows
WEAK = {"train": (dt.date(2013, 1, 1), dt.date(2013, 1, 7)),
        "valid": (dt.date(2013, 1, 8), dt.date(2013, 1, 10)), "rounds": 3}
PROPER = {"train": (dt.date(2013, 1, 1), dt.date(2013, 1, 10)),
          "valid": (dt.date(2013, 1, 11), dt.date(2013, 1, 14)), "rounds": 40}


@dataclass(frozen=True)
class Judged:
    root: Path
    first: str  # the slice's champion, retired when the weak one was registered
    weak: str  # the champion
    proper: str  # the challenger


def build(platform: Platform, recipe: dict) -> BuiltModel:
    settings = platform.settings
    with lake_of(settings).read_only() as con:
        train, valid = (read_partitions(con, USE_CASE.features_table, *recipe[window],
                                        order_by=("partition_date", FLIGHTS.id_column))
                        for window in ("train", "valid"))
    return build_model(USE_CASE, train, valid, recipe["train"], recipe["valid"],
                       settings.models_dir, settings.data_dir, rounds=recipe["rounds"],
                       num_threads=2, run_id="test", code_version="test")


@pytest.fixture(scope="module")
def judged(prepared_slice: PreparedSlice, tmp_path_factory: pytest.TempPathFactory) -> Judged:
    root = prepared_slice.copy_to(tmp_path_factory.mktemp("judged") / "slice")
    with platform_at(root) as platform:
        lake = lake_of(platform.settings)
        with lake.read_only() as con:
            first = registry.champion_version(con, "flights")
        weak, proper = build(platform, WEAK), build(platform, PROPER)
        lake.commit(lambda con: registry.register_champion(con, weak.record), "weak", {})
        lake.commit(lambda con: registry.register_challenger(con, proper.record), "proper", {})
        # The champion scores the judged week, and the challenger the same rows in the shadow.
        platform.run("flights_predict", *JUDGED)
    return Judged(root, first, weak.record.model_version, proper.record.model_version)


@pytest.fixture
def operator(judged: Judged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Platform]:
    """A copy of the judged slice, and the command pointed at it."""
    copy_platform(judged.root, tmp_path / "own")
    with platform_at(tmp_path / "own") as platform:
        monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(platform.settings.data_dir))
        monkeypatch.setenv("DAGSTER_HOME", str(platform.settings.dagster_home))
        yield platform


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def registry_state(platform: Platform) -> tuple[list[tuple], list[tuple]]:
    """Every version's status and every change of champion: what a refusal must not touch."""
    versions = platform.query("SELECT model_version, status FROM models.registry "
                              "ORDER BY ALL").rows()
    changes = platform.query("SELECT * EXCLUDE (promoted_at) FROM models.promotions "
                             "ORDER BY use_case, sequence").rows()
    return versions, changes


def verdict(platform: Platform, min_days: int = 14) -> gate.Verdict:
    """The gate's verdict on the challenger, computed from the lake without the command."""
    with lake_of(platform.settings).read_only() as con:
        champion = registry.resolve(con, USE_CASE.name, None)
        challenger = registry.challenger(con, USE_CASE.name)
        return lifecycle.judge(con, USE_CASE, champion, challenger,
                               gate.GateThresholds(min_days=min_days))


def last_change(platform: Platform) -> dict:
    return platform.query("SELECT * FROM models.promotions WHERE use_case = 'flights' "
                          "ORDER BY sequence DESC LIMIT 1").row(0, named=True)


# --- a challenger beside the champion ----------------------------------------------------------

def test_train_challenger_registers_beside_the_champion_trained_or_brought(
        operator: Platform, judged: Judged, tmp_path: Path, capsys) -> None:
    changes = registry_state(operator)[1]
    code, out, err = run(["train", "--challenger", "--train-from", "2013-01-13", "--train-to",
                          "2013-01-14", "--valid-from", "2013-01-15", "--valid-to",
                          "2013-01-15", "--rounds", "5"], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("challenger flights model ")
    with lake_of(operator.settings).read_only() as con:
        trained = registry.challenger(con, "flights")
        assert registry.champion_version(con, "flights") == judged.weak
    assert (trained["num_trees"], trained["train_start"], trained["valid_end"]) == (
        5, dt.date(2013, 1, 13), dt.date(2013, 1, 15))
    assert out.splitlines()[-1].startswith(f"challenger flights model {trained['model_version']}")
    # The model asset's data version stays the champion's: nothing downstream is out of date.
    with dg.DagsterInstance.from_config(str(operator.settings.dagster_home)) as instance:
        materialized = instance.get_latest_materialization_event(
            dg.AssetKey(["models", "flights"])).asset_materialization
    assert materialized.tags["dagster/data_version"] == judged.weak
    assert (materialized.metadata["registered_as"].value,
            materialized.metadata["model_version"].value) == (
        "challenger", trained["model_version"])

    # A file brought as the challenger: the proper model's, registered again from a copy.
    with lake_of(operator.settings).read_only() as con:
        proper_file = operator.settings.data_dir / registry.versions(con, "flights").filter(
            pl.col("model_version") == judged.proper)["model_path"][0]
    brought = tmp_path / "brought.txt"
    brought.write_bytes(proper_file.read_bytes())
    code, out, err = run(["train", "--challenger", "--model-file", str(brought),
                          "--valid-from", "2013-01-16", "--valid-to", "2013-01-16"], capsys)
    assert (code, err) == (0, "")
    versions = dict(registry_state(operator)[0])
    assert (versions[judged.proper], versions[trained["model_version"]],
            versions[judged.weak]) == ("challenger", "retired", "champion")
    # No change of champion: the history is as it was.
    assert registry_state(operator)[1] == changes
    code, out, _ = run(["models"], capsys)
    row = next(line for line in out.splitlines() if line.startswith(judged.proper))
    assert row.split()[1:5] == ["challenger", "brought", "-", "2013-01-16..2013-01-16"]
    # Judged only after its own validation day: the shadow rows of 01-15 and 01-16 do not count.
    assert row.split("  ")[-1].startswith("5 day(s) 2013-01-17..2013-01-21, better on ")


# --- the listing ------------------------------------------------------------------------------

def test_models_lists_every_version_with_its_windows_metrics_and_shadow_record(
        operator: Platform, judged: Judged, capsys) -> None:
    code, out, err = run(["models", "--use-case", "flights"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "flights (binary): 3 version(s)"
    header, *rows = lines[1:5]
    assert header.split("  ")[0] == "version" and "held-out AUC" in header
    by_version = {row.split()[0]: row for row in rows}
    assert set(by_version) == {judged.first, judged.weak, judged.proper}
    # Aligned: every column starts where its header does.
    status_at = header.index("status")
    assert {row[status_at:].split()[0] for row in rows} == {"champion", "challenger", "retired"}
    assert by_version[judged.weak].split()[1:5] == [
        "champion", "trained", "2013-01-01..2013-01-07", "2013-01-08..2013-01-10"]
    assert by_version[judged.first].split()[1:5] == [
        "retired", "trained", f"{TRAIN[0]}..{TRAIN[1]}", f"{WEEK[0]}..{WEEK[1]}"]
    with lake_of(operator.settings).read_only() as con:
        proper = registry.challenger(con, "flights")
    assert f"{proper['auc']:.4f}" in by_version[judged.proper]
    assert f"{proper['brier']:.4f}" in by_version[judged.proper]
    # The challenger's shadow record: the gate's own figures, cumulated over the judged week.
    expected = verdict(operator)
    assert expected.days == 7 and expected.rows > 5000
    auc = expected.cumulated["auc"]
    assert by_version[judged.proper].endswith(
        f"7 day(s) 2013-01-15..2013-01-21, better on {expected.days_won}, {expected.rows:,} "
        f"rows: AUC {auc['champion']:.4f} -> {auc['challenger']:.4f}, Brier "
        f"{expected.cumulated['brier']['champion']:.4f} -> "
        f"{expected.cumulated['brier']['challenger']:.4f}")
    assert by_version[judged.weak].endswith("-")
    assert lines[5] == f"gate: {expected.summary}"
    assert lines[6].startswith(f"last change: register of {judged.weak} (was {judged.first})")


def test_without_a_shadow_table_the_record_says_no_day_was_compared(
        operator: Platform, judged: Judged, capsys) -> None:
    lake_of(operator.settings).commit(
        lambda con: con.execute(f"DROP TABLE {USE_CASE.shadow_table}"), "drop", {})
    code, out, _ = run(["models"], capsys)
    assert code == 0
    assert "no day compared yet" in out
    assert ("gate: refused: challenger " in out
            and "(predictions.flights_shadow does not exist yet)" in out)


# --- promotion through the gate -------------------------------------------------------------

def test_a_promotion_the_gate_refuses_changes_nothing_and_force_records_the_verdict(
        operator: Platform, judged: Judged, capsys) -> None:
    before = registry_state(operator)
    code, out, err = run(["models", "promote", judged.proper, "--reason", "looks better"],
                         capsys)
    refused = verdict(operator)
    assert (code, out) == (1, "")
    assert err == (f"batch-platform: promotion of {judged.proper} to champion of flights "
                   f"{refused.summary}\n")
    assert "need >= 14 days of realised outcomes, have 7" in err
    assert registry_state(operator) == before

    code, out, err = run(["models", "promote", judged.proper, "--reason", "cannot wait",
                          "--force"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"promoted {judged.proper} (forced): champion of flights, was "
                          f"{judged.weak}; recorded as models.promotions row 3 by ")
    change = last_change(operator)
    assert (change["action"], change["model_version"], change["previous_champion"],
            change["forced"], change["reason"], change["actor"]) == (
        "promote", judged.proper, judged.weak, True, "cannot wait", getpass.getuser())
    recorded = json.loads(change["evidence"])
    assert recorded == json.loads(json.dumps(refused.evidence()))
    assert recorded["allowed"] is False and recorded["days"] == 7


def test_a_challenger_that_passes_the_gate_is_promoted_and_rolled_back(
        operator: Platform, judged: Judged, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_PLATFORM_GATE_MIN_DAYS", "5")
    allowed = verdict(operator, min_days=5)
    assert allowed.allowed and allowed.days_won >= 5, allowed.summary
    code, out, err = run(["models", "promote", judged.proper, "--reason", "won the week"],
                         capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"promoted {judged.proper}: champion of flights, was {judged.weak}; recorded as "
        f"models.promotions row 3 by {getpass.getuser()}", f"  gate {allowed.summary}"]
    change = last_change(operator)
    assert (change["forced"], json.loads(change["evidence"])["allowed"]) == (False, True)
    with lake_of(operator.settings).read_only() as con:
        assert registry.champion_version(con, "flights") == judged.proper
        assert registry.challenger(con, "flights") is None
    # The new champion's row keeps the record it was promoted on.
    code, out, _ = run(["models"], capsys)
    row = next(line for line in out.splitlines() if line.startswith(judged.proper))
    assert row.split()[1] == "champion"
    assert row.split("  ")[-1] == "at its promotion: " + cli.shadow_record(allowed.evidence())

    # Back to the weak champion, then to the slice's first one, then nothing before it.
    for previous in (judged.weak, judged.first):
        code, out, err = run(["models", "rollback", "--reason", "back"], capsys)
        assert (code, err) == (0, ""), err
        assert out.startswith(f"rolled back to {previous}: champion of flights")
    before = registry_state(operator)
    code, out, err = run(["models", "rollback", "--reason", "further"], capsys)
    assert (code, out) == (1, "")
    assert err == (f"batch-platform: rollback of flights refused: no previous champion "
                   f"recorded in models.promotions for {judged.first}, the champion of "
                   "flights\n")
    assert registry_state(operator) == before
    history = operator.query("SELECT action, model_version, previous_champion, actor "
                             "FROM models.promotions ORDER BY sequence").rows()
    user = getpass.getuser()
    assert history[2:] == [("promote", judged.proper, judged.weak, user),
                           ("rollback", judged.weak, judged.proper, user),
                           ("rollback", judged.first, judged.weak, user)]


def test_evidence_the_gate_cannot_judge_refuses_and_force_records_why(
        operator: Platform, judged: Judged, capsys) -> None:
    # The challenger's shadow scoring of one day lost rows: the models scored different rows.
    lake_of(operator.settings).commit(lambda con: con.execute(
        f"DELETE FROM {USE_CASE.shadow_table} WHERE partition_date = '2013-01-17' "
        "AND flight_id IN (SELECT flight_id FROM predictions.flights_shadow "
        "WHERE partition_date = '2013-01-17' ORDER BY flight_id LIMIT 3)"), "damage", {})
    before = registry_state(operator)
    code, out, err = run(["models", "promote", judged.proper, "--reason", "try"], capsys)
    assert (code, out) == (1, "")
    assert err == (
        f"batch-platform: promotion of {judged.proper} to champion of flights refused: "
        f"champion {judged.weak} and challenger {judged.proper} did not score the same rows on "
        "2013-01-17: 3 row(s) by one only (or a null score); the gate compares models on the "
        "same rows: rescore that day with both; or force it with a reason\n")
    assert registry_state(operator) == before
    code, out, err = run(["models", "promote", judged.proper, "--reason", "urgent", "--force"],
                         capsys)
    assert (code, err) == (0, "")
    change = last_change(operator)
    assert change["forced"] and json.loads(change["evidence"]) == {
        "gate": f"could not judge: champion {judged.weak} and challenger {judged.proper} did "
                "not score the same rows on 2013-01-17: 3 row(s) by one only (or a null "
                "score); the gate compares models on the same rows: rescore that day with both"}


# --- bad input: one line, exit 1, nothing changed ---------------------------------------------

def test_bad_promotions_are_one_line_and_change_nothing(operator: Platform, judged: Judged,
                                                        capsys) -> None:
    settings = operator.settings
    other = dataclasses.replace(build(operator, {**WEAK, "rounds": 2}).record,
                                use_case="temperature")
    lake_of(settings).commit(lambda con: registry.register_champion(con, other), "other", {})
    before = registry_state(operator)
    head = "batch-platform: promotion of {} to champion of flights refused: "
    cases = {
        "0123456789abcdef": "model version 0123456789abcdef is not in models.registry",
        judged.first: f"{judged.first} is retired; promote the current challenger, or roll "
                      "back to return to the previous champion",
        other.model_version: f"model version {other.model_version} belongs to use case "
                             "temperature",
        judged.weak: f"{judged.weak} is already the champion",
    }
    for version, reason in cases.items():
        code, out, err = run(["models", "promote", version, "--reason", "try", "--force"],
                             capsys)
        assert (code, out, err) == (1, "", head.format(version) + reason + "\n")
    # The challenger's file changed after registration: its hash no longer matches.
    with lake_of(settings).read_only() as con:
        path = settings.data_dir / registry.challenger(con, "flights")["model_path"]
    path.write_text(path.read_text().replace("tree\n", "tree\n\n", 1))
    code, out, err = run(["models", "promote", judged.proper, "--reason", "try", "--force"],
                         capsys)
    assert (code, out) == (1, "")
    assert err.startswith(head.format(judged.proper) + f"model file {path} does not match "
                          f"its registered version {judged.proper}")
    assert err.count("\n") == 1
    assert registry_state(operator) == before


def test_a_challenger_file_with_other_features_is_refused_before_any_run(
        operator: Platform, tmp_path: Path, capsys) -> None:
    booster = model_core.train(
        operator.query("SELECT * FROM features.flights WHERE partition_date <= ?",
                       [WEAK["train"][1]]),
        dataclasses.replace(FLIGHTS, feature_columns=tuple(
            c for c in FLIGHTS.feature_columns if c != "carrier"), categorical_columns=tuple(
            c for c in FLIGHTS.categorical_columns if c != "carrier")),
        rounds=2, num_threads=2)
    brought = tmp_path / "fewer.txt"
    brought.write_text(model_core.model_text(booster))
    before = registry_state(operator)
    code, out, err = run(["train", "--challenger", "--model-file", str(brought)], capsys)
    assert (code, out) == (1, "")  # no run started: it would have printed its name
    assert err == (f"batch-platform: model file {brought} does not match the flights feature "
                   "spec: missing features ['carrier']\n")
    assert registry_state(operator) == before


# --- the same changes as Dagster jobs -------------------------------------------------------

def test_the_promote_and_rollback_jobs_go_through_the_gate_and_record_their_run(
        operator: Platform, judged: Judged) -> None:
    def promote(settings: Settings | None = None) -> dg.ExecuteInProcessResult:
        config = {"version": judged.proper, "reason": "won the week"}
        return operator.run("flights_promote", settings=settings, raise_on_error=False,
                            run_config={"ops": {"flights_promote_model": {"config": config}}})

    before = registry_state(operator)
    refused = promote()
    assert not refused.success
    assert failure_messages(refused) == (
        f"flights_promote_model: LifecycleError: promotion of {judged.proper} to champion of "
        f"flights {verdict(operator).summary}")
    assert registry_state(operator) == before

    allowed = promote(operator.settings.with_overrides(gate_min_days=5))
    assert allowed.success
    change = last_change(operator)
    assert (change["action"], change["model_version"], change["previous_champion"],
            change["actor"], change["forced"]) == (
        "promote", judged.proper, judged.weak, f"dagster run {allowed.run_id}", False)
    # The op's output carries what it did, for the run's page in the UI.
    metadata = next(e.step_output_data.metadata for e in allowed.all_node_events
                    if e.is_successful_output)
    assert metadata["champion"].value == judged.proper
    assert metadata["gate"].value == json.loads(change["evidence"])["summary"]
    assert metadata["gate"].value.startswith("allowed: ")

    back = operator.run("flights_rollback", run_config={
        "ops": {"flights_rollback_model": {"config": {"reason": "worse in production"}}}})
    change = last_change(operator)
    assert (change["action"], change["model_version"], change["previous_champion"],
            change["actor"], change["reason"]) == (
        "rollback", judged.weak, judged.proper, f"dagster run {back.run_id}",
        "worse in production")
    with lake_of(operator.settings).read_only() as con:
        assert registry.champion_version(con, "flights") == judged.weak
