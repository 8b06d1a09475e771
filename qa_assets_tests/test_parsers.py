"""Parsers for deployments (CDEvents), CI test reports (JUnit XML) and the Backstage catalog: what they
accept, what they quarantine and why, and that every record read is accounted for."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from qa_assets.lib.ingest.catalog import entity_ref, parse_catalog
from qa_assets.lib.ingest.cdevents import ParseResult, parse_cdevents, parse_purl
from qa_assets.lib.ingest.junit import parse_junit
from qa_assets.lib.ingest.tables import CATALOG, DEPLOYMENTS, QUARANTINE, TEST_CASES


def accounted(result: ParseResult, accepted_schema: dict) -> ParseResult:
    """Every parse: the contract's columns, and records read = accepted + quarantined."""
    assert result.accepted.schema == pl.Schema(accepted_schema)
    assert result.quarantine.schema == pl.Schema(QUARANTINE)
    assert result.accepted.height + result.quarantine.height == result.records_read
    assert result.quarantine.get_column("reason").is_not_null().all()
    return result


def event(
    event_id: str = "ev-1",
    event_type: str = "dev.cdevents.service.deployed.0.2.0",
    timestamp: object = "2024-05-01T12:30:05.123456789+02:00",
    subject_id: str = "cart",
    artifact: str | None = "pkg:oci/cart@sha256%3Aabc123?repository_url=ghcr.io/acme&tag=1.4.2",
    environment: str = "production",
    custom: object = None,
) -> dict:
    content: dict = {"environment": {"id": environment, "source": "/clusters/eu"}}
    if artifact is not None:
        content["artifactId"] = artifact
    document = {
        "context": {"version": "0.4.1", "id": event_id, "source": "/ci/deploy", "type": event_type,
                    "timestamp": timestamp},
        "subject": {"id": subject_id, "source": "/ci/deploy", "type": "service", "content": content},
    }
    if custom is not None:
        document["customData"] = custom
    return document


def jsonl(*documents: object) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in documents).encode()


# ------------------------------------------------------------------------------------------ CDEvents


def test_cdevent_fields_from_the_spec_shape() -> None:
    custom = {"git": {"commit": "9f2c1e7", "author": {"name": "Jane Doe", "email": "jane@example.com"}},
              "changedFiles": ["src/cart/api.py", "src/cart/db.py"], "previousVersion": "1.4.1"}
    result = accounted(parse_cdevents(json.dumps(event(custom=custom), indent=2).encode(), "deploy.json"),
                       DEPLOYMENTS)
    row = result.accepted.row(0, named=True)
    assert result.records_read == 1 and result.quarantine.height == 0
    assert row["event_id"] == "ev-1" and row["event_type"] == "deployed"
    assert row["timestamp"] == datetime(2024, 5, 1, 10, 30, 5, 123456)  # +02:00 -> UTC, nanoseconds cut
    assert row["hour"] == datetime(2024, 5, 1, 10)
    assert (row["service"], row["version"], row["environment"]) == ("cart", "1.4.2", "production")
    assert row["artifact_id"].startswith("pkg:oci/cart@")
    assert (row["commit"], row["author"], row["previous_version"]) == ("9f2c1e7", "Jane Doe", "1.4.1")
    assert row["changed_files"] == ["src/cart/api.py", "src/cart/db.py"]
    assert row["change_kind"] == "code"
    assert json.loads(row["custom_data"]) == custom
    assert (row["source_file"], row["source_line"], row["source_offset"]) == ("deploy.json", 1, 0)


def test_every_service_predicate_and_any_spec_version() -> None:
    data = jsonl(
        event("a", "dev.cdevents.service.deployed.0.1.1"),
        event("b", "dev.cdevents.service.upgraded.0.3.0-draft"),
        event("c", "dev.cdevents.service.rolledback.0.2.0"),
        event("d", "dev.cdevents.service.removed.0.2.0", artifact=None, subject_id="services/cart"),
    )
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_type").to_list() == [
        "deployed", "upgraded", "rolledback", "removed"
    ]
    # service.removed carries no artifact: the service is the last segment of subject.id
    assert result.accepted.get_column("service").to_list() == ["cart"] * 4


