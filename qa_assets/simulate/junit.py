"""CI runs of every released version, written as JUnit XML in the dialect of the service's test runner:
Maven Surefire (Java), pytest (Python), jest-junit (Node) and go-junit-report (Go).

Each report's ``<properties>`` carry ``service``, ``version``, ``build_id``, ``commit`` and ``branch``.
A version that really is broken fails the test that covers the defect when the fault says a test caught it;
flaky tests fail in some runs of a version and pass on the re-run.
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from qa_assets.simulate.deployments import Change
from qa_assets.simulate.errors import contract_field, words
from qa_assets.simulate.faults import Plan
from qa_assets.simulate.topology import Service, Topology

PHRASES = (
    "returns {noun} by id",
    "returns 404 for unknown {noun}",
    "rejects invalid payload",
    "paginates {noun} list",
    "handles empty {noun} list",
    "retries on transient error",
    "times out slow upstream",
    "serializes response",
    "maps domain errors to http status",
    "caches {noun} lookups",
    "validates currency code",
    "computes totals with rounding",
    "publishes event after commit",
    "respects feature flag",
    "closes connections on shutdown",
    "reads config defaults",
    "is idempotent on retry",
    "logs request id",
    "rejects negative amounts",
    "sorts {noun} by date",
    "filters {noun} by status",
    "handles unicode names",
    "propagates trace context",
    "returns cached value when upstream fails",
)
# The test that covers what a fault kind breaks (it fails on the broken version when the fault says so).
CATCHING_TESTS = {
    "contract_break": (
        "contract",
        "response matches consumer contract",
        "expected field '{field}' to be a number but got an object",
    ),
    "bad_deploy": ("service", "computes totals for multi item order", "expected status 200 but got 500"),
    "validation_regression": ("api", "accepts valid request payload", "expected status 200 but got 422"),
    "crash_loop": ("app", "starts with production configuration", "application context failed to start"),
    "memory_leak": (
        "service",
        "cache stays bounded under load",
        "expected at most 10000 entries but found 48211",
    ),
    "config_error": ("config", "loads production configuration", "missing required setting"),
    "latency_regression": ("service", "responds within budget", "expected under 50 ms but took 310 ms"),
}
FLAKY_TEST = ("service", "handles concurrent updates", "expected 2 updates within 500 ms but saw 1")


@dataclass
class CaseResult:
    suite: str
    name: str
    seconds: float
    status: str = "passed"  # passed | failed | error | skipped
    message: str = ""


@dataclass
class CiRun:
    build_id: str
    service: str
    version: str
    commit: str
    started_ns: int
    attempt: int
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status in ("failed", "error") for c in self.cases)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.cases)


def test_catalogue(service: Service) -> list[tuple[str, str]]:
    """(suite key, description) pairs of a service's test suite, stable across versions."""
    rng = np.random.default_rng(zlib.crc32(service.name.encode()))
    tests: list[tuple[str, str]] = []
    for endpoint in service.endpoints:
        subject = " ".join(words(endpoint.route)) or service.noun
        tests.append(("api", f"{endpoint.method.lower()} {subject} returns ok"))
        tests.append(("api", f"{endpoint.method.lower()} {subject} rejects bad request"))
    count = int(rng.integers(10, 30))
    for index in rng.choice(len(PHRASES), size=min(count, len(PHRASES)), replace=False):
        suite = ("service", "repository", "client", "api")[int(index) % 4]
        tests.append((suite, PHRASES[int(index)].format(noun=service.noun)))
    for suite, name, _ in CATCHING_TESTS.values():
        tests.append((suite, name))
    return list(dict.fromkeys(tests))


