"""The simulator: valid standard formats, determinism, ground truth consistent with the data, and faults that
propagate along the call graph the way they would in production."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import junitparser
import numpy as np
import polars as pl
import pytest
import yaml

from qa_assets.lib.log_format import split_log_lines
from qa_assets.simulate import FaultSpec, simulate
from qa_assets.simulate import errors as E
from qa_assets.simulate.deployments import schedule_changes
from qa_assets.simulate.faults import FAULT_KINDS, plan_scenario, scenario_items, served_endpoints
from qa_assets.simulate.identifiers import luhn_numbers, luhn_valid
from qa_assets.simulate.logs import write_sample_log
from qa_assets.simulate.simulator import DEFAULT_START, SimulationError
from qa_assets.simulate.topology import get_topology, random_topology
from qa_assets.simulate.traffic import CLIENT, DATASTORE, SERVER, build_trees, node_parameters, simulate_tree
from qa_assets.simulate.world import World

HEX = re.compile(r"^[0-9a-f]+$")


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shop")
    summary = simulate(root / "landing", hours=1.5, scale="tiny", seed=11)
    truth = json.loads(summary.ground_truth_path.read_text())
    return summary.landing_dir, truth


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def _spans(landing: Path) -> list[tuple[str, dict]]:
    found = []
    for path in sorted((landing / "otlp").glob("traces-*")):
        for line in _lines(path):
            for resource in json.loads(line)["resourceSpans"]:
                attributes = {a["key"]: a["value"] for a in resource["resource"]["attributes"]}
                for scope in resource["scopeSpans"]:
                    for span in scope["spans"]:
                        found.append((attributes["service.name"]["stringValue"], span))
    return found


# ------------------------------------------------------------------------------------------- formats


def test_otlp_files_follow_the_json_mapping(shop_run: tuple[Path, dict]) -> None:
    landing, _ = shop_run
    keys = {"traces": "resourceSpans", "logs": "resourceLogs", "metrics": "resourceMetrics"}
    for signal, key in keys.items():
        files = sorted((landing / "otlp").glob(f"{signal}-*.jsonl"))
        assert files, f"no {signal} files"
        for path in files:
            for line in _lines(path):
                assert list(json.loads(line)) == [key]
    spans = _spans(landing)
    assert len(spans) > 500
    for _, span in spans:
        assert len(span["traceId"]) == 32 and HEX.match(span["traceId"])
        assert len(span["spanId"]) == 16 and HEX.match(span["spanId"])
        assert isinstance(span["startTimeUnixNano"], str)
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"])
        assert span["kind"] in (2, 3, 4)
        for attribute in span["attributes"]:
            if "intValue" in attribute["value"]:
                assert isinstance(attribute["value"]["intValue"], str)
    ids = {span["spanId"] for _, span in spans}
    assert all(span["parentSpanId"] in ids for _, span in spans if "parentSpanId" in span)


def test_spans_carry_semantic_conventions(shop_run: tuple[Path, dict]) -> None:
    landing, _ = shop_run
    seen: dict[int, set[str]] = {}
    for _, span in _spans(landing):
        seen.setdefault(span["kind"], set()).update(a["key"] for a in span["attributes"])
    assert {"http.request.method", "http.route", "url.path", "http.response.status_code"} <= seen[2]
    assert {"server.address", "peer.service", "db.system", "db.query.text", "db.namespace"} <= seen[3]
    assert {"messaging.system", "messaging.destination.name"} <= seen[4]
    statements = {
        a["value"]["stringValue"]
        for _, s in _spans(landing)
        for a in s["attributes"]
        if a["key"] == "db.query.text"
    }
    assert any("$1" in s for s in statements) and any(s.startswith("HGETALL") for s in statements)


def test_uninstrumented_service_only_seen_by_its_callers_and_metrics(shop_run: tuple[Path, dict]) -> None:
    landing, truth = shop_run
    blind = [
        s["name"] for s in truth["topology"]["services"] if s["kind"] == "service" and not s["instrumented"]
    ]
    assert blind
    spans = _spans(landing)
    emitting = {service for service, _ in spans}
    peers = {
        a["value"]["stringValue"] for _, s in spans for a in s["attributes"] if a["key"] == "peer.service"
    }
    metric_services = set()
    for path in (landing / "otlp").glob("metrics-*"):
        for line in _lines(path):
            for resource in json.loads(line)["resourceMetrics"]:
                for a in resource["resource"]["attributes"]:
                    if a["key"] == "service.name":
                        metric_services.add(a["value"]["stringValue"])
    for name in blind:
        assert name not in emitting
        assert name in peers
        assert name in metric_services
        assert not (landing / "logs" / name).exists()


def test_text_logs_follow_their_configured_format(shop_run: tuple[Path, dict]) -> None:
    landing, _ = shop_run
    formats = yaml.safe_load((landing / "qa-assets.yaml").read_text())["log_formats"]
    assert len(set(formats.values())) >= 4
    continuation = 0
    for service, log_format in formats.items():
        lines = [line for path in sorted((landing / "logs" / service).glob("*.log")) for line in _lines(path)]
        assert lines, service
        frame = split_log_lines(pl.Series(lines), log_format)
        matched = frame["matched"].to_list()
        assert matched[0], f"{service}: first line does not match {log_format}"
        # lines that do not match are stack-trace continuations, never log lines
        for line, ok in zip(lines, matched):
            if not ok:
                continuation += 1
                assert not re.match(r"^\d{4}[-/]\d{2}[-/]\d{2} ", line), line
    assert continuation > 0


def test_json_logs_vary_their_keys(shop_run: tuple[Path, dict]) -> None:
    landing, _ = shop_run
    key_sets = []
    for path in sorted((landing / "logs").rglob("*.jsonl")):
        documents = [json.loads(line) for line in _lines(path)]
        key_sets.append(set().union(*map(set, documents)))
    merged = set().union(*key_sets)
    assert {"msg", "message"} <= merged
    assert {"ts", "time", "@timestamp"} & merged


def test_cdevents_and_ground_truth_changes_agree(shop_run: tuple[Path, dict]) -> None:
    landing, truth = shop_run
    events = []
    for path in sorted((landing / "deployments").iterdir()):
        text = path.read_text()
        events += (
            [json.loads(line) for line in text.splitlines()]
            if path.suffix == ".jsonl"
            else [json.loads(text)]
        )
    for event in events:
        assert {"version", "id", "source", "type", "timestamp"} <= set(event["context"])
        assert event["context"]["type"].startswith("dev.cdevents.service.")
        assert event["subject"]["content"]["environment"]["id"]
    by_id = {e["context"]["id"]: e for e in events}
    assert set(by_id) == {c["event_id"] for c in truth["changes"]}
    for fault in truth["faults"]:
        if FAULT_KINDS[fault["kind"]].trigger:
            assert fault["change_id"] in by_id
            custom = by_id[fault["change_id"]]["customData"]
            assert custom["changeKind"] == (
                "config" if FAULT_KINDS[fault["kind"]].trigger == "config" else "code"
            )
    configs = [e for e in events if e.get("customData", {}).get("changeKind") == "config"]
    assert configs and all(e["subject"]["content"]["artifactId"].startswith("pkg:generic/") for e in configs)
    harmful = sum(c["harmful"] for c in truth["changes"])
    assert len(truth["changes"]) > 2 * harmful


def test_junit_reports_parse_and_carry_service_and_version(shop_run: tuple[Path, dict]) -> None:
    landing, truth = shop_run
    reports = sorted((landing / "tests").rglob("*.xml"))
    assert reports
    dialects = set()
    for path in reports:
        xml = junitparser.JUnitXml.fromfile(str(path))
        suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
        for suite in suites:
            properties = {p.name: p.value for p in suite.properties()}
            assert properties["service"] in {s["name"] for s in truth["topology"]["services"]}
            assert properties["version"]
        dialects.add(path.name.split("-")[0])
    assert len(dialects) >= 2


def test_catalog_lists_components_resources_and_tiers(shop_run: tuple[Path, dict]) -> None:
    landing, truth = shop_run
    entities = list(yaml.safe_load_all((landing / "catalog" / "catalog-info.yaml").read_text()))
    kinds = Counter(e["kind"] for e in entities)
    assert kinds["Component"] >= 10 and kinds["Resource"] >= 2
    components = {e["metadata"]["name"]: e for e in entities if e["kind"] in ("Component", "Resource")}
    for service in truth["topology"]["services"]:
        entity = components[service["name"]]
        assert entity["metadata"]["annotations"]["qa-assets.io/tier"] == str(service["tier"])
        assert entity["spec"]["owner"].startswith("group:")


def test_ground_truth_is_outside_landing_and_complete(shop_run: tuple[Path, dict]) -> None:
    landing, truth = shop_run
    assert not (landing / "ground_truth.json").exists()
    assert truth["faults"]
    for fault in truth["faults"]:
        assert {
            "fault_id",
            "kind",
            "root_service",
            "start",
            "end",
            "change_id",
            "defect_type",
            "cause_kind",
            "symptoms",
            "affected_services",
            "http",
        } <= set(fault)
        assert fault["start"] < fault["end"]
    windows = sorted((f["start"], f["end"]) for f in truth["faults"] if f["kind"] != "flaky_test")
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), "faults overlap"


# ------------------------------------------------------------------------------------- determinism


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    args = {"hours": 0.5, "scale": "tiny", "seed": 4, "topology": "bank", "gzip": True}
    simulate(tmp_path / "a" / "landing", **args)
    simulate(tmp_path / "b" / "landing", **args)
    simulate(tmp_path / "c" / "landing", **{**args, "seed": 5})
    first, second, other = (_digest(tmp_path / x) for x in "abc")
    assert first == second
    assert first != other
    assert any(name.endswith(".jsonl.gz") for name in first)


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="scale"):
        simulate(tmp_path / "x" / "landing", scale="enormous", hours=0.1)
    with pytest.raises(SimulationError, match="outside the landing"):
        simulate(tmp_path / "y", hours=0.1, ground_truth=tmp_path / "y" / "truth.json")


# ------------------------------------------------------------------------------------ propagation


def _one_minute(topology_name: str, spec: FaultSpec, requests: int = 3000):
    topology = get_topology(topology_name)
    rng = np.random.default_rng(0)
    plan = plan_scenario([spec], topology, 120, rng)
    changes, versions = schedule_changes(topology, plan, 120, DEFAULT_START, rng)
    world = World(topology, plan, changes, versions, 0, seed=0)
    fault = plan.faults[0]
    for minute in range(fault.start_min + 1):
        state = world.step(minute)
    index = {s.name: i for i, s in enumerate(topology.services)}
    baseline = np.zeros(len(topology.services))
    outcomes = [
        simulate_tree(
            tree,
            requests,
            state,
            node_parameters(tree, state, baseline),
            rng,
            np.array([s.proxy for s in topology.services]),
        )
        for tree in build_trees(topology)
    ]
    return topology, index, fault, outcomes


def test_contract_break_fails_callers_while_callee_stays_healthy() -> None:
    topology, index, fault, outcomes = _one_minute("shop", FaultSpec("contract_break", service="currency"))
    root = index[fault.service]
    callee_errors = callee_requests = caller_errors = caller_requests = 0
    for outcome in outcomes:
        tree = outcome.tree
        for j in range(tree.size):
            here = outcome.present[j]
            if tree.kind[j] == SERVER and tree.service[j] == root:
                callee_requests += int(here.sum())
                callee_errors += int((outcome.code[j][here] != 0).sum())
            if tree.kind[j] == SERVER and any(tree.callee[c] == root for c in tree.children[j]):
                caller_requests += int(here.sum())
                caller_errors += int((outcome.code[j][here] == E.CONTRACT).sum())
    assert callee_errors < 0.005 * callee_requests  # only the rare background failures of its cache calls
    assert caller_errors > 0.1 * caller_requests


def test_datastore_outage_shows_as_connection_errors_in_callers() -> None:
    topology, index, fault, outcomes = _one_minute(
        "shop", FaultSpec("dependency_outage", service="cart-redis")
    )
    root = index["cart-redis"]
    refused = calls = upstream = 0
    for outcome in outcomes:
        tree = outcome.tree
        for j in range(tree.size):
            here = outcome.present[j]
            if tree.kind[j] == DATASTORE and tree.callee[j] == root:
                calls += int(here.sum())
                refused += int((outcome.code[j][here] == E.REFUSED).sum())
            if tree.kind[j] == SERVER and tree.service[j] == index["cart"]:
                upstream += int((outcome.code[j][here] == E.UPSTREAM_DB).sum())
    assert refused > 0.8 * calls
    assert upstream > 0
    entry = [o for o in outcomes if o.tree.size > 1]
    assert any((o.status[0][o.present[0]] >= 500).mean() > 0.3 for o in entry)


def test_latency_adds_up_along_the_call_tree() -> None:
    topology, index, fault, outcomes = _one_minute("shop", FaultSpec("latency_regression", service="catalog"))
    for outcome in outcomes:
        tree = outcome.tree
        for j in range(tree.size):
            if tree.kind[j] != SERVER:
                continue
            sequential = sum(
                np.where(outcome.present[c], outcome.duration_ms[c], 0)
                for c in tree.children[j]
                if not tree.parallel[c]
            )
            here = outcome.present[j]
            if isinstance(sequential, np.ndarray):
                assert (outcome.duration_ms[j][here] >= sequential[here] - 1e-6).all()
    catalog = index["catalog"]
    slow = [
        o.duration_ms[j][o.present[j]].mean()
        for o in outcomes
        for j in range(o.tree.size)
        if o.tree.kind[j] == SERVER and o.tree.service[j] == catalog and o.present[j].any()
    ]
    assert np.mean(slow) > 5.0  # its own time is ~1.5-3 ms without the regression


def test_uninstrumented_nodes_are_not_emitted() -> None:
    topology = get_topology("bank")
    blind = {i for i, s in enumerate(topology.services) if not s.instrumented}
    for tree in build_trees(topology):
        for j in range(tree.size):
            if tree.kind[j] == SERVER and int(tree.service[j]) in blind:
                assert not tree.emit[j]
            if tree.kind[j] == CLIENT and int(tree.callee[j]) in blind:
                assert tree.emit[j]


# ----------------------------------------------------------------------------------- plans, misc


def test_random_scenarios_differ_by_seed_and_never_overlap() -> None:
    topology = get_topology("shop")
    kinds = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        plan = plan_scenario(scenario_items("random", rng, 24), topology, 1440, rng)
        windows = sorted((f.start_min, f.end_min) for f in plan.faults if f.kind.in_production)
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))
        kinds.add(tuple(f.kind.name for f in plan.faults))
    assert len(kinds) > 3


def test_random_topologies_are_layered_and_valid() -> None:
    for seed in range(5):
        topology = random_topology(12 + seed, seed)
        kinds = Counter(s.kind for s in topology.services)
        assert kinds["service"] == 12 + seed and kinds["database"] >= 1 and kinds["cache"] >= 1
        assert any(not s.instrumented for s in topology.workloads)
        trees = build_trees(topology)
        reached = {int(t.service[j]) for t in trees for j in range(t.size)}
        assert len(reached) == len(topology.workloads)


def test_faults_on_one_route_pick_a_route_requests_reach() -> None:
    for seed in range(4):
        topology = random_topology(14, seed)
        served = served_endpoints(topology)
        # every entry endpoint is served, and a few endpoints nobody calls exist to be avoided
        assert all(e.key in served[topology.entry] for e in topology.service(topology.entry).endpoints if e.weight)
        rng = np.random.default_rng(seed)
        specs = [FaultSpec(kind) for kind in ("bad_deploy", "config_error", "validation_regression")] * 3
        plan = plan_scenario(specs, topology, 24 * 60, rng)
        routed = [f for f in plan.faults if f.routes]
        assert routed
        assert all(set(f.routes) <= served[f.service] for f in routed)


def test_card_numbers_pass_luhn() -> None:
    numbers = luhn_numbers(np.random.default_rng(1), 500)
    assert all(luhn_valid(n) for n in numbers)


def test_sample_log_has_exact_lines_in_one_format(tmp_path: Path) -> None:
    path = tmp_path / "sample.log"
    log_format = write_sample_log(path, 5000, seed=3)
    lines = path.read_text().splitlines()
    assert len(lines) == 5000
    frame = split_log_lines(pl.Series(lines), log_format)
    assert frame["matched"].all()
    assert frame["Content"].n_unique() > 1000
    assert write_sample_log(tmp_path / "again.log", 5000, seed=3) == log_format
    assert (tmp_path / "again.log").read_bytes() == path.read_bytes()