def test_invalid_json_among_valid_events_keeps_the_valid_ones() -> None:
    data = (
        jsonl(event("a"))
        + b'{"context": {"id": "b", "type": \n'
        + jsonl(event("c"))
        + b"not json at all\n"
        + jsonl(event("d"))
    )
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["a", "c", "d"]
    assert result.accepted.get_column("source_line").to_list() == [1, 3, 5]
    assert result.quarantine.get_column("source_line").to_list() == [2, 4]
    assert all(r.startswith("invalid JSON") for r in result.quarantine.get_column("reason"))
    # offsets point at the record's first byte
    for offset in result.accepted.get_column("source_offset").to_list():
        assert data[offset:offset + 12] == b'{"context": '
    assert data[result.quarantine.item(1, "source_offset"):].startswith(b"not json")


def test_arrays_and_concatenated_documents() -> None:
    array = json.dumps([event("a"), event("b")], indent=2).encode()
    result = accounted(parse_cdevents(array, "a.json"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["a", "b"]
    lines = array.split(b"\n")
    for line, offset in result.accepted.select("source_line", "source_offset").iter_rows():
        assert lines[line - 1] == b"  {" and array[offset:offset + 1] == b"{"
    broken = array[: array.rindex(b"}")]  # cut inside the second element
    result = accounted(parse_cdevents(broken, "a.json"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["a"]
    assert "rest of the array could not be read" in result.quarantine.item(0, "reason")
    concatenated = (json.dumps(event("a"), indent=2) + "\n" + json.dumps(event("b"), indent=2)).encode()
    assert accounted(parse_cdevents(concatenated, "c.json"), DEPLOYMENTS).accepted.height == 2
    assert accounted(parse_cdevents(b"[]", "e.json"), DEPLOYMENTS).records_read == 0


def test_unknown_cdevent_types_are_quarantined_with_the_supported_list() -> None:
    data = jsonl(
        event("a", "dev.cdevents.pipelinerun.started.0.1.0"),
        event("b", "com.example.deploy.happened"),
        event("c", "dev.cdevents.service.published.0.1.0"),
        event("d"),
    )
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["d"]
    reasons = result.quarantine.get_column("reason").to_list()
    assert len(reasons) == 3
    for reason in reasons:
        assert reason.startswith("unsupported CDEvent type")
        assert "service.deployed|upgraded|rolledback|removed" in reason
    assert "dev.cdevents.pipelinerun.started.0.1.0" in reasons[0]
    # the event's own time is known, so the quarantine row has its hour
    assert result.quarantine.get_column("hour").to_list() == [datetime(2024, 5, 1, 10)] * 3


def test_non_utf8_bytes_quarantine_only_their_event() -> None:
    bad = json.dumps(event("b", custom={"author": "Zoë"}), ensure_ascii=False).encode()
    bad = bad.replace("ë".encode(), b"\xeb")  # Latin-1 bytes in a UTF-8 stream
    data = jsonl(event("a")) + bad + b"\n" + jsonl(event("c"))
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["a", "c"]
    assert "not valid UTF-8" in result.quarantine.item(0, "reason")
    assert result.quarantine.item(0, "source_line") == 2
    assert "\ufffd" in result.quarantine.item(0, "excerpt")
    # a UTF-8 byte-order mark is fine
    with_bom = accounted(parse_cdevents(b"\xef\xbb\xbf" + jsonl(event("a")), "bom.json"), DEPLOYMENTS)
    assert with_bom.accepted.height == 1


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (event(timestamp=1714560000), "context.timestamp must be an RFC 3339 string"),
        (event(timestamp="2024-05-01T10:00:00"), "not an RFC 3339 time with an offset"),
        (event(timestamp="yesterday"), "not an RFC 3339 time"),
        (event(timestamp=None), "missing context.timestamp"),
        (event(event_id=""), "missing context.id"),
        ({**event(), "context": ["not", "an", "object"]}, "context must be an object"),
        ({**event(), "subject": {"id": "x", "content": "cart"}}, "subject.content must be an object"),
        (event(artifact=None, subject_id=""), "no service named"),
        (["a", "list"], "expected a CDEvent JSON object, got string"),  # an array's elements are events
        (42, "expected a CDEvent JSON object, got number"),
    ],
)
def test_wrong_or_missing_fields_are_quarantined(document: object, reason: str) -> None:
    result = accounted(parse_cdevents(jsonl(document, event("ok")), "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["ok"]
    assert reason in result.quarantine.item(0, "reason")


def test_optional_fields_of_the_wrong_type_are_read_leniently() -> None:
    custom = {"commitSha": 1234567, "changed_files": "deploy/values.yaml", "author": ["not", "text"],
              "tags": ["a", "b"]}
    result = accounted(parse_cdevents(jsonl(event(custom=custom)), "d.jsonl"), DEPLOYMENTS)
    row = result.accepted.row(0, named=True)
    assert (row["commit"], row["author"], row["changed_files"]) == ("1234567", None, ["deploy/values.yaml"])
    assert json.loads(row["custom_data"]) == custom  # nothing lost
    listed = accounted(parse_cdevents(jsonl(event(custom=["a", "b"])), "d.jsonl"), DEPLOYMENTS)
    assert listed.accepted.item(0, "custom_data") == '["a","b"]'


def test_duplicate_event_ids_keep_the_first() -> None:
    data = jsonl(event("a", environment="staging"), event("a", environment="production"), event("b"))
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    assert result.accepted.get_column("event_id").to_list() == ["a", "b"]
    assert result.accepted.item(0, "environment") == "staging"
    assert "duplicate event id 'a' (first seen at line 1)" in result.quarantine.item(0, "reason")


@pytest.mark.parametrize("data", [b"", b"   \n\n"])
def test_empty_deployment_file_is_one_quarantined_record(data: bytes) -> None:
    result = accounted(parse_cdevents(data, "empty.json"), DEPLOYMENTS)
    assert result.records_read == 1 and "empty" in result.quarantine.item(0, "reason")


def test_cloudevents_envelope_is_unwrapped() -> None:
    inner = event("inner-id")
    envelope = {"specversion": "1.0", "id": "ce-1", "source": "/ci", "type": inner["context"]["type"],
                "time": "2024-05-01T10:00:00Z", "datacontenttype": "application/json", "data": inner}
    result = accounted(parse_cdevents(jsonl(envelope), "ce.json"), DEPLOYMENTS)
    assert result.accepted.item(0, "event_id") == "inner-id"


@pytest.mark.parametrize(
    ("artifact", "subject_id", "custom", "service", "version", "change_kind"),
    [
        ("pkg:oci/cart@sha256:abc?tag=1.4.2", "x-123", None, "cart", "1.4.2", "code"),
        ("pkg:oci/acme/cart@sha256%3Aabc", "x-123", None, "cart", "sha256:abc", "code"),
        ("pkg:generic/cart-config@7", "cart", None, "cart", "7", "config"),
        ("pkg:generic/cart-config@7", "deploy-991", None, "cart", "7", "config"),
        ("pkg:helm/acme/settings/cart@2.0.0", "deploy-991", None, "cart", "2.0.0", "config"),
        ("pkg:oci/cart@1.5.0", "deploy-991", {"changeKind": "Feature flag"}, "cart", "1.5.0", "config"),
        ("pkg:generic/cart-config@7", "deploy-991", {"change_kind": "code"}, "cart", "7", "code"),
        ("pkg:oci/cart-image@1.5.0", "deploy-991", {"service": "checkout"}, "checkout", "1.5.0", "code"),
        ("not-a-purl", "payments", {"version": "3.1"}, "payments", "3.1", "code"),
    ],
)
def test_service_version_and_change_kind_rules(
    artifact: str, subject_id: str, custom: dict | None, service: str, version: str, change_kind: str
) -> None:
    data = jsonl(event(artifact=artifact, subject_id=subject_id, custom=custom))
    result = accounted(parse_cdevents(data, "d.jsonl"), DEPLOYMENTS)
    row = result.accepted.row(0, named=True)
    assert (row["service"], row["version"], row["change_kind"]) == (service, version, change_kind)


def test_package_url_parts() -> None:
    purl = parse_purl("pkg:npm/%40acme/web-ui@2.1.0?tag=latest#dist")
    assert (purl.type, purl.namespace, purl.name, purl.version, purl.qualifiers) == (
        "npm", "@acme", "web-ui", "2.1.0", {"tag": "latest"}
    )
    assert parse_purl("docker.io/cart:1.0") is None


# ------------------------------------------------------------------------------------------ JUnit

SUREFIRE = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" name="com.acme.cart.CartServiceTest"
    time="1.234" tests="4" errors="1" skipped="1" failures="1" timestamp="2024-05-01T12:00:00+02:00">
  <properties>
    <property name="java.version" value="21"/>
    <property name="service.name" value="cart"/>
    <property name="build.version" value="1.4.2"/>
  </properties>
  <testcase name="addsItem" classname="com.acme.cart.CartServiceTest" time="0.120"/>
  <testcase name="rejectsNegative" classname="com.acme.cart.CartServiceTest" time="1,5">
    <failure message="expected: &lt;400&gt; but was: &lt;500&gt;" type="org.opentest4j.AssertionFailedError">
org.opentest4j.AssertionFailedError: expected: &lt;400&gt; but was: &lt;500&gt;
\tat com.acme.cart.CartServiceTest.rejectsNegative(CartServiceTest.java:42)
    </failure>
    <system-out>log line</system-out>
  </testcase>
  <testcase name="talksToDb" classname="com.acme.cart.CartServiceTest" time="abc">
    <error message="Connection refused" type="java.net.ConnectException">java.net.ConnectException</error>
  </testcase>
  <testcase name="later" classname="com.acme.cart.CartServiceTest" time="0">
    <skipped message="disabled until #12"/>
  </testcase>
  <testcase name="flaky" classname="com.acme.cart.CartServiceTest" time="0.3">
    <flakyFailure message="timeout" type="java.lang.AssertionError"/>
  </testcase>
</testsuite>
"""

JEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="3" failures="1" errors="0" time="2.1">
  <testsuite name="src/cart.test.ts" errors="0" failures="1" skipped="1" timestamp="2024-05-01T10:00:00"
      time="1.0" tests="3">
    <testcase classname="cart totals" name="cart totals sums items" time="0.01">
    </testcase>
    <testcase classname="cart totals" name="cart totals applies discount" time="0.02">
      <failure>Error: expect(received).toBe(expected)

Expected: 90
Received: 100
    at Object.&lt;anonymous&gt; (src/cart.test.ts:12:5)</failure>
    </testcase>
    <testcase classname="" name="" time="0.5">
      <skipped/>
    </testcase>
  </testsuite>
</testsuites>
"""

PYTEST = b"""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="0"
skipped="1" tests="3" time="0.5" timestamp="2024-05-01T10:15:00.123456-04:00" hostname="ci">
<testcase classname="tests.test_api" name="test_ok" time="0.001" />
<testcase classname="tests.test_api" name="test_fixture" time="0.002"><error
message="failed on setup with &quot;KeyError: 'db'&quot;">KeyError: 'db'</error></testcase>
<testcase classname="tests.test_api" name="test_xfail" time="0.000"><skipped type="pytest.xfail"
message="known bug" /></testcase>
</testsuite></testsuites>"""

TESTNG_JUNIT = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by org.testng.reporters.JUnitReportReporter -->
<testsuite hostname="ci" failures="0" tests="2" name="com.acme.PaymentsTest" time="0.8" errors="0"
    timestamp="Wed, 01 May 2024 11:00:00 +0200" skipped="0">
  <testcase classname="com.acme.PaymentsTest" name="charges" time="0.5"/>
  <testcase classname="com.acme.PaymentsTest" name="refunds" time="0.3"/>
</testsuite>
"""

NESTED = b"""<testsuites name="all" timestamp="2024-05-01T08:00:00Z">
  <testsuite name="outer">
    <properties>
      <property name="service" value="orders"/><property name="version">2.0.1</property>
    </properties>
    <testcase classname="o" name="outer-case" time="0.1"/>
    <testsuite name="inner" timestamp="2024-05-01T09:30:00Z">
      <properties><property name="Version" value="2.0.2"/></properties>
      <testcase classname="i" name="inner-case" time="0.2"><failure message="boom"/></testcase>
      <testsuite name="">
        <testcase classname="d" name="deepest" time="0.3"/>
      </testsuite>
    </testsuite>
  </testsuite>
  <testcase classname="loose" name="no-suite" time="0.4"/>
</testsuites>
"""


def test_surefire_report_statuses_properties_and_bad_time() -> None:
    result = accounted(parse_junit(SUREFIRE, "TEST-com.acme.cart.CartServiceTest.xml"), TEST_CASES)
    rows = {r["name"]: r for r in result.accepted.to_dicts()}
    assert result.records_read == 5 and result.quarantine.height == 0
    assert {n: r["status"] for n, r in rows.items()} == {
        "addsItem": "passed", "rejectsNegative": "failed", "talksToDb": "error", "later": "skipped",
        "flaky": "passed",
    }
    assert rows["rejectsNegative"]["message"] == "expected: <400> but was: <500>"
    assert rows["rejectsNegative"]["failure_type"] == "org.opentest4j.AssertionFailedError"
    assert "CartServiceTest.java:42" in rows["rejectsNegative"]["details"]
    assert rows["rejectsNegative"]["duration_s"] == 1.5
    assert rows["talksToDb"]["duration_s"] is None  # time="abc": kept, without a duration
    assert rows["later"]["message"] == "disabled until #12"
    assert {(r["service"], r["version"], r["suite"]) for r in rows.values()} == {
        ("cart", "1.4.2", "com.acme.cart.CartServiceTest")
    }
    assert rows["addsItem"]["timestamp"] == datetime(2024, 5, 1, 10, 0)
    assert rows["addsItem"]["hour"] == datetime(2024, 5, 1, 10, 0)
    # provenance points at the <testcase> element
    for row in rows.values():
        assert SUREFIRE[row["source_offset"]:].startswith(b"<testcase")
        assert SUREFIRE.split(b"\n")[row["source_line"] - 1].lstrip().startswith(b"<testcase")
    assert len(set(result.accepted.get_column("report_id"))) == 1


def test_jest_report_message_from_text_and_unnamed_case() -> None:
    result = accounted(parse_junit(JEST, "junit.xml"), TEST_CASES)
    rows = result.accepted.to_dicts()
    assert [r["status"] for r in rows] == ["passed", "failed", "skipped"]
    assert rows[1]["message"] == "Error: expect(received).toBe(expected)"
    assert "Received: 100" in rows[1]["details"]
    assert rows[2]["name"] is None and rows[2]["classname"] is None  # Jest's name="": kept
    assert {r["suite"] for r in rows} == {"src/cart.test.ts"}
    assert rows[0]["timestamp"] == datetime(2024, 5, 1, 10, 0)  # no offset: taken as UTC


def test_pytest_and_testng_reports() -> None:
    pytest_rows = accounted(parse_junit(PYTEST, "pytest.xml"), TEST_CASES).accepted.to_dicts()
    assert [r["status"] for r in pytest_rows] == ["passed", "error", "skipped"]
    assert pytest_rows[1]["message"] == "failed on setup with \"KeyError: 'db'\""
    assert pytest_rows[0]["timestamp"] == datetime(2024, 5, 1, 14, 15, 0, 123456)
    testng = accounted(parse_junit(TESTNG_JUNIT, "TEST-PaymentsTest.xml"), TEST_CASES).accepted
    assert testng.get_column("status").to_list() == ["passed", "passed"]
    assert testng.get_column("duration_s").to_list() == [0.5, 0.3]
    assert testng.get_column("timestamp").to_list() == [datetime(2024, 5, 1, 9, 0)] * 2  # RFC 2822 form


def test_nested_suites_inherit_properties_and_timestamps() -> None:
    result = accounted(parse_junit(NESTED, "nested.xml"), TEST_CASES)
    rows = {r["name"]: r for r in result.accepted.to_dicts()}
    assert set(rows) == {"outer-case", "inner-case", "deepest", "no-suite"}
    assert (rows["outer-case"]["suite"], rows["outer-case"]["version"]) == ("outer", "2.0.1")
    assert (rows["inner-case"]["suite"], rows["inner-case"]["version"], rows["inner-case"]["status"]) == (
        "inner", "2.0.2", "failed"
    )
    assert rows["deepest"]["suite"] == "inner"  # a nameless suite takes its parent's name
    assert {r["service"] for n, r in rows.items() if n != "no-suite"} == {"orders"}
    assert rows["outer-case"]["timestamp"] == datetime(2024, 5, 1, 8, 0)
    assert rows["inner-case"]["timestamp"] == datetime(2024, 5, 1, 9, 30)
    assert rows["no-suite"]["suite"] == "all"


def test_report_without_timestamp_leaves_time_to_the_caller() -> None:
    data = b'<testsuite name="s"><testcase name="t" classname="c" time="0.1"/></testsuite>'
    row = accounted(parse_junit(data, "r.xml"), TEST_CASES).accepted.row(0, named=True)
    assert row["timestamp"] is None and row["hour"] is None


@pytest.mark.parametrize(
    ("data", "reason", "line"),
    [
        (SUREFIRE[: SUREFIRE.index(b"<testcase name=\"later\"")], "malformed XML at line 20", 20),
        (b"<testsuite><testcase name='a'></testsuite>", "mismatched tag", 1),
        (b"<testsuite>\n<testcase name='\xff'/></testsuite>", "not well-formed", 2),
        (b"", "the file is empty", 1),
        (b'<?xml version="1.0"?>\n<html><body>CI log</body></html>', "root element <html> is not a JUnit", 1),
        (b'<?xml version="1.0"?>\n<!-- nothing -->\n', "malformed XML", 3),
    ],
)
def test_unreadable_reports_are_one_quarantined_record(data: bytes, reason: str, line: int) -> None:
    result = accounted(parse_junit(data, "bad.xml"), TEST_CASES)
    assert result.records_read == 1 and result.accepted.height == 0
    assert reason in result.quarantine.item(0, "reason")
    assert result.quarantine.item(0, "source_line") == line


def test_details_are_truncated() -> None:
    data = ('<testsuite name="s"><testcase name="t"><failure message="m">' + "x" * 10_000
            + "</failure></testcase></testsuite>").encode()
    details = accounted(parse_junit(data, "r.xml"), TEST_CASES).accepted.item(0, "details")
    assert len(details) < 4100 and details.endswith("6000 more characters cut]")


def _expected_summaries(expected_dir: Path) -> dict[str, tuple[dict[str, int], dict[str, Counter]]]:
    """dorny/test-reporter's summaries: per report file, totals and per-suite passed/failed/skipped."""
    summaries = {}
    row = re.compile(
        r"^\|\[(?P<name>[^\]]+)\]\(#[^)]*\)\|(?P<p>\d*)[^|]*\|(?P<f>\d*)[^|]*\|(?P<s>\d*)[^|]*\|"
    )
    for markdown in sorted(expected_dir.glob("*.md")):
        text = markdown.read_text()
        total = re.search(r"with \*\*(\d+)\*\* passed, \*\*(\d+)\*\* failed and \*\*(\d+)\*\* skipped", text)
        rows = [m for m in (row.match(line) for line in text.splitlines()) if m]
        report = Path(rows[0]["name"]).name
        suites: dict[str, Counter] = {}
        for match in rows[1:]:
            counts = suites.setdefault(match["name"], Counter())
            for key, status in (("p", "passed"), ("f", "failed"), ("s", "skipped")):
                counts[status] += int(match[key] or 0)
        totals = dict(zip(("passed", "failed", "skipped"), map(int, total.groups()), strict=True))
        summaries[report] = (totals, {n: c for n, c in suites.items() if sum(c.values())})
    return summaries


@pytest.mark.evaluation
def test_real_reports_give_the_expected_counts(shared_data: Path) -> None:
    folder = shared_data / "junit" / "dorny-test-reporter"
    summaries = _expected_summaries(folder / "expected_outputs")
    assert len(summaries) == 4
    for report, (totals, suites) in summaries.items():
        result = accounted(parse_junit((folder / report).read_bytes(), report), TEST_CASES)
        assert result.quarantine.height == 0
        # the reporter counts errors as failures
        statuses = result.accepted.get_column("status").replace({"error": "failed"})
        assert dict(Counter(statuses.to_list())) == {k: v for k, v in totals.items() if v}, report
        ours: dict[str, Counter] = {}
        for suite, status in zip(result.accepted.get_column("suite"), statuses, strict=True):
            ours.setdefault(suite, Counter())[status] += 1
        assert ours == suites, report


@pytest.mark.evaluation
def test_junitparser_fixtures(shared_data: Path) -> None:
    folder = shared_data / "junit" / "junitparser"
    expected = {
        # nested suites: a failure, a skip and a pass, each case once
        "jenkins.xml": {"failed": 1, "skipped": 1, "passed": 1},
        "normal.xml": {"failed": 1, "skipped": 1, "passed": 1},
        "pytest_error.xml": {"failed": 1},
    }
    for name, counts in expected.items():
        result = accounted(parse_junit((folder / name).read_bytes(), name), TEST_CASES)
        assert dict(Counter(result.accepted.get_column("status").to_list())) == counts, name
        assert result.accepted.get_column("timestamp").is_not_null().all()
    nested = parse_junit((folder / "jenkins.xml").read_bytes(), "jenkins.xml").accepted
    assert nested.get_column("name").to_list() == [
        "should default path to an empty string", "should default consolidate to true",
        "should default useDotNotation to true",
    ]


# ------------------------------------------------------------------------------------------ catalog

CATALOG_YAML = b"""# services of the shop
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: cart
  annotations:
    acme.com/tier: "1"
    github.com/project-slug: acme/cart
  tags: [python, shop]
spec:
  type: service
  lifecycle: production
  owner: group:team-shop
  system: shop
  dependsOn:
    - resource:postgres
    - component:default/Payments
    - inventory
    - resource:data/cache
---
apiVersion: backstage.io/v1alpha1
kind: Resource
metadata:
  name: postgres
  labels: {tier: 2}
spec: {type: database, owner: dba, dependsOn: "resource:disk"}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: search
  namespace: discovery
spec: {type: service, owner: team-search, tier: gold, dependsOn: [index, "resource:default/es"]}
---
apiVersion: backstage.io/v1alpha1
kind: System
metadata: {name: shop}
spec: {owner: team-shop}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: team-shop}
"""


def test_backstage_entities_and_refs() -> None:
    result = accounted(parse_catalog(CATALOG_YAML, "catalog-info.yaml"), CATALOG)
    assert (result.records_read, result.ignored) == (3, 2)
    rows = {r["entity_ref"]: r for r in result.accepted.to_dicts()}
    assert set(rows) == {"component:default/cart", "resource:default/postgres", "component:discovery/search"}
    cart = rows["component:default/cart"]
    assert (cart["owner"], cart["system"], cart["lifecycle"], cart["type"], cart["tier"]) == (
        "group:team-shop", "shop", "production", "service", "1"
    )
    assert cart["depends_on"] == [
        "resource:default/postgres", "component:default/payments", "component:default/inventory",
        "resource:data/cache",
    ]
    assert json.loads(cart["annotations"]) == {"acme.com/tier": "1", "github.com/project-slug": "acme/cart"}
    assert (cart["source_line"], cart["source_offset"]) == (2, CATALOG_YAML.index(b"apiVersion"))
    postgres = rows["resource:default/postgres"]
    assert (postgres["tier"], postgres["depends_on"]) == ("2", ["resource:default/disk"])
    assert postgres["annotations"] is None
    search = rows["component:discovery/search"]
    # a ref without namespace takes the entity's own namespace
    assert search["depends_on"] == ["component:discovery/index", "resource:default/es"]
    assert search["tier"] == "gold"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("resource:postgres", "resource:default/postgres"),
        ("cart", "component:default/cart"),
        ("Component:Shop/Cart", "component:shop/cart"),
        ("team-a/cart", "component:team-a/cart"),
    ],
)
def test_entity_ref_rules(reference: str, expected: str) -> None:
    assert entity_ref(reference, default_kind="component", default_namespace="default") == expected


def test_broken_catalog_documents_are_quarantined_and_the_rest_kept() -> None:
    data = CATALOG_YAML + b"""---
kind: Component
metadata:
  annotations: {owner: x}
spec: {type: service}
---
kind: Component
metadata: {name: broken
  oops: [
---
kind: Component
metadata: {name: 1.10}
---
- just
- a list
---
kind: Component
metadata: {name: cart}
---
metadata: {name: kindless}
---
kind: Component
metadata: {name: listy, annotations: [a, b]}
---
# a trailing comment-only document
"""
    result = accounted(parse_catalog(data, "catalog-info.yaml"), CATALOG)
    assert result.accepted.height == 3
    reasons = result.quarantine.get_column("reason").to_list()
    assert [r.split(" ")[0] for r in reasons] == [
        "Component", "invalid", "metadata.name", "a", "entity", "entity", "metadata.annotations"
    ]
    assert "without metadata.name" in reasons[0]
    assert re.match(r"invalid YAML at line \d+, column \d+", reasons[1])
    assert "defined twice" in reasons[4]
    lines = data.decode().splitlines()
    for line in result.quarantine.get_column("source_line"):
        assert lines[line - 1].startswith(("kind", "- just", "metadata"))


@pytest.mark.parametrize("data", [b"", b"# nothing here\n---\n"])
def test_empty_catalog_is_one_quarantined_record(data: bytes) -> None:
    result = accounted(parse_catalog(data, "catalog-info.yaml"), CATALOG)
    assert result.records_read == 1 and result.quarantine.height == 1


def test_catalog_with_invalid_utf8_quarantines_that_document() -> None:
    data = b"kind: Component\nmetadata: {name: caf\xe9}\n---\nkind: Component\nmetadata: {name: ok}\n"
    result = accounted(parse_catalog(data, "catalog-info.yaml"), CATALOG)
    assert result.accepted.get_column("name").to_list() == ["ok"]
    assert "not valid UTF-8" in result.quarantine.item(0, "reason")
