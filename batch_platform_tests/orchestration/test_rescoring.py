"""After a change of champion, exactly the stale scored days are rescored, once, through
Dagster's staleness machinery: the model asset's data version, and the condition on predictions
that the ``<use case>_rescore_stale_days`` sensor evaluates, ticked here as the daemon ticks it.

The slice's champion was trained on 2013-01-01..14 and validated on 01-15..21, the days it
scored. A challenger validated on 01-11..17 should score 01-18..21 once it is champion: not
01-15..17, its own validation days, nor 01-11..14, never scored (the landing sensor's)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleStatus,
)

from batch_platform import cli
from batch_platform.orchestration.jobs import partition_range_tags
from batch_platform.platform.dates import days_between
from batch_platform.platform.models import registry
from batch_platform.platform.models.rescoring import stale_days
from batch_platform.platform.models.training import build_model
from batch_platform.platform.storage.lake import lake_of
from batch_platform.platform.storage.warehouse import read_partitions
from batch_platform_tests.conftest import WEEK, Platform, model_config
from batch_platform_tests.flights import USE_CASE

MODEL = dg.AssetKey(["models", "flights"])
PREDICTIONS = dg.AssetKey(["predictions", "flights"])
ROUNDS = 3  # a small challenger: what is tested is which days it scores, not how well


def day(n: int) -> dt.date:
    return dt.date(2013, 1, n)


def keys(*days: int) -> set[str]:
    return {day(n).isoformat() for n in days}


@pytest.fixture
def lake_platform(own_platform: Platform, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Platform]:
    """The condition reads the lake the environment names, as the code server's definitions
    do, and the command uses the test's Dagster instance (DAGSTER_HOME, set by the test
    instance) instead of the data directory's own."""
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(own_platform.settings.data_dir))
    monkeypatch.setattr(cli, "prepare_instance", lambda settings: None)
    yield own_platform


