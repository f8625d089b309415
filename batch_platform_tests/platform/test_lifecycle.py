"""Model lifecycle on a real lake: champion, challenger, promotion, rollback, models.promotions.

Models are real: trained on three real flights days by the model stage's own function, their
files under a data directory, their registry rows as the model asset writes them. Every write
goes through ``Lake.commit``, as the Dagster shell and the CLI will call it; every refusal is
checked to leave the registry, the history and the lake's snapshots as they were.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from batch_platform.platform.models import booster as model
from batch_platform.platform.models import gate, registry
from batch_platform.platform.models.objectives import objective
from batch_platform.platform.models.training import BuiltModel, build_model
from batch_platform.platform.storage import lake as lakes
from batch_platform_tests.flights import FLIGHTS, USE_CASE
from batch_platform_tests.platform.support import DAY_1, DAY_2, DAY_3
from batch_platform_tests.platform.test_lake_postgres import Server, postgres  # noqa: F401

TRAIN_WINDOW = (DAY_1, DAY_2)
VALID_WINDOW = (DAY_3, DAY_3)
ROUNDS = {"a": 5, "b": 10, "c": 15, "other": 7}
LABEL = FLIGHTS.label_column


@dataclass(frozen=True)
class Models:
    """Four real flights models in ``data_dir/models``; ``other`` is registered for another
    use case."""

    data_dir: Path
    built: dict[str, BuiltModel]
    feature_rows: pl.DataFrame

    def record(self, name: str) -> registry.ModelRecord:
        record = self.built[name].record
        return dataclasses.replace(record, use_case="temperature") if name == "other" else record

    def version(self, name: str) -> str:
        return self.built[name].record.model_version


@pytest.fixture(scope="module")
def built_models(tmp_path_factory: pytest.TempPathFactory, feature_rows: pl.DataFrame
                 ) -> Models:
    data_dir = tmp_path_factory.mktemp("lifecycle") / "data"
    train = feature_rows.filter(pl.col("partition_date") <= TRAIN_WINDOW[1])
    valid = feature_rows.filter(pl.col("partition_date") == VALID_WINDOW[0])
    built = {name: build_model(USE_CASE, train, valid, TRAIN_WINDOW, VALID_WINDOW,
                               data_dir / "models", data_dir, rounds=rounds, num_threads=2,
                               run_id=f"run-{name}", code_version="test")
             for name, rounds in ROUNDS.items()}
    assert len({b.record.model_version for b in built.values()}) == len(ROUNDS)
    return Models(data_dir, built, feature_rows)


@pytest.fixture
def models(built_models: Models, tmp_path: Path) -> Models:
    """The models in a data directory of this test's own (a test may damage a file)."""
    data_dir = tmp_path / "data"
    shutil.copytree(built_models.data_dir / "models", data_dir / "models")
    return dataclasses.replace(built_models, data_dir=data_dir)


@pytest.fixture
def lake(tmp_path: Path) -> lakes.Lake:
    folder = tmp_path / "lake"
    return lakes.Lake(f"sqlite:{folder / 'catalog.sqlite'}", folder / "files",
                      lock_timeout_seconds=30)


def commit(lake: lakes.Lake, write: Callable[[duckdb.DuckDBPyConnection], object]) -> object:
    """Run ``write`` in one lake commit and hand back what it returned."""
    returned = []
    lake.commit(lambda con: returned.append(write(con)), "lifecycle test", {"run_id": "test"})
    return returned[0]


def promote(lake: lakes.Lake, models: Models, name: str, evidence: gate.Verdict | None,
            expected: str | None, force: bool = False, actor: str = "alice",
            reason: str = "it is better") -> registry.Promotion:
    return commit(lake, lambda con: registry.promote(
        con, "flights", models.version(name) if name in models.built else name, reason, actor,
        evidence, force, expected_champion=expected, data_dir=models.data_dir,
        models_dir=models.data_dir / "models"))


def rollback(lake: lakes.Lake, models: Models, expected: str | None, reason: str = "worse"
             ) -> registry.Promotion:
    return commit(lake, lambda con: registry.rollback(
        con, "flights", reason, "bob", expected_champion=expected, data_dir=models.data_dir,
        models_dir=models.data_dir / "models"))


