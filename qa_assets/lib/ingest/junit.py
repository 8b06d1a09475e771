"""JUnit XML test reports into ``raw.test_cases``.

Reads the common dialects with one streaming (expat) pass: pytest, Jest (jest-junit), Maven Surefire /
Failsafe, TestNG's JUnit reports, Gradle, JUnit 4/5 and similar; a ``<testsuites>`` root with any nesting
of ``<testsuite>`` elements, or a bare ``<testsuite>`` root.

- ``suite``: the innermost enclosing ``<testsuite>``'s name (``<testsuites>``'s name for a case directly
  under it); ``classname`` and ``name`` from the ``<testcase>`` (empty strings become null).
- ``status``: ``error`` / ``failed`` from the first ``<error>`` / ``<failure>`` child, else ``skipped`` for a
  ``<skipped>`` child, else ``passed``. Surefire's rerun elements (``flakyFailure``, ``rerunFailure``...)
  do not change the status. ``message`` is the element's ``message`` attribute, else the first line of its
  text; ``failure_type`` its ``type``; ``details`` its text, cut to 4,000 characters.
- ``duration_s``: the ``time`` attribute in seconds (``1,234.5`` and ``0,5`` read too); missing, negative or
  unreadable gives null and the case is still kept.
- ``timestamp``: the nearest enclosing suite's (or the root's) ``timestamp`` attribute, ISO 8601, converted
  to UTC (a time without an offset is taken as UTC); null when none is given, and the caller uses the
  file's modification time. ``hour`` is that time truncated to the hour (null with it).
- ``service`` / ``version``: from ``<property>`` elements of the enclosing suites (inner suites override
  outer ones; the value attribute or the element's text). Service: ``service.name``, ``service``,
  ``service_name``, ``app.name``, ``application``. Version, first found: ``service.version``,
  ``app.version``, ``version``, ``build.version``, ``build``. Names compare case-insensitively.
- ``report_id``: the first 16 hex characters of the SHA-256 of the file's bytes.
- ``source_line`` / ``source_offset``: where the ``<testcase>`` element starts.

Counting: every ``<testcase>`` element is a record and is kept (one without a name - Jest writes
``name=""`` for an unnamed test - gets a null name; a bad ``time`` gives a null duration). A file that
cannot be read as a report (malformed XML - the parser's message and line are in the reason, the whole
file is set aside so that a file still being written is not half counted - an empty file, another root
element) is one quarantined record. ``records_read == accepted.height + quarantine.height``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from xml.parsers import expat

import polars as pl

from qa_assets.lib.ingest.cdevents import ParseResult, excerpt_of, parse_timestamp
from qa_assets.lib.ingest.tables import QUARANTINE, TEST_CASES, conform, empty, quarantine_rows

SOURCE_KIND = "tests"
DETAILS_LIMIT = 4000
SERVICE_PROPERTIES = ("service.name", "service", "service_name", "app.name", "application")
VERSION_PROPERTIES = ("service.version", "app.version", "version", "build.version", "build")
_RESULT_ELEMENTS = {"failure": "failed", "error": "error", "skipped": "skipped"}


@dataclass
class _Suite:
    name: str | None
    timestamp: datetime | None
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class _Case:
    line: int
    offset: int
    suite: _Suite
    attributes: dict[str, str]
    status: str = "passed"
    result: dict[str, str] | None = None  # attributes of the element that decided the status
    result_text: list[str] = field(default_factory=list)


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip()
    if "," in text:
        text = text.replace(",", "") if "." in text else text.replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def _first_line(text: str) -> str | None:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


class _ReportReader:
    """An expat handler that collects test cases with their suites' context."""

    def __init__(self, parser: expat.XMLParserType) -> None:
        self.parser = parser
        self.root: str | None = None
        self.suites: list[_Suite] = []
        self.cases: list[_Case] = []
        self.case: _Case | None = None
        self.capturing: _Case | None = None  # collecting the text of the status-deciding element
        self.capture_depth = 0
        self.property_name: str | None = None  # a <property> with its value in its text
        self.property_text: list[str] = []
        self.depth = 0
        self.case_depth = 0

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        if self.root is None:
            self.root = tag
            if tag not in ("testsuites", "testsuite"):
                raise _NotAReport(f"root element <{tag}> is not a JUnit report (<testsuites> or <testsuite>)")
        if self.capturing is not None:
            return
        if tag in ("testsuite", "testsuites"):
            inherited = self.suites[-1] if self.suites else None
            written = attributes.get("timestamp")
            timestamp = parse_timestamp(written, offset_required=False) if written else None
            suite = _Suite(
                name=attributes.get("name") or None,
                timestamp=timestamp or (inherited.timestamp if inherited else None),
                properties=dict(inherited.properties) if inherited else {},
            )
            if tag == "testsuite" and not suite.name and inherited:
                suite.name = inherited.name
            self.suites.append(suite)
        elif tag == "property" and self.case is None and self.suites:
            name = (attributes.get("name") or "").strip().lower()
            if "value" in attributes:
                self.suites[-1].properties[name] = attributes["value"]
            else:
                self.property_name, self.property_text = name, []
        elif tag == "testcase":
            suite = self.suites[-1] if self.suites else _Suite(None, None)
            self.case = _Case(
                line=self.parser.CurrentLineNumber,
                offset=self.parser.CurrentByteIndex,
                suite=suite,
                attributes=dict(attributes),
            )
            self.case_depth = self.depth
        elif self.case is not None and tag in _RESULT_ELEMENTS and self.depth == self.case_depth + 1:
            status = _RESULT_ELEMENTS[tag]
            if self.case.result is None or (self.case.status == "skipped" and status != "skipped"):
                self.case.status = status
                self.case.result = dict(attributes)
                self.case.result_text = []
                self.capturing, self.capture_depth = self.case, self.depth

    def end(self, tag: str) -> None:
        if self.capturing is not None and self.depth == self.capture_depth:
            self.capturing = None
        elif tag in ("testsuite", "testsuites") and self.capturing is None:
            if self.suites:
                self.suites.pop()
        elif tag == "property" and self.property_name is not None:
            if self.suites:
                self.suites[-1].properties[self.property_name] = "".join(self.property_text).strip()
            self.property_name = None
        elif tag == "testcase" and self.case is not None and self.capturing is None:
            self.cases.append(self.case)
            self.case = None
        self.depth -= 1

    def text(self, data: str) -> None:
        if self.capturing is not None:
            self.capturing.result_text.append(data)
        elif self.property_name is not None:
            self.property_text.append(data)


