"""Runnable pytest regression tests rendered from a defect and the telemetry that showed it.

Kinds, in order of preference:

1. **HTTP replay** (any defect with failing HTTP server spans, or callers' calls to it that got no answer):
   the test sends the route and method seen in the failing spans to a deployment named by
   ``QA_TARGET_BASE_URL`` (or ``QA_TARGET_BASE_URL_<SERVICE>``) and expects what the service did before the
   incident: no more failures than its pre-incident share allows, over as many requests as it takes to see
   the incident's failure share (``replay_plan``: a binomial test sized from both shares), and a median
   latency within budget (``latency_check``: for a latency regression between the pre-incident and the
   incident medians, else the pre-incident p95 times a margin) plus what the client adds (network round trips
   timed by opening connections, or a reference request for a path no route has, sent just before each
   request, when the runner is busy). It skips, saying what to set, when no URL is given.
2. **Rerun** (``flaky_test`` defects, and defects CI found when no request shows them): runs the named CI
   test N times with its own runner (pytest, go test, jest, Maven Surefire, told apart by the JUnit names;
   ``QA_RERUN_COMMAND`` overrides) and fails when any run fails.
3. **Log signature** (only when no request was seen, e.g. a batch job that only logs): scans the log files
   named by ``QA_TARGET_LOG_PATH`` for the defect's error template or exception type. Weaker than a replay
   (it needs the service to run the failing code path while the test looks), so it is the last resort.

Every value from telemetry enters the module through ``repr()`` (``py_literal``) or escaped docstring text;
the module compiles whatever the telemetry holds. HTTP methods are restricted to tokens (``[A-Z]+``) so a
hostile method cannot inject a request line.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    ArtifactInputError,
    NotRenderable,
    env_suffix,
    iso,
    number,
    one_line,
    py_docstring_text,
    py_literal,
    require_frame,
    slug,
)

SPAN_COLUMNS = (
    "service", "kind", "name", "start_time", "duration_ms", "status_code", "http_method", "http_route",
    "http_status_code", "attributes", "trace_id", "service_version", "exception_type",
)
TEST_CASE_COLUMNS = ("timestamp", "suite", "classname", "name", "status", "message", "service", "version")

DEFAULT_LATENCY_MARGIN = 3.0  # p95 is a tail already; three times it is a clear regression, not noise
# Floor for the latency budget: the test measures from the client, which adds network and TLS time that
# server spans never saw; a 2 ms route must not fail because the runner sits one hop away.
DEFAULT_MIN_BUDGET_MS = 250.0
# The replayed test adds the network round trips it measures (connection set-up times) and the client's own
# time to the budget; this floor only keeps timing jitter on a millisecond route from failing it.
DEFAULT_REPLAY_MIN_BUDGET_MS = 3.0
# The median of nine requests ignores up to four cold-cache, GC or scheduling outliers
DEFAULT_SAMPLES = 9
# The error check of a replay: a route failing no more often than before the incident fails it with at most
# FALSE_ALARM probability; one failing as often as during the incident fails it with at least POWER (within
# MAX_ATTEMPTS requests). No route is taken to be healthier than MIN_FAILURE_SHARE (telemetry saw a sample).
DEFAULT_FALSE_ALARM = 0.005
DEFAULT_POWER = 0.99
DEFAULT_MAX_ATTEMPTS = 60
MIN_FAILURE_SHARE = 0.001
UNKNOWN_FAILURE_SHARE = 0.01  # a route not seen before the incident is taken to fail this often when healthy
RISE_SIGNIFICANCE = 0.05  # the incident's failures are a rise when this unlikely at the pre-incident share
# A latency regression the replay times against its own threshold: the incident's median at least this many
# times the pre-incident one (less is within what a median of a few requests cannot tell apart).
MIN_LATENCY_RATIO = 1.5
# ... and that threshold sits at least this far above the pre-incident median and below the incident's, so the
# client's own timing noise (scheduling, a busy runner) cannot carry a median across it
MIN_LATENCY_GAP_MS = 2.0
DEFAULT_RERUNS = 10  # a test failing a third of the time passes ten runs in a row 1.7% of the time
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_URL_PATH = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*(/[^?#]*)"
_LATENCY_TYPES = ("latency_regression",)
# Defects whose symptom can be a client error (4xx) the route did not answer before: valid requests rejected
_VALIDATION_TYPES = ("data_validation",)


# ------------------------------------------------------------------------------------ examples


def production_window(spans: pl.DataFrame, defect: dict[str, Any]) -> dict[str, Any]:
    """The defect whose requests a replay looks for. A defect CI found is dated by its test runs, which
    precede the release; the failing version's requests in production come later. So for a defect whose
    evidence names the versions its tests failed on (``source`` ``ci_tests``), the defect with
    ``first_seen`` / ``last_seen`` set to when the service's spans carry one of those versions; the defect
    itself otherwise (no such versions, or none of them ever served a request)."""
    try:
        evidence = json.loads(defect.get("evidence") or "{}")
    except (TypeError, ValueError):
        return defect
    versions = [str(v) for v in (evidence.get("versions") or []) if v] if isinstance(evidence, dict) else []
    if not versions or evidence.get("source") != "ci_tests" or not defect.get("service"):
        return defect
    served = (
        require_frame(spans, "spans", SPAN_COLUMNS, "raw.spans").lazy()
        .filter((pl.col("service") == defect["service"]) & (pl.col("kind") == "SERVER")
                & pl.col("service_version").is_in(versions))
        .select(first=pl.col("start_time").min(), last=pl.col("start_time").max())
        .collect()
    )
    first, last = served.row(0)
    if first is None:
        return defect
    return {**defect, "first_seen": first, "last_seen": last}


def example_requests(
    spans: pl.DataFrame,
    defect: dict[str, Any],
    *,
    service: str | None = None,
    baseline_minutes: float = 60.0,
    slack_minutes: float = 1.0,
    max_examples: int = 3,
) -> list[dict[str, Any]]:
    """The requests that failed during ``defect`` (one dict per method and route, most failures first).

    Failing spans: the service's HTTP server spans (for a service without any, its callers' HTTP client
    spans to it, paths from ``url.full``) between the defect's ``first_seen`` and ``last_seen``
    (+ ``slack_minutes``) with status ERROR or HTTP >= 500; for a latency regression, the spans slower than
    their route's pre-incident p95 (``baseline_minutes`` before ``first_seen``). When the defect names an ``operation`` (span name, route or ``METHOD route``) and some
    failing spans match it, only those are kept. ``service`` replays another service's failures (the
    cause's), with the defect's time range.

    Requests that never reached the service (refused, reset, timed out: the callers' client spans to it
    without an HTTP status) count as failed requests of the route their path matches.

    Each dict: service, seen_by, method, route, path (the most common concrete ``url.path``), span_name,
    failing_count, status_seen (most common), statuses_seen, latency_ms (median of the failing spans),
    latency_max_ms, baseline_count, baseline_failures (5xx or no answer), baseline_p50_ms, baseline_p95_ms,
    baseline_statuses (statuses < 500 before the incident), incident_count and incident_failures (requests to
    the route from ``first_seen`` on, and how many failed), incident_p50_ms (median of those answered),
    new_client_errors (4xx statuses of the failing requests the route did not answer before) and
    incident_new_rejections (how many such answers during the incident), exception_types, trace_ids (three
    examples), service_version, first_failure, last_failure.

    For a ``data_validation`` defect, a 4xx status the route did not answer before the incident is a failure
    too: valid requests being rejected."""
    spans = require_frame(spans, "spans", SPAN_COLUMNS, "raw.spans")
    target = service or defect.get("service")
    first_seen = defect.get("first_seen")
    if not target or first_seen is None:
        raise ArtifactInputError(
            f"defect {defect.get('defect_id')!r} needs service and first_seen to find its failing requests"
        )
    last_seen = defect.get("last_seen") or first_seen
    lower = first_seen - timedelta(minutes=baseline_minutes)
    upper = last_seen + timedelta(minutes=slack_minutes)
    target_path = pl.coalesce(
        pl.col("attributes").str.json_path_match("$['url.path']"),
        pl.col("attributes").str.json_path_match("$['http.target']").str.replace(r"\?.*$", ""),
        # a caller's CLIENT span names the callee's path only in url.full (OTel semantic conventions)
        pl.col("attributes").str.json_path_match("$['url.full']").str.extract(_URL_PATH, 1),
        pl.col("http_route"),
    )
    window = spans.lazy().filter(pl.col("http_method").is_not_null()
                                 & pl.col("start_time").is_between(lower, upper))
    # The service's own server spans; for a service without them (no instrumentation, a managed
    # dependency), the calls its callers made to it, which name the same requests from the outside.
    http = window.filter((pl.col("service") == target) & (pl.col("kind") == "SERVER")).collect()
    seen_by = "server spans"
    lost = None
    if "peer_service" in spans.columns:
        calls = window.filter((pl.col("peer_service") == target) & (pl.col("kind") == "CLIENT"))
        if http.height == 0:
            http = calls.collect()
            seen_by = "callers' client spans"
        else:
            # requests that never reached a server span (refused, reset, timed out) show only in the callers'
            # client spans: failures without an HTTP status
            lost = calls.filter((pl.col("status_code") == "ERROR")
                                & pl.col("http_status_code").is_null()).collect()
    # JSON attributes are parsed only where the route is missing (parsing is the costly part)
    http = pl.concat([
        http.filter(pl.col("http_route").is_not_null()).with_columns(route=pl.col("http_route")),
        http.filter(pl.col("http_route").is_null()).with_columns(route=target_path),
    ]).with_columns(method=pl.col("http_method").str.to_uppercase().str.strip_chars(), answered=pl.lit(True))
    if lost is not None and lost.height:
        lost = lost.with_columns(route=target_path, answered=pl.lit(False),
                                 service_version=pl.lit(None, pl.String),
                                 method=pl.col("http_method").str.to_uppercase().str.strip_chars())
        lost = lost.with_columns(route=_as_server_routes(lost["route"], http["route"]))
        http = pl.concat([http, lost.select(http.columns)], how="vertical_relaxed")
    http = http.filter(pl.col("method").str.contains(_METHOD.pattern) & pl.col("route").is_not_null())
    if http.height == 0:
        return []
    keys = ["method", "route"]
    answered = pl.col("answered")
    failed = (pl.col("status_code") == "ERROR") | (pl.col("http_status_code") >= 500)
    # a 4xx the route never answered before the incident (valid requests rejected), once the baseline is joined
    new_rejection = (pl.col("http_status_code").is_between(400, 499)
                     & ~pl.col("baseline_statuses").list.contains(pl.col("http_status_code")).fill_null(False))
    baseline = (
        http.filter(pl.col("start_time") < first_seen)
        .group_by(keys)
        .agg(
            baseline_count=pl.len(),
            baseline_failures=failed.sum(),
            baseline_p50_ms=pl.col("duration_ms").filter(answered).median(),
            baseline_p95_ms=pl.col("duration_ms").filter(answered).quantile(0.95, interpolation="linear"),
            baseline_statuses=pl.col("http_status_code").filter(pl.col("http_status_code") < 500)
            .drop_nulls().unique().sort(),
        )
    )
    incident = (
        http.filter(pl.col("start_time") >= first_seen)
        .with_columns(
            incident_count=pl.len().over(keys),
            incident_failures=failed.sum().over(keys),
            incident_p50_ms=pl.col("duration_ms").filter(answered).median().over(keys),
        )
        .join(baseline, on=keys, how="left")
        .with_columns(incident_new_rejections=new_rejection.sum().over(keys))
    )
    if defect.get("defect_type") in _LATENCY_TYPES:
        # without a baseline for the route, the slowest tenth of the incident's requests stand in
        route_p90 = pl.col("duration_ms").quantile(0.9).over(keys)
        failing = incident.filter(answered & (pl.col("duration_ms") > pl.coalesce(pl.col("baseline_p95_ms"),
                                                                                  route_p90)))
    elif defect.get("defect_type") in _VALIDATION_TYPES:
        failing = incident.filter(failed | new_rejection)
    else:
        failing = incident.filter(failed)
    operation = defect.get("operation")
    if operation and failing.height:
        matches = failing.filter(
            (pl.col("name") == operation)
            | (pl.col("route") == operation)
            | (target_path == operation)
            | (pl.concat_str([pl.col("method"), pl.lit(" "), pl.col("route")]) == operation)
        )
        if matches.height:
            failing = matches
    if failing.height == 0:
        return []
    grouped = (
        failing.with_columns(path=target_path).sort("start_time")
        .group_by(keys)
        .agg(
            failing_count=pl.len(),
            path=pl.col("path").drop_nulls().mode().sort().first(),
            span_name=pl.col("name").drop_nulls().mode().sort().first(),
            status_seen=pl.col("http_status_code").drop_nulls().mode().sort().first(),
            statuses_seen=pl.col("http_status_code").drop_nulls().unique().sort(),
            latency_ms=pl.col("duration_ms").median(),
            latency_max_ms=pl.col("duration_ms").max(),
            exception_types=pl.col("exception_type").drop_nulls().unique().sort().head(5),
            trace_ids=pl.col("trace_id").drop_nulls().unique(maintain_order=True).head(3),
            service_version=pl.col("service_version").drop_nulls().mode().sort().first(),
            first_failure=pl.col("start_time").min(),
            last_failure=pl.col("start_time").max(),
            baseline_count=pl.col("baseline_count").first(),
            baseline_failures=pl.col("baseline_failures").first(),
            baseline_p50_ms=pl.col("baseline_p50_ms").first(),
            baseline_p95_ms=pl.col("baseline_p95_ms").first(),
            baseline_statuses=pl.col("baseline_statuses").first(),
            incident_count=pl.col("incident_count").first(),
            incident_failures=pl.col("incident_failures").first(),
            incident_p50_ms=pl.col("incident_p50_ms").first(),
            incident_new_rejections=pl.col("incident_new_rejections").first(),
        )
        .sort(["failing_count", "method", "route"], descending=[True, False, False])
        .head(max_examples)
    )
    out = []
    for row in grouped.to_dicts():
        out.append({
            "service": target,
            "seen_by": seen_by,
            "method": row["method"],
            "route": row["route"],
            "path": row["path"],
            "span_name": row["span_name"],
            "failing_count": int(row["failing_count"]),
            "status_seen": row["status_seen"],
            "statuses_seen": [int(s) for s in row["statuses_seen"] or []],
            "latency_ms": number(row["latency_ms"], 2),
            "latency_max_ms": number(row["latency_max_ms"], 2),
            "baseline_count": int(row["baseline_count"] or 0),
            "baseline_failures": int(row["baseline_failures"] or 0),
            "baseline_p50_ms": number(row["baseline_p50_ms"], 2),
            "baseline_p95_ms": number(row["baseline_p95_ms"], 2),
            "baseline_statuses": [int(s) for s in row["baseline_statuses"] or []],
            "incident_count": int(row["incident_count"] or 0),
            "incident_failures": int(row["incident_failures"] or 0),
            "incident_p50_ms": number(row["incident_p50_ms"], 2),
            "new_client_errors": sorted({int(s) for s in row["statuses_seen"] or [] if 400 <= s < 500}
                                        - {int(s) for s in row["baseline_statuses"] or []}),
            "incident_new_rejections": int(row["incident_new_rejections"] or 0),
            "exception_types": list(row["exception_types"] or []),
            "trace_ids": list(row["trace_ids"] or []),
            "service_version": row["service_version"] if seen_by == "server spans" else None,
            "first_failure": iso(row["first_failure"]),
            "last_failure": iso(row["last_failure"]),
        })
    return out


def _as_server_routes(paths: pl.Series, routes: pl.Series) -> pl.Series:
    """Concrete paths named as the server's route templates (``/items/42`` -> ``/items/{id}``) where one
    matches; a path no template matches stays as it is."""
    templates = sorted({r for r in routes.drop_nulls().unique().to_list() if "{" in r or ":" in r})
    placeholder = r"\\\{[^/{}]+\\\}|(?<=/):[A-Za-z_][A-Za-z0-9_]*"  # {id} or :id, as re.escape writes them
    patterns = [(t, re.compile(re.sub(placeholder, "[^/]+", re.escape(t)))) for t in templates]
    named = {}
    for path in paths.drop_nulls().unique().to_list():
        named[path] = next((t for t, p in patterns if p.fullmatch(path)), path)
    return paths.replace_strict(named, default=None, return_dtype=pl.String)


def latency_budget_ms(example: dict[str, Any], *, margin: float = DEFAULT_LATENCY_MARGIN,
                      min_budget_ms: float = DEFAULT_MIN_BUDGET_MS) -> float | None:
    """Pre-incident p95 × margin, never below the floor; None without a baseline for the route."""
    p95 = example.get("baseline_p95_ms")
    if p95 is None:
        return None
    return round(max(float(p95) * margin, min_budget_ms), 1)


def _binomial_tail(allowed: int, attempts: int, share: float) -> float:
    """P(more than ``allowed`` of ``attempts`` requests fail) when each fails with probability ``share``."""
    kept = sum(math.comb(attempts, i) * share**i * (1.0 - share) ** (attempts - i)
               for i in range(allowed + 1))
    return max(0.0, 1.0 - kept)


def replay_plan(example: dict[str, Any], *, false_alarm: float = DEFAULT_FALSE_ALARM,
                power: float = DEFAULT_POWER, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> tuple[int, int]:
    """(attempts, allowed failures) of a replay's error check, from the route's failure shares before and
    during the incident: the fewest requests for which a route failing as often as before fails the check
    with at most ``false_alarm`` probability and one failing as often as during the incident fails it with at
    least ``power`` (else, within ``max_attempts``, the plan that comes closest). A failure is a 5xx or no
    answer.

    A route whose failures did not rise beyond chance (a one-sided binomial test at ``RISE_SIGNIFICANCE``: a
    handful of requests during the incident prove little), or an example without counts, gets three requests,
    enough to see a route that fails every time."""
    before = (example.get("baseline_failures") or 0, example.get("baseline_count") or 0)
    during = (example.get("incident_failures") or 0, example.get("incident_count") or 0)
    healthy = (max((before[0] + 0.5) / (before[1] + 1.0), MIN_FAILURE_SHARE) if before[1]
               else UNKNOWN_FAILURE_SHARE)
    faulty = during[0] / during[1] if during[1] else 0.0

    def allowed(attempts: int) -> int:
        return next(k for k in range(attempts + 1) if _binomial_tail(k, attempts, healthy) <= false_alarm)

    if faulty <= healthy or _binomial_tail(during[0] - 1, during[1], healthy) > RISE_SIGNIFICANCE:
        attempts = min(3, max_attempts)
        return attempts, allowed(attempts)
    best = (-1.0, 1, 0)
    for attempts in range(1, max_attempts + 1):
        k = allowed(attempts)
        caught = _binomial_tail(k, attempts, faulty)
        if caught >= power:
            return attempts, k
        if caught > best[0] + 1e-9:
            best = (caught, attempts, k)
    return best[1], best[2]


def latency_check(example: dict[str, Any], defect_type: str | None, *, margin: float = DEFAULT_LATENCY_MARGIN,
                  min_budget_ms: float = DEFAULT_REPLAY_MIN_BUDGET_MS) -> tuple[float | None, str]:
    """(budget in ms, how it was set) of a replay's latency check. For a latency regression whose incident
    median is clearly above the pre-incident one (``MIN_LATENCY_RATIO``, ``MIN_LATENCY_GAP_MS``): their
    geometric mean, the threshold a median of a few requests crosses from either side with equal (small) odds,
    kept ``MIN_LATENCY_GAP_MS`` from both. Otherwise the pre-incident p95 × ``margin``
    (``latency_budget_ms``). Never under ``min_budget_ms``; None without a baseline."""
    before, during = example.get("baseline_p50_ms"), example.get("incident_p50_ms")
    if defect_type in _LATENCY_TYPES and before and during and during >= MIN_LATENCY_RATIO * before:
        before, during = float(before), float(during)
        threshold = max(math.sqrt(before * during), before + MIN_LATENCY_GAP_MS, min_budget_ms)
        if during - threshold >= MIN_LATENCY_GAP_MS:
            return (round(threshold, 1),
                    f"between the pre-incident median ({before:g} ms) and the incident's ({during:g} ms)")
    budget = latency_budget_ms(example, margin=margin, min_budget_ms=min_budget_ms)
    return budget, f"pre-incident p95 ({example.get('baseline_p95_ms')} ms) x {margin:g}"


# ------------------------------------------------------------------------------------ flaky tests


def flaky_test_case(test_cases: pl.DataFrame, defect: dict[str, Any], *, fuzzy: bool = True
                    ) -> dict[str, Any] | None:
    """The CI test a ``flaky_test`` defect is about, with its record: the test whose name (or
    ``classname.name`` / ``classname::name``) equals the defect's ``operation`` (else, when ``fuzzy``, whose
    name holds the operation's letters and digits in order), preferring the defect's
    service; when the defect names no operation, the flaky test (failed and passed on one version) of that
    service with the most failures. None when nothing matches."""
    test_cases = require_frame(test_cases, "test_cases", TEST_CASE_COLUMNS, "raw.test_cases")
    rows = test_cases.filter(pl.col("status").is_in(["passed", "failed", "error"]))
    operation = defect.get("operation")
    if operation:
        exact = rows.filter(
            (pl.col("name") == operation)
            | (pl.concat_str([pl.col("classname"), pl.lit("."), pl.col("name")]) == operation)
            | (pl.concat_str([pl.col("classname"), pl.lit("::"), pl.col("name")]) == operation)
        )
        if exact.height == 0 and fuzzy:
            # runners rename tests ("handles concurrent updates" -> TestHandlesConcurrent/updates): compare
            # letters and digits only
            wanted = re.sub(r"[^a-z0-9]", "", operation.lower())
            squashed = pl.col("name").str.to_lowercase().str.replace_all(r"[^a-z0-9]", "")
            exact = rows.filter(squashed.str.contains(wanted, literal=True)) if wanted else exact
        rows = exact
    service = defect.get("service")
    if service and (rows["service"] == service).any():
        rows = rows.filter(pl.col("service") == service)
    if rows.height == 0:
        return None
    failed = pl.col("status").is_in(["failed", "error"])
    keys = ["suite", "classname", "name"]
    # flaky: failed and passed on one version (a pass on a later version is a fix, not flakiness)
    per_version = rows.group_by([*keys, "version"]).agg(
        _flaky=failed.any() & (pl.col("status") == "passed").any())
    stats = (
        rows.group_by(keys)
        .agg(
            runs=pl.len(),
            failures=failed.sum(),
            passes=(pl.col("status") == "passed").sum(),
            service=pl.col("service").drop_nulls().mode().sort().first(),
            versions=pl.col("version").drop_nulls().unique().sort(),
            failed_versions=pl.col("version").filter(failed).drop_nulls().unique().sort(),
            message=pl.col("message").filter(failed).drop_nulls().last(),
        )
        .join(per_version.group_by(keys).agg(flaky=pl.col("_flaky").any()), on=keys, how="left", nulls_equal=True)
        .sort(["flaky", "failures", "suite", "classname", "name"], descending=[True, True, False, False, False],
              nulls_last=True)
    )
    if not operation:
        stats = stats.filter(pl.col("flaky"))
    if stats.height == 0:
        return None
    row = stats.row(0, named=True)
    return {
        "suite": row["suite"], "classname": row["classname"], "name": row["name"], "service": row["service"],
        "runs": int(row["runs"]), "failures": int(row["failures"]), "passes": int(row["passes"]),
        "flaky": bool(row["flaky"]), "versions": list(row["versions"] or []),
        "failed_versions": list(row["failed_versions"] or []), "message": row["message"],
    }


_JS_TEST_FILE = re.compile(r"\.(?:c|m)?[jt]sx?$")
_GO_TEST_NAME = re.compile(r"^(?:Test|Example|Benchmark|Fuzz)[A-Za-z0-9_]*")


def _re2_escape(text: str) -> str:
    """Escape regex metacharacters for Go's RE2 and JavaScript (both reject Python's escapes of spaces)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _safe_positional(value: str) -> str:
    # an argument that starts with '-' would be read as an option by the runner
    return "./" + value if value.startswith("-") else value


