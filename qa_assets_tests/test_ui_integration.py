"""`dagster dev` for real: webserver and daemon on a free loopback port with a temporary DAGSTER_HOME.

A deployment event dropped into the landing folder starts a run through the deployment sensor, and the run
succeeds (seen through the GraphQL API); a partition is launched as the UI's "Materialize" button does; the
asset graph is opened in headless Chromium and a screenshot saved. Everything started is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SPAN_LINE = json.dumps({"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "cart"}}]}, "scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7", "name": "GET /cart", "kind": 2,
        "startTimeUnixNano": "1709633700000000000", "endTimeUnixNano": "1709633700005000000", "status": {}}]}]}]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cdevent(event_id: str) -> str:
    return json.dumps({
        "context": {"version": "0.4.1", "id": event_id, "source": "/ci", "type": "dev.cdevents.service.deployed.0.2.0",
                    "timestamp": "2024-03-05T10:01:00Z"},
        "subject": {"id": "prod/cart", "source": "/ci", "type": "service",
                    "content": {"environment": {"id": "prod"}, "artifactId": "pkg:oci/cart@sha256:abc?tag=1.2.0"}},
    })


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    base = tmp_path_factory.mktemp("dev")
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    landing = base / "landing"
    (landing / "otlp").mkdir(parents=True)
    (landing / "otlp" / "t.jsonl").write_text(SPAN_LINE + "\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "QA_ASSETS_LANDING": str(landing),
           "QA_ASSETS_WAREHOUSE": str(base / "wh.duckdb"), "QA_ASSETS_ARTIFACTS": str(base / "artifacts"),
           "QA_ASSETS_DATA_DIR": str(base / "data"), "QA_ASSETS_SETTLE_SECONDS": "0"}
    dagster = Path(sys.executable).with_name("dagster")
    log = open(base / "dagster-dev.log", "w")
    process = subprocess.Popen([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {(base / 'dagster-dev.log').read_text()[-3000:]}")
            time.sleep(1)
        else:
            raise RuntimeError("dagster dev did not answer /server_info within 180 s")
        yield {"url": url, "landing": landing, "base": base}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def _location(url: str) -> tuple[str, str]:
    data = gql(url, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    node = data["repositoriesOrError"]["nodes"][0]
    return node["location"]["name"], node["name"]


def _wait_for_runs(url: str, tags: list[dict], want: int, timeout_s: float = 240) -> list[dict]:
    query = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
               runId status tags { key value } } } } }"""
    deadline = time.monotonic() + timeout_s
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = gql(url, query, {"filter": {"tags": tags}})["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        if len(done) >= want and len(done) == len(runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"runs did not finish in {timeout_s} s: {runs}")


def test_asset_graph_has_every_stage(dagster_dev):
    data = gql(dagster_dev["url"], "{ assetNodes { assetKey { path } groupName } }")
    groups = {node["groupName"] for node in data["assetNodes"]}
    assert {"telemetry", "signals"} <= groups


def test_partition_materializes_from_the_ui(dagster_dev):
    url = dagster_dev["url"]
    location, repository = _location(url)
    land = gql(url, """mutation Launch($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
               {"p": {"selector": {"repositoryLocationName": location, "repositoryName": repository,
                                   "pipelineName": "land_telemetry"},
                      "executionMetadata": {"tags": [{"key": "test", "value": "ui-land"}]}}})
    assert land["launchPipelineExecution"]["__typename"] == "LaunchRunSuccess", land
    assert _wait_for_runs(url, [{"key": "test", "value": "ui-land"}], 1)[0]["status"] == "SUCCESS"
    hour = gql(url, """mutation Launch($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
               {"p": {"selector": {"repositoryLocationName": location, "repositoryName": repository,
                                   "pipelineName": "hourly_graph"},
                      "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2024-03-05-10:00"},
                                                     {"key": "test", "value": "ui-hour"}]}}})
    assert hour["launchPipelineExecution"]["__typename"] == "LaunchRunSuccess", hour
    assert _wait_for_runs(url, [{"key": "test", "value": "ui-hour"}], 1)[0]["status"] == "SUCCESS"


def test_deployment_event_triggers_a_successful_run(dagster_dev):
    url = dagster_dev["url"]
    location, repository = _location(url)
    started = gql(url, """mutation Start($s: SensorSelector!) { startSensor(sensorSelector: $s) {
        __typename ... on Sensor { name } ... on PythonError { message } } }""",
                  {"s": {"repositoryLocationName": location, "repositoryName": repository,
                         "sensorName": "deployment_sensor"}})
    assert started["startSensor"]["__typename"] == "Sensor", started
    folder = dagster_dev["landing"] / "deployments"
    folder.mkdir(exist_ok=True)
    (folder / "deploy.json").write_text(_cdevent("ev-it-1"))
    runs = _wait_for_runs(url, [{"key": "qa-assets/change", "value": "ev-it-1"}], 2)
    assert {r["status"] for r in runs} == {"SUCCESS"}


def test_the_ui_shows_the_asset_graph_in_a_browser(dagster_dev, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get when it can)")
    from playwright.sync_api import sync_playwright

    screenshot = ROOT / "data" / "ui-asset-graph.png"
    screenshot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dagster_dev['url']}/asset-groups", wait_until="networkidle", timeout=120_000)
            page.goto(f"{dagster_dev['url']}/asset-groups", wait_until="networkidle", timeout=120_000)
            for group in ("telemetry", "signals"):
                page.get_by_text(group, exact=False).first.wait_for(timeout=60_000)
            skip = page.get_by_role("button", name="Skip")
            if skip.count():
                skip.first.click()
            page.wait_for_timeout(3000)
            page.screenshot(path=str(screenshot), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    assert "telemetry" in text and "signals" in text
