"""Postman Collection v2.1 export: the structure Postman and newman import, the same requests as the pytest
replay, and hostile telemetry kept inside JSON string values (fuzzed; the test scripts are run with Node when
it is installed)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from qa_assets.lib import artifacts as qa
from qa_assets.lib.artifacts import postman
from qa_assets.lib.ingest.tables import SPANS, conform
from qa_assets_tests.test_artifacts import HOSTILE, T0, cause, causes_frame, ci_frame, defect, defects_frame, span

FRAGMENTS = [
    '"', "'", "\\", "\n", "\r\n", "*/", "/*", "//", "`", "${process.exit(1)}", "${x}", "{{apiKey}}", "{{",
    "}}", "</script>", "\u2028", "\u2029", "\x00", "\t", "pm.test('x', () => {})", "\");require('fs');(\"",
    "');alert(1);('", "%s", "%7B", "{id}", ":id", "?q=1", "#frag", " ", "é", "😀", "a", "/", "..", "null",
    "![x](http://evil.example/p.png)", "<img src=x onerror=alert(1)>", "[link](http://evil.example)",
]
URL_PATH = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@/]*")


def hostile_text(rng: random.Random, pieces: int = 6) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(pieces))


def example(service: str = "catalog", method: str = "GET", route: str = "/items/{id}", path: str | None = "/items/42",
            **overrides) -> dict:
    base = {
        "service": service, "seen_by": "server spans", "method": method, "route": route, "path": path,
        "span_name": f"{method} {route}", "failing_count": 10, "status_seen": 500, "statuses_seen": [500],
        "latency_ms": 25.0, "latency_max_ms": 30.0, "baseline_count": 40, "baseline_failures": 0,
        "baseline_p50_ms": 20.0, "baseline_p95_ms": 38.0, "baseline_statuses": [200], "incident_count": 12,
        "incident_failures": 10, "incident_p50_ms": 25.0, "exception_types": ["KeyError"], "trace_ids": ["t1"],
        "service_version": "1.4.0", "first_failure": None, "last_failure": None,
    }
    return {**base, **overrides}


def script_parts(item: dict) -> tuple[str, list[str]]:
    """(the JSON literal of ``expected``, the rest of the script)."""
    exec_lines = item["event"][0]["script"]["exec"]
    match = re.fullmatch(r"const expected = (.*);", exec_lines[0])
    assert match, exec_lines[0]
    return match.group(1), exec_lines[1:]


# ------------------------------------------------------------------------------------ structure


def test_collection_has_the_v21_structure_and_the_replayed_requests():
    d = defect()
    examples = [example(), example(service="pay-ments", method="POST", route="/charges", path="/charges")]
    collection = postman.postman_collection(d, [cause("d-1", "c-9", "catalog")], examples)
    assert json.loads(postman.collection_json(collection)) == collection
    info = collection["info"]
    assert set(info) == {"_postman_id", "name", "description", "schema"}
    assert info["schema"] == "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    assert uuid.UUID(info["_postman_id"]).version == 5
    assert info["_postman_id"] == postman.postman_id("d-1") != postman.postman_id("d-2")  # stable per defect
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert {"baseUrl", "baseUrl_CATALOG", "baseUrl_PAY_MENTS", "networkAllowanceMs"} <= set(variables)
    assert variables["baseUrl_CATALOG"] == "{{baseUrl}}"

    cases = qa.request_cases(d, examples)
    assert [i["name"] for i in collection["item"]] == [f"{c['method']} {c['route']}" for c in cases]
    for item, case in zip(collection["item"], cases):
        request = item["request"]
        assert {"method", "header", "url", "description"} <= set(request)
        assert request["method"] == case["method"]
        url = request["url"]
        assert set(url) >= {"raw", "host", "path", "query"} and url["query"] == []
        assert url["raw"] == url["host"][0] + "/" + "/".join(url["path"])
        assert url["host"] == ["{{baseUrl_" + ("CATALOG" if case["service"] == "catalog" else "PAY_MENTS") + "}}"]
        assert "/" + "/".join(url["path"]) == case["path"]
        headers = {h["key"]: h["value"] for h in request["header"]}
        if case["method"] == "POST":
            assert request["body"] == {"mode": "raw", "raw": "{}", "options": {"raw": {"language": "json"}}}
            assert headers["Content-Type"] == "application/json"
        else:
            assert "body" not in request
        [event] = item["event"]
        assert event["listen"] == "test" and event["script"]["type"] == "text/javascript"
        literal, code = script_parts(item)
        expected = json.loads(literal)
        assert expected["request"] == item["name"] and expected["latency_budget_ms"] == case["latency_budget_ms"]
        assert code == list(postman._TEST_SCRIPT[1:])
        assert any("pm.test" in line for line in code) and any("pm.expect" in line for line in code)


def test_route_placeholders_become_postman_path_variables():
    collection = postman.postman_collection(defect(), [], [example(path=None, route="/users/{user id}/orders/:oid")])
    url = collection["item"][0]["request"]["url"]
    assert url["path"] == ["users", ":user_id", "orders", ":oid"]
    assert {v["key"] for v in url["variable"]} == {"user_id", "oid"}


def test_nothing_to_replay_is_not_rendered():
    with pytest.raises(qa.NotRenderable):
        postman.postman_collection(defect(), [], [example(method="GET /x HTTP/1.1")])


def test_write_artifacts_indexes_the_collection(tmp_path: Path):
    rows = [span("catalog", T0 - timedelta(minutes=30) + timedelta(seconds=45 * i), ms=20.0 + i % 20)
            for i in range(40)]
    rows += [span("catalog", T0 + timedelta(seconds=30 * i), status=500, ms=25.0) for i in range(10)]
    index = qa.write_artifacts(tmp_path, defects_frame(defect()), causes_frame(cause("d-1", "c-9", "catalog")),
                               conform(pl.DataFrame(rows), SPANS), ci_frame())
    row = index.filter(pl.col("kind") == "postman_collection").row(0, named=True)
    assert row["format"] == "postman-collection-v2.1" and row["detail"] == "1 request(s)"
    path = Path(row["path"])
    assert path.parent.name == "postman" and path.name.endswith(".postman_collection.json")
    assert path == qa.artifact_path(tmp_path, "postman_collection", "d-1").resolve()
    collection = json.loads(path.read_text(encoding="utf-8"))
    assert collection["item"][0]["request"]["url"]["path"] == ["items", "42"]
    issue = json.loads(Path(index.filter(pl.col("kind") == "github_issue")["path"][0]).read_text(encoding="utf-8"))
    assert "postman/" in issue["body"]  # the ticket links it with the other artifacts


# ------------------------------------------------------------------------------------ hostile telemetry


def _hostile_collections(count: int = 150) -> list[tuple[dict, dict, list[dict]]]:
    rng = random.Random(20261102)
    out = []
    for _ in range(count):
        service = hostile_text(rng, 3)
        d = defect(defect_id=hostile_text(rng), title=hostile_text(rng), service=service, severity=hostile_text(rng, 2),
                   defect_type=rng.choice(["error_spike", "latency_regression", hostile_text(rng, 2)]))
        examples = [
            example(service=service, method=rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"]),
                    route="/" + hostile_text(rng), path=rng.choice([None, "/" + hostile_text(rng)]),
                    statuses_seen=[500, 503], incident_p50_ms=rng.choice([25.0, 90.0]))
            for _ in range(rng.randint(1, 3))
        ]
        causes = [cause(d["defect_id"], hostile_text(rng), hostile_text(rng))]
        out.append((postman.postman_collection(d, causes, examples), d, examples))
    return out


def test_hostile_telemetry_stays_inside_json_strings():
    for collection, d, examples in _hostile_collections():
        text = postman.collection_json(collection)
        assert json.loads(text) == collection  # parses, and nothing was added or lost
        assert set(collection) == {"info", "item", "variable"}
        assert collection["info"]["_postman_id"] == postman.postman_id(d["defect_id"])
        descriptions = [collection["info"]["description"], *(v["description"] for v in collection["variable"]),
                        *(i["request"]["description"] for i in collection["item"])]
        for description in descriptions:  # Postman renders Markdown: no image, link or HTML from telemetry
            assert not re.search(r"(?<!\\)\]\(|(?<!\\)<[a-z]", description), description
        for item, ex in zip(collection["item"], examples):
            assert set(item) == {"name", "request", "event"}
            assert item["name"] == f"{ex['method']} {ex['route']}"  # kept verbatim, as data
            url = item["request"]["url"]
            host, _, rest = url["raw"].partition("}}/")
            assert re.fullmatch(r"\{\{baseUrl_[A-Z0-9_]+", host)  # the variable name is sanitised
            assert URL_PATH.fullmatch(rest) and "{{" not in rest  # percent-encoded: no Postman variable
            literal, code = script_parts(item)
            assert code == list(postman._TEST_SCRIPT[1:])  # the code around the literal is the fixed text
            assert literal.isascii() and "\n" not in literal and "\u2028" not in literal
            expected = json.loads(literal)
            assert expected["request"] == f"{ex['method']} {ex['route']}"
            assert expected["service"] == ex["service"] and expected["defect_id"] == d["defect_id"]


def test_hostile_spans_end_to_end():
    rows = [span(HOSTILE, T0 - timedelta(minutes=30) + timedelta(seconds=45 * i), route=HOSTILE, path=HOSTILE + "/7")
            for i in range(40)]
    rows += [span(HOSTILE, T0 + timedelta(seconds=30 * i), route=HOSTILE, path=HOSTILE + "/7", status=500)
             for i in range(10)]
    rows.append(span(HOSTILE, T0 + timedelta(seconds=5), method="GET /x HTTP/1.1\r\nX-Injected: 1", status=500))
    d = defect(service=HOSTILE, defect_id=HOSTILE, title=HOSTILE)
    examples = qa.example_requests(conform(pl.DataFrame(rows), SPANS), d)
    collection = postman.postman_collection(d, [cause(HOSTILE, HOSTILE, HOSTILE)], examples)
    assert json.loads(postman.collection_json(collection)) == collection
    assert [i["request"]["method"] for i in collection["item"]] == ["GET"]  # the injected method is dropped
    literal, _ = script_parts(collection["item"][0])
    assert json.loads(literal)["request"] == f"GET {HOSTILE}"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_hostile_test_scripts_run_as_the_fixed_code_in_javascript(tmp_path: Path):
    """Every generated script, run in Node with a stand-in ``pm``: it declares ``expected`` equal to the data
    (nothing escaped the literal) and runs exactly the two fixed tests."""
    collections = _hostile_collections(60)
    scripts = [item["event"][0]["script"]["exec"] for c, _, _ in collections for item in c["item"]]
    harness = ["const out = [];"]
    for exec_lines in scripts:
        harness += [
            "(function () {",
            "  const results = [];",
            "  const check = (ok, msg) => { if (!ok) { throw new Error(msg); } };",
            "  const pm = {",
            "    response: {code: 503, responseTime: 10},",
            "    collectionVariables: {get: () => '50'},",
            "    test: (name, fn) => { try { fn(); results.push([name, true]); } catch (e) { results.push([name, false]); } },",
            "    expect: (v, msg) => ({to: {be: {below: (x) => check(v < x, msg), at: {most: (x) => check(v <= x, msg)}}}}),",
            "  };",
            *("  " + line for line in exec_lines),
            "  out.push({results: results, expected: expected});",
            "})();",
        ]
    harness.append("process.stdout.write(JSON.stringify(out));")
    source = tmp_path / "scripts.js"
    source.write_text("\n".join(harness), encoding="utf-8")
    result = subprocess.run(["node", str(source)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = json.loads(result.stdout)
    assert len(outputs) == len(scripts)
    for exec_lines, output in zip(scripts, outputs):
        assert output["expected"] == json.loads(script_parts({"event": [{"script": {"exec": exec_lines}}]})[0])
        names = [r[0] for r in output["results"]]
        assert names[0] == "no server error (status < 500, as before the incident)"
        assert output["results"][0][1] is False  # a 503 fails it
        assert names[1:] in ([], ["latency within budget"])