def runner_command(test: dict[str, Any]) -> list[str] | None:
    """The command that runs one JUnit test case again, from the names the common JUnit dialects write
    (jest-junit: suite is the test file; go-junit-report: classname is the package import path and the name
    a Go test function; pytest: classname is the dotted module path and class; Maven Surefire: a Java class
    name). ``{python}`` stands for the interpreter running the test. None when the dialect is unclear."""
    suite = str(test.get("suite") or "")
    classname = str(test.get("classname") or "")
    name = str(test.get("name") or "")
    if not name:
        return None
    js_file = next((v for v in (suite, classname) if _JS_TEST_FILE.search(v)), None)
    if js_file:
        return ["npx", "jest", "--runTestsByPath", _safe_positional(js_file), "-t", _re2_escape(name)]
    if _GO_TEST_NAME.match(name) and "/" in classname:
        pattern = "/".join(f"^{_re2_escape(part)}$" for part in name.split("/"))
        return ["go", "test", "-count=1", "-run", pattern, _safe_positional(classname)]
    if name.startswith("test") and "/" not in classname:
        parts = [p for p in classname.split(".") if p]
        split = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
        module, classes = parts[:split], parts[split:]
        node = "/".join(module) + ".py" if module else ""
        node_id = "::".join([node, *classes, name]) if node else name
        return ["{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", _safe_positional(node_id)]
    parts = classname.split(".")
    if len(parts) >= 2 and parts[-1][:1].isupper() and re.match(r"^[A-Za-z_$][\w$]*", name):
        method = re.match(r"^[A-Za-z_$][\w$]*", name).group(0)
        return ["mvn", "-q", f"-Dtest={classname}#{method}", "-Dsurefire.failIfNoSpecifiedTests=false", "test"]
    return None