class _NotAReport(Exception):
    pass


def _property(properties: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = properties.get(name)
        if value and value.strip():
            return value.strip()
    return None


def _case_row(case: _Case) -> dict[str, object]:
    details = "".join(case.result_text).strip() or None
    if details and len(details) > DETAILS_LIMIT:
        details = details[:DETAILS_LIMIT] + f"... [{len(details) - DETAILS_LIMIT} more characters cut]"
    result = case.result or {}
    message = (result.get("message") or "").strip() or (_first_line(details) if details else None)
    return {
        "timestamp": case.suite.timestamp,
        "suite": case.suite.name or None,
        "classname": (case.attributes.get("classname") or "").strip() or None,
        "name": (case.attributes.get("name") or "").strip() or None,
        "status": case.status,
        "duration_s": _duration(case.attributes.get("time")),
        "message": message,
        "failure_type": (result.get("type") or "").strip() or None,
        "details": details,
        "service": _property(case.suite.properties, SERVICE_PROPERTIES),
        "version": _property(case.suite.properties, VERSION_PROPERTIES),
        "source_line": case.line,
        "source_offset": case.offset,
    }


def _line_at(data: bytes, line: int) -> tuple[int | None, str]:
    """Byte offset and text of a line (counted from 1)."""
    lines = data.split(b"\n", line)
    if not 0 < line <= len(lines):
        return None, ""
    offset = sum(len(part) + 1 for part in lines[: line - 1])
    return offset, lines[line - 1].decode("utf-8", "replace").strip()


def parse_junit(data: bytes, source_file: str) -> ParseResult:
    """Parse one JUnit XML report; never raises on bad input (see the module docstring)."""
    report_id = hashlib.sha256(data).hexdigest()[:16]
    if not data.strip():
        return _file_rejected(source_file, "the file is empty; a test report is JUnit XML", 1, 0, "")
    parser = expat.ParserCreate()
    reader = _ReportReader(parser)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        line = exc.lineno or 1
        offset, text = _line_at(data, line)
        return _file_rejected(
            source_file,
            f"malformed XML at line {line}, column {(exc.offset or 0) + 1}: {expat.ErrorString(exc.code)}; "
            "the whole report was set aside: re-export it, or let the test run finish writing it",
            line,
            offset,
            text,
        )
    except (LookupError, UnicodeError) as exc:  # an encoding expat hands to Python's codecs
        return _file_rejected(
            source_file,
            f"the report's text encoding cannot be read ({exc}); write the report as UTF-8",
            1,
            0,
            _line_at(data, 1)[1],
        )
    except _NotAReport as exc:
        return _file_rejected(source_file, str(exc), 1, 0, excerpt_of(data[:1000].decode("utf-8", "replace")))
    if reader.root is None:
        return _file_rejected(source_file, "no XML element in the file; a test report is JUnit XML", 1, 0, "")

    accepted = _test_cases_frame([_case_row(case) for case in reader.cases], source_file, report_id)
    return ParseResult(accepted=accepted, quarantine=empty(QUARANTINE), records_read=len(reader.cases))


def _file_rejected(
    source_file: str, reason: str, line: int | None, offset: int | None, excerpt: str
) -> ParseResult:
    quarantine = quarantine_rows(SOURCE_KIND, source_file, [reason], [line], [offset], [excerpt])
    return ParseResult(accepted=empty(TEST_CASES), quarantine=conform(quarantine, QUARANTINE), records_read=1)


def _test_cases_frame(rows: list[dict[str, object]], source_file: str, report_id: str) -> pl.DataFrame:
    if not rows:
        return empty(TEST_CASES)
    schema = {
        name: dtype for name, dtype in TEST_CASES.items() if name not in ("hour", "report_id", "source_file")
    }
    frame = pl.DataFrame(rows, schema=schema)
    return conform(
        frame.with_columns(
            pl.col("timestamp").dt.truncate("1h").alias("hour"),
            pl.lit(report_id).alias("report_id"),
            pl.lit(source_file).alias("source_file"),
        ),
        TEST_CASES,
    )

