"""Landing-directory ingestion: nothing lost, nothing counted twice, bad input quarantined with a reason."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from qa_assets.lib import warehouse
from qa_assets.lib.ingest import landing as ingest
from qa_assets.lib.ingest.accounting import accounting_mismatches

KEY = b"test-key"
T0 = datetime(2024, 3, 5, 10, 15)
NS0 = int((T0 - datetime(1970, 1, 1)).total_seconds() * 1e9)


def span_line(service: str | None = "cart", *, spans: int = 1, start_ns: int = NS0, extra: dict | None = None,
              trace: str = "0af7651916cd43dd8448eb211c80319c") -> str:
    resource = {"attributes": ([{"key": "service.name", "value": {"stringValue": service}}] if service else [])}
    items = []
    for i in range(spans):
        attrs = [{"key": "http.request.method", "value": {"stringValue": "GET"}},
                 {"key": "http.route", "value": {"stringValue": "/cart/{id}"}},
                 {"key": "http.response.status_code", "value": {"intValue": "200"}}]
        span = {"traceId": trace, "spanId": f"{i + 1:016x}", "name": "GET /cart/{id}", "kind": 2,
                "startTimeUnixNano": str(start_ns + i * 1_000_000),
                "endTimeUnixNano": str(start_ns + i * 1_000_000 + 5_000_000), "attributes": attrs,
                "status": {}}
        span.update(extra or {})
        items.append(span)
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"},
                                                                                  "spans": items}]}]})


def write(path: Path, data: bytes | str, age_s: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


@pytest.fixture
def con():
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def run(con, landing: Path, **kwargs) -> ingest.IngestSummary:
    return ingest.ingest_landing(con, landing, key=KEY, **kwargs)


def quarantine(con) -> pl.DataFrame:
    return warehouse.read_table(con, "raw.quarantine")


def staged(con, table: str) -> pl.DataFrame:
    return warehouse.read_table(con, f"staging.{table}")


def assert_accounted(con) -> None:
    mismatches, checked = accounting_mismatches(con)
    assert checked > 0
    assert mismatches.height == 0, mismatches


def test_invalid_json_line_is_quarantined_and_the_lines_around_it_kept(tmp_path, con):
    write(tmp_path / "otlp" / "traces.jsonl", "\n".join([span_line(spans=2), "{not json", span_line(spans=3)]) + "\n")
    summary = run(con, tmp_path)
    assert staged(con, "spans").height == 5
    bad = quarantine(con)
    assert bad.height == 1 and bad["source_line"][0] == 2
    assert "JSON" in bad["reason"][0] or "json" in bad["reason"][0]
    assert summary.records_read == 6
    assert_accounted(con)


def test_truncated_gzip_keeps_what_decompresses_and_says_so(tmp_path, con):
    data = gzip.compress(("\n".join(span_line(spans=1, trace=f"{i:032x}") for i in range(1, 200)) + "\n").encode())
    write(tmp_path / "otlp" / "traces.jsonl.gz", data[: len(data) * 2 // 3])
    run(con, tmp_path)
    kept = staged(con, "spans").height
    assert 0 < kept < 199
    reasons = quarantine(con)["reason"].to_list()
    assert any("truncated" in r for r in reasons)
    assert_accounted(con)


def test_non_utf8_bytes_quarantine_only_their_line(tmp_path, con):
    data = (span_line().encode() + b"\n" + b'{"resourceSpans": "\xff\xfe"}\n' + span_line(trace="1" * 32).encode() + b"\n")
    write(tmp_path / "otlp" / "traces.jsonl", data)
    run(con, tmp_path)
    assert staged(con, "spans").height == 2
    bad = quarantine(con)
    assert bad.height == 1 and "UTF-8" in bad["reason"][0] and bad["source_line"][0] == 2
    assert_accounted(con)


def test_wrong_types_and_missing_service_name_are_quarantined_with_reasons(tmp_path, con):
    lines = [
        span_line(),
        span_line(extra={"startTimeUnixNano": True}, trace="2" * 32),
        span_line(service=None, trace="3" * 32),
        span_line(extra={"traceId": "not-hex"}, trace="4" * 32),
    ]
    write(tmp_path / "otlp" / "traces.jsonl", "\n".join(lines) + "\n")
    run(con, tmp_path)
    assert staged(con, "spans").height == 1
    reasons = " | ".join(quarantine(con)["reason"].to_list())
    assert "service.name" in reasons
    assert "startTimeUnixNano" in reasons or "time" in reasons
    assert quarantine(con).height == 3
    assert_accounted(con)


def test_a_10_mb_line_is_read(tmp_path, con):
    big = span_line(extra={"attributes": [{"key": "payload", "value": {"stringValue": "x" * 10_000_000}}]})
    write(tmp_path / "otlp" / "traces.jsonl", big + "\n" + span_line(trace="5" * 32) + "\n")
    run(con, tmp_path)
    assert staged(con, "spans").height + quarantine(con).height == 2
    assert staged(con, "spans").height >= 1
    assert_accounted(con)


def test_empty_files_are_accounted_for(tmp_path, con):
    write(tmp_path / "otlp" / "traces.jsonl", b"")
    write(tmp_path / "deployments" / "empty.json", b"")
    write(tmp_path / "tests" / "report.xml", b"")
    summary = run(con, tmp_path)
    assert {f.status for f in summary.files} == {"ingested"}
    ledger = warehouse.read_table(con, "raw.ingested_files")
    assert (ledger["records_read"] == ledger["accepted"] + ledger["quarantined"]).all()
    assert_accounted(con)


def cdevent(event_id: str, event_type: str = "dev.cdevents.service.deployed.0.2.0") -> dict:
    return {"context": {"version": "0.4.1", "id": event_id, "source": "/ci", "type": event_type,
                        "timestamp": "2024-03-05T10:01:00Z"},
            "subject": {"id": "prod/cart", "source": "/ci", "type": "service",
                        "content": {"environment": {"id": "prod"}, "artifactId": "pkg:oci/cart@sha256:abc?tag=1.2.0"}}}


def test_unknown_cdevent_types_and_malformed_xml_are_quarantined(tmp_path, con):
    write(tmp_path / "deployments" / "events.jsonl",
          json.dumps(cdevent("a")) + "\n" + json.dumps(cdevent("b", "dev.cdevents.pipelinerun.queued.0.2.0")) + "\n")
    write(tmp_path / "tests" / "broken.xml", "<testsuite name='x'><testcase name='a'>")
    run(con, tmp_path)
    assert staged(con, "deployments")["event_id"].to_list() == ["a"]
    reasons = quarantine(con).select("source_kind", "reason").rows()
    assert any(kind == "deployments" and "CDEvent type" in reason for kind, reason in reasons)
    assert any(kind == "tests" for kind, _ in reasons)
    assert_accounted(con)


def test_a_file_is_not_ingested_twice_and_copies_are_duplicates(tmp_path, con):
    write(tmp_path / "otlp" / "a.jsonl", span_line(spans=4) + "\n")
    run(con, tmp_path)
    again = run(con, tmp_path)
    assert again.files == []
    write(tmp_path / "otlp" / "copy-of-a.jsonl", span_line(spans=4) + "\n")
    third = run(con, tmp_path)
    assert [f.status for f in third.files] == ["duplicate"]
    assert staged(con, "spans").height == 4


def test_a_growing_file_resumes_and_an_unterminated_line_waits(tmp_path, con):
    path = tmp_path / "otlp" / "live.jsonl"
    write(path, span_line(spans=2) + "\n" + span_line(spans=1, trace="6" * 32)[:50], age_s=0)
    first = run(con, tmp_path)
    assert staged(con, "spans").height == 2
    assert first.files[0].status == "partial"
    write(path, span_line(spans=2) + "\n" + span_line(spans=1, trace="6" * 32) + "\n" + span_line(spans=3, trace="7" * 32) + "\n")
    run(con, tmp_path)
    assert staged(con, "spans").height == 6
    assert quarantine(con).height == 0
    assert_accounted(con)


def test_a_rewritten_file_replaces_its_earlier_records(tmp_path, con):
    path = write(tmp_path / "otlp" / "a.jsonl", span_line(spans=4) + "\n")
    run(con, tmp_path)
    write(path, span_line(spans=2, trace="8" * 32) + "\n")
    run(con, tmp_path)
    assert staged(con, "spans")["trace_id"].unique().to_list() == ["8" * 32]
    assert_accounted(con)


def test_whole_file_formats_wait_until_settled(tmp_path, con):
    write(tmp_path / "deployments" / "e.json", json.dumps(cdevent("c")), age_s=0)
    first = run(con, tmp_path, settle_seconds=60)
    assert [f.status for f in first.files] == ["waiting"]
    assert staged(con, "deployments").height == 0
    second = run(con, tmp_path, settle_seconds=0)
    assert [f.status for f in second.files] == ["ingested"]


def test_records_go_to_their_own_hour_and_publishing_is_idempotent(tmp_path, con):
    later = NS0 + 2 * 3600 * 10**9
    write(tmp_path / "otlp" / "mixed.jsonl", span_line(spans=2) + "\n" + span_line(spans=3, start_ns=later, trace="9" * 32) + "\n")
    run(con, tmp_path)
    hours = ingest.staged_hours(con)
    assert hours == [datetime(2024, 3, 5, 10), datetime(2024, 3, 5, 12)]
    assert ingest.publish_hour(con, hours[0])["spans"] == 2
    first = warehouse.read_table(con, "raw.spans").sort("span_id")
    assert ingest.publish_hour(con, hours[0])["spans"] == 2  # again: identical
    assert warehouse.read_table(con, "raw.spans").sort("span_id").equals(first)
    # late data for that hour arrives in a new file and is added on the next publish
    write(tmp_path / "otlp" / "late.jsonl", span_line(spans=1, start_ns=NS0 + 60 * 10**9, trace="a" * 32) + "\n")
    run(con, tmp_path)
    assert ingest.publish_hour(con, hours[0])["spans"] == 3
    assert ingest.staged_hours(con) == [hours[1]]


def test_personal_data_is_masked_before_storage(tmp_path, con):
    line = span_line(extra={"status": {"code": 2, "message": "payment failed for jane.doe@example.com from 203.0.113.9"}})
    write(tmp_path / "otlp" / "t.jsonl", line + "\n")
    summary = run(con, tmp_path)
    message = staged(con, "spans")["status_message"][0]
    assert "jane.doe@example.com" not in message and "203.0.113.9" not in message
    assert "<email:" in message
    assert summary.mask_counts["email"] == 1 and summary.mask_counts["ipv4"] == 1


def test_files_outside_known_folders_are_ignored_with_a_reason(tmp_path, con):
    write(tmp_path / "stray.txt", "hello")
    summary = run(con, tmp_path)
    assert summary.files[0].status == "ignored" and "known folder" in summary.files[0].reason


def test_bad_landing_config_names_the_file(tmp_path, con):
    write(tmp_path / "qa-assets.yaml", "log_formats: [1, 2]")
    with pytest.raises(ingest.LandingError, match="qa-assets.yaml"):
        run(con, tmp_path)


def test_missing_landing_directory_is_a_clear_error(tmp_path, con):
    with pytest.raises(ingest.LandingError, match="does not exist"):
        run(con, tmp_path / "nope")


def test_a_pretty_printed_otlp_document_is_one_request(tmp_path, con):
    document = json.dumps(json.loads(span_line(spans=2)), indent=2)
    write(tmp_path / "otlp" / "trace.json", document + "\n")
    write(tmp_path / "otlp" / "lines.json", span_line(spans=1, trace="b" * 32) + "\n" + span_line(trace="c" * 32) + "\n")
    run(con, tmp_path)
    assert staged(con, "spans").height == 4
    assert quarantine(con).height == 0
    assert_accounted(con)


def test_replace_where_swaps_keyed_rows_or_the_whole_table_in_one_transaction(con):
    schema = {"k": pl.String, "v": pl.Int64}
    warehouse.ensure_table(con, "qa.t", schema)
    warehouse.insert(con, "qa.t", pl.DataFrame({"k": ["a", "b"], "v": [1, 2]}, schema=schema))
    warehouse.replace_where(con, "qa.t", pl.DataFrame({"k": ["b"], "v": [3]}, schema=schema), "k", ["b"])
    assert warehouse.read_frame(con, "SELECT * FROM qa.t ORDER BY k").rows() == [("a", 1), ("b", 3)]
    warehouse.replace_where(con, "qa.t", pl.DataFrame({"k": ["c"], "v": [4]}, schema=schema), None)
    assert warehouse.read_frame(con, "SELECT * FROM qa.t").rows() == [("c", 4)]
    with pytest.raises(Exception):  # a failed insert leaves the table as it was
        warehouse.replace_where(con, "qa.t", pl.DataFrame({"x": [object()]}, schema={"x": pl.Object}), None)
    assert warehouse.read_frame(con, "SELECT * FROM qa.t").rows() == [("c", 4)]