# ------------------------------------------------------------------------------------ rendering


def render_regression_test(
    defect: dict[str, Any],
    root_causes: Sequence[dict[str, Any]],
    example_requests: Sequence[dict[str, Any]],
    *,
    test_case: dict[str, Any] | None = None,
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
    min_budget_ms: float = DEFAULT_REPLAY_MIN_BUDGET_MS,
    samples: int = DEFAULT_SAMPLES,
    reruns: int = DEFAULT_RERUNS,
    timeout_s: float = 10.0,
) -> str:
    """A pytest module (source text) that fails while ``defect`` is present and passes once it is fixed.

    ``example_requests`` comes from ``example_requests()``; ``test_case`` (from ``flaky_test_case()``) is
    needed for a ``flaky_test`` defect. Raises ``NotRenderable`` when there is nothing to check."""
    if not defect.get("defect_id"):
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    causes = [_cause_summary(c) for c in root_causes][:3]
    has_test = bool(test_case and test_case.get("name"))
    if defect.get("defect_type") == "flaky_test":
        if not has_test:
            raise NotRenderable(
                f"flaky-test defect {defect['defect_id']!r}: no CI test case found for operation "
                f"{defect.get('operation')!r}; pass test_case (flaky_test_case(test_cases, defect))"
            )
        return _render_rerun(defect, causes, test_case, reruns)
    cases = request_cases(defect, example_requests, latency_margin=latency_margin,
                          min_budget_ms=min_budget_ms)
    if cases:
        return _render_http(defect, causes, cases, samples, timeout_s, latency_margin)
    if has_test:  # a defect CI found (a test failing on a version): the fix makes that test pass again
        return _render_rerun(defect, causes, test_case, reruns)
    patterns = _log_patterns(defect)
    if patterns:
        return _render_log_signature(defect, causes, patterns)
    raise NotRenderable(
        f"defect {defect['defect_id']!r}: no failing HTTP request, CI test or error template to test against"
    )


