"""The UI as operators use it: the asset graph in a real browser, and a partition launched through
the GraphQL API the UI calls, executed by the daemon.

One `batch-platform ui` (webserver, code server and daemon) serves every test, on 127.0.0.1 and
a free port, with a copy of the prepared slice's data directory (landed files, features, a
trained model) and its instance, so the launched run has everything a daily run needs and
writes nowhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import polars as pl
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from batch_platform.platform.ingest import landing
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings
from batch_platform_tests.conftest import FIRST, WEEK, PreparedSlice, model_config
from batch_platform_tests.ui_support import (
    CHROMIUM_ARGS,
    DagsterUI,
    UIError,
    chromium_path,
    listening_sockets,
    running_dagster_ui,
)

pytestmark = pytest.mark.slow  # a browser, and `dagster dev` with its daemon

FLOW_ASSETS = ["raw/planes", "raw/airports", "raw/airlines", "raw/flights", "raw/weather",
               "features/flights", "models/flights", "predictions/flights",
               "reports/flights_daily"]
TEMPERATURE_ASSETS = ["raw/hourly_weather", "features/temperature", "models/temperature",
                      "predictions/temperature", "reports/temperature_daily"]
GRAPH_ASSETS = FLOW_ASSETS + TEMPERATURE_ASSETS
# Raw to reports of one day: what the landing sensor requests for a partition.
DAILY_ASSETS = ["raw/flights", "raw/weather", "features/flights", "predictions/flights",
                "reports/flights_daily"]
# Landed and featurized by the session fixture, but outside the week it scores.
DAY = dt.date(2013, 1, 10)
RUN_TIMEOUT_SECONDS = 300.0
# The run's steps in its run worker (the launchpad's executor choice) rather than a process
# each: the default multiprocess executor spends 5-20 s starting each of the 7 steps here.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
# The job the UI launches assets picked on the graph with (the first job they all share):
# Dagster's hidden asset job, not `flights_daily`, which it uses only from that job's page.
ASSET_JOB = "__ASSET_JOB"

SELECTED_ASSETS = """
query SelectedAssets($assetKeys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $assetKeys) {
    assetKey { path }
    groupName
    jobNames
    repository { name location { name } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name jobNames } } }
  }
}
"""
LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status jobName tags { key value } } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""
PARTITION_MATERIALIZATIONS = """
query PartitionMaterializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}
"""


@pytest.fixture(scope="module")
def ui_settings(prepared_slice: PreparedSlice, tmp_path_factory: pytest.TempPathFactory
                ) -> Settings:
    """A copy of the prepared slice for the UI's runs alone. The copy keeps the landing files'
    times, older than their loads, so the landing sensor finds no new day and requests no run
    beside the one under test."""
    copy = prepared_slice.copy_to(tmp_path_factory.mktemp("ui") / "slice")
    return Settings(data_dir=copy / "data").validated()


@pytest.fixture(scope="module")
def dagster_ui(ui_settings: Settings) -> Iterator[DagsterUI]:
    with running_dagster_ui(ui_settings.data_dir) as ui:
        # The community/"what's new" dialog would cover the graph on a new instance.
        assert ui.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield ui


@pytest.fixture
def page(dagster_ui: DagsterUI) -> Iterator[Page]:
    with sync_playwright() as playwright:
        # Debian's chromium; Playwright's own browser download is never used.
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_asset_graph_shows_every_asset_of_the_flow(dagster_ui: DagsterUI, page: Page) -> None:
    page.goto(f"{dagster_ui.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    # Groups start collapsed, one per use case; ⌥E is the graph's "Expand all groups".
    expect(page.get_by_text("temperature", exact=True).first).to_be_visible()
    page.keyboard.press("Alt+KeyE")
    nodes = page.locator('[class*="AssetNode_assetName"]')
    expect(nodes.nth(len(GRAPH_ASSETS) - 1)).to_be_visible()
    # A node shows only the last part of its key: raw/, features/, models/ and predictions/
    # all draw "flights".
    leaf_names = Counter(key.rsplit("/", 1)[-1] for key in GRAPH_ASSETS)
    assert leaf_names <= Counter(nodes.all_inner_texts()), nodes.all_inner_texts()

    # So each full key is found with the graph's "Jump to…" box, which must offer exactly one
    # asset for it and, when chosen, select that asset's node on the graph.
    jump_to = page.get_by_placeholder("Jump to…")
    selected = page.locator('[class*="AssetNode_selected"] [class*="AssetNode_assetName"]')
    for key in GRAPH_ASSETS:
        jump_to.click()
        jump_to.press("Control+a")
        page.keyboard.type(key)
        # One item, the asset: its name, then its key's prefix where the name is ambiguous.
        # A key missing from the graph gets one "No results" item instead.
        leaf = key.rsplit("/", 1)[-1]
        item = re.compile(rf"^{re.escape(leaf)}(\s|$)")
        expect(page.get_by_role("menuitem")).to_have_text([item])
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url, key=key: unquote(urlparse(url).path)
                          == f"/asset-groups/{key}")
        expect(selected).to_have_text(leaf)


def test_the_ui_and_every_server_it_starts_listen_on_localhost_only(dagster_ui: DagsterUI
                                                                   ) -> None:
    """The webserver, and the code server and daemon it starts (the code server speaks over a
    Unix socket here): loopback only, unless the user passes --host."""
    port = int(dagster_ui.url.rsplit(":", 1)[1])
    sockets = listening_sockets(dagster_ui.process.pid)
    assert ("127.0.0.1", port) in sockets
    assert {address for address, _ in sockets} <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, sockets


def test_each_use_case_is_its_own_group_with_its_own_jobs(dagster_ui: DagsterUI) -> None:
    nodes = dagster_ui.graphql(SELECTED_ASSETS, {"assetKeys": [
        {"path": k.split("/")} for k in GRAPH_ASSETS]})["assetNodes"]
    for node in nodes:
        key = "/".join(node["assetKey"]["path"])
        use_case = "flights" if key in FLOW_ASSETS else "temperature"
        assert node["groupName"] == use_case, key
        jobs = {job for job in node["jobNames"] if not job.startswith("__")}
        assert jobs and all(job.startswith(f"{use_case}_") for job in jobs), (key, jobs)


def test_partition_launched_through_graphql_is_scored_by_the_daemon(
        dagster_ui: DagsterUI, ui_settings: Settings) -> None:
    day = DAY.isoformat()
    assert FIRST < DAY < WEEK[0]  # landed and featurized, not scored by the session fixture
    params = ui_launch_params(dagster_ui, DAILY_ASSETS, {"dagster/partition": day},
                              IN_PROCESS)
    assert params["selector"]["pipelineName"] == ASSET_JOB
    launched = dagster_ui.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = launched["run"]
    run_id = run["runId"]
    assert run["jobName"] == ASSET_JOB
    assert {"key": "dagster/partition", "value": day} in run["tags"]
    # Queued, not started: only the daemon's run coordinator can take it from here.
    assert run["status"] == "QUEUED"

    status = wait_for_run(dagster_ui, run_id)
    assert status == "SUCCESS", f"run {run_id} ended {status}\n{dagster_ui.log_tail()}"

    # Dagster recorded the day as materialized by this run: what the UI's partition view shows.
    for key in DAILY_ASSETS:
        materializations = dagster_ui.graphql(PARTITION_MATERIALIZATIONS, {
            "assetKey": {"path": key.split("/")}, "partitions": [day],
        })["assetNodeOrError"]["assetMaterializations"]
        assert {"runId": run_id, "partition": day} in materializations, (key, materializations)

    # And analysts see the day, whole, in the lake.
    landed = pl.read_csv(landing.landing_file(ui_settings.landing_dir, "flights", DAY),
                         infer_schema=False).height
    with lake_of(ui_settings).read_only() as con:
        def one(sql: str) -> tuple:
            return con.execute(sql, [DAY]).fetchone()

        raw_rows, raw_runs = one("SELECT count(*), list(DISTINCT _run_id) FROM raw.flights "
                                 "WHERE partition_date = ?")
        rejected = one("SELECT count(*) FROM quarantine.flights WHERE partition_date = ?")[0]
        features = one("SELECT count(*) FROM features.flights WHERE partition_date = ?")[0]
        scored, flights, runs, low, high, late, versions = one(
            "SELECT count(*), count(DISTINCT flight_id), list(DISTINCT run_id), min(score), "
            "max(score), sum(label::INT), list(DISTINCT model_version) "
            "FROM predictions.flights WHERE partition_date = ?")
        champion = con.execute("SELECT model_version FROM models.registry "
                               "WHERE use_case = 'flights' AND status = 'champion'").fetchone()[0]
        report = one("SELECT rows, predicted_positive FROM reports.flights_daily "
                     "WHERE partition_date = ? AND segment_type = 'all'")
    assert raw_rows > 0 and raw_rows + rejected == landed
    assert raw_runs == [run_id]
    assert features == raw_rows
    assert scored == flights == features
    assert runs == [run_id]
    assert 0.0 <= low <= high <= 1.0
    assert versions == [champion]
    assert report == (scored, late)


def wait_for_run(ui: DagsterUI, run_id: str) -> str:
    """Poll the run's status as the UI does, until it ends."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        status = ui.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise UIError(f"run {run_id} still {status} after {RUN_TIMEOUT_SECONDS:.0f}s\n"
                          f"{ui.log_tail()}")
        time.sleep(1.0)


