"""Application logs (logs/<service>/): plain text split by a log_format, and JSON lines of common dialects."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest

from qa_assets.lib.ingest.applogs import parse_json_log, parse_text_log, parse_time_text
from qa_assets.lib.ingest.reader import ReadState, iter_line_chunks
from qa_assets.lib.ingest.tables import LOGS, QUARANTINE
from qa_assets.lib.log_format import LogFormatError, compile_log_format, split_log_lines

JAVA = r"<Date> <Time> <Level> \[<Thread>\] <Component>: <Content>"
GO = r"<Date> <Time> \[<Level>\] <Component>: <Content>"
PYTHON = r"<Date> <Time> - <Component> - <Level> - <Content>"
REFERENCE = datetime(2026, 11, 28, 12, 0)


def chunk(lines: list[str], first_line: int = 1) -> pl.DataFrame:
    offsets, offset = [], 0
    for line in lines:
        offsets.append(offset)
        offset += len(line.encode()) + 1
    return pl.DataFrame(
        {"line": lines, "source_line": list(range(first_line, first_line + len(lines))), "source_offset": offsets},
        schema={"line": pl.String, "source_line": pl.Int64, "source_offset": pl.Int64},
    )


def text(lines: list[str], log_format: str = JAVA, first_line: int = 1, **kwargs):
    result = parse_text_log(chunk(lines, first_line), log_format=log_format, service="cart",
                            source_file="/landing/logs/cart/cart.log", reference_time=REFERENCE, **kwargs)
    check_contract(result)
    return result


def jsonl(records: list, service: str | None = "payment"):
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in records]
    result = parse_json_log(chunk(lines), service=service, source_file="/landing/logs/payment/p.jsonl",
                            reference_time=REFERENCE)
    check_contract(result)
    return result


def check_contract(result) -> None:
    assert result.accepted.schema == pl.Schema(LOGS)
    assert result.quarantine.schema == pl.Schema(QUARANTINE)
    assert result.accepted.height + result.quarantine.height == result.records_read
    assert (result.quarantine.get_column("source_kind") == "logs").all()
    accepted = result.accepted
    if accepted.height:
        assert (accepted.get_column("hour") == accepted.get_column("timestamp").dt.truncate("1h")).all()
        assert accepted.get_column("source_format").is_in(["text", "jsonl"]).all()


# ------------------------------------------------------------------------------------------ log_format


def exact_split(lines: pl.Series, log_format: str) -> pl.DataFrame:
    """logparser's own reading: the lazy regex on every line."""
    pattern = compile_log_format(log_format).pattern
    frame = pl.DataFrame({"line": lines.str.strip_chars_end("\r")}).select(
        pl.col("line").str.extract_groups(pattern).alias("groups")
    ).unnest("groups")
    return frame.with_columns(pl.col("Content").is_not_null().alias("matched"))


@pytest.mark.parametrize("log_format", [
    JAVA, GO, PYTHON,
    r"<Client> - <User> \[<Date>:<Time> <Timezone>\] <Content>",
    r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
    r"<Date> <Time>, <Level>   <Component>    <Content>",
    r"<A>:<B>:<Content>",
])
def test_fast_split_finds_the_same_fields_as_the_lazy_pattern(log_format: str) -> None:
    rng = random.Random(11)
    # Whitespace other than spaces and tabs (a no-break space, a form feed, an ideographic space) inside
    # fields and between them: the lazy pattern's `\s+` splits there.
    alphabet = list("ab:-[]@,\t ") + ["x", "y", "\u00a0", "\x0c", "\u3000"]
    separators = [" ", "  ", "\t", " \u00a0", "\x0c"]
    parts = re.split(r"(<[^<>]+>)", log_format)
    lines = []
    for _ in range(5000):
        line = ""
        for index, part in enumerate(parts):
            if index % 2 == 0:
                line += re.sub(" +", lambda _: rng.choice(separators), part.replace("\\", ""))
            else:
                line += "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))
        lines.append(line)
    series = pl.Series(lines)
    assert compile_log_format(log_format).fast_pattern is not None
    assert split_log_lines(series, log_format).equals(exact_split(series, log_format))