def statuses(lake: lakes.Lake, models: Models) -> dict[str, str]:
    """Status by model name."""
    names = {models.version(n): n for n in models.built}
    with lake.read_only() as con:
        rows = con.execute("SELECT model_version, status FROM models.registry").fetchall()
    return {names[version]: status for version, status in rows}


def history(lake: lakes.Lake) -> pl.DataFrame:
    with lake.read_only() as con:
        return registry.history(con, "flights")


def state(lake: lakes.Lake) -> tuple:
    """Everything a refusal must leave alone: the two tables and the lake's snapshots."""
    with lake.read_only() as con:
        return (con.execute("SELECT * FROM models.registry ORDER BY model_version").fetchall(),
                con.execute("SELECT * FROM models.promotions ORDER BY ALL").fetchall(),
                len(lakes.snapshots(con)))


def verdict(models: Models, champion: str, challenger: str) -> gate.Verdict:
    """The gate's real verdict on the three days both models score (too few: refused)."""
    rows = models.feature_rows
    scored = {}
    for name in (champion, challenger):
        built = models.built[name]
        spec = FLIGHTS.for_model(built.record.feature_list)  # its own features, by name
        levels = model.levels_from_model(built.booster, spec, name)
        matrix, _ = model.feature_matrix(rows, spec, levels)
        scored[name] = rows.select("partition_date", "flight_id").with_columns(
            pl.Series("score", built.booster.predict(matrix)),
            pl.lit(models.version(name)).alias("model_version"))
    paired = gate.paired_outcomes(
        scored[champion], scored[challenger], rows.select("partition_date", "flight_id", LABEL),
        id_column="flight_id", output="score", outcome=LABEL,
        champion_version=models.version(champion), challenger_version=models.version(challenger))
    kind = objective("binary")
    return gate.judge(gate.daily_metrics(paired, kind, LABEL), kind, models.version(champion),
                      models.version(challenger), gate.GateThresholds())


@pytest.fixture
def a_champion_b_challenger(lake: lakes.Lake, models: Models) -> Models:
    commit(lake, lambda con: registry.register_champion(con, models.record("a")))
    commit(lake, lambda con: registry.register_challenger(con, models.record("b")))
    commit(lake, lambda con: registry.register_champion(con, models.record("other")))
    return models


# --- challengers -----------------------------------------------------------------------------

def test_a_challenger_is_registered_beside_the_champion(lake: lakes.Lake, models: Models
                                                        ) -> None:
    commit(lake, lambda con: registry.register_champion(con, models.record("a")))
    commit(lake, lambda con: registry.register_challenger(con, models.record("b")))
    assert statuses(lake, models) == {"a": "champion", "b": "challenger"}
    with lake.read_only() as con:
        # Scoring still resolves the champion, exactly as before challengers existed.
        assert registry.resolve(con, "flights", None)["model_version"] == models.version("a")
        assert registry.challenger(con, "flights")["model_version"] == models.version("b")
        assert registry.champion_version(con, "flights") == models.version("a")
    # A new challenger retires the previous one; the champion stays.
    commit(lake, lambda con: registry.register_challenger(con, models.record("c")))
    assert statuses(lake, models) == {"a": "champion", "b": "retired", "c": "challenger"}
    # Registering the same challenger again replaces its row.
    commit(lake, lambda con: registry.register_challenger(con, models.record("c")))
    assert statuses(lake, models) == {"a": "champion", "b": "retired", "c": "challenger"}
    # Registering a challenger is no change of champion: the history holds the first champion.
    assert history(lake).select("action", "model_version", "previous_champion").rows() == [
        ("register", models.version("a"), None)]


def test_the_champion_or_another_use_cases_model_cannot_be_a_challenger(
        lake: lakes.Lake, a_champion_b_challenger: Models) -> None:
    models = a_champion_b_challenger
    before = state(lake)
    with pytest.raises(registry.LifecycleError) as raised:
        commit(lake, lambda con: registry.register_challenger(con, models.record("a")))
    assert str(raised.value) == (f"model version {models.version('a')} is already the "
                                 "champion of flights: a challenger must be another model")
    other = dataclasses.replace(models.record("other"), use_case="flights")
    with pytest.raises(registry.LifecycleError) as raised:
        commit(lake, lambda con: registry.register_challenger(con, other))
    assert str(raised.value) == (f"model version {models.version('other')} is registered for "
                                 "use case temperature, not flights")
    assert state(lake) == before