def _defect_summary(defect: dict[str, Any]) -> dict[str, Any]:
    keys = ("defect_id", "fingerprint", "service", "defect_type", "severity", "status", "title", "operation",
            "exception_type", "template_id", "template", "incident_id")
    out: dict[str, Any] = {k: defect.get(k) for k in keys}
    out["first_seen"] = iso(defect.get("first_seen"))
    out["last_seen"] = iso(defect.get("last_seen"))
    return out


def _cause_summary(cause: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": cause.get("rank"),
        "service": cause.get("service"),
        "cause_kind": cause.get("cause_kind"),
        "change_id": cause.get("change_id"),
        "confidence": number(cause.get("confidence"), 3),
    }


def request_body_env(method: str, route: str) -> str:
    """The variable a replay reads a valid request body (JSON) from, for one method and route:
    ``QA_REQUEST_BODY_<METHOD>_<ROUTE>`` (e.g. ``QA_REQUEST_BODY_POST_CART_USER_ID_ITEMS``)."""
    return f"QA_REQUEST_BODY_{env_suffix(f'{method} {route}')}"


def request_cases(defect: dict[str, Any], example_requests: Sequence[dict[str, Any]], *,
                  latency_margin: float = DEFAULT_LATENCY_MARGIN,
                  min_budget_ms: float = DEFAULT_REPLAY_MIN_BUDGET_MS) -> list[dict[str, Any]]:
    """The requests a replay sends, one dict per example (``example_requests``) whose method is a token and
    that has a route: method, route, concrete path, the service's base-URL variable, the error check's plan
    (``replay_plan``) and the latency budget (``latency_check``). The HTTP regression test and other replay
    formats (``postman``) are rendered from these."""
    defect_type = defect.get("defect_type")
    cases = (_request_case(e, defect_type, latency_margin, min_budget_ms) for e in example_requests)
    return [c for c in cases if c]