def plan_ci_runs(
    topology: Topology, changes: list[Change], plan: Plan, start_ns: int, seed: int
) -> list[CiRun]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6_060]))
    caught = {f.change_id: f for f in plan.faults if f.spec.caught_by_ci and f.change_id}
    flaky = {f.service: f for f in plan.faults if not f.kind.in_production}
    build_number = int(rng.integers(11_000_000_000, 12_000_000_000))
    runs: list[CiRun] = []
    for change in changes:
        if (
            change.change_kind != "code"
            or change.event_type in ("rolledback", "removed")
            or not change.version
        ):
            continue
        if change.service not in topology.by_name:
            continue
        service = topology.service(change.service)
        if service.language not in DIALECTS:  # nothing to test (a proxy's configuration)
            continue
        catalogue = test_catalogue(service)
        flaky_fault = flaky.get(change.service)
        flaky_active = flaky_fault is not None and change.minute >= flaky_fault.start_min
        if flaky_fault is not None and change.event_id == flaky_fault.change_id:
            flaky_fault.flaky_test = FLAKY_TEST[1]
        deploy_ns = change.timestamp_ns(start_ns)
        cursor = deploy_ns - int(rng.uniform(25, 60) * 60e9)
        fault = caught.get(change.event_id)
        attempts = 0
        while True:
            attempts += 1
            build_number += int(rng.integers(1, 40))
            run = CiRun(str(build_number), change.service, change.version, change.commit, cursor, attempts)
            force_flaky = (
                flaky_active and change.event_id == getattr(flaky_fault, "change_id", None) and attempts == 1
            )
            run.cases = _run_cases(
                rng, service, catalogue, _failure_text(fault, service), flaky_active, force_flaky
            )
            runs.append(run)
            cursor += int((run.seconds + rng.uniform(60, 200)) * 1e9)
            # a red build is re-run; a build that keeps failing is deployed after the second attempt anyway
            if not run.failed or attempts >= (2 if fault else 3) or cursor > deploy_ns - 60e9:
                break
    return runs


def _failure_text(fault, service: Service) -> tuple[str, str, str] | None:
    """(suite, test, message) of the test that catches ``fault`` on its broken version, if it is caught."""
    if fault is None or fault.kind.name not in CATCHING_TESTS:
        return None
    suite, name, message = CATCHING_TESTS[fault.kind.name]
    endpoint = service.endpoint(fault.routes[0]) if fault.routes else None
    return suite, name, message.format(field=contract_field(endpoint))


def _run_cases(
    rng: np.random.Generator,
    service: Service,
    catalogue: list[tuple[str, str]],
    caught: tuple[str, str, str] | None,
    flaky_active: bool,
    force_flaky: bool,
) -> list[CaseResult]:
    cases = []
    for suite, name in catalogue:
        seconds = float(np.round(rng.lognormal(-4.2 if suite != "repository" else -2.0, 1.0), 3))
        case = CaseResult(suite, name, seconds)
        if zlib.crc32(f"{service.name}:{name}".encode()) % 23 == 0:
            case.status, case.message = "skipped", "disabled until upstream sandbox is available"
        if caught and (suite, name) == caught[:2]:
            case.status, case.message = "failed", caught[2]
        cases.append(case)
    if flaky_active:
        fails = force_flaky or rng.random() < 0.35
        cases.append(
            CaseResult(
                FLAKY_TEST[0],
                FLAKY_TEST[1],
                float(np.round(rng.uniform(0.4, 0.6), 3)),
                "failed" if fails else "passed",
                FLAKY_TEST[2] if fails else "",
            )
        )
    return cases


# ------------------------------------------------------------------------------------------ writing


def _iso(ns: int, style: str) -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    if style == "pytest":
        return moment.isoformat(timespec="microseconds")
    if style == "go":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S")  # jest-junit writes local time without an offset