def test_formats_with_regex_syntax_keep_the_exact_pattern() -> None:
    log_format = (r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> "
                  r"<Component>(\[<PID>\])?: <Content>")
    assert compile_log_format(log_format).fast_pattern is None
    lines = pl.Series(["- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond[2916]: (root) CMD x"])
    split = split_log_lines(lines, log_format)
    assert split.get_column("PID").to_list() == ["2916"] and split.get_column("Content").to_list() == ["(root) CMD x"]


# ------------------------------------------------------------------------------------------- plain text


def test_java_stack_trace_belongs_to_its_record() -> None:
    result = text([
        "2026-11-02 10:00:00,123 INFO [main] c.a.cart.Application: Started cart in 1.2 seconds",
        "2026-11-02 10:00:01,456 ERROR [http-nio-8080-exec-1] c.a.cart.CartController: Call to redis failed",
        "org.springframework.data.redis.RedisConnectionFailureException: Unable to connect to Redis",
        "\tat com.acme.cart.CartService.get(CartService.java:126)",
        "Caused by: io.lettuce.core.RedisConnectionException: connection refused",
        "\t... 55 more",
        "2026-11-02 10:00:02,000 WARN [main] c.a.cart.Pool: pool exhausted",
    ])
    assert result.records_read == 3 and result.quarantine.height == 0
    rows = result.accepted.sort("source_line").to_dicts()
    error = rows[1]
    assert error["timestamp"] == datetime(2026, 11, 2, 10, 0, 1, 456000)
    assert error["level"] == "ERROR" and error["severity_number"] == 17
    assert error["component"] == "c.a.cart.CartController" and error["body"] == "Call to redis failed"
    assert error["exception_type"] == "org.springframework.data.redis.RedisConnectionFailureException"
    assert error["exception_message"] == "Unable to connect to Redis"
    assert error["exception_stacktrace"].splitlines()[-1] == "\t... 55 more"
    assert "Caused by: io.lettuce" in error["exception_stacktrace"]
    assert json.loads(error["attributes"]) == {"Thread": "http-nio-8080-exec-1"}
    assert (error["source_line"], error["source_format"]) == (2, "text")
    assert error["source_file"] == "/landing/logs/cart/cart.log"
    assert rows[0]["exception_stacktrace"] is None and rows[2]["level"] == "WARN"
    assert [r["service"] for r in rows] == ["cart"] * 3


def test_python_traceback_names_its_last_exception() -> None:
    result = text([
        "2026-11-02 10:00:00,123 - email_service.api - ERROR - Exception on /send [POST]",
        "Traceback (most recent call last):",
        '  File "/app/email_service/api.py", line 54, in send',
        "    result = service.send(payload)",
        "KeyError: 'recipient'",
    ], PYTHON)
    row = result.accepted.row(0, named=True)
    assert row["component"] == "email_service.api" and row["level"] == "ERROR"
    assert (row["exception_type"], row["exception_message"]) == ("KeyError", "'recipient'")


def test_go_panic_and_node_errors() -> None:
    go = text([
        "2026/11/02 10:00:00.123456 [ERROR] server.go:88: handler crashed",
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "goroutine 4817 [running]:",
        "main.(*Server).Checkout(...)",
        "\t/src/server.go:88 +0x1d",
    ], GO).accepted.row(0, named=True)
    assert go["timestamp"] == datetime(2026, 11, 2, 10, 0, 0, 123456)
    assert (go["exception_type"], go["exception_message"]) == (
        "panic", "runtime error: invalid memory address or nil pointer dereference")
    node = text([
        "2026-11-02 10:00:00,000 ERROR [main] cart.js: unhandled",
        "TypeError: Cannot read properties of undefined (reading 'id')",
        "    at checkout (/app/src/handlers/cart.js:31:17)",
    ]).accepted.row(0, named=True)
    assert (node["exception_type"], node["exception_message"]) == (
        "TypeError", "Cannot read properties of undefined (reading 'id')")