def _request_case(example: dict[str, Any], defect_type: str | None, margin: float,
                  min_budget_ms: float) -> dict[str, Any] | None:
    method = str(example.get("method") or "").upper()
    route = example.get("route")
    if not _METHOD.match(method) or not route:
        return None
    service = example.get("service")
    attempts, max_failures = replay_plan(example)
    budget, basis = latency_check(example, defect_type, margin=margin, min_budget_ms=min_budget_ms)
    client_errors = [int(s) for s in example.get("new_client_errors") or []]
    # the share of those new 4xx answers, before (none: they are new) and during the incident
    rejections = {"baseline_failures": 0, "baseline_count": example.get("baseline_count"),
                  "incident_failures": example.get("incident_new_rejections"),
                  "incident_count": example.get("incident_count")}
    rejection_attempts, max_rejections = replay_plan(rejections) if client_errors else (0, 0)
    return {
        "id": f"{slug(method, 8)}_{slug(route, 60)}",
        "service": service,
        "base_url_env": f"QA_TARGET_BASE_URL_{env_suffix(service)}" if service else None,
        "method": method,
        "route": str(route),
        "path": None if example.get("path") is None else str(example["path"]),
        "statuses_seen": list(example.get("statuses_seen") or []),
        "failing_count": example.get("failing_count"),
        "latency_seen_ms": example.get("latency_ms"),
        "baseline_p95_ms": example.get("baseline_p95_ms"),
        "latency_budget_ms": budget,
        "latency_budget_basis": basis,
        "attempts": attempts,
        "max_failures": max_failures,
        "failures_before": [example.get("baseline_failures"), example.get("baseline_count")],
        "failures_during": [example.get("incident_failures"), example.get("incident_count")],
        "client_errors_seen": client_errors,
        "client_error_attempts": rejection_attempts,
        "max_client_errors": max_rejections,
        "client_errors_during": [example.get("incident_new_rejections"), example.get("incident_count")],
        "body_env": request_body_env(method, str(route)),
        "trace_ids": list(example.get("trace_ids") or []),
        "service_version": example.get("service_version"),
    }