class Automation:
    """The ``flights_rescore_stale_days`` sensor ticked with its cursor, as the daemon does."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.repository = platform.defs.get_repository_def()
        self.sensor = self.repository.get_sensor_def("flights_rescore_stale_days")
        self.cursor: str | None = None

    def tick(self) -> set[str]:
        """The partitions of predictions the tick requested: a backfill for several days."""
        result = self.sensor.evaluate_tick(dg.build_sensor_context(
            instance=self.platform.instance, repository_def=self.repository,
            cursor=self.cursor))
        self.cursor = result.cursor
        requested: set[str] = set()
        for request in result.run_requests or []:
            if request.requires_backfill_daemon():
                subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
                assert set(subsets) == {PREDICTIONS}
                requested |= set(subsets[PREDICTIONS].get_partition_keys())
            else:
                assert request.asset_selection == [PREDICTIONS]
                requested.add(request.partition_key)
        return requested


def train_challenger(platform: Platform, train: tuple[int, int], valid: tuple[int, int]) -> str:
    config = model_config(train_start=day(train[0]).isoformat(),
                          train_end=day(train[1]).isoformat(),
                          valid_start=day(valid[0]).isoformat(),
                          valid_end=day(valid[1]).isoformat(), rounds=ROUNDS, challenger=True)
    platform.run("flights_train", run_config=config)
    with lake_of(platform.settings).read_only() as con:
        return registry.challenger(con, "flights")["model_version"]


def promote_by_job(platform: Platform, version: str) -> None:
    config = {"version": version, "reason": "rescoring test", "force": True}
    platform.run("flights_promote",
                 run_config={"ops": {"flights_promote_model": {"config": config}}})


def rescore(platform: Platform, requested: set[str]) -> int:
    """Run the requested days as the sensor's backfill does, one run per range of days; the
    storage id before them."""
    before = platform.instance.event_log_storage.get_maximum_record_id() or 0
    days = sorted(dt.date.fromisoformat(key) for key in requested)
    ranges: list[list[dt.date]] = []
    for scored in days:
        if ranges and scored - ranges[-1][-1] == dt.timedelta(days=1):
            ranges[-1].append(scored)
        else:
            ranges.append([scored])
    job = platform.defs.resolve_implicit_global_asset_job_def()
    for days_of_run in ranges:
        assert job.execute_in_process(
            instance=platform.instance, asset_selection=[PREDICTIONS],
            tags=partition_range_tags(days_of_run[0].isoformat(), days_of_run[-1].isoformat())
        ).success
    return before


def materialized_since(platform: Platform, after: int) -> dict[str, int]:
    """How many times each partition of predictions was materialized after storage id ``after``."""
    records = platform.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PREDICTIONS, after_storage_id=after), limit=1000).records
    counts: dict[str, int] = {}
    for record in records:
        partition = record.partition_key or ""
        counts[partition] = counts.get(partition, 0) + 1
    return counts


def versions_by_day(platform: Platform) -> dict[dt.date, str]:
    rows = platform.query("SELECT DISTINCT partition_date, model_version FROM "
                          "predictions.flights ORDER BY 1").rows()
    assert len(rows) == len({d for d, _ in rows}), "a day scored by two versions"
    return dict(rows)


def staleness(platform: Platform, *days: int) -> dict[int, StaleStatus]:
    """What the UI shows for those days of predictions."""
    graph = platform.defs.resolve_asset_graph()
    view = AssetGraphView(instance=platform.instance, asset_graph=graph, temporal_context=(
        TemporalContext(effective_dt=dt.datetime.now(dt.UTC), last_event_id=None)))
    resolver = CachingStaleStatusResolver(platform.instance, graph, view)
    return {n: resolver.get_status(PREDICTIONS, day(n).isoformat()) for n in days}


def model_data_version(platform: Platform) -> str | None:
    event = platform.instance.get_latest_materialization_event(MODEL)
    assert event is not None and event.asset_materialization is not None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


def test_a_promotion_rescores_the_days_after_the_new_champions_validation_window_once(
        lake_platform: Platform) -> None:
    platform = lake_platform
    first = versions_by_day(platform)[WEEK[0]]
    automation = Automation(platform)
    assert automation.tick() == set()
    challenger = train_challenger(platform, (1, 10), (11, 17))
    # A challenger beside the champion changes nothing that scoring uses.
    assert model_data_version(platform) == first
    assert automation.tick() == set()

    promote_by_job(platform, challenger)
    assert model_data_version(platform) == challenger
    with lake_of(platform.settings).read_only() as con:
        assert stale_days(con, USE_CASE) == [day(n) for n in range(18, 22)]
    # Dagster marks every day scored by the previous champion stale ...
    assert set(staleness(platform, 15, 18, 21).values()) == {StaleStatus.STALE}
    # ... and the automation requests the ones after the new champion's validation window.
    requested = automation.tick()
    assert requested == keys(18, 19, 20, 21)
    assert automation.tick() == set()  # requested once, even before it ran

    after = rescore(platform, requested)
    assert materialized_since(platform, after) == {key: 1 for key in requested}
    versions = versions_by_day(platform)
    assert versions == {**{d: first for d in days_between(day(15), day(17))},
                        **{d: challenger for d in days_between(day(18), day(21))}}
    assert staleness(platform, 18, 21) == {18: StaleStatus.FRESH, 21: StaleStatus.FRESH}
    assert automation.tick() == set()


def register_directly(platform: Platform, train: tuple[int, int], valid: tuple[int, int],
                      challenger: bool) -> str:
    """A small model trained and registered without a run (faster than the model asset)."""
    settings = platform.settings
    with lake_of(settings).read_only() as con:
        frames = [read_partitions(con, USE_CASE.features_table, day(a), day(b),
                                  order_by=("partition_date", USE_CASE.spec.id_column))
                  for a, b in (train, valid)]
    built = build_model(USE_CASE, *frames, (day(train[0]), day(train[1])),
                        (day(valid[0]), day(valid[1])), settings.models_dir, settings.data_dir,
                        rounds=ROUNDS, num_threads=1, run_id="test", code_version="test")
    register = registry.register_challenger if challenger else registry.register_champion
    lake_of(settings).commit(lambda con: register(con, built.record), "test", {})
    return built.record.model_version


def test_a_rollback_from_the_command_rescores_the_days_after_the_restored_champions_window(
        lake_platform: Platform, capsys: pytest.CaptureFixture) -> None:
    platform = lake_platform
    first = versions_by_day(platform)[WEEK[0]]
    automation = Automation(platform)
    assert automation.tick() == set()
    # A champion validated on 01-08..16 (registered outside Dagster: its data version is still
    # the slice's champion's), then a challenger promoted over it from the command.
    restored = register_directly(platform, (1, 7), (8, 16), challenger=False)
    promoted = register_directly(platform, (1, 10), (11, 17), challenger=True)
    assert cli.main(["models", "promote", promoted, "--reason", "test", "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"promoted {promoted} (forced): ")
    assert model_data_version(platform) == promoted

    assert cli.main(["models", "rollback", "--reason", "worse since"]) == 0
    assert capsys.readouterr().out.startswith(f"rolled back to {restored}: ")
    assert model_data_version(platform) == restored
    # After 01-16, every scored day holds another version: 01-17..21, not 01-15..16.
    requested = automation.tick()
    assert requested == keys(17, 18, 19, 20, 21)
    assert automation.tick() == set()

    after = rescore(platform, requested)
    assert materialized_since(platform, after) == {key: 1 for key in requested}
    assert versions_by_day(platform) == {day(15): first, day(16): first,
                                         **{d: restored for d in days_between(day(17), day(21))}}
    assert automation.tick() == set()


def test_a_day_still_being_scored_by_the_previous_champion_is_requested_once_its_run_ends(
        lake_platform: Platform) -> None:
    platform = lake_platform
    automation = Automation(platform)
    assert automation.tick() == set()
    challenger = register_directly(platform, (1, 10), (11, 17), challenger=True)
    # A run scoring 01-19 started before the promotion: it scores with the previous champion.
    job = platform.defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={PREDICTIONS})
    running = platform.instance.create_run_for_job(
        job_def=job, asset_selection=frozenset({PREDICTIONS}),
        status=dg.DagsterRunStatus.STARTED, tags=partition_range_tags("2013-01-19", "2013-01-19"))
    promote_by_job(platform, challenger)
    assert automation.tick() == keys(18, 20, 21)
    assert automation.tick() == set()
    platform.instance.report_run_failed(running)  # it ended; its day holds the old version
    assert automation.tick() == keys(19)
    assert automation.tick() == set()