def test_a_stack_line_that_happens_to_fit_the_format_is_not_a_record() -> None:
    result = text([
        "2026-11-02 10:00:00 ERROR c.a.X: failed",
        "Caused by: a.b.FooException: nested: detail",  # fits `<Date> <Time> <Level> <Component>: <Content>`
    ], r"<Date> <Time> <Level> <Component>: <Content>")
    assert result.records_read == 1
    assert result.accepted.get_column("exception_type").to_list() == ["a.b.FooException"]


def test_orphan_lines_are_one_quarantined_record() -> None:
    result = text([
        "\tat com.acme.Foo.bar(Foo.java:1)",
        "\tat com.acme.Foo.baz(Foo.java:2)",
        "2026-11-02 10:00:00,000 INFO [main] c.a.X: hello",
    ], first_line=40)
    assert (result.records_read, result.accepted.height, result.quarantine.height) == (2, 1, 1)
    orphan = result.quarantine.row(0, named=True)
    assert orphan["source_line"] == 40 and orphan["hour"] is None
    assert "lines 40-41" in orphan["reason"] and JAVA in orphan["reason"]
    assert "read before" in orphan["reason"]  # the run does not start the file
    assert orphan["excerpt"].startswith("\tat com.acme.Foo.bar")


def test_a_file_in_another_format_is_reported_not_lost() -> None:
    result = text(["this is not", "the configured format"])
    assert (result.records_read, result.accepted.height, result.quarantine.height) == (1, 0, 1)
    assert "lines 1-2 at the start of the file do not match the log_format" in result.quarantine["reason"][0]