def test_a_challenger_needs_a_champion(lake: lakes.Lake, models: Models) -> None:
    with pytest.raises(registry.LifecycleError) as raised:
        commit(lake, lambda con: registry.register_challenger(con, models.record("b")))
    assert str(raised.value) == (
        "flights has no champion to compare a challenger with: register a champion first "
        "(batch-platform train, without --challenger)")
    with lake.read_only() as con:
        assert registry.challenger(con, "flights") is None


# --- promotion and rollback history -----------------------------------------------------------

def test_promotion_and_rollback_history(lake: lakes.Lake, a_champion_b_challenger: Models
                                        ) -> None:
    models = a_champion_b_challenger
    a, b, c = (models.version(n) for n in "abc")
    refused = verdict(models, "a", "b")
    assert not refused.allowed and refused.days == 3
    started = dt.datetime.now(dt.UTC)

    # The gate refused (three days < 14): only a forced promotion goes through, with the
    # verdict and the reason recorded.
    forced = promote(lake, models, "b", refused, expected=a, force=True,
                     reason="incident: the old model is broken")
    assert statuses(lake, models) == {"a": "retired", "b": "champion", "other": "champion"}
    with lake.read_only() as con:
        assert registry.resolve(con, "flights", None)["model_version"] == b
        assert registry.challenger(con, "flights") is None

    commit(lake, lambda con: registry.register_challenger(con, models.record("c")))
    promote(lake, models, "c", None, expected=b, force=True, actor="run nightly-42",
            reason="scheduled retraining")
    assert statuses(lake, models) == {"a": "retired", "b": "retired", "c": "champion",
                                      "other": "champion"}

    # Rollback walks back: c -> b, then b -> a, then nothing is left to roll back to.
    back_to_b = rollback(lake, models, expected=c, reason="c misbehaves")
    assert (back_to_b.model_version, back_to_b.previous_champion) == (b, c)
    assert statuses(lake, models)["b"] == "champion"
    rollback(lake, models, expected=b, reason="b too")
    assert statuses(lake, models) == {"a": "champion", "b": "retired", "c": "retired",
                                      "other": "champion"}
    before = state(lake)
    with pytest.raises(registry.LifecycleError) as raised:
        rollback(lake, models, expected=a)
    assert str(raised.value) == ("rollback of flights refused: no previous champion recorded "
                                 f"in models.promotions for {a}, the champion of flights")
    assert state(lake) == before

    rows = history(lake)
    assert rows.select("sequence", "action", "model_version", "previous_champion", "actor",
                       "reason", "forced").rows() == [
        (1, "register", a, None, "run run-a", "registered as champion by training", False),
        (2, "promote", b, a, "alice", "incident: the old model is broken", True),
        (3, "promote", c, b, "run nightly-42", "scheduled retraining", True),
        (4, "rollback", b, c, "bob", "c misbehaves", False),
        (5, "rollback", a, b, "bob", "b too", False),
    ]
    assert rows["promoted_at"].is_sorted()
    assert rows["promoted_at"][1] >= started
    # The evidence: the refused verdict's figures, as JSON; what stood in for it otherwise.
    evidence = [json.loads(text) for text in rows["evidence"]]
    assert evidence[1] == json.loads(json.dumps(refused.evidence()))
    assert evidence[1]["allowed"] is False and evidence[1]["days"] == 3
    assert evidence[1]["summary"].startswith(f"refused: challenger {b} vs champion {a}")
    assert evidence[2] == {"gate": "not asked"}
    assert evidence[3] == {"rolled_back": c}
    assert evidence[0]["validation"]["auc"] == models.record("a").auc
    assert forced == registry.Promotion(**rows.row(1, named=True))
    # Another use case's champion was never touched, nor its history.
    with lake.read_only() as con:
        assert registry.history(con, "temperature")["action"].to_list() == ["register"]


def test_training_the_same_champion_again_is_no_change_of_champion(lake: lakes.Lake,
                                                                    models: Models) -> None:
    for _ in range(2):
        commit(lake, lambda con: registry.register_champion(con, models.record("a")))
    commit(lake, lambda con: registry.register_champion(con, models.record("b")))
    assert history(lake).select("action", "model_version", "previous_champion").rows() == [
        ("register", models.version("a"), None),
        ("register", models.version("b"), models.version("a"))]
    # The model asset's direct path can be rolled back too.
    rollback(lake, models, expected=models.version("b"))
    assert statuses(lake, models) == {"a": "champion", "b": "retired"}


