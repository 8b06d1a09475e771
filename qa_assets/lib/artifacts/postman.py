"""The replayed requests of a defect as a Postman Collection v2.1.0, for teams testing with Postman / newman.

The requests are those of the HTTP regression test (``regression_tests.request_cases`` over
``example_requests``): method, route and concrete path seen in the failing spans, the service's base URL,
and the checks the pytest module makes, as Postman tests:

- ``info``: name, ``_postman_id`` (a UUID derived from the defect id: the same on every run), description,
  the v2.1.0 schema URL;
- ``variable``: ``baseUrl``, one ``baseUrl_<SERVICE>`` per service (defaulting to ``{{baseUrl}}``) and
  ``networkAllowanceMs`` (what the runner's network adds to the server-side latency budget);
- one ``item`` per request: ``request`` {method, header[], url {raw, host, path[], query[], variable[]}, body
  (raw JSON) for POST/PUT/PATCH} and a ``test`` event asserting the status class (< 500, as before the
  incident; the empty JSON body may be refused with a 4xx) and the latency budget.

Telemetry is untrusted: a route can hold quotes, newlines, ``*/``, backticks, ``${}``, ``{{...}}`` or code.
It enters the collection only as JSON data: the collection is plain dicts serialised by ``json.dumps``; path
segments are percent-encoded as the pytest module encodes them (so ``{{...}}`` cannot name a Postman
variable, and a ``:`` cannot start one), a segment that is a route placeholder becomes a Postman path
variable with a sanitised name; descriptions (rendered as Markdown by Postman) hold telemetry as escaped
prose (``md_text``: no links, images or mentions); and the test script is fixed code that reads one
constant, ``expected``, whose value is ``json.dumps`` output (an ASCII-only JS literal: nothing in it can end
the string, open a template, a comment or a line).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

from qa_assets.lib.artifacts._common import ArtifactInputError, NotRenderable, env_suffix, md_text, one_line
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_REPLAY_MIN_BUDGET_MS,
    request_cases,
)

SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
DEFAULT_NETWORK_ALLOWANCE_MS = 50.0  # a runner one hop away; the collection variable changes it per run
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://qa-assets/postman-collection")
_PATH_SAFE = "/%@!$&'()*+,;=-._~"  # as the pytest module quotes paths, and ':' too (a Postman variable)
_PLACEHOLDER = re.compile(r"\{([^/{}]+)\}|:([A-Za-z_][A-Za-z0-9_]*)")  # a whole path segment
_BODY_METHODS = ("POST", "PUT", "PATCH")

# Fixed script code: telemetry reaches it only through the JSON literal on the first line.
_TEST_SCRIPT = (
    "const expected = @@EXPECTED@@;",
    "pm.test(\"no server error (status < 500, as before the incident)\", function () {",
    "    pm.expect(pm.response.code, expected.request).to.be.below(500);",
    "});",
    "if (expected.latency_budget_ms !== null) {",
    "    const allowance = Number(pm.collectionVariables.get(\"networkAllowanceMs\") || 0);",
    "    pm.test(\"latency within budget\", function () {",
    "        pm.expect(pm.response.responseTime, expected.latency_budget_basis)",
    "            .to.be.at.most(expected.latency_budget_ms + allowance);",
    "    });",
    "}",
)


def postman_id(defect_id: Any) -> str:
    """The collection's ``_postman_id``: a UUID derived from the defect id (re-exports replace, not add)."""
    return str(uuid.uuid5(_NAMESPACE, str(defect_id)))