@pytest.mark.parametrize(
    ("log_format", "line", "expected"),
    [
        (JAVA, "2026-11-02 10:00:00,123 INFO [main] c.X: m", datetime(2026, 11, 2, 10, 0, 0, 123000)),
        (r"<Timestamp> <Level> <Content>", "2026-11-02T10:00:00.5+02:00 INFO m",
         datetime(2026, 11, 2, 8, 0, 0, 500000)),
        (r"<Timestamp> <Level> <Content>", "2026-11-02T10:00:00Z INFO m", datetime(2026, 11, 2, 10)),
        (r"<Timestamp> <Level> <Content>", "2026-11-02T10:00:00.123456789-05:00 INFO m",
         datetime(2026, 11, 2, 15, 0, 0, 123456)),
        (GO, "2026/11/02 10:00:00.123456 [INFO] a.go:1: m", datetime(2026, 11, 2, 10, 0, 0, 123456)),
        (r"<Date> <Time> <Pid> <Level> <Component>: <Content>", "081109 203615 148 INFO dfs.DataNode: m",
         datetime(2008, 11, 9, 20, 36, 15)),
        (r"<Date> <Time> <Level> <Component>: <Content>", "17/06/09 20:10:40 INFO spark.Executor: m",
         datetime(2017, 6, 9, 20, 10, 40)),
        (r"<Client> - <User> \[<Date>:<Time> <Timezone>\] <Content>",
         '10.0.0.1 - - [02/Nov/2026:10:00:00 +0100] "GET / HTTP/1.1" 200', datetime(2026, 11, 2, 9)),
        (r"<Date> <Time> <Timezone> \[<Pid>\] <Level>:  <Content>", "2026-11-02 10:00:00.123 UTC [42] LOG:  m",
         datetime(2026, 11, 2, 10, 0, 0, 123000)),
        (r"<Date> <Time> <Timezone> \[<Pid>\] <Level>:  <Content>", "2026-11-02 10:00:00.123 PST [42] LOG:  m",
         datetime(2026, 11, 2, 18, 0, 0, 123000)),
        (r"<Date> <Time> <Timezone> <Level> <Content>", "2026-07-02 10:00:00 Europe/Berlin INFO m",
         datetime(2026, 7, 2, 8)),
        (r"<Month> <Day> <Time> <Host> <Component>: <Content>", "Jun 14 15:16:01 combo sshd(pam_unix): m",
         datetime(2026, 6, 14, 15, 16, 1)),
        (r"<Month> <Day> <Time> <Host> <Component>: <Content>", "Dec 31 23:59:59 combo cron: m",
         datetime(2025, 12, 31, 23, 59, 59)),  # after the reference day: the year before
        (r"<Timestamp> <Node> <Content>", "1117838570 R02-M1 m", datetime(2005, 6, 3, 22, 42, 50)),
        (r"<Timestamp> <Node> <Content>", "1793577906339 node m", datetime(2026, 11, 2, 0, 5, 6, 339000)),
        (r"<Label> <Date> <Time> <Level> <Content>", "- 2005.06.03 2005-06-03-15.42.50.675872 INFO m",
         datetime(2005, 6, 3, 15, 42, 50, 675872)),
        (r"<Timestamp>: <Level>: <Content>", "Mon Nov  2 10:00:00 2026: WARN: m", datetime(2026, 11, 2, 10)),
    ],
)
def test_timestamp_layouts(log_format: str, line: str, expected: datetime) -> None:
    result = text([line], log_format)
    assert result.quarantine.height == 0, result.quarantine["reason"].to_list()
    assert result.accepted.get_column("timestamp").to_list() == [expected]
    assert result.accepted.get_column("hour").to_list() == [expected.replace(minute=0, second=0, microsecond=0)]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Nov 2, 2026 10:00:00 PM", datetime(2026, 11, 2, 22)),  # java.util.logging
        ("Mon Nov  2 10:00:00 2026", datetime(2026, 11, 2, 10)),  # ctime
        ("Mon, 02 Nov 2026 10:00:00 GMT", datetime(2026, 11, 2, 10)),  # RFC 1123
        ("02-Nov-2026 10:00:00.5", datetime(2026, 11, 2, 10, 0, 0, 500000)),  # Tomcat
        ("02 Nov 2026 10:00:00,123", datetime(2026, 11, 2, 10, 0, 0, 123000)),  # log4j DATE
        ("[2026-11-02  10:00:00]", datetime(2026, 11, 2, 10)),  # brackets, two spaces
        ("2026-11-02 10:00:00 CEST", datetime(2026, 11, 2, 8)),
        ("20261102T100000Z", datetime(2026, 11, 2, 10)),
        ("1793577906", datetime(2026, 11, 2, 0, 5, 6)),
        ("1793577906339123", datetime(2026, 11, 2, 0, 5, 6, 339123)),
        ("1793577906339123456", datetime(2026, 11, 2, 0, 5, 6, 339123)),
        ("2026-11-02", datetime(2026, 11, 2)),
        ("10:00:00", None),  # no date: cannot be placed
        ("2026-11-02 10:00:00 IST", None),  # India, Ireland or Israel: not guessed
    ],
)
def test_parse_time_text(written: str, expected: datetime | None) -> None:
    parsed = parse_time_text(pl.Series([written]), reference_time=REFERENCE)
    assert parsed.to_list() == [expected]


def test_day_first_dates_are_read_when_the_data_says_so() -> None:
    lines = [f"{day:02d}/11/2026 10:00:00 INFO m" for day in range(1, 25)]
    result = text(lines, r"<Date> <Time> <Level> <Content>")
    assert result.accepted.get_column("timestamp").dt.day().to_list() == list(range(1, 25))