def ui_launch_params(ui: DagsterUI, keys: list[str], tags: dict[str, str],
                     run_config: dict | None = None) -> dict:
    """The ExecutionParams the UI sends for "Materialize" of assets picked on the graph, for a
    single partition (LaunchAssetExecutionButton and LaunchAssetChoosePartitionsDialog in
    Dagster 1.13's UI): the first job all of them share, every check of theirs in that job
    (checks that gate an asset cannot be left out of its run), and the partition as a tag."""
    nodes = ui.graphql(SELECTED_ASSETS, {"assetKeys": [{"path": k.split("/")} for k in keys]}
                       )["assetNodes"]
    assert sorted("/".join(n["assetKey"]["path"]) for n in nodes) == sorted(keys)
    job = next(j for j in nodes[0]["jobNames"] if all(j in n["jobNames"] for n in nodes))
    checks = [{"assetKey": {"path": n["assetKey"]["path"]}, "name": check["name"]}
              for n in nodes if n["assetChecksOrError"]["__typename"] == "AssetChecks"
              for check in n["assetChecksOrError"]["checks"]
              if not check["jobNames"] or job in check["jobNames"]]
    repository = nodes[0]["repository"]
    run_config = run_config or {}
    return {
        "mode": "default",
        "runConfigData": json.dumps(run_config),
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        "selector": {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "pipelineName": job,
            "assetSelection": [{"path": n["assetKey"]["path"]} for n in nodes],
            "assetCheckSelection": checks,
        },
    }