# Base classes every runtime uses for any failure: naming one matches unrelated errors in any log.
_GENERIC_EXCEPTIONS = {
    "error", "exception", "throwable", "baseexception", "standarderror", "runtimeerror", "runtimeexception",
    "errorstring", "errors.errorstring", "*errors.errorstring", "fmt.wraperror", "*fmt.wraperror",
}


def _log_patterns(defect: dict[str, Any]) -> list[str]:
    patterns = []
    template = defect.get("template")
    if template and len(re.sub(r"<\*>|\W", "", str(template))) >= 8:  # enough fixed text to be specific
        pieces = [re.escape(p) for p in str(template).split("<*>")]
        patterns.append(".*?".join(pieces).strip())
    exception = str(defect.get("exception_type") or "").strip()
    if exception and exception.lower() not in _GENERIC_EXCEPTIONS:
        patterns.append(re.escape(exception))
    return patterns


def _fill(template: str, values: dict[str, str]) -> str:
    """Substitute @@NAME@@ markers in one pass, so text inserted for one marker is never scanned again."""
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values[m.group(1)], template)


def _doc_header(defect: dict[str, Any], causes: list[dict[str, Any]]) -> str:
    title = one_line(defect.get("title") or defect.get("defect_type") or "defect", 160)
    lines = [
        f"Regression test for defect {one_line(defect.get('defect_id'), 80)}: {title}",
        "",
        f"Severity {one_line(defect.get('severity'), 8)}, type {one_line(defect.get('defect_type'), 40)}, "
        f"service {one_line(defect.get('service'), 80)}, seen {iso(defect.get('first_seen'))} to "
        f"{iso(defect.get('last_seen'))} UTC.",
    ]
    if causes:
        top = causes[0]
        change = f", change {one_line(top.get('change_id'), 80)}" if top.get("change_id") else ""
        lines.append(
            f"Most likely cause: {one_line(top.get('cause_kind'), 40)} in {one_line(top.get('service'), 80)}"
            f"{change} (confidence {top.get('confidence')})."
        )
    return py_docstring_text("\n".join(lines))