def test_unreadable_or_ambiguous_times_are_quarantined_with_the_value() -> None:
    result = text([
        "2026-11-02 10:00:00,000 INFO [main] c.X: fine",
        "2026-13-45 99:00:00,000 INFO [main] c.X: impossible date",
    ])
    assert result.accepted.get_column("body").to_list() == ["fine"]
    reasons = result.quarantine.sort("source_line").get_column("reason").to_list()
    assert "'2026-13-45 99:00:00,000'" in reasons[0] and "<Date> <Time>" in reasons[0]
    zone = text(["2026-11-02 10:00:00 CST [1] LOG:  x"], r"<Date> <Time> <Timezone> \[<Pid>\] <Level>:  <Content>")
    assert zone.accepted.height == 0 and "'2026-11-02 10:00:00 CST'" in zone.quarantine["reason"][0]


def test_a_format_without_time_fields_quarantines_with_advice() -> None:
    result = text(["INFO c.X: hello"], r"<Level> <Component>: <Content>")
    assert result.accepted.height == 0
    assert "has no time field" in result.quarantine["reason"][0]


@pytest.mark.parametrize(
    ("written", "level"),
    [("INFO", "INFO"), ("warning", "WARN"), ("Warn", "WARN"), ("err", "ERROR"), ("ERRO", "ERROR"), ("E", "ERROR"),
     ("I", "INFO"), ("crit", "FATAL"), ("CRITICAL", "FATAL"), ("SEVERE", "ERROR"), ("notice", "INFO"),
     ("DEBUG3", "DEBUG"), ("FINEST", "TRACE"), ("[WARN]", "WARN"), ("PANIC", "FATAL"), ("LOG", "INFO"),
     ("30", "INFO"), ("3", "ERROR"), ("whatever", None)],
)
def test_level_spellings(written: str, level: str | None) -> None:
    row = text([f"2026-11-02 10:00:00 {written} c.X: m"], r"<Date> <Time> <Level> <Component>: <Content>").accepted
    assert row.get_column("level").to_list() == [level]
    assert row.get_column("severity_text").to_list() == [written]


def test_trace_and_version_fields() -> None:
    row = text(
        ["2026-11-02 10:00:00 INFO 4bf92f35-77b3-4da6-a3ce-929d0e0e4736 00f067aa0ba902b7 2.3.1 c.X: m"],
        r"<Date> <Time> <Level> <TraceId> <SpanId> <Version> <Component>: <Content>",
    ).accepted.row(0, named=True)
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and row["span_id"] == "00f067aa0ba902b7"
    assert row["service_version"] == "2.3.1" and row["attributes"] == "{}"


def test_bad_input_never_crashes() -> None:
    huge = "2026-11-02 10:00:00,000 INFO [main] c.X: " + "x" * 10_000_000
    garbage = "\x00\x01\x7f\ufffd" * 50
    result = text([garbage, huge, garbage, "", "2026-11-02 10:00:01,000 INFO [main] c.X: after"])
    assert result.accepted.height == 2 and result.quarantine.height == 1
    assert len(result.quarantine["excerpt"][0]) <= 1000
    assert parse_text_log(chunk([]), log_format=JAVA, service="s", source_file="f").records_read == 0
    with pytest.raises(LogFormatError, match="service 'cart'"):
        parse_text_log(chunk(["x"]), log_format="<Date> <Time>", service="cart", source_file="f")


# ------------------------------------------------------------------------------------------- JSON lines