# --- bad input: a clear message, and nothing changes ------------------------------------------

def refused(lake: lakes.Lake, action: Callable[[], object]) -> str:
    before = state(lake)
    with pytest.raises(registry.LifecycleError) as raised:
        action()
    assert state(lake) == before
    return str(raised.value)


def test_bad_promotions_are_refused_and_change_nothing(lake: lakes.Lake,
                                                       a_champion_b_challenger: Models) -> None:
    models = a_champion_b_challenger
    a, b = models.version("a"), models.version("b")
    head = f"promotion of {b} to champion of flights refused:"
    assert refused(lake, lambda: promote(lake, models, "0123456789abcdef", None, a, True)) == (
        "promotion of 0123456789abcdef to champion of flights refused: model version "
        "0123456789abcdef is not in models.registry")
    assert refused(lake, lambda: promote(lake, models, "other", None, a, True)) == (
        f"promotion of {models.version('other')} to champion of flights refused: model version "
        f"{models.version('other')} belongs to use case temperature")
    assert refused(lake, lambda: promote(lake, models, "a", None, a, True)) == (
        f"promotion of {a} to champion of flights refused: {a} is already the champion")
    # Without force: a verdict is needed, and it must allow the promotion.
    assert refused(lake, lambda: promote(lake, models, "b", None, a)) == (
        f"{head} no gate verdict given (judge the challenger on realised outcomes, or force it "
        "with a reason)")
    no_better = verdict(models, "a", "b")
    assert refused(lake, lambda: promote(lake, models, "b", no_better, a)) == (
        f"promotion of {b} to champion of flights {no_better.summary}")
    assert no_better.summary.endswith("need >= 14 days of realised outcomes, have 3")
    # The verdict must be about this challenger and this champion.
    reversed_verdict = verdict(models, "b", "a")
    assert refused(lake, lambda: promote(lake, models, "b", reversed_verdict, a, True)) == (
        f"{head} the evidence compares challenger {a} with champion {b}, not {b} with {a}")
    assert refused(lake, lambda: promote(lake, models, "b", None, a, True, reason=" ")) == (
        f"{head} give a reason")
    assert refused(lake, lambda: promote(lake, models, "b", None, a, True, actor="")) == (
        f"{head} give a actor")
    # A retired version: promote the challenger, or roll back.
    commit(lake, lambda con: registry.register_challenger(con, models.record("c")))
    assert refused(lake, lambda: promote(lake, models, "b", None, a, True)) == (
        f"{head} {b} is retired; promote the current challenger, or roll back to return to the "
        "previous champion")


def test_a_model_file_that_no_longer_matches_is_refused(lake: lakes.Lake,
                                                        a_champion_b_challenger: Models) -> None:
    models = a_champion_b_challenger
    a, b = models.version("a"), models.version("b")
    path = models.data_dir / models.record("b").model_path
    path.write_text(path.read_text() + "\n")
    message = refused(lake, lambda: promote(lake, models, "b", None, a, True))
    assert message.startswith(f"promotion of {b} to champion of flights refused: model file "
                              f"{path} does not match its registered version {b} (content hash ")
    # The rollback target is checked the same way.
    path.unlink()
    commit(lake, lambda con: registry.register_champion(con, models.record("c")))
    (models.data_dir / models.record("a").model_path).write_text("tree\nend of trees\n")
    message = refused(lake, lambda: rollback(lake, models, expected=models.version("c")))
    assert message.startswith(f"rollback of flights refused: model file "
                              f"{models.data_dir / models.record('a').model_path} does not match")


def test_rollback_without_a_champion_or_a_registry(lake: lakes.Lake, models: Models) -> None:
    with pytest.raises(registry.LifecycleError, match=r"^rollback of flights refused: "
                                                      r"models\.registry is empty$"):
        rollback(lake, models, expected=None)
    commit(lake, lambda con: registry.register_champion(con, models.record("other")))
    assert refused(lake, lambda: rollback(lake, models, expected=None)) == (
        "rollback of flights refused: flights has no champion")


# --- two changes at once: one wins, the other names it ----------------------------------------