def _properties(run: CiRun, extra: list[tuple[str, str]] = ()) -> str:
    pairs = [
        ("service", run.service),
        ("version", run.version),
        ("build_id", run.build_id),
        ("commit", run.commit),
        ("branch", "main"),
        *extra,
    ]
    return (
        "<properties>"
        + "".join(f"<property name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in pairs)
        + "</properties>"
    )


def _camel(text: str) -> str:
    parts = text.replace("-", " ").split()
    return parts[0] + "".join(p.capitalize() for p in parts[1:]) if parts else "test"


def _snake(text: str) -> str:
    return "_".join(text.replace("-", " ").split())


def _counts(cases: list[CaseResult]) -> dict[str, int]:
    return {
        "tests": len(cases),
        "failures": sum(c.status == "failed" for c in cases),
        "errors": sum(c.status == "error" for c in cases),
        "skipped": sum(c.status == "skipped" for c in cases),
    }


def _java(service: Service, run: CiRun) -> dict[str, str]:
    files = {}
    by_suite: dict[str, list[CaseResult]] = {}
    for case in run.cases:
        by_suite.setdefault(case.suite, []).append(case)
    for suite, cases in by_suite.items():
        classname = f"{service.package}.{suite.capitalize()}{service.noun.capitalize()}Test"
        counts = _counts(cases)
        body = []
        for case in cases:
            name = _camel(case.name)
            inner = ""
            if case.status == "failed":
                trace = (
                    f"org.opentest4j.AssertionFailedError: {case.message}\n\tat org.junit.jupiter.api."
                    f"AssertionUtils.fail(AssertionUtils.java:42)\n\tat {classname}.{name}("
                    f"{classname.split('.')[-1]}.java:{40 + len(name)})"
                )
                inner = (
                    f'<failure message={quoteattr(case.message)} type="org.opentest4j.AssertionFailedError">'
                    f"{escape(trace)}</failure>"
                )
            elif case.status == "skipped":
                inner = f"<skipped message={quoteattr(case.message)}/>"
            body.append(
                f'  <testcase name="{name}" classname="{classname}" time="{case.seconds:.3f}"'
                + (f">{inner}</testcase>" if inner else "/>")
            )
        files[f"TEST-{classname}.xml"] = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation='
            '"https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report-3.0.xsd" '
            f'version="3.0" name="{classname}" time="{sum(c.seconds for c in cases):.3f}" '
            f'tests="{counts["tests"]}" '
            f'errors="{counts["errors"]}" skipped="{counts["skipped"]}" failures="{counts["failures"]}">\n'
            + "  "
            + _properties(run, [("java.version", "21.0.5"), ("maven.version", "3.9.9")])
            + "\n"
            + "\n".join(body)
            + "\n</testsuite>\n"
        )
    return files


def _pytest(service: Service, run: CiRun) -> dict[str, str]:
    counts = _counts(run.cases)
    body = []
    for case in run.cases:
        name = f"test_{_snake(case.name)}"
        classname = f"tests.test_{case.suite}"
        inner = ""
        if case.status == "failed":
            text = (
                f"def {name}(client):\n        ...\n>       assert response.status_code == 200, body\n"
                f"E       AssertionError: {case.message}\n\ntests/test_{case.suite}.py:{30 + len(name)}: "
                "AssertionError"
            )
            inner = (
                f"<failure message={quoteattr('AssertionError: ' + case.message)}>{escape(text)}</failure>"
            )
        elif case.status == "skipped":
            inner = (
                f'<skipped type="pytest.skip" message={quoteattr(case.message)}>'
                f"tests/test_{case.suite}.py:12: "
                f"{escape(case.message)}</skipped>"
            )
        body.append(
            f'    <testcase classname="{classname}" name="{name}" time="{case.seconds:.3f}"'
            + (f">{inner}</testcase>" if inner else "/>")
        )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites name="pytest tests">\n'
        f'  <testsuite name="pytest" errors="{counts["errors"]}" failures="{counts["failures"]}" '
        f'skipped="{counts["skipped"]}" tests="{counts["tests"]}" time="{run.seconds:.3f}" '
        f'timestamp="{_iso(run.started_ns, "pytest")}" hostname="runner-{run.build_id[-4:]}">\n'
        f"    {_properties(run)}\n" + "\n".join(body) + "\n  </testsuite>\n</testsuites>\n"
    )
    return {"junit.xml": xml}