DIALECTS = {
    "pino": {"level": 50, "time": 1793577906339, "pid": 1, "hostname": "pay-1", "name": "payment",
             "msg": "charge failed", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
             "err": {"type": "TypeError", "message": "x is undefined",
                     "stack": "TypeError: x is undefined\n    at charge (/app/a.js:1:2)"}},
    "zap": {"level": "error", "ts": 1793577710.366826, "caller": "server.go:12", "msg": "request failed",
            "error": "context deadline exceeded", "stacktrace": "main.handler\n\t/src/main.go:12"},
    "logstash": {"@timestamp": "2026-11-02T10:00:00.123+01:00", "@version": "1", "message": "boom",
                 "logger_name": "c.a.X", "thread_name": "main", "level": "ERROR", "level_value": 40000,
                 "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
                 "stack_trace": "java.lang.IllegalStateException: bad state\n\tat c.a.X.run(X.java:1)"},
    "ecs": {"@timestamp": "2026-11-02T10:00:00.123Z", "log.level": "warn", "message": "disk low",
            "ecs.version": "1.6.0", "service.name": "storage", "log.logger": "disk",
            "trace.id": "0af7651916cd43dd8448eb211c80319c", "span.id": "b7ad6b7169203331",
            "error.type": "IOError", "error.message": "no space", "error.stack_trace": "IOError: no space"},
    "ecs-nested": {"@timestamp": "2026-11-02T10:00:00.123Z",
                   "log": {"level": "error", "logger": "db", "origin": {"file": {"name": "db.py"}}},
                   "message": "query failed", "service": {"name": "orders", "version": "1.2.3"},
                   "error": {"type": "OperationalError", "message": "timeout"}},
    "python-json": {"asctime": "2026-11-02 10:00:00,123", "levelname": "CRITICAL", "name": "app.worker",
                    "message": "crashed", "otelTraceID": "0af7651916cd43dd8448eb211c80319c",
                    "otelSpanID": "b7ad6b7169203331", "otelServiceName": "worker",
                    "exc_info": "Traceback (most recent call last):\n  File \"w.py\", line 3, in run\nKeyError: 'id'"},
    "structlog": {"event": "user logged in", "timestamp": "2026-11-02T10:00:00Z", "level": "info", "logger": "auth"},
    "serilog": {"@t": "2026-11-02T10:00:00.1234567Z", "@mt": "Processed {Count} items", "@l": "Warning",
                "Count": 5, "SourceContext": "Jobs.Runner"},
    "gelf": {"version": "1.1", "host": "h", "short_message": "oom", "timestamp": 1793577906.5, "level": 3},
    "otel": {"timestamp": "2026-11-02T10:00:00Z", "severity_text": "WARN", "severity_number": 13,
             "body": "retrying", "trace_id": "0AF7651916CD43DD8448EB211C80319C",
             "attributes": {"exception.type": "IOError", "retry": 2}, "resource": {"service.name": "gw"}},
    "datadog": {"time": "2026-11-02T10:00:00+02:00", "level": "warning", "msg": "cache miss",
                "dd.trace_id": "1234567890123456789", "dd.span_id": "987654321"},
}
EXPECTED = {  # timestamp, level, body, component, service, exception_type, exception_message
    "pino": (datetime(2026, 11, 2, 0, 5, 6, 339000), "ERROR", "charge failed", "payment", "payment", "TypeError",
             "x is undefined"),
    "zap": (datetime(2026, 11, 2, 0, 1, 50, 366826), "ERROR", "request failed", "server.go:12", "payment", None,
            "context deadline exceeded"),
    "logstash": (datetime(2026, 11, 2, 9, 0, 0, 123000), "ERROR", "boom", "c.a.X", "payment",
                 "java.lang.IllegalStateException", "bad state"),
    "ecs": (datetime(2026, 11, 2, 10, 0, 0, 123000), "WARN", "disk low", "disk", "storage", "IOError", "no space"),
    "ecs-nested": (datetime(2026, 11, 2, 10, 0, 0, 123000), "ERROR", "query failed", "db", "orders",
                   "OperationalError", "timeout"),
    "python-json": (datetime(2026, 11, 2, 10, 0, 0, 123000), "FATAL", "crashed", "app.worker", "worker", "KeyError",
                    "'id'"),
    "structlog": (datetime(2026, 11, 2, 10), "INFO", "user logged in", "auth", "payment", None, None),
    "serilog": (datetime(2026, 11, 2, 10, 0, 0, 123456), "WARN", "Processed {Count} items", "Jobs.Runner", "payment",
                None, None),
    "gelf": (datetime(2026, 11, 2, 0, 5, 6, 500000), "ERROR", "oom", None, "payment", None, None),
    "otel": (datetime(2026, 11, 2, 10), "WARN", "retrying", None, "gw", "IOError", None),
    "datadog": (datetime(2026, 11, 2, 8), "WARN", "cache miss", None, "payment", None, None),
}


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_json_dialects(dialect: str) -> None:
    result = jsonl([DIALECTS[dialect]])
    assert result.quarantine.height == 0, result.quarantine["reason"].to_list()
    row = result.accepted.row(0, named=True)
    got = (row["timestamp"], row["level"], row["body"], row["component"], row["service"], row["exception_type"],
           row["exception_message"])
    assert got == EXPECTED[dialect]
    assert row["source_format"] == "jsonl" and row["source_line"] == 1


