"""QA artifacts: generated regression tests run against a local HTTP server, hostile telemetry stays inert,
release-gate decisions, ticket payloads, knowledge base, KPIs and the report, on hand-made frames."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml

from qa_assets.lib import artifacts as qa
from qa_assets.lib.artifacts._common import md_code, one_line
from qa_assets.lib.ingest.tables import DEPLOYMENTS, SPANS, TEST_CASES, conform
from qa_assets.lib.rca import ROOT_CAUSES

T0 = datetime(2026, 3, 4, 10, 0)  # the defect's first_seen
HOSTILE = (
    "x''' \"\"\" \\ {} {{x}} `code` ``` <script>alert(1)</script> | a | b | @octocat #1 \n# Injected heading"
    "\r\n- [ ] task ${HOME} $(rm -rf /) %s \x00 \u2028end"
)


# ------------------------------------------------------------------------------------ builders


def span(service: str, start: datetime, *, method: str = "GET", route: str = "/items/{id}",
         path: str | None = "/items/42", status: int = 200, ms: float = 20.0, kind: str = "SERVER",
         exception: str | None = None, version: str = "1.4.0") -> dict:
    return {
        "hour": start.replace(minute=0, second=0, microsecond=0), "trace_id": f"{hash((service, start)) & 0xFFFF:032x}",
        "span_id": f"{hash((start, route)) & 0xFFFF:016x}", "service": service, "service_version": version,
        "name": f"{method} {route}", "kind": kind, "start_time": start, "end_time": start + timedelta(milliseconds=ms),
        "duration_ms": ms, "status_code": "ERROR" if status >= 500 else "UNSET", "http_method": method,
        "http_route": route, "http_status_code": status, "exception_type": exception,
        "attributes": json.dumps({"url.path": path} if path else {}),
    }


def incident_spans(service: str = "catalog", **kwargs) -> pl.DataFrame:
    """40 healthy requests in the half hour before T0 (20-39 ms), then 10 failing ones (HTTP 500)."""
    rows = [span(service, T0 - timedelta(minutes=30) + timedelta(seconds=45 * i), ms=20.0 + i % 20, **kwargs)
            for i in range(40)]
    rows += [span(service, T0 + timedelta(seconds=30 * i), status=500, ms=25.0, exception="KeyError", **kwargs)
             for i in range(10)]
    return conform(pl.DataFrame(rows), SPANS)


def defect(**overrides) -> dict:
    base = {
        "defect_id": "d-1", "fingerprint": "fp-1", "service": "catalog", "defect_type": "error_spike",
        "severity": "S2", "first_seen": T0, "last_seen": T0 + timedelta(minutes=10), "confidence": 0.9,
        "status": "open", "incident_id": "i-1", "title": "server errors on GET /items/{id}",
        "exception_type": "KeyError", "template_id": None, "template": None, "operation": None,
        "error_count": 10, "affected_requests": 10, "peak_error_rate": 0.5, "peak_latency_p95_ms": 30.0,
        "tier": "1", "type_model_version": "1", "evidence": json.dumps({"windows": 3}),
    }
    return {**base, **overrides}


def defects_frame(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows))


def cause(defect_id: str, change_id: str | None, service: str, *, kind: str = "code_change",
          confidence: float = 0.8, rank: int = 1) -> dict:
    return {"defect_id": defect_id, "incident_id": "i", "rank": rank, "service": service, "cause_kind": kind,
            "change_id": change_id, "score": confidence, "confidence": confidence, "evidence": "{}",
            "explanation": "**" + service + "** changed"}


def causes_frame(*rows: dict) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows)), ROOT_CAUSES) if rows else pl.DataFrame(schema=ROOT_CAUSES)


def deployment(event_id: str, service: str, version: str, at: datetime, *, event_type: str = "deployed",
               change_kind: str = "code") -> dict:
    return {"hour": at.replace(minute=0), "event_id": event_id, "event_type": event_type, "timestamp": at,
            "service": service, "version": version, "change_kind": change_kind, "environment": "production"}


def deployments_frame(*rows: dict) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows)), DEPLOYMENTS)


def ci_case(service: str, version: str, name: str, status: str, at: datetime, *,
              classname: str = "tests.test_api") -> dict:
    return {"hour": at.replace(minute=0), "timestamp": at, "report_id": f"r-{at:%H%M}", "suite": "suite",
            "classname": classname, "name": name, "status": status, "service": service, "version": version,
            "message": "boom" if status == "failed" else None}


def ci_frame(*rows: dict) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows)), TEST_CASES) if rows else pl.DataFrame(schema=TEST_CASES)


def windows_frame(service: str, deployed_at: datetime, *, error_rate_after: float = 0.0,
                  p95_after: float = 40.0) -> pl.DataFrame:
    """One window per minute, an hour before and 30 minutes after the deploy; 100 requests each."""
    rows = []
    for minute in range(-60, 30):
        start = deployed_at + timedelta(minutes=minute)
        after = minute >= 0
        errors = int(100 * error_rate_after) if after else 0
        rows.append({"service": service, "window_start": start, "requests": 100, "errors": errors,
                     "latency_p95_ms": p95_after if after else 40.0})
    return pl.DataFrame(rows)


def no_windows() -> pl.DataFrame:
    return pl.DataFrame(schema={"service": pl.String, "window_start": pl.Datetime("us"), "requests": pl.Int64,
                                "errors": pl.Int64, "latency_p95_ms": pl.Float64})


# ------------------------------------------------------------------------------------ running tests


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path))
        if not self.path.endswith("/qa-assets-latency-reference"):  # the replay's reference: answered at once
            time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextmanager
def target_server(status: int, delay: float = 0.0) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status, server.delay, server.seen = status, delay, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_generated(test_file: Path, env: dict[str, str]) -> dict[str, str]:
    """Run a generated module with pytest in a subprocess; outcome per test (passed/failed/skipped)."""
    report = test_file.with_suffix(".xml")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    clean["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the generated modules need pytest alone; starts faster
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=test_file.parent, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )
    assert report.exists(), result.stdout + result.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        message = next((child.get("message", "") for child in case if child.tag != "system-out"), "")
        outcomes[case.get("name")] = kind
        outcomes[case.get("name") + ":message"] = message
    outcomes["returncode"] = str(result.returncode)
    return outcomes


def outcome(outcomes: dict[str, str], prefix: str) -> str:
    found = [v for k, v in outcomes.items() if k.startswith(prefix) and not k.endswith(":message")]
    assert len(found) == 1, outcomes
    return found[0]


def message(outcomes: dict[str, str], prefix: str) -> str:
    return next(v for k, v in outcomes.items() if k.startswith(prefix) and k.endswith(":message"))


@pytest.fixture
def http_test(tmp_path: Path) -> Path:
    d = defect()
    examples = qa.example_requests(incident_spans(), d)
    source = qa.render_regression_test(d, [cause("d-1", "c-9", "catalog")], examples, samples=3,
                                       min_budget_ms=50.0)
    path = tmp_path / "test_regression_d1.py"
    path.write_text(source, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ regression tests


def test_example_requests_come_from_the_failing_spans_with_a_pre_incident_baseline():
    examples = qa.example_requests(incident_spans(), defect())
    assert len(examples) == 1
    example = examples[0]
    assert (example["method"], example["route"], example["path"]) == ("GET", "/items/{id}", "/items/42")
    assert example["failing_count"] == 10 and example["statuses_seen"] == [500]
    assert example["baseline_count"] == 40 and example["baseline_statuses"] == [200]
    assert 37.0 <= example["baseline_p95_ms"] <= 39.0  # p95 of 20..39 ms
    assert example["exception_types"] == ["KeyError"]
    assert qa.latency_budget_ms(example, margin=3.0, min_budget_ms=50.0) == pytest.approx(
        example["baseline_p95_ms"] * 3.0, abs=0.1)


def test_latency_defect_examples_are_the_requests_slower_than_the_baseline():
    rows = [span("catalog", T0 - timedelta(minutes=30) + timedelta(seconds=45 * i), ms=20.0) for i in range(40)]
    rows += [span("catalog", T0 + timedelta(seconds=30 * i), ms=300.0 if i % 2 else 20.0) for i in range(10)]
    examples = qa.example_requests(conform(pl.DataFrame(rows), SPANS), defect(defect_type="latency_regression"))
    assert examples[0]["failing_count"] == 5 and examples[0]["latency_ms"] == 300.0


def test_a_service_without_server_spans_is_replayed_from_its_callers_calls():
    rows = []
    for i in range(50):
        at = T0 - timedelta(minutes=30) + timedelta(seconds=45 * i)
        row = span("payment", at, method="POST", route=None, path=None, kind="CLIENT",
                   status=503 if at >= T0 else 200, ms=30.0)
        row.update(name="POST", peer_service="fraud-check",
                   attributes=json.dumps({"url.full": "http://fraud-check:8080/score?id=7"}))
        rows.append(row)
    examples = qa.example_requests(conform(pl.DataFrame(rows), SPANS), defect(service="fraud-check"))
    assert [(e["service"], e["method"], e["route"], e["seen_by"]) for e in examples] == [
        ("fraud-check", "POST", "/score", "callers' client spans")]
    assert examples[0]["statuses_seen"] == [503] and examples[0]["service_version"] is None  # not the caller's


def test_a_defect_found_by_ci_gets_a_rerun_of_its_failing_test(tmp_path: Path):
    at = T0 - timedelta(hours=1)
    cases = ci_frame(
        ci_case("pay", "3.0", "test_contract", "failed", at), ci_case("pay", "3.0", "test_contract", "failed",
                                                                       at + timedelta(minutes=3)),
        ci_case("pay", "3.1", "test_contract", "passed", at + timedelta(hours=1)),  # fixed later: not flaky
    )
    d = defect(service="pay", defect_type="data_validation", operation="tests.test_api::test_contract",
               exception_type=None)
    found = qa.flaky_test_case(cases, d, fuzzy=False)
    assert (found["failures"], found["flaky"], found["failed_versions"]) == (2, False, ["3.0"])
    source = qa.render_regression_test(d, [], [], test_case=found)
    assert qa.regression_test_kind(source) == "rerun" and "failed in 2 of 3 recorded runs" in source
    path = tmp_path / "test_ci_rerun.py"
    path.write_text(source, encoding="utf-8")
    module = runpy.run_path(str(path))
    assert module["COMMAND"][-1] == "tests/test_api.py::test_contract"


def test_generated_http_test_fails_while_the_service_answers_500(http_test: Path):
    with target_server(500) as server:
        outcomes = run_generated(http_test, {"QA_TARGET_BASE_URL": f"http://127.0.0.1:{server.server_port}",
                                             "QA_LATENCY_BUDGET_MS": "60000"})
    assert outcome(outcomes, "test_no_server_error") == "failure"
    # 0 of 40 failed before, 10 of 10 during: two requests tell them apart; both answered 500
    assert "2 of 2 requests failed (500; 500)" in message(outcomes, "test_no_server_error")
    assert ("GET", "/items/42") in server.seen  # the concrete path seen in telemetry was replayed
    assert outcomes["returncode"] == "1"


def test_generated_http_test_passes_once_the_service_answers_200(http_test: Path):
    with target_server(200) as server:
        # the per-service variable wins over the general one (which points at a closed port)
        outcomes = run_generated(http_test, {"QA_TARGET_BASE_URL": "http://127.0.0.1:9",
                                             "QA_TARGET_BASE_URL_CATALOG": f"http://127.0.0.1:{server.server_port}",
                                             "QA_LATENCY_BUDGET_MS": "60000"})
    assert outcome(outcomes, "test_no_server_error") == "passed"
    assert outcome(outcomes, "test_latency_within_budget") == "passed"
    assert outcomes["returncode"] == "0"


def test_generated_http_test_fails_when_the_service_is_slower_than_its_budget(http_test: Path):
    # the budget is p95 (~39 ms) x 3 = ~117 ms; a server that sleeps 400 ms cannot be faster than that
    with target_server(200, delay=0.4) as server:
        outcomes = run_generated(http_test, {"QA_TARGET_BASE_URL": f"http://127.0.0.1:{server.server_port}"})
    assert outcome(outcomes, "test_no_server_error") == "passed"
    assert outcome(outcomes, "test_latency_within_budget") == "failure"
    assert "exceeds the budget" in message(outcomes, "test_latency_within_budget")


def test_route_placeholders_are_filled_from_the_environment(tmp_path: Path):
    d = defect()
    examples = qa.example_requests(incident_spans(path=None), d)  # spans carried the route only
    path = tmp_path / "test_placeholders.py"
    path.write_text(qa.render_regression_test(d, [], examples), encoding="utf-8")
    with target_server(200) as server:
        run_generated(path, {"QA_TARGET_BASE_URL": f"http://127.0.0.1:{server.server_port}",
                             "QA_PATH_PARAM_ID": "sku 7/x", "QA_LATENCY_BUDGET_MS": "60000"})
    assert server.seen and set(server.seen) == {("GET", "/items/sku%207%2Fx")}


def test_generated_http_test_skips_with_a_clear_message_without_a_target(http_test: Path):
    outcomes = run_generated(http_test, {})
    assert outcome(outcomes, "test_no_server_error") == "skipped"
    assert "QA_TARGET_BASE_URL" in message(outcomes, "test_no_server_error")
    assert outcomes["returncode"] == "0"


def test_hostile_telemetry_stays_inert_in_the_generated_module(tmp_path: Path):
    service = "cat'a\"log\n"
    rows = incident_spans(service=service, route=HOSTILE, path=HOSTILE + "/7").to_dicts()
    rows.append(span(service, T0 + timedelta(seconds=5), method="GET /x HTTP/1.1\r\nX-Injected: 1", status=500))
    spans = conform(pl.DataFrame(rows), SPANS)
    d = defect(service=service, title=HOSTILE, operation=None, exception_type=HOSTILE, template=HOSTILE,
               defect_id=HOSTILE)
    examples = qa.example_requests(spans, d)
    assert examples and all(re.fullmatch(r"[A-Z]+", e["method"]) for e in examples)  # no injected method
    source = qa.render_regression_test(d, [cause(HOSTILE, HOSTILE, service)], examples)
    compile(source, "generated.py", "exec")
    path = tmp_path / "test_hostile.py"
    path.write_text(source, encoding="utf-8")
    module = runpy.run_path(str(path))
    assert module["DEFECT"]["title"] == HOSTILE and module["DEFECT"]["defect_id"] == HOSTILE
    assert module["REQUESTS"][0]["route"] == HOSTILE and module["REQUESTS"][0]["path"] == HOSTILE + "/7"
    assert module["ROOT_CAUSES"][0]["change_id"] == HOSTILE
    assert outcome(run_generated(path, {}), "test_no_server_error") == "skipped"  # imports and collects


def test_log_signature_test_for_a_defect_without_requests(tmp_path: Path):
    template = "payment <*> failed: `{}` \"quoted\" ''' <b>"
    d = defect(template=template, exception_type=None)
    source = qa.render_regression_test(d, [], [])
    assert qa.regression_test_kind(source) == "log_signature"
    hostile = qa.render_regression_test(defect(template=HOSTILE, exception_type=HOSTILE), [], [])
    compile(hostile, "hostile.py", "exec")
    path = tmp_path / "test_log_signature.py"
    path.write_text(source, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("ok\npayment 42 failed: `{}` \"quoted\" ''' <b> at step 3\n", encoding="utf-8")
    assert outcome(run_generated(path, {"QA_TARGET_LOG_PATH": str(logs)}), "test_error_signature") == "failure"
    (logs / "app.log").write_text("ok\npayment 42 succeeded\n", encoding="utf-8")
    assert outcome(run_generated(path, {"QA_TARGET_LOG_PATH": str(logs)}), "test_error_signature") == "passed"


def test_nothing_to_check_is_reported_not_stubbed():
    with pytest.raises(qa.NotRenderable, match="no failing HTTP request"):
        qa.render_regression_test(defect(exception_type=None, template=None), [], [])


def test_runner_commands_for_common_junit_dialects():
    assert qa.runner_command({"classname": "tests.api.test_items.TestItems", "name": "test_get[1]"})[-1] == \
        "tests/api/test_items.py::TestItems::test_get[1]"
    assert qa.runner_command({"classname": "github.com/acme/shop/internal/cart", "name": "TestAdd/two items"}) == [
        "go", "test", "-count=1", "-run", "^TestAdd$/^two items$", "github.com/acme/shop/internal/cart"]
    jest = qa.runner_command({"suite": "test/cart.test.js", "classname": "cart adds (x)", "name": "cart adds (x)"})
    assert jest[:4] == ["npx", "jest", "--runTestsByPath", "test/cart.test.js"] and jest[-1] == r"cart adds \(x\)"
    assert qa.runner_command({"classname": "com.acme.CartTest", "name": "addsItem()"})[2] == \
        "-Dtest=com.acme.CartTest#addsItem"
    assert qa.runner_command({"classname": "", "name": "it works"}) is None


@pytest.mark.slow
def test_generated_rerun_test_catches_a_flaky_test_and_passes_a_stable_one(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    at = T0 - timedelta(hours=1)
    cases = ci_frame(
        ci_case("cart", "2.0.0", "test_sometimes", "failed", at, classname="tests.test_flaky"),
        ci_case("cart", "2.0.0", "test_sometimes", "passed", at + timedelta(minutes=5), classname="tests.test_flaky"),
        ci_case("cart", "2.0.0", "test_other", "passed", at, classname="tests.test_flaky"),
    )
    d = defect(defect_type="flaky_test", service="cart", operation="tests.test_flaky::test_sometimes")
    found = qa.flaky_test_case(cases, d)
    assert (found["classname"], found["name"], found["failures"], found["runs"], found["flaky"]) == (
        "tests.test_flaky", "test_sometimes", 1, 2, True)
    path = tmp_path / "test_rerun.py"
    path.write_text(qa.render_regression_test(d, [], [], test_case=found), encoding="utf-8")
    env = {"QA_REPO_DIR": str(repo), "QA_RERUN_COUNT": "3"}
    # fails on every second run
    (repo / "tests" / "test_flaky.py").write_text(
        "import pathlib\n\ndef test_sometimes():\n    counter = pathlib.Path(__file__).with_name('runs.txt')\n"
        "    n = int(counter.read_text()) if counter.exists() else 0\n    counter.write_text(str(n + 1))\n"
        "    assert n % 2 == 0\n", encoding="utf-8")
    flaky = run_generated(path, env)
    assert outcome(flaky, "test_passes_every_rerun") == "failure"
    assert "1 of 3 runs" in message(flaky, "test_passes_every_rerun")
    (repo / "tests" / "test_flaky.py").write_text("def test_sometimes():\n    assert True\n", encoding="utf-8")
    assert outcome(run_generated(path, env), "test_passes_every_rerun") == "passed"


# ------------------------------------------------------------------------------------ markdown safety


def _outside_code(markdown: str) -> str:
    """The markdown with fenced blocks and code spans removed: what a renderer would interpret."""
    kept, fence = [], None
    for line in markdown.split("\n"):
        stripped = line.strip()
        opener = re.match(r"^(`{3,})", stripped)
        if fence is None and opener:
            fence = len(opener.group(1))
            continue
        if fence is not None:
            if re.fullmatch("`{%d,}" % fence, stripped):
                fence = None
            continue
        kept.append(re.sub(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", "", line))
    return "\n".join(kept)


def _code_spans(markdown: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"(?<!`)(`+)(?!`)(.*?)(?<!`)\1(?!`)", markdown)]


def assert_inert_markdown(markdown: str) -> None:
    live = _outside_code(markdown)
    assert not re.search(r"(?<!\\)<script", live), "raw HTML from telemetry"
    assert not re.search(r"(?<![\\\w])@\w", live), "a mention from telemetry would notify"
    assert not any(line.lstrip(" >").startswith("# Injected") for line in live.split("\n")), "newline injection"


def test_github_issue_keeps_hostile_telemetry_in_code(tmp_path: Path):
    spans = incident_spans(route=HOSTILE, path=HOSTILE)
    d = defect(title=HOSTILE, exception_type=HOSTILE, template=HOSTILE, operation=HOSTILE,
               evidence=json.dumps({"message": HOSTILE}))
    examples = qa.example_requests(spans, d)
    payload = qa.github_issue_payload(d, [cause("d-1", HOSTILE, HOSTILE)], {"regression_test": "tests/t.py"},
                                      example_requests=examples, owner="@team-x")
    assert set(payload) == {"title", "body", "labels"}
    assert "\n" not in payload["title"] and len(payload["title"]) <= 256
    assert all(isinstance(x, str) and " " not in x and len(x) <= 50 for x in payload["labels"])
    assert_inert_markdown(payload["body"])
    assert one_line(HOSTILE, 200) in _code_spans(payload["body"])  # shown verbatim, as code
    table_rows = [line for line in payload["body"].split("\n") if line.startswith("| Operation")]
    assert len(re.findall(r"(?<!\\)\|", _outside_code(table_rows[0]))) == 3  # pipes inside code don't split cells


def _walk_adf(node: dict, texts: list[tuple[str, bool]]) -> None:
    allowed = {"doc", "paragraph", "text", "heading", "bulletList", "orderedList", "listItem", "codeBlock"}
    assert node["type"] in allowed, node["type"]
    if node["type"] == "text":
        assert isinstance(node["text"], str) and node["text"], "ADF rejects empty text nodes"
        marks = [m["type"] for m in node.get("marks", [])]
        assert set(marks) <= {"code", "strong"} and not ({"code", "strong"} <= set(marks))
        texts.append((node["text"], "code" in marks))
    for child in node.get("content", []):
        _walk_adf(child, texts)


def test_jira_payload_is_a_valid_v3_create_issue_body():
    d = defect(title=HOSTILE, severity="S1", template=HOSTILE)
    payload = qa.jira_issue_payload(d, [cause("d-1", "chg-7", "catalog")], [{"kind": "probe", "path": "p.yaml"}],
                                    project_key="SHOP", example_requests=qa.example_requests(incident_spans(), d))
    fields = payload["fields"]
    assert fields["project"] == {"key": "SHOP"} and fields["issuetype"] == {"name": "Bug"}
    assert fields["priority"] == {"name": "Highest"}
    assert len(fields["summary"]) <= 255 and "\n" not in fields["summary"]
    assert all(" " not in x for x in fields["labels"]) and "severity:S1" in fields["labels"]
    document = fields["description"]
    assert document["type"] == "doc" and document["version"] == 1
    texts: list[tuple[str, bool]] = []
    _walk_adf(document, texts)
    assert (one_line(HOSTILE), True) in texts  # telemetry in a code-marked text node, never markup
    assert any("curl" in text for text, _ in texts) and any("chg-7" in text for text, _ in texts)
    with pytest.raises(qa.ArtifactInputError, match="project key"):
        qa.jira_issue_payload(d, [], None, project_key="not a key")


def test_probe_is_blackbox_and_prometheus_config_with_the_route_and_budget():
    d = defect(defect_id=HOSTILE)
    examples = qa.example_requests(incident_spans(route="/items/{id}", path=None), d)
    probe = qa.render_probe(d, examples, base_url="https://{service}.internal", interval="1m", timeout="10s")
    loaded = yaml.safe_load(qa.probe_yaml(probe))
    (name, module), = loaded["blackbox_exporter"]["modules"].items()
    assert module["prober"] == "http" and module["http"]["method"] == "GET"
    assert module["http"]["valid_status_codes"] == [200]
    (job,) = loaded["prometheus"]["scrape_configs"]
    assert job["params"]["module"] == [name] and job["scrape_interval"] == "1m"
    assert job["static_configs"][0]["targets"] == ["https://catalog.internal/items/1"]
    assert job["static_configs"][0]["labels"]["defect_id"] == HOSTILE  # round-trips through YAML
    rules = loaded["prometheus"]["rule_groups"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {"QaProbeFailed", "QaProbeSlow"}
    assert all("{{" not in json.dumps(r["annotations"]) for r in rules)
    assert re.fullmatch(r'probe_duration_seconds\{job="[a-z0-9-]+"\} > 0\.\d{3}',
                        next(r["expr"] for r in rules if r["alert"] == "QaProbeSlow"))
    with pytest.raises(qa.ArtifactInputError, match="timeout"):
        qa.render_probe(d, examples, interval="5s", timeout="10s")


def test_markdown_helpers_fence_any_backtick_run():
    value = "a ``` b `` c `"
    span_ = md_code(value)
    assert _code_spans(span_) == [value]


# ------------------------------------------------------------------------------------ release gate


GATE_DEPLOYED = T0 - timedelta(minutes=20)


def _gate(deployments, defects=None, causes=None, windows=None, tests=None, **kwargs) -> dict[tuple, dict]:
    frame = qa.release_readiness(
        deployments_frame(*deployments),
        defects if defects is not None else pl.DataFrame(schema={c: pl.String for c in (
            "defect_id", "service", "defect_type", "severity", "status")} | {"first_seen": pl.Datetime("us"),
                                                                              "last_seen": pl.Datetime("us")}),
        causes if causes is not None else causes_frame(),
        windows if windows is not None else no_windows(),
        tests if tests is not None else ci_frame(),
        decided_at=T0, **kwargs,
    )
    assert frame.schema == pl.Schema(qa.RELEASE_READINESS)
    for row in frame.to_dicts():
        json.loads(row["evidence"])
    return {(r["service"], r["version"]): r for r in frame.to_dicts()}


def test_gate_blocks_a_version_blamed_for_an_open_s2_defect_and_passes_its_predecessor():
    deployments = [deployment("c-1", "catalog", "1.3.0", T0 - timedelta(hours=2)),
                   deployment("c-2", "catalog", "1.4.0", GATE_DEPLOYED)]
    rows = _gate(deployments, defects_frame(defect()), causes_frame(cause("d-1", "c-2", "catalog")))
    blocked = rows[("catalog", "1.4.0")]
    assert blocked["decision"] == "block" and blocked["defect_ids"] == ["d-1"]
    assert "d-1" in blocked["reasons"] and "c-2" in blocked["reasons"]
    assert rows[("catalog", "1.3.0")]["decision"] == "pass"


def test_gate_decisions_for_ci_results():
    at = GATE_DEPLOYED - timedelta(minutes=30)
    deployments = [deployment("c-1", "cart", "2.0.0", GATE_DEPLOYED), deployment("c-2", "cart", "2.1.0", T0),
                   deployment("c-3", "cart", "2.2.0", T0 + timedelta(hours=1))]
    tests = ci_frame(
        ci_case("cart", "2.0.0", "test_totals", "failed", at),
        ci_case("cart", "2.0.0", "test_totals", "failed", at + timedelta(minutes=5)),  # red on the re-run too
        ci_case("cart", "2.1.0", "test_totals", "failed", at),
        ci_case("cart", "2.1.0", "test_totals", "passed", at + timedelta(minutes=5)),  # flaky
        ci_case("cart", "2.2.0", "test_totals", "passed", at),
    )
    rows = _gate(deployments, tests=tests)
    assert rows[("cart", "2.0.0")]["decision"] == "block" and "test_totals" in rows[("cart", "2.0.0")]["reasons"]
    assert rows[("cart", "2.1.0")]["decision"] == "warn" and "flaky" in rows[("cart", "2.1.0")]["reasons"]
    assert rows[("cart", "2.2.0")]["decision"] == "pass" and "CI green" in rows[("cart", "2.2.0")]["reasons"]


def test_gate_warns_for_minor_resolved_or_weakly_blamed_defects():
    deployments = [deployment("c-1", "a", "1", GATE_DEPLOYED), deployment("c-2", "b", "1", GATE_DEPLOYED),
                   deployment("c-3", "c", "1", GATE_DEPLOYED)]
    defects = defects_frame(defect(defect_id="minor", service="a", severity="S3"),
                            defect(defect_id="over", service="b", status="resolved"),
                            defect(defect_id="weak", service="c", severity="S1"))
    causes = causes_frame(cause("minor", "c-1", "a"), cause("over", "c-2", "b"),
                          cause("weak", "c-3", "c", confidence=0.1))
    rows = _gate(deployments, defects, causes)
    assert {k[0]: r["decision"] for k, r in rows.items()} == {"a": "warn", "b": "warn", "c": "warn"}
    assert "confidence bar" in rows[("c", "1")]["reasons"]
    strict = _gate(deployments, defects, causes, policy=qa.GatePolicy(resolved_blamed_decision="block"))
    assert strict[("b", "1")]["decision"] == "block"


def test_gate_warns_on_an_unexplained_post_deploy_shift_only():
    deployments = [deployment("c-1", "search", "5.0", GATE_DEPLOYED)]
    shifted = windows_frame("search", GATE_DEPLOYED, error_rate_after=0.10)
    rows = _gate(deployments, windows=shifted)
    assert rows[("search", "5.0")]["decision"] == "warn"
    assert "unexplained post-deploy shift" in rows[("search", "5.0")]["reasons"]
    assert "0.00% to 10.00%" in rows[("search", "5.0")]["reasons"]
    # the same shift while a dependency's defect hits the service is not held against the version
    elsewhere = defects_frame(defect(defect_id="dep", service="search", first_seen=GATE_DEPLOYED + timedelta(minutes=1),
                                     last_seen=GATE_DEPLOYED + timedelta(minutes=25)))
    rows = _gate(deployments, elsewhere, causes_frame(cause("dep", "c-other", "database")), windows=shifted)
    assert rows[("search", "5.0")]["decision"] == "pass"
    assert "caused elsewhere" in rows[("search", "5.0")]["reasons"]
    slower = windows_frame("search", GATE_DEPLOYED, p95_after=120.0)
    assert _gate(deployments, windows=slower)[("search", "5.0")]["decision"] == "warn"
    steady = windows_frame("search", GATE_DEPLOYED, p95_after=45.0)
    assert _gate(deployments, windows=steady)[("search", "5.0")]["decision"] == "pass"


def test_gate_names_the_missing_input():
    with pytest.raises(qa.ArtifactInputError, match="windows lacks column"):
        qa.release_readiness(deployments_frame(deployment("c", "s", "1", T0)), defects_frame(defect()),
                             causes_frame(), pl.DataFrame({"service": ["s"]}), ci_frame())


# ------------------------------------------------------------------------------------ knowledge base and KPIs


def kpi_fixture():
    defects = defects_frame(
        defect(defect_id="a", service="cart", status="resolved", first_seen=T0, last_seen=T0 + timedelta(minutes=30)),
        defect(defect_id="b", service="pay", status="resolved", first_seen=T0, last_seen=T0 + timedelta(minutes=90),
               severity="S3"),
        defect(defect_id="c", service="web", status="open", first_seen=T0),
        defect(defect_id="f", service="web", status="open", defect_type="flaky_test"),
    )
    deployments = deployments_frame(
        deployment("ch-a", "cart", "2.0", T0 - timedelta(minutes=10)),
        deployment("ch-b", "pay", "7.1", T0 - timedelta(minutes=20)),
        deployment("rb-a", "cart", "1.9", T0 + timedelta(minutes=29), event_type="rolledback"),
        deployment("ch-x", "cart", "2.1", T0 + timedelta(minutes=40)),
    )
    causes = causes_frame(cause("a", "ch-a", "cart"), cause("a", None, "web", rank=2), cause("b", "ch-b", "pay"),
                          cause("c", None, "web"))
    tests = ci_frame(ci_case("cart", "2.0", "test_x", "passed", T0 - timedelta(hours=1)),
                        ci_case("pay", "7.1", "test_y", "failed", T0 - timedelta(hours=1)))
    feedback = pl.DataFrame({
        "defect_id": ["a", "b", "c"], "decision": ["approve", "correct", "correct"],
        "defect_type": [None, "latency_regression", None], "severity": [None, None, None],
        "root_cause_service": [None, None, "db"], "root_cause_change_id": [None, None, None],
        "author": ["ann", "bob", "cy"], "comment": ["right", "it was slow", None],
        "at": [T0 + timedelta(hours=2)] * 3,
    })
    return defects, deployments, causes, tests, feedback


def test_kpis_on_hand_made_frames():
    defects, deployments, causes, tests, feedback = kpi_fixture()
    index = pl.DataFrame({"defect_id": ["a", "b", "c"], "kind": ["regression_test", "regression_test", "probe"],
                          "path": ["/t/a.py", None, "/p/c.yaml"]})
    k = qa.kpis(defects, causes, deployments, tests, feedback, artifacts=index)
    # MTTD: a 10 min after its deploy, b 20 min after its deploy; c has no blamed change
    assert (k["mttd_minutes"]["n"], k["mttd_minutes"]["mean"], k["mttd_minutes"]["excluded"]) == (2, 15.0, 1)
    assert (k["mttr_minutes"]["n"], k["mttr_minutes"]["mean"], k["mttr_minutes"]["median"]) == (2, 60.0, 60.0)
    # leakage: a's version passed CI (leaked), b's version failed CI and shipped anyway
    leak = k["defect_leakage"]
    assert (leak["value"], leak["leaked"], leak["caught_by_ci"], leak["n"]) == (0.5, 1, 1, 2)
    # triage: a approved, b's type corrected (c only had its root cause corrected: not a classification review)
    assert (k["triage_accuracy"]["value"], k["triage_accuracy"]["n"]) == (0.5, 2)
    assert (k["root_cause_accuracy"]["value"], k["root_cause_accuracy"]["n"]) == (0.5, 2)
    # coverage: only a has a written regression test (b's was not rendered)
    assert (k["regression_test_coverage"]["value"], k["regression_test_coverage"]["covered"]) == (0.25, 1)
    assert k["defects"]["by_severity"] == {"S1": 0, "S2": 3, "S3": 1, "S4": 0}


def test_knowledge_base_links_defect_cause_resolution_and_artifacts():
    defects, deployments, causes, tests, feedback = kpi_fixture()
    kb = qa.knowledge_base(defects, causes, feedback, {"a": ["/t/a.py", "/p/a.yaml"]}, deployments=deployments)
    assert kb.schema == pl.Schema(qa.KNOWLEDGE_BASE)
    rows = {r["defect_id"]: r for r in kb.to_dicts()}
    assert rows["a"]["resolution"].startswith("resolved after rollback of cart to 1.9 (change rb-a")
    assert rows["a"]["resolution_change_id"] == "rb-a" and rows["a"]["artifacts"] == ["/p/a.yaml", "/t/a.py"]
    assert rows["a"]["change_id"] == "ch-a" and rows["a"]["review"].startswith("approved by ann")
    assert rows["b"]["defect_type"] == "latency_regression" and rows["b"]["corrected_by_feedback"] == ["defect_type"]
    assert rows["b"]["resolution"].startswith("resolved without a recorded change")
    assert rows["c"]["cause_service"] == "db" and rows["c"]["resolution"] == "open: no resolution yet"
    rejected = feedback.with_columns(decision=pl.lit("reject"), defect_type=None, root_cause_service=None)
    assert qa.knowledge_base(defects, causes, rejected, None)["status"].to_list()[:3] == ["rejected"] * 3


# ------------------------------------------------------------------------------------ files and report


def test_write_artifacts_is_deterministic_and_keeps_hostile_ids_inside_the_folder(tmp_path: Path):
    out = tmp_path / "artifacts"
    defects = defects_frame(defect(), defect(defect_id="../../etc/passwd", exception_type=None))
    causes = causes_frame(cause("d-1", "c-2", "catalog"))
    first = qa.write_artifacts(out, defects, causes, incident_spans(), ci_frame())
    assert first.schema == pl.Schema(qa.ARTIFACTS)
    written = first.filter(pl.col("path").is_not_null())
    assert all(Path(p).resolve().is_relative_to(out.resolve()) for p in written["path"])
    assert set(first.filter(pl.col("defect_id") == "d-1")["kind"]) == {"regression_test", "probe", "alert_rules",
                                                                       "postman_collection", "github_issue",
                                                                       "jira_issue"}
    mtimes = {p: Path(p).stat().st_mtime_ns for p in written["path"]}
    second = qa.write_artifacts(out, defects, causes, incident_spans(), ci_frame())
    assert second.equals(first)
    assert {p: Path(p).stat().st_mtime_ns for p in written["path"]} == mtimes  # unchanged files not rewritten
    rejected = qa.write_artifacts(tmp_path / "other", defects_frame(defect(status="rejected")), causes,
                                  incident_spans(), ci_frame())
    assert rejected["path"].to_list() == [None] and "rejected" in rejected["detail"][0]
    test_file = Path(first.filter((pl.col("defect_id") == "d-1") & (pl.col("kind") == "regression_test"))["path"][0])
    compile(test_file.read_text(encoding="utf-8"), str(test_file), "exec")
    issue = json.loads(Path(first.filter((pl.col("defect_id") == "d-1") & (pl.col("kind") == "github_issue"))
                            ["path"][0]).read_text(encoding="utf-8"))
    assert os.path.relpath(test_file, out) in issue["body"]


def test_render_report_writes_markdown_and_plots(tmp_path: Path):
    defects, deployments, causes, tests, feedback = kpi_fixture()
    defects = pl.concat([defects, defects_frame(defect(defect_id=HOSTILE, service=HOSTILE, status="resolved"))],
                        how="vertical_relaxed")
    kb = qa.knowledge_base(defects, causes, feedback, None, deployments=deployments)
    gate = qa.release_readiness(deployments, defects, causes, no_windows(), tests, decided_at=T0)
    k = qa.kpis(defects, causes, deployments, tests, feedback)
    path = qa.render_report(k, {"defects": defects, "knowledge_base": kb, "release_readiness": gate}, tmp_path,
                            generated_at=T0)
    text = path.read_text(encoding="utf-8")
    for plot in ("plots/defects_over_time.png", "plots/mttr_distribution.png"):
        assert f"]({plot})" in text
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| MTTR | 43.3 min" in text and "block" in text
    assert_inert_markdown(text)


# ------------------------------------------------------------------------------------ replay sizing


def test_replay_plan_sends_enough_requests_to_see_the_incidents_failure_share():
    def plan(before: tuple[int, int], during: tuple[int, int]) -> tuple[int, int]:
        return qa.replay_plan({"baseline_failures": before[0], "baseline_count": before[1],
                               "incident_failures": during[0], "incident_count": during[1]})

    attempts, allowed = plan((3, 700), (75, 250))  # 0.4% before, 30% during (an error rate of 0.3)
    assert 15 <= attempts <= 40 and allowed >= 1
    # a route as healthy as before rarely fails the check; one failing as during the incident nearly always
    assert qa.regression_tests._binomial_tail(allowed, attempts, 3.5 / 701) <= 0.005
    assert qa.regression_tests._binomial_tail(allowed, attempts, 0.3) >= 0.99
    assert plan((0, 500), (240, 250)) == (2, 0)  # a route failing every time: two requests tell
    assert plan((20, 41), (2, 3))[0] == 3  # two failures of three, after a failing hour: no proven rise
    assert plan((0, 0), (0, 0)) == (3, 1)  # no counts at all: three requests, two must fail
    # a rare failure (2% during): the most telling plan within the cap of requests
    assert 40 <= plan((1, 800), (3, 140))[0] <= qa.regression_tests.DEFAULT_MAX_ATTEMPTS


def test_latency_regressions_get_a_threshold_between_the_two_medians():
    example = {"baseline_p50_ms": 4.0, "baseline_p95_ms": 8.0, "incident_p50_ms": 100.0}
    budget, basis = qa.regression_tests.latency_check(example, "latency_regression", min_budget_ms=10.0)
    assert budget == 20.0 and "median" in basis  # sqrt(4 x 100)
    assert qa.regression_tests.latency_check(example, "error_spike", min_budget_ms=10.0)[0] == 24.0  # p95 x 3
    slight = {**example, "incident_p50_ms": 5.0}  # not clearly slower: the usual p95 budget
    assert qa.regression_tests.latency_check(slight, "latency_regression", min_budget_ms=10.0)[0] == 24.0


def test_requests_refused_before_reaching_the_service_count_as_its_failures():
    rows = [span("catalog", T0 - timedelta(minutes=30) + timedelta(seconds=45 * i)) for i in range(40)]
    rows += [span("catalog", T0 + timedelta(seconds=20 * i)) for i in range(30)]  # answered fine
    for i in range(10):  # the callers' calls that got no answer: no server span, no HTTP status
        row = span("frontend", T0 + timedelta(seconds=20 * i + 5), route=None, path=None, kind="CLIENT",
                   status=200, ms=1.0)
        row.update(name="GET", status_code="ERROR", http_status_code=None, peer_service="catalog",
                   attributes=json.dumps({"url.full": "http://catalog:8080/items/77"}))
        rows.append(row)
    examples = qa.example_requests(conform(pl.DataFrame(rows), SPANS), defect())
    assert [(e["route"], e["failing_count"], e["incident_failures"], e["incident_count"]) for e in examples] == [
        ("/items/{id}", 10, 10, 40)]  # named by the server's route template
    assert examples[0]["service_version"] is None and examples[0]["incident_p50_ms"] == 20.0  # answered only


def test_a_validation_regression_is_checked_with_a_valid_body(tmp_path: Path):
    rows = [span("ship", T0 - timedelta(minutes=30) + timedelta(seconds=45 * i), method="POST", route="/quote",
                 path="/quote") for i in range(40)]
    rows += [span("ship", T0 + timedelta(seconds=30 * i), method="POST", route="/quote", path="/quote",
                  status=422 if i % 2 else 200) for i in range(20)]  # valid requests rejected, no 5xx
    d = defect(service="ship", defect_type="data_validation")
    examples = qa.example_requests(conform(pl.DataFrame(rows), SPANS), d)
    assert [(e["new_client_errors"], e["incident_new_rejections"], e["incident_failures"]) for e in examples] == [
        ([422], 10, 0)]
    [case] = qa.request_cases(d, examples)
    assert case["client_errors_seen"] == [422] and case["body_env"] == "QA_REQUEST_BODY_POST_QUOTE"
    path = tmp_path / "test_validation.py"
    path.write_text(qa.render_regression_test(d, [], examples), encoding="utf-8")
    with target_server(422) as server:
        base = {"QA_TARGET_BASE_URL": f"http://127.0.0.1:{server.server_port}", "QA_LATENCY_BUDGET_MS": "60000"}
        without_body = run_generated(path, base)
        with_body = run_generated(path, {**base, "QA_REQUEST_BODY_POST_QUOTE": '{"zip": "10115"}'})
    assert outcome(without_body, "test_no_new_client_errors") == "skipped"  # {} may rightly be refused
    assert "QA_REQUEST_BODY_POST_QUOTE" in message(without_body, "test_no_new_client_errors")
    assert outcome(with_body, "test_no_new_client_errors") == "failure"
    assert outcome(with_body, "test_no_server_error") == "passed"
    with target_server(200) as server:
        fixed = run_generated(path, {"QA_TARGET_BASE_URL": f"http://127.0.0.1:{server.server_port}",
                                     "QA_LATENCY_BUDGET_MS": "60000", "QA_REQUEST_BODY_POST_QUOTE": "{}"})
    assert fixed["returncode"] == "0" and outcome(fixed, "test_no_new_client_errors") == "passed"


def test_a_defect_ci_found_replays_the_requests_its_version_failed_in_production():
    ci_at = T0 - timedelta(hours=1)  # CI failed on 2.0 an hour before the release
    d = defect(service="mailer", defect_type="data_validation", first_seen=ci_at,
               last_seen=ci_at + timedelta(minutes=4), operation="tests.test_api::test_accepts_payload",
               exception_type=None, evidence=json.dumps({"source": "ci_tests", "versions": ["2.0"]}))
    rows = [span("mailer", T0 - timedelta(minutes=30) + timedelta(minutes=i), method="POST", route="/send",
                 path="/send", version="1.9") for i in range(30)]
    rows += [span("mailer", T0 + timedelta(minutes=i), method="POST", route="/send", path="/send", version="2.0",
                  status=422 if i % 3 == 0 else 200) for i in range(12)]
    spans = conform(pl.DataFrame(rows), SPANS)
    assert qa.example_requests(spans, d) == []  # nothing failed while CI ran
    replayed = qa.production_window(spans, d)
    assert (replayed["first_seen"], replayed["last_seen"]) == (T0, T0 + timedelta(minutes=11))
    examples = qa.example_requests(spans, replayed)
    assert [(e["method"], e["route"], e["new_client_errors"]) for e in examples] == [("POST", "/send", [422])]
    # not found by CI, or a version that never served a request: the defect's own window
    assert qa.production_window(spans, defect()) == defect()
    unseen = {**d, "evidence": json.dumps({"source": "ci_tests", "versions": ["2.1"]})}
    assert qa.production_window(spans, unseen) == unseen