def js_literal(value: Any) -> str:
    """A JavaScript literal for plain data: JSON (a subset of JS) with every non-ASCII character escaped, so
    U+2028/U+2029 and quotes, backslashes or newlines inside strings stay inside them."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True, allow_nan=False, default=str)


def _variable_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", value).strip("_") or "param"


def _url(case: dict[str, Any]) -> dict[str, Any]:
    """Postman's URL object: host is the service's base-URL variable, path segments percent-encoded, a route
    placeholder segment ({id} or :id) as a Postman path variable."""
    host = "{{baseUrl_" + env_suffix(case["service"]) + "}}" if case.get("service") else "{{baseUrl}}"
    path = case.get("path") or case.get("route") or "/"
    variables: dict[str, str] = {}
    segments = []
    for segment in path.split("/"):
        match = _PLACEHOLDER.fullmatch(segment)
        if match:
            name = _variable_name(match.group(1) or match.group(2))
            variables.setdefault(name, "1")
            segments.append(":" + name)
        elif segment:
            segments.append(urllib.parse.quote(segment, safe=_PATH_SAFE))
    url: dict[str, Any] = {
        "raw": host + "/" + "/".join(segments),
        "host": [host],
        "path": segments,
        "query": [],
    }
    if variables:
        url["variable"] = [{"key": k, "value": v, "description": "route placeholder: set a real value"}
                           for k, v in variables.items()]
    return url


def _item(defect: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    method = case["method"]
    headers = [{"key": "User-Agent", "value": "qa-assets-regression-test/1"},
               {"key": "Accept", "value": "*/*"}]
    request: dict[str, Any] = {"method": method, "header": headers, "url": _url(case)}
    payload = case.get("payload")
    if payload is not None or method in _BODY_METHODS:
        headers.append({"key": "Content-Type", "value": "application/json"})
        # Postman substitutes {{name}} anywhere in a raw body; "{" written as \u007b after another "{" is the
        # same JSON and names no variable ("{{" cannot occur outside a string in JSON)
        raw = json.dumps({} if payload is None else payload, ensure_ascii=False).replace("{{", "{\\u007b")
        request["body"] = {"mode": "raw", "raw": raw, "options": {"raw": {"language": "json"}}}
    before, during = case.get("failures_before") or [None, None], case.get("failures_during") or [None, None]
    request["description"] = (
        f"Failed during defect {md_text(defect.get('defect_id'), 120)} on service "
        f"{md_text(case.get('service'), 120)}: {case.get('failing_count')} failing requests, statuses "
        f"{case.get('statuses_seen') or 'none (timeouts or resets)'}; before the incident {before[0]} of "
        f"{before[1]} requests failed, during it {during[0]} of {during[1]}. The pytest regression test sends "
        f"it {case.get('attempts')} times and allows {case.get('max_failures')} failures; run this collection "
        f"with newman --iteration-count {case.get('attempts')} to repeat it as often."
    )
    expected = {
        "defect_id": defect.get("defect_id"),
        "request": f"{method} {case['route']}",
        "service": case.get("service"),
        "latency_budget_ms": case.get("latency_budget_ms"),
        "latency_budget_basis": case.get("latency_budget_basis"),
        "statuses_seen": case.get("statuses_seen"),
        "attempts": case.get("attempts"),
        "max_failures": case.get("max_failures"),
    }
    script = [line.replace("@@EXPECTED@@", js_literal(expected)) if "@@EXPECTED@@" in line else line
              for line in _TEST_SCRIPT]
    return {
        "name": f"{method} {case['route']}",
        "request": request,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": script}}],
    }


def postman_collection(
    defect: dict[str, Any],
    root_causes: Sequence[dict[str, Any]],
    example_requests: Sequence[dict[str, Any]],
    *,
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
    min_budget_ms: float = DEFAULT_REPLAY_MIN_BUDGET_MS,
    network_allowance_ms: float = DEFAULT_NETWORK_ALLOWANCE_MS,
) -> dict[str, Any]:
    """The Postman Collection v2.1.0 (a dict, ``json.dumps`` it) replaying ``defect``'s failing requests
    (``example_requests()``). Raises ``NotRenderable`` when no request can be replayed."""
    if not defect.get("defect_id"):
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    cases = request_cases(defect, example_requests, latency_margin=latency_margin,
                          min_budget_ms=min_budget_ms)
    if not cases:
        raise NotRenderable(f"defect {defect['defect_id']!r}: no failing HTTP request to replay")
    cause = ""
    if root_causes:
        top = root_causes[0]
        change = f", change {md_text(top.get('change_id'), 120)}" if top.get("change_id") else ""
        cause = (f" Most likely cause: {md_text(top.get('cause_kind'), 40)} in "
                 f"{md_text(top.get('service'), 120)}{change}.")
    services = sorted({c["service"] for c in cases if c.get("service")})
    variables = [{"key": "baseUrl", "value": "http://localhost:8080", "type": "string",
                  "description": "base URL of a deployment of the fixed version"}]
    variables += [{"key": "baseUrl_" + env_suffix(s), "value": "{{baseUrl}}", "type": "string",
                   "description": f"base URL of {md_text(s, 120)} (default: baseUrl)"} for s in services]
    variables.append({"key": "networkAllowanceMs", "value": f"{network_allowance_ms:g}", "type": "string",
                      "description": "milliseconds the runner's network adds to each latency budget"})
    return {
        "info": {
            "_postman_id": postman_id(defect["defect_id"]),
            "name": (f"qa-assets regression: {one_line(defect.get('title') or defect.get('defect_type'), 120)} "
                     f"({one_line(defect['defect_id'], 80)})"),
            "description": (
                f"Generated by qa-assets from production telemetry: the requests that failed during defect "
                f"{md_text(defect['defect_id'], 120)} (severity {md_text(defect.get('severity'), 8)}, type "
                f"{md_text(defect.get('defect_type'), 40)}, service {md_text(defect.get('service'), 120)})."
                f"{cause} Point baseUrl (or a service's baseUrl_<SERVICE>) at a deployment of the fixed "
                "version: every test passes once the defect is fixed. Request bodies are not in telemetry: "
                "POST/PUT/PATCH send an empty JSON object, so a 4xx answer is accepted; a 5xx is not."
            ),
            "schema": SCHEMA,
        },
        "item": [_item(defect, case) for case in cases],
        "variable": variables,
    }


def collection_json(collection: dict[str, Any]) -> str:
    """The file text of a collection: indented JSON, non-ASCII kept (JSON strings hold it safely)."""
    return json.dumps(collection, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"