RUN_FAILURE = """
query RunFailure($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { eventConnection { events { __typename
      ... on ExecutionStepFailureEvent { error { cause { message } } } } } }
  }
}
"""


def test_a_challenger_trained_refused_forced_and_rolled_back_from_the_ui(
        dagster_ui: DagsterUI, ui_settings: Settings) -> None:
    """The models over time as an operator drives them from the UI: the model asset launched
    with challenger config, then the promote job (the gate refuses a challenger with no shadow
    record, with its figures), the promote job forced, and the rollback job."""
    def launch_job(job: str, config: dict) -> tuple[str, str]:
        [node] = dagster_ui.graphql(SELECTED_ASSETS, {"assetKeys": [
            {"path": ["models", "flights"]}]})["assetNodes"]
        repository = node["repository"]
        params = {"mode": "default", "runConfigData": json.dumps(config),
                  "executionMetadata": {"tags": []},
                  "selector": {"repositoryLocationName": repository["location"]["name"],
                               "repositoryName": repository["name"], "pipelineName": job}}
        launched = dagster_ui.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        return run_id, wait_for_run(dagster_ui, run_id)

    def registry_rows() -> list[tuple]:
        with lake_of(ui_settings).read_only() as con:
            return con.execute("SELECT model_version, status FROM models.registry WHERE "
                               "use_case = 'flights' ORDER BY trained_at").fetchall()

    [(champion, status)] = registry_rows()
    assert status == "champion"
    train = model_config(challenger=True) | IN_PROCESS
    params = ui_launch_params(dagster_ui, ["models/flights"], {}, train)
    launched = dagster_ui.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    status = wait_for_run(dagster_ui, launched["run"]["runId"])
    assert status == "SUCCESS", dagster_ui.log_tail()
    rows = registry_rows()
    assert rows[0] == (champion, "champion") and rows[1][1] == "challenger"
    challenger = rows[1][0]

    promote = {"ops": {"flights_promote_model": {"config": {
        "version": challenger, "reason": "trained this morning"}}}}
    run_id, status = launch_job("flights_promote", promote)
    assert status == "FAILURE"
    events = dagster_ui.graphql(RUN_FAILURE, {"runId": run_id})["runOrError"][
        "eventConnection"]["events"]
    # What the run's page shows under the failed step.
    [failure] = [e["error"]["cause"]["message"] for e in events
                 if e["__typename"] == "ExecutionStepFailureEvent"]
    assert failure.startswith(
        f"batch_platform.platform.models.registry.LifecycleError: promotion of {challenger} to "
        f"champion of flights refused: challenger {challenger} vs champion {champion}: no day "
        "with outcomes known for both; need >= "), failure
    assert registry_rows() == rows

    promote["ops"]["flights_promote_model"]["config"] |= {"force": True}
    assert launch_job("flights_promote", promote)[1] == "SUCCESS"
    assert dict(registry_rows())[challenger] == "champion"
    rollback = {"ops": {"flights_rollback_model": {"config": {"reason": "worse in production"}}}}
    run_id, status = launch_job("flights_rollback", rollback)
    assert status == "SUCCESS"
    assert dict(registry_rows())[champion] == "champion"
    with lake_of(ui_settings).read_only() as con:
        changes = con.execute("SELECT action, model_version, forced, actor FROM "
                              "models.promotions WHERE use_case = 'flights' "
                              "ORDER BY promoted_at").fetchall()
    assert [change[:3] for change in changes[-2:]] == [("promote", challenger, True),
                                                      ("rollback", champion, False)]
    assert changes[-1][3] == f"dagster run {run_id}"