_HTTP_TEMPLATE = '''"""@@HEADER@@

Generated by qa-assets from production telemetry. It replays the requests that failed during the defect
(method and route from the failing spans) and expects what the service did before the incident:

- no more failures (5xx or no answer) than the route's pre-incident share allows. Each route is asked
  up to `attempts` times, enough that a route failing as often as during the defect fails this test with
  99% probability while a route as healthy as before passes it with 99.5% (REQUESTS: attempts,
  max_failures; fewer when the verdict is settled early);
- a median latency (of LATENCY_SAMPLES requests) within budget plus the time server spans never saw: the
  network's round trips (timed by opening connections) and the client's time, or, when the runner or the
  network is busy, the median time of a reference request for a path no route has, sent just before each
  request. The budget: for a latency regression, between the pre-incident median and the incident's;
  otherwise the pre-incident p95 times @@MARGIN@@ (REQUESTS: latency_budget_ms and its basis).

- no new client errors: when the route answered a 4xx during the defect that it never answered before (valid
  requests rejected), no more of those than the plan allows (REQUESTS: client_errors_seen). It needs a valid
  request body for POST/PUT/PATCH and skips without one.

Request bodies are not in telemetry: POST/PUT/PATCH send an empty JSON object unless QA_REQUEST_BODY_... (the
case's body_env) holds a valid one, so a 4xx answer is accepted by the other checks; a 5xx is not.

Run it against a deployment of the fixed version:

    QA_TARGET_BASE_URL=https://staging.example.com python -m pytest path/to/this_file.py -q

Settings (environment):
  QA_TARGET_BASE_URL_<SERVICE>  base URL for one service (e.g. QA_TARGET_BASE_URL_CHECKOUT), else
  QA_TARGET_BASE_URL            base URL for every request; the tests skip when neither is set
  QA_LATENCY_BUDGET_MS          an absolute budget for the median request time (no network allowance added)
  QA_PATH_PARAM_<NAME>          value for a route placeholder such as {id} when no concrete path was seen
  QA_REQUEST_BODY_<METHOD>_<ROUTE>  a valid JSON request body for one route (REQUESTS: body_env)
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

CLIENT_OVERHEAD_MS = 3.0  # building the request and reading the answer in this process
REFERENCE_PATH = "/qa-assets-latency-reference"  # no route has it: answered without the route's own work
DEFECT = @@DEFECT@@
ROOT_CAUSES = @@CAUSES@@
REQUESTS = @@REQUESTS@@
LATENCY_SAMPLES = @@SAMPLES@@
TIMEOUT_S = @@TIMEOUT@@


def _base_url(case):
    names = [n for n in (case.get("base_url_env"), "QA_TARGET_BASE_URL") if n]
    base = next((os.environ[n] for n in names if os.environ.get(n)), None)
    if not base:
        pytest.skip(
            f"set {' or '.join(names)} to the base URL of a deployment of {case['service']!r} "
            f"to run this regression test"
        )
    return base.rstrip("/")


def _path(case):
    path = case["path"] or case["route"] or "/"

    def placeholder(match):
        name = match.group(1) or match.group(2)
        variable = "QA_PATH_PARAM_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
        return urllib.parse.quote(os.environ.get(variable, "1"), safe="")  # a value is one path segment

    path = re.sub(r"\\{([^/{}]+)\\}|(?<=/):([A-Za-z_][A-Za-z0-9_]*)", placeholder, path)
    if not path.startswith("/"):
        path = "/" + path
    return urllib.parse.quote(path, safe="/%:@!$&'()*+,;=-._~")


def _send(case):
    """(status or None when nothing answered, milliseconds, what went wrong) of one request."""
    url = _base_url(case) + _path(case)
    body = os.environ.get(case["body_env"])
    headers = {"User-Agent": "qa-assets-regression-test/1", "Accept": "*/*"}
    if body is not None or case["method"] in ("POST", "PUT", "PATCH"):
        body = (body if body is not None else "{}").encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=case["method"], headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        return None, (time.perf_counter() - started) * 1000.0, f"no answer ({error}; timeout {TIMEOUT_S} s)"
    return status, (time.perf_counter() - started) * 1000.0, ""


def _network_ms(case):
    """What a request pays that server spans never saw: its round trips (TCP and the request, TLS two more),
    each timed by opening a connection to the target (the kernel answers that, so a slow service does not
    make it slower), plus the client's own time."""
    parts = urllib.parse.urlsplit(_base_url(case))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        try:
            with socket.create_connection((parts.hostname, port), timeout=TIMEOUT_S):
                timings.append((time.perf_counter() - started) * 1000.0)
        except OSError:
            return CLIENT_OVERHEAD_MS  # the requests themselves will say what is wrong
    round_trips = 4 if parts.scheme == "https" else 2
    return round_trips * statistics.median(timings) + CLIENT_OVERHEAD_MS


def _reference_ms(case):
    """The time of a request for a path no route has (answered at once, typically 404): what every request
    costs right now apart from the route's own work, when the runner or the network is busy."""
    request = urllib.request.Request(_base_url(case) + REFERENCE_PATH, method="GET",
                                     headers={"User-Agent": "qa-assets-regression-test/1"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as error:
        error.close()
    except (urllib.error.URLError, TimeoutError, OSError):
        return 0.0
    return (time.perf_counter() - started) * 1000.0


@pytest.mark.parametrize("case", REQUESTS, ids=[c["id"] for c in REQUESTS])
def test_no_server_error(case):
    failures, sent = [], 0
    for sent in range(1, case["attempts"] + 1):
        status, _, problem = _send(case)
        if status is None or status >= 500:
            failures.append(problem or str(status))
            if len(failures) > case["max_failures"]:
                break  # the verdict cannot change
    before, during = case["failures_before"], case["failures_during"]
    assert len(failures) <= case["max_failures"], (
        f"{case['method']} {case['route']}: {len(failures)} of {sent} requests failed "
        f"({'; '.join(failures[:3])}); expected at most {case['max_failures']} of {case['attempts']}. "
        f"Before defect {DEFECT['defect_id']} "
        f"{before[0]} of {before[1]} requests failed, during it {during[0]} of {during[1]} "
        f"(statuses {case['statuses_seen'] or 'none: timeouts or resets'})"
    )


@pytest.mark.parametrize("case", REQUESTS, ids=[c["id"] for c in REQUESTS])
def test_no_new_client_errors(case):
    seen = case["client_errors_seen"]
    if not seen:
        pytest.skip("no client error (4xx) the route had not answered before appeared during the defect")
    if case["method"] in ("POST", "PUT", "PATCH") and not os.environ.get(case["body_env"]):
        pytest.skip(f"during the defect the route answered {seen} to requests it accepted before; set "
                    f"{case['body_env']} to a valid request body (JSON) to check it")
    rejected, sent = [], 0
    for sent in range(1, case["client_error_attempts"] + 1):
        status, _, _ = _send(case)
        if status in seen:
            rejected.append(status)
            if len(rejected) > case["max_client_errors"]:
                break  # the verdict cannot change
    during = case["client_errors_during"]
    assert len(rejected) <= case["max_client_errors"], (
        f"{case['method']} {case['route']}: {len(rejected)} of {sent} valid requests were rejected with {seen}; "
        f"expected at most {case['max_client_errors']} of {case['client_error_attempts']}. Before defect "
        f"{DEFECT['defect_id']} the route never answered {seen}, during it {during[0]} of {during[1]} times"
    )


@pytest.mark.parametrize("case", REQUESTS, ids=[c["id"] for c in REQUESTS])
def test_latency_within_budget(case):
    override = os.environ.get("QA_LATENCY_BUDGET_MS")
    budget = float(override) if override else case["latency_budget_ms"]
    if budget is None:
        pytest.skip("telemetry had no pre-incident latency for this route; set QA_LATENCY_BUDGET_MS to check it")
    network = 0.0 if override else _network_ms(case)
    timings, allowances = [], []
    for _ in range(LATENCY_SAMPLES):
        # a reference request just before each request pays the same network and runner load
        allowances.append(0.0 if override else max(network, _reference_ms(case)))
        status, took, problem = _send(case)
        if status is None:
            pytest.fail(f"{case['method']} {case['route']}: {problem}")
        timings.append(took)
    median, allowance = statistics.median(timings), statistics.median(allowances)
    assert median <= budget + allowance, (
        f"{case['method']} {case['route']}: median {median:.1f} ms over {LATENCY_SAMPLES} requests exceeds the "
        f"budget of {budget:.1f} ms + {allowance:.1f} ms network and client time "
        f"({'QA_LATENCY_BUDGET_MS' if override else case['latency_budget_basis']}; during the defect "
        f"{case['latency_seen_ms']} ms)"
    )
'''


def _render_http(defect: dict[str, Any], causes: list[dict[str, Any]], cases: list[dict[str, Any]],
                 samples: int, timeout_s: float, margin: float) -> str:
    return _fill(_HTTP_TEMPLATE, {
        "HEADER": _doc_header(defect, causes),
        "MARGIN": py_docstring_text(f"{margin:g}"),
        "DEFECT": py_literal(_defect_summary(defect)),
        "CAUSES": py_literal(causes),
        "REQUESTS": py_literal(cases),
        "SAMPLES": py_literal(int(samples)),
        "TIMEOUT": py_literal(float(timeout_s)),
    })


