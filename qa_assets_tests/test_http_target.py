"""The simulated HTTP target and the end-to-end validation of generated regression tests: simulated telemetry
-> defects, root causes, regression tests -> each fault's tests fail against the faulty target and pass
against the fixed one."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from qa_assets.evaluation import artifacts as evaluation
from qa_assets.simulate import FaultSpec, builtin_topologies, get_topology, simulate
from qa_assets.simulate import http_target
from qa_assets.simulate.http_target import TargetError, TargetModel, http_faults, load_ground_truth, serve_target

# One fault per HTTP symptom the simulator models: injected 5xx, slower processing, a datastore refusing
# connections, a crash-looping service without telemetry (refused and hanging connections). The latency
# regression is placed on a service with enough traffic for the detectors to see it at this scale.
SCENARIO = [FaultSpec("bad_deploy"), FaultSpec("latency_regression", service="catalog"),
            FaultSpec("dependency_outage"), FaultSpec("uninstrumented_outage")]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("http-target")
    summary = simulate(root / "landing", topology="shop", hours=1.5, scale=30, seed=5, faults=SCENARIO,
                       ground_truth=root / "ground_truth.json")
    return summary.landing_dir, summary.ground_truth_path


@pytest.fixture(scope="module")
def truth(simulated: tuple[Path, Path]) -> dict:
    return load_ground_truth(simulated[1])


@pytest.fixture(scope="module")
def evaluated(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    landing, ground_truth = simulated
    return evaluation.evaluate_on_simulation(landing, ground_truth, workdir=tmp_path_factory.mktemp("validation"))


def _route(fault: dict) -> dict:
    """Where the fault shows over HTTP: its root service's route, or the entry's when the root is a datastore."""
    return fault["http"]["root"] or fault["http"]["entry"]


def _prefix(fault: dict) -> str:
    return http_target.SERVICE_PREFIX + _route(fault)["service"]


# ------------------------------------------------------------------------------------ the target model


def test_faulty_target_shows_each_faults_http_symptom_and_fixed_does_not(truth: dict):
    faults = {f["kind"]: f for f in http_faults(truth)}
    assert set(faults) == {"bad_deploy", "latency_regression", "dependency_outage", "uninstrumented_outage"}
    for kind, fault in faults.items():
        route = _route(fault)
        answers = {}
        for version in ("faulty", "fixed"):
            model = TargetModel(truth, fault["fault_id"], version, seed=1)
            answers[version] = [model.answer(route["method"], _prefix(fault) + route["example_path"])
                                for _ in range(300)]
        failed = {v: sum(a.status is None or a.status >= 500 for a in answers[v]) / 300 for v in answers}
        median = {v: statistics.median(a.delay_ms for a in answers[v]) for v in answers}
        assert failed["fixed"] < 0.03, (kind, failed)  # the healthy baseline: rare background errors only
        params = fault["params"]
        if kind == "bad_deploy":  # the injected status at the fault's rate, on its route
            statuses = [a.status for a in answers["faulty"]]
            assert abs(statuses.count(params["status"]) / 300 - params["rate"]) < 0.1, statuses
        elif kind == "latency_regression":  # own processing several times slower, no errors
            assert median["faulty"] > 2.0 * median["fixed"] and failed["faulty"] < 0.03, median
        elif kind == "dependency_outage":  # the datastore refuses: its callers answer 5xx
            assert failed["faulty"] > 0.5, failed
        else:  # the crash-looping service: connections refused, or hanging until the caller's timeout
            lost = [a for a in answers["faulty"] if a.status is None]
            assert len(lost) / 300 > 0.5 and max(a.delay_ms for a in lost) >= 1000.0, len(lost)


def test_a_broken_contract_changes_the_callees_answer_only_when_faulty(truth: dict):
    changed = json.loads(json.dumps(truth))
    fault = next(f for f in changed["faults"] if f["kind"] == "bad_deploy")
    fault.update(kind="contract_break", params={"type": "contract", "rate": 1.0, "routes": "one"})
    route = _route(fault)
    bodies = {}
    for version in ("faulty", "fixed"):
        model = TargetModel(changed, fault["fault_id"], version)
        answer = model.answer(route["method"], _prefix(fault) + route["example_path"])
        assert answer.status == 200  # the callee itself answers; its callers fail to read the answer
        bodies[version] = answer.body
    assert bodies["fixed"] == route["example_response"] != bodies["faulty"]
    assert json.dumps(bodies["faulty"]).count('"scale": 2') == 1  # a number became an object


def test_target_refuses_what_it_cannot_serve(truth: dict):
    fault_id = http_faults(truth)[0]["fault_id"]
    with pytest.raises(TargetError, match="no fault 'F99'"):
        TargetModel(truth, "F99", "faulty")
    with pytest.raises(TargetError, match="version"):
        TargetModel(truth, fault_id, "broken")
    ci_only = json.loads(json.dumps(truth))
    ci_only["faults"][0]["params"] = {"type": "flaky", "failure_rate": 0.3}
    with pytest.raises(TargetError, match="only in CI"):
        TargetModel(ci_only, ci_only["faults"][0]["fault_id"], "faulty")
    renamed = json.loads(json.dumps(truth))
    renamed["generator"]["topology"] = "bank"
    with pytest.raises(TargetError, match="does not match"):
        TargetModel(renamed, fault_id, "faulty")


def test_target_names_no_simulated_service():
    source = Path(http_target.__file__).read_text(encoding="utf-8")
    for name in builtin_topologies():
        if name == "random":
            continue
        for service in get_topology(name).services:
            assert f'"{service.name}"' not in source and f"'{service.name}'" not in source, service.name


# ------------------------------------------------------------------------------------ over HTTP


def _get(url: str) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError):
        return None, b""


def test_target_serves_every_service_and_the_entry_routes(truth: dict):
    fault = next(f for f in http_faults(truth) if f["kind"] == "latency_regression")
    route = _route(fault)
    entry = truth["topology"]["entry"]
    entry_route = next(e for s in truth["topology"]["services"] if s["name"] == entry for e in s["endpoints"]
                       if e.startswith("GET ") and "{" not in e).split(" ", 1)[1]
    with serve_target(truth, fault["fault_id"], "fixed") as target:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", target.base_url) and not target.base_url.endswith(":0")
        status, body = _get(target.service_url(route["service"]) + route["example_path"])
        assert status == 200 and isinstance(json.loads(body), dict)
        assert _get(target.base_url + entry_route)[0] == 200  # an unprefixed route: the entry service's
        status, body = _get(target.base_url + "/no/such/route")
        assert status == 404 and json.loads(body)["error"] == "not found"
        assert target.answered["200"] == 2 and target.answered["404"] == 1
    env = evaluation.target_environment(target)
    assert env["QA_TARGET_BASE_URL"] == target.base_url
    assert env["QA_TARGET_BASE_URL_" + route["service"].upper().replace("-", "_")] == target.service_url(
        route["service"])
    bodies = {k: json.loads(v) for k, v in env.items() if k.startswith("QA_REQUEST_BODY_")}
    assert bodies and all(isinstance(b, dict) and b for b in bodies.values())  # a valid body per write route


def test_cli_serves_a_fault_until_stopped(simulated: tuple[Path, Path], truth: dict):
    fault = next(f for f in http_faults(truth) if f["kind"] == "bad_deploy")
    route = _route(fault)
    command = [sys.executable, "-c", "import sys; from qa_assets.cli import main; sys.exit(main())",  # qa-assets
               "simulate", "serve", "--ground-truth", str(simulated[1]), "--fault", fault["fault_id"],
               "--version", "faulty", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        match = re.search(r"serving faulty (\S+) \((\w+) on (\S+)\) at (http://127\.0\.0\.1:\d+)", first)
        assert match, first + process.stderr.read() if process.poll() is not None else first
        assert match.group(1, 2, 3) == (fault["fault_id"], "bad_deploy", fault["root_service"])
        url = f"{match.group(4)}{http_target.SERVICE_PREFIX}{route['service']}{route['example_path']}"
        statuses = [_get(url)[0] for _ in range(40)]
        assert fault["params"]["status"] in statuses and 200 in statuses  # the injected errors, at a rate
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a server behind
            raise
    assert process.returncode == 0


def test_cli_registers_evaluate_artifacts():
    from qa_assets.cli import build_parser

    args = build_parser(["evaluate", "artifacts"]).parse_args(["evaluate", "artifacts", "--landing", "x"])
    assert args.handler is evaluation.main and args.landing == Path("x") and args.defects == "pipeline"
    several = build_parser(["evaluate", "artifacts"]).parse_args(["evaluate", "artifacts", "--seeds", "0, 2"])
    assert several.seeds == [0, 2]
    with pytest.raises(SystemExit):
        build_parser(["evaluate", "artifacts"]).parse_args(["evaluate", "artifacts", "--seeds", "0,two"])


def test_pooled_share_counts_every_fault_of_every_seed():
    def run(*validated: bool | None) -> dict:
        rows = [{"fault_id": f"F{i}", "kind": "bad_deploy", "root_service": "s", "defects": 1, "tests": [],
                 "failed_on_faulty": v, "passed_on_fixed": v, "validated": bool(v), "detail": ""}
                for i, v in enumerate(validated)]
        return {"validation": pl.DataFrame(rows, schema=evaluation.VALIDATION)}

    pooled = evaluation.pooled_figures([run(True, True, None), run(True, False)])
    assert (pooled["faults_with_http_symptom"], pooled["faults_tested"], pooled["faults_validated"]) == (5, 4, 3)
    assert pooled["validated_share"] == 0.6 and pooled["validated_share_tested"] == 0.75
    assert evaluation.pooled_figures([])["validated_share"] is None


# ------------------------------------------------------------------------------------ end to end


def test_generated_regression_tests_fail_on_faulty_and_pass_on_fixed(evaluated: dict):
    validation = evaluated["validation"]
    report = evaluation.format_report(evaluated)
    assert evaluated["faults_with_http_symptom"] == len(SCENARIO)
    assert evaluated["faults_tested"] == len(SCENARIO), report  # every fault got an HTTP-replay test
    # a fault counts when its regression tests fail against the faulty and pass against the fixed target
    assert evaluated["validated_share"] >= 0.9, report
    assert validation["passed_on_fixed"].all(), report  # never a red suite on a healthy deployment
    print(report)


def test_validation_report_names_every_fault_and_the_share(evaluated: dict):
    report = evaluation.format_report(evaluated)
    for row in evaluated["validation"].iter_rows(named=True):
        line = next(line for line in report.splitlines() if line.startswith(row["fault_id"] + " "))
        assert row["kind"] in line and all(t in line for t in row["tests"])
    assert re.search(r"faults validated \(failed on faulty and passed on fixed\): \d\.\d{3} of 4", report)
    tests = [Path(evaluated["artifacts_dir"]) / "regression_tests" / t
             for t in evaluated["validation"]["tests"].explode().drop_nulls()]
    assert tests and all(t.is_file() for t in tests)
    assert os.environ.get("QA_TARGET_BASE_URL") is None  # the runs set it for their subprocess only