def _jest(service: Service, run: CiRun) -> dict[str, str]:
    by_suite: dict[str, list[CaseResult]] = {}
    for case in run.cases:
        by_suite.setdefault(case.suite, []).append(case)
    totals = _counts(run.cases)
    suites = []
    for suite, cases in by_suite.items():
        counts = _counts(cases)
        describe = f"{service.noun.capitalize()} {suite}"
        body = []
        for case in cases:
            inner = ""
            if case.status == "failed":
                text = (
                    f"Error: expect(received).toEqual(expected) // deep equality\n\n{case.message}\n"
                    f"    at Object.<anonymous> (/home/runner/work/{service.name}/test/{suite}.test.js:"
                    f"{20 + len(case.name)}:27)"
                )
                inner = f"<failure>{escape(text)}</failure>"
            elif case.status == "skipped":
                inner = "<skipped/>"
            body.append(
                f'      <testcase classname="{describe} {escape(case.name)}" name="{describe} '
                f'{escape(case.name)}" time="{case.seconds:.3f}"'
                + (f">{inner}</testcase>" if inner else ">" "\n      </testcase>")
            )
        suites.append(
            f'  <testsuite name="test/{suite}.test.js" errors="0" failures="{counts["failures"]}" '
            f'skipped="{counts["skipped"]}" timestamp="{_iso(run.started_ns, "jest")}" '
            f'time="{sum(c.seconds for c in cases):.3f}" tests="{counts["tests"]}">\n'
            f"    {_properties(run)}\n" + "\n".join(body) + "\n  </testsuite>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuites name="jest tests" tests="{totals["tests"]}" failures="{totals["failures"]}" errors="0" '
        f'time="{run.seconds:.3f}">\n' + "\n".join(suites) + "\n</testsuites>\n"
    )
    return {"junit.xml": xml}


def _go(service: Service, run: CiRun) -> dict[str, str]:
    by_suite: dict[str, list[CaseResult]] = {}
    for case in run.cases:
        by_suite.setdefault(case.suite, []).append(case)
    totals = _counts(run.cases)
    suites = []
    for index, (suite, cases) in enumerate(by_suite.items()):
        counts = _counts(cases)
        package = f"{service.package}/internal/{suite}"
        body = []
        for case in cases:
            parts = case.name.split()
            test = "Test" + "".join(p.capitalize() for p in parts[:2])
            name = f"{test}/{'_'.join(parts[2:]) or 'ok'}"
            inner = ""
            if case.status == "failed":
                inner = (
                    f'<failure message="Failed" type="">    {suite}_test.go:{40 + len(name)}: '
                    f"{escape(case.message)}</failure>"
                )
            elif case.status == "skipped":
                inner = f'<skipped message="{escape(case.message)}"></skipped>'
            body.append(
                f'      <testcase name="{escape(name)}" classname="{package}" time="{case.seconds:.3f}"'
                + (f">{inner}</testcase>" if inner else "></testcase>")
            )
        suites.append(
            f'  <testsuite name="{package}" tests="{counts["tests"]}" failures="{counts["failures"]}" '
            f'errors="0" id="{index}" hostname="runner-{run.build_id[-4:]}" '
            f'skipped="{counts["skipped"]}" time="{sum(c.seconds for c in cases):.3f}" '
            f'timestamp="{_iso(run.started_ns, "go")}">\n'
            f"    {_properties(run, [('go.version', 'go1.23.3')])}\n" + "\n".join(body) + "\n  </testsuite>"
        )
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites tests="{totals["tests"]}" '
        f'failures="{totals["failures"]}">\n' + "\n".join(suites) + "\n</testsuites>\n"
    )
    return {"report.xml": xml}


DIALECTS = {"java": _java, "python": _pytest, "node": _jest, "go": _go}


def write_junit(landing: Path, topology: Topology, runs: list[CiRun]) -> tuple[int, int]:
    """Write every run's reports under ``tests/<service>/<version>/<build_id>/``; (files, test cases)."""
    files = cases = 0
    for run in runs:
        service = topology.service(run.service)
        render = DIALECTS.get(service.language or "", _go)
        folder = landing / "tests" / run.service / run.version / run.build_id
        folder.mkdir(parents=True, exist_ok=True)
        finished = (run.started_ns + int(run.seconds * 1e9) + 30_000_000_000) / 1e9
        for name, text in render(service, run).items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            os.utime(path, (finished, finished))
            files += 1
        cases += len(run.cases)
    return files, cases