def test_json_ids_versions_and_attributes() -> None:
    rows = {r["body"]: r for r in jsonl(list(DIALECTS.values())).accepted.to_dicts()}
    assert rows["boom"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert rows["retrying"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # upper case in the record
    assert rows["cache miss"]["trace_id"] == "0000000000000000112210f47de98115"  # Datadog decimal
    assert rows["cache miss"]["span_id"] == "000000003ade68b1"
    assert rows["query failed"]["service_version"] == "1.2.3"
    assert rows["oom"]["service_version"] is None  # GELF's "version" is the GELF version
    assert json.loads(rows["boom"]["attributes"]) == {"@version": "1", "thread_name": "main"}
    assert json.loads(rows["query failed"]["attributes"]) == {"log": {"origin": {"file": {"name": "db.py"}}}}
    assert json.loads(rows["retrying"]["attributes"]) == {"attributes": {"retry": 2}}
    assert rows["charge failed"]["severity_text"] == "50" and rows["charge failed"]["severity_number"] == 17
    assert rows["retrying"]["severity_number"] == 13
    assert rows["request failed"]["exception_stacktrace"] == "main.handler\n\t/src/main.go:12"


def test_less_preferred_spellings_stay_in_the_attributes() -> None:
    row = jsonl([{"time": "2026-11-02T10:00:00Z", "ts": 1, "msg": "a", "message": "b", "level": "info"}]).accepted
    assert row["body"][0] == "a" and row["timestamp"][0] == datetime(2026, 11, 2, 10)
    assert json.loads(row["attributes"][0]) == {"ts": 1, "message": "b"}


@pytest.mark.parametrize(
    ("record", "level"),
    [({"level": 30}, "INFO"), ({"level": 60}, "FATAL"), ({"levelno": 30}, "WARN"), ({"level_value": 20000}, "INFO"),
     ({"severity_number": 17}, "ERROR"), ({"priority": 4}, "WARN"), ({"level": "E"}, "ERROR"),
     ({"level": True}, None), ({"level": {"x": 1}}, None)],
)
def test_json_numeric_and_odd_levels(record: dict, level: str | None) -> None:
    result = jsonl([{"time": "2026-11-02T10:00:00Z", "msg": "m", **record}])
    assert result.accepted.get_column("level").to_list() == [level]


def test_invalid_lines_are_quarantined_and_valid_ones_kept() -> None:
    result = jsonl([
        {"time": "2026-11-02T10:00:00Z", "msg": "first"},
        "{not json",
        "[1, 2]",
        "42",
        {"time": True, "msg": "boolean time"},
        {"msg": "no time at all"},
        {"time": "yesterday", "msg": "unreadable"},
        {"time": {"epochSecond": 1793577906, "nanoOfSecond": 5000}, "msg": "log4j2 instant"},
        "",
        {"time": "2026-11-02T10:00:01Z", "msg": "last"},
    ])
    assert result.records_read == 9 and result.ignored == 1
    assert result.accepted.get_column("body").to_list() == ["first", "log4j2 instant", "last"]
    reasons = dict(zip(result.quarantine["source_line"].to_list(), result.quarantine["reason"].to_list()))
    assert reasons[2].startswith("not valid JSON")
    assert "an array, not a JSON object" in reasons[3] and "a number, not a JSON object" in reasons[4]
    assert "'time' holds a boolean" in reasons[5]
    assert reasons[6].startswith("no time")
    assert "'yesterday'" in reasons[7]
    assert result.quarantine.filter(pl.col("source_line") == 2)["excerpt"][0] == "{not json"


def test_json_without_any_service_is_quarantined() -> None:
    result = jsonl([{"time": "2026-11-02T10:00:00Z", "msg": "m"},
                    {"time": "2026-11-02T10:00:00Z", "msg": "m", "service": "named"}], service=None)
    assert result.accepted.get_column("service").to_list() == ["named"]
    assert "no service" in result.quarantine["reason"][0]
    assert result.quarantine["hour"][0] == datetime(2026, 11, 2, 10)


def test_many_records_of_one_shape_read_like_single_ones() -> None:
    """Records sharing a key set are read column-wise; the result must not differ from one by one."""
    records = list(DIALECTS.values()) + [{"time": None, "ts": "2026-11-02T10:00:00Z", "msg": "null time key"}]
    single = jsonl(records).accepted.drop("source_line", "source_offset").sort("body")
    many = jsonl([r for r in records for _ in range(20)]).accepted
    assert many.height == 20 * len(records)
    assert many.drop("source_line", "source_offset").unique(maintain_order=True).sort("body").equals(single)


def test_json_never_crashes_on_large_or_deep_input() -> None:
    deep = "[" * 2000 + "]" * 2000
    big = orjson.dumps({"time": "2026-11-02T10:00:00Z", "msg": "x" * 10_000_000}).decode()
    result = jsonl([deep, big, "\x00\x01garbage"])
    assert result.accepted.height == 1 and result.quarantine.height == 2


# ------------------------------------------------------------------------------------- real files


def test_loghub_systems_are_read_with_their_formats(shared_data: Path) -> None:
    formats = json.loads((shared_data / "loghub_2k" / "log_formats.json").read_text())
    for system, entry in formats.items():
        path = shared_data / "loghub_2k" / system / f"{system}_2k.log"
        for piece in iter_line_chunks(path, ReadState(), final=True):
            result = parse_text_log(piece.lines, log_format=entry["log_format"], service=system,
                                    source_file=str(path), reference_time=REFERENCE)
            assert result.quarantine.height == 0, (system, result.quarantine["reason"].head(3).to_list())
            years = result.accepted.get_column("timestamp").dt.year()
            assert years.min() >= 2003 and years.max() <= 2017, system


@pytest.mark.slow
def test_simulated_landing_logs_are_all_accepted(tmp_path: Path) -> None:
    import yaml

    from qa_assets.simulate import simulate

    landing = tmp_path / "landing"
    simulate(landing, topology="shop", hours=1, scale="tiny", seed=7, faults="default")
    formats = yaml.safe_load((landing / "qa-assets.yaml").read_text())["log_formats"]
    levels, read = set(), 0
    for path in sorted((landing / "logs").rglob("*")):
        if not path.is_file():
            continue
        service = path.parent.name
        for piece in iter_line_chunks(path, ReadState(), final=True):
            lines = piece.lines.filter(pl.col("line").str.strip_chars() != "")
            if path.name.endswith(".jsonl"):
                result = parse_json_log(lines, service=service, source_file=str(path))
            else:
                result = parse_text_log(lines, log_format=formats[service], service=service, source_file=str(path))
            check_contract(result)
            assert result.quarantine.height == 0, (path.name, result.quarantine["reason"].head(3).to_list())
            assert (result.accepted.get_column("service") == service).all()
            levels.update(result.accepted.get_column("level").drop_nulls().to_list())
            read += result.records_read
    assert read > 0 and {"DEBUG", "INFO"} <= levels