_RERUN_TEMPLATE = '''"""@@HEADER@@

@@RECORD@@

Run it from a checkout of the code under test:

    QA_REPO_DIR=/path/to/checkout python -m pytest path/to/this_file.py -q

Settings (environment):
  QA_REPO_DIR        working directory for the runner (default: the current directory)
  QA_RERUN_COUNT     how many runs (default @@RERUNS@@)
  QA_RERUN_COMMAND   the command that runs the test, replacing the one derived from the JUnit names; the
                     tokens {suite}, {classname}, {name} and {python} are replaced inside each argument
                     (no shell is involved)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

DEFECT = @@DEFECT@@
ROOT_CAUSES = @@CAUSES@@
TEST_CASE = @@TEST_CASE@@
COMMAND = @@COMMAND@@  # derived from the JUnit dialect; None when it could not be told
RERUNS = @@RERUNS@@
RUN_TIMEOUT_S = 900


def _command():
    override = os.environ.get("QA_RERUN_COMMAND")
    if override:
        tokens = shlex.split(override)
    elif COMMAND:
        tokens = list(COMMAND)
    else:
        pytest.skip("could not tell which test runner reported this test: set QA_RERUN_COMMAND, e.g. "
                    "'npx jest -t {name}' or 'mvn -Dtest={classname} test'")
    values = {"{suite}": TEST_CASE["suite"] or "", "{classname}": TEST_CASE["classname"] or "",
              "{name}": TEST_CASE["name"] or "", "{python}": sys.executable}
    # one pass per token, so a value holding "{name}" is not replaced again
    return [re.sub(r"\\{(suite|classname|name|python)\\}", lambda m: values["{" + m.group(1) + "}"], t)
            for t in tokens]


def test_passes_every_rerun():
    command = _command()
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]!r} is not installed here; run this where the test's toolchain is")
    cwd = os.environ.get("QA_REPO_DIR") or os.getcwd()
    reruns = int(os.environ.get("QA_RERUN_COUNT") or RERUNS)
    failures = []
    for attempt in range(1, reruns + 1):
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if result.returncode != 0:
            failures.append((attempt, result.returncode, (result.stdout + result.stderr)[-1500:]))
    assert not failures, (
        f"{len(failures)} of {reruns} runs of {TEST_CASE['name']!r} failed (still flaky). "
        f"Command: {shlex.join(command)}. Last failing run (attempt {failures[-1][0]}, exit {failures[-1][1]}):\\n"
        f"{failures[-1][2]}"
    )
'''


def _test_record(test: dict[str, Any], reruns: int) -> str:
    failures, runs = test.get("failures") or 0, test.get("runs") or 0
    versions = ", ".join(str(v) for v in test.get("failed_versions") or []) or "unknown versions"
    if test.get("flaky"):
        record = (f"the test below failed in {failures} of {runs} recorded runs and passed in others of the same "
                  f"version ({versions}): it is flaky.")
    else:
        record = f"the test below failed in {failures} of {runs} recorded runs (on version(s) {versions})."
    return textwrap.fill(
        f"Generated by qa-assets from CI reports: {record} This module runs it {reruns} times with its own "
        "runner and fails when any run fails, so the fix is proven by a streak of green runs, not one lucky "
        "pass.", width=110)


def _render_rerun(defect: dict[str, Any], causes: list[dict[str, Any]], test_case: dict[str, Any],
                  reruns: int) -> str:
    test = {k: test_case.get(k) for k in ("suite", "classname", "name", "service", "runs", "failures", "passes",
                                          "flaky", "versions", "failed_versions", "message")}
    return _fill(_RERUN_TEMPLATE, {
        "HEADER": _doc_header(defect, causes),
        "RECORD": py_docstring_text(_test_record(test, reruns)),
        "RERUNS": py_literal(int(reruns)),
        "DEFECT": py_literal(_defect_summary(defect)),
        "CAUSES": py_literal(causes),
        "TEST_CASE": py_literal(test),
        "COMMAND": py_literal(runner_command(test)),
    })


_LOG_TEMPLATE = '''"""@@HEADER@@

Generated by qa-assets from production logs. No failing HTTP request was seen for this defect, so this test
checks the error signature instead: none of the log files must show the defect's error template or exception
type (@@PATTERN_NOTE@@). It is weaker than a request replay: it proves something only when the service ran
the failing code path while writing the logs it reads (run it after a workload or a smoke run).

    QA_TARGET_LOG_PATH=/var/log/service python -m pytest path/to/this_file.py -q

QA_TARGET_LOG_PATH is a log file, a folder (every file in it, recursively) or a glob; the test skips when unset.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

DEFECT = @@DEFECT@@
ROOT_CAUSES = @@CAUSES@@
PATTERNS = @@PATTERNS@@  # regular expressions; from the template, variables (<*>) match anything


def _log_files():
    target = os.environ.get("QA_TARGET_LOG_PATH")
    if not target:
        pytest.skip(f"set QA_TARGET_LOG_PATH to the logs of {DEFECT['service']!r} to run this regression test")
    if os.path.isdir(target):
        return sorted(os.path.join(d, f) for d, _, files in os.walk(target) for f in files)
    return sorted(p for p in glob.glob(target) if os.path.isfile(p))


def test_error_signature_absent():
    files = _log_files()
    if not files:
        pytest.fail(f"QA_TARGET_LOG_PATH={os.environ['QA_TARGET_LOG_PATH']!r} names no readable log file")
    compiled = [re.compile(p) for p in PATTERNS]
    hits = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if any(p.search(line) for p in compiled):
                    hits.append(f"{path}:{number}: {line.strip()[:300]}")
    assert not hits, f"{len(hits)} log lines still show defect {DEFECT['defect_id']}; first: {hits[:3]}"
'''


def _render_log_signature(defect: dict[str, Any], causes: list[dict[str, Any]], patterns: list[str]) -> str:
    note = "template" if defect.get("template") else "exception type"
    return _fill(_LOG_TEMPLATE, {
        "HEADER": _doc_header(defect, causes),
        "PATTERN_NOTE": py_docstring_text(f"{len(patterns)} pattern(s), from the {note}"),
        "DEFECT": py_literal(_defect_summary(defect)),
        "CAUSES": py_literal(causes),
        "PATTERNS": py_literal(patterns),
    })


def regression_test_kind(source: str) -> str:
    """Which kind of regression test a rendered module is: http_replay | rerun | log_signature."""
    if "def test_no_server_error" in source:
        return "http_replay"
    if "def test_passes_every_rerun" in source:
        return "rerun"
    return "log_signature"
