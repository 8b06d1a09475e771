"""The raw tables: their columns are the contract between the parsers, the warehouse and later stages.

Every parser returns frames with exactly these columns (``conform`` fills what a source lacks with
nulls and casts the rest), plus quarantine rows for whatever it could not accept. Timestamps are UTC
(naive ``Datetime("us")``); ``hour`` is the start of the UTC hour the record belongs to and is the
partition column. ``source_file`` / ``source_line`` / ``source_offset`` point at the bytes a record came
from (line counts from 1; offset is the byte offset of the line, or of the element for XML).
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us")
JSON_TEXT = pl.String  # JSON documents stored as text; DuckDB casts them to JSON on insert

PROVENANCE: dict[str, pl.DataType] = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "source_offset": pl.Int64,
}

SPANS: dict[str, pl.DataType] = {
    "hour": TS,
    "trace_id": pl.String,  # lower-case hex
    "span_id": pl.String,
    "parent_span_id": pl.String,  # null for a root span
    "service": pl.String,  # resource attribute service.name
    "service_version": pl.String,
    "environment": pl.String,  # deployment.environment(.name)
    "name": pl.String,
    "kind": pl.String,  # INTERNAL | SERVER | CLIENT | PRODUCER | CONSUMER | UNSPECIFIED
    "start_time": TS,
    "end_time": TS,
    "duration_ms": pl.Float64,
    "status_code": pl.String,  # UNSET | OK | ERROR
    "status_message": pl.String,
    "http_method": pl.String,  # http.request.method (or legacy http.method)
    "http_route": pl.String,  # http.route, else url.path / http.target without the query
    "http_status_code": pl.Int32,  # http.response.status_code (or legacy http.status_code)
    "peer_service": pl.String,  # the callee named by a CLIENT span: peer.service, server.address, db.system
    "db_system": pl.String,
    "db_statement": pl.String,  # masked
    "exception_type": pl.String,  # from the first `exception` event
    "exception_message": pl.String,  # masked
    "attributes": JSON_TEXT,  # all span attributes as a JSON object, masked
    "resource_attributes": JSON_TEXT,
    **PROVENANCE,
}

LOGS: dict[str, pl.DataType] = {
    "hour": TS,
    "timestamp": TS,
    "service": pl.String,
    "service_version": pl.String,
    "level": pl.String,  # TRACE | DEBUG | INFO | WARN | ERROR | FATAL (normalised)
    "severity_text": pl.String,  # as written by the producer
    "severity_number": pl.Int32,
    "component": pl.String,  # logger / component / scope name when known
    "body": pl.String,  # the message (logparser's Content), masked
    "trace_id": pl.String,
    "span_id": pl.String,
    "exception_type": pl.String,
    "exception_message": pl.String,
    "exception_stacktrace": pl.String,
    "attributes": JSON_TEXT,  # remaining fields / header fields, masked
    "source_format": pl.String,  # otlp | jsonl | text
    **PROVENANCE,
}

METRICS: dict[str, pl.DataType] = {
    "hour": TS,
    "timestamp": TS,
    "start_timestamp": TS,
    "service": pl.String,
    "metric_name": pl.String,
    "metric_type": pl.String,  # gauge | sum | histogram | exponential_histogram | summary
    "unit": pl.String,
    "value": pl.Float64,  # gauge and sum points
    "is_monotonic": pl.Boolean,
    "temporality": pl.String,  # DELTA | CUMULATIVE (sums, histograms)
    "count": pl.Int64,  # histogram-like points
    "sum": pl.Float64,
    "min": pl.Float64,
    "max": pl.Float64,
    "bucket_bounds": pl.List(pl.Float64),
    "bucket_counts": pl.List(pl.Int64),
    "attributes": JSON_TEXT,
    "resource_attributes": JSON_TEXT,
    **PROVENANCE,
}

DEPLOYMENTS: dict[str, pl.DataType] = {
    "hour": TS,
    "event_id": pl.String,  # CDEvents context.id: the change id later stages blame
    "event_type": pl.String,  # deployed | upgraded | rolledback | removed
    "timestamp": TS,
    "service": pl.String,
    "version": pl.String,
    "artifact_id": pl.String,
    "environment": pl.String,
    "change_kind": pl.String,  # code | config
    "commit": pl.String,
    "author": pl.String,  # masked
    "changed_files": pl.List(pl.String),
    "previous_version": pl.String,
    "custom_data": JSON_TEXT,
    **PROVENANCE,
}

TEST_CASES: dict[str, pl.DataType] = {
    "hour": TS,
    "timestamp": TS,  # the suite's timestamp, else the file's modification time
    "report_id": pl.String,  # content hash of the report file
    "suite": pl.String,
    "classname": pl.String,
    "name": pl.String,
    "status": pl.String,  # passed | failed | error | skipped
    "duration_s": pl.Float64,
    "message": pl.String,  # masked
    "failure_type": pl.String,
    "details": pl.String,  # failure/error text, masked, truncated
    "service": pl.String,  # from report properties when given
    "version": pl.String,  # build / version when given
    **PROVENANCE,
}

QUARANTINE: dict[str, pl.DataType] = {
    "hour": TS,  # when the record's own time is known, else null
    "source_kind": pl.String,  # otlp | logs | deployments | tests | catalog | feedback
    "reason": pl.String,  # what was wrong, in words a user can act on
    "excerpt": pl.String,  # the first bytes of the rejected record, masked
    **PROVENANCE,
}

CATALOG: dict[str, pl.DataType] = {
    "entity_ref": pl.String,  # kind:namespace/name, lower-case
    "kind": pl.String,
    "name": pl.String,
    "namespace": pl.String,
    "owner": pl.String,
    "system": pl.String,
    "lifecycle": pl.String,
    "type": pl.String,
    "tier": pl.String,
    "depends_on": pl.List(pl.String),  # entity refs
    "annotations": JSON_TEXT,
    **PROVENANCE,
}

RAW_TABLES: dict[str, dict[str, pl.DataType]] = {
    "spans": SPANS,
    "logs": LOGS,
    "metrics": METRICS,
    "deployments": DEPLOYMENTS,
    "test_cases": TEST_CASES,
    "quarantine": QUARANTINE,
    "catalog": CATALOG,
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select exactly the schema's columns in order: missing ones become nulls, present ones are cast."""
    columns = []
    for name, dtype in schema.items():
        if name in frame.columns:
            columns.append(pl.col(name).cast(dtype, strict=False))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(columns)


def quarantine_rows(
    source_kind: str,
    source_file: str,
    reasons: list[str],
    lines: list[int | None],
    offsets: list[int | None],
    excerpts: list[str | None],
) -> pl.DataFrame:
    """Quarantine rows for one file; excerpts are truncated here and masked by the caller."""
    return conform(
        pl.DataFrame(
            {
                "source_kind": [source_kind] * len(reasons),
                "reason": reasons,
                "excerpt": [None if e is None else e[:1000] for e in excerpts],
                "source_file": [source_file] * len(reasons),
                "source_line": lines,
                "source_offset": offsets,
            },
            schema_overrides={"source_line": pl.Int64, "source_offset": pl.Int64},
        ),
        QUARANTINE,
    )