def test_a_promotion_read_against_an_old_champion_names_the_winner(
        lake: lakes.Lake, a_champion_b_challenger: Models) -> None:
    models = a_champion_b_challenger
    a, b, c = (models.version(n) for n in "abc")
    promote(lake, models, "b", None, expected=a, force=True, actor="alice")
    commit(lake, lambda con: registry.register_challenger(con, models.record("c")))
    when = history(lake)["promoted_at"][-1]
    message = refused(lake, lambda: promote(lake, models, "c", None, expected=a, force=True))
    assert message == (f"promotion of {c} to champion of flights refused: the champion is now "
                       f"{b} (promote by alice at {when:%Y-%m-%d %H:%M:%S} UTC), not {a} as "
                       f"read; another change won: judge against {b} and try again")
    assert refused(lake, lambda: rollback(lake, models, expected=a)).startswith(
        f"rollback of flights refused: the champion is now {b} (promote by alice at ")


def test_two_promotions_at_once_one_wins(lake: lakes.Lake, a_champion_b_challenger: Models
                                         ) -> None:
    """Two sessions of the lake, in two threads, promote the challenger both having read the
    same champion: the second transaction re-reads the champion and finds the first's."""
    models = a_champion_b_challenger
    a, b = models.version("a"), models.version("b")
    ready = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def operator(actor: str) -> None:
        with lake.read_only() as con:
            read = registry.champion_version(con, "flights")
        ready.wait()
        try:
            outcomes[actor] = promote(lake, models, "b", None, expected=read, force=True,
                                      actor=actor)
        except registry.LifecycleError as err:
            outcomes[actor] = err

    threads = [threading.Thread(target=operator, args=(actor,)) for actor in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [actor for actor, out in outcomes.items() if isinstance(out, registry.Promotion)]
    losers = [actor for actor, out in outcomes.items() if isinstance(out, Exception)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    message = str(outcomes[losers[0]])
    assert message.startswith(f"promotion of {b} to champion of flights refused: the champion "
                              f"is now {b} (promote by {winners[0]} at ")
    assert message.endswith(f"not {a} as read; another change won: judge against {b} and try "
                            "again")
    assert history(lake).select("action", "actor").rows() == [
        ("register", "run run-a"), ("promote", winners[0])]
    assert statuses(lake, models) == {"a": "retired", "b": "champion", "other": "champion"}


def test_two_promotions_at_once_on_a_postgresql_catalog(
        postgres: Server, tmp_path: Path, models: Models) -> None:  # noqa: F811 (the fixture)
    """``postgres`` is the lake tests' throwaway server. No lock on PostgreSQL: both
    transactions are open, both have promoted, before either commits. The second commit
    conflicts, runs again on the newer snapshot, and the re-read champion refuses it, naming
    the winner."""
    lake = lakes.Lake(postgres.new_catalog(), tmp_path / "pg-lake" / "files",
                      connect_timeout_seconds=5)
    commit(lake, lambda con: registry.register_champion(con, models.record("a")))
    commit(lake, lambda con: registry.register_challenger(con, models.record("b")))
    a, b = models.version("a"), models.version("b")
    both_written = threading.Barrier(2, timeout=60)
    attempts = {"alice": 0, "bob": 0}
    outcomes: dict[str, object] = {}

    def operator(actor: str) -> None:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            attempts[actor] += 1
            registry.promote(con, "flights", b, "better", actor, None, True,
                             expected_champion=a, data_dir=models.data_dir,
                             models_dir=models.data_dir / "models")
            if attempts[actor] == 1:
                both_written.wait()
        try:
            lake.commit(write, f"promote by {actor}", {"run_id": actor})
            outcomes[actor] = "promoted"
        except registry.LifecycleError as err:
            outcomes[actor] = err

    threads = [threading.Thread(target=operator, args=(actor,)) for actor in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [actor for actor, out in outcomes.items() if out == "promoted"]
    assert len(winners) == 1, outcomes
    loser = next(actor for actor in attempts if actor not in winners)
    assert attempts[loser] == 2  # the conflict made its write run again
    assert str(outcomes[loser]).startswith(
        f"promotion of {b} to champion of flights refused: the champion is now {b} (promote by "
        f"{winners[0]} at ")
    with lake.read_only() as con:
        assert registry.history(con, "flights").select("action", "actor").rows() == [
            ("register", "run run-a"), ("promote", winners[0])]
        assert registry.champion_version(con, "flights") == b
