"""OTLP/JSON (the OpenTelemetry Collector `file` exporter) into span, log and metric frames.

Each line is one ExportTraceServiceRequest / ExportLogsServiceRequest / ExportMetricsServiceRequest.
The nested structure is flattened by DuckDB in one vectorized pass per chunk of lines. Records that
cannot be accepted (invalid JSON, a line that is not an export request, missing `service.name`,
malformed ids or times) become quarantine rows with a reason; everything around them is kept.
Counting: every span, log record and metric data point is a record; so is every line that could not
be read as an export request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import polars as pl

from qa_assets.lib.ingest.tables import LOGS, METRICS, QUARANTINE, SPANS, conform

_ANY_VALUE = (
    '{"stringValue":"VARCHAR","intValue":"VARCHAR","doubleValue":"DOUBLE","boolValue":"BOOLEAN",'
    '"arrayValue":"JSON","kvlistValue":"JSON","bytesValue":"VARCHAR"}'
)
_ATTRS = '[{"key":"VARCHAR","value":' + _ANY_VALUE + "}]"
_RESOURCE = '{"attributes":' + _ATTRS + "}"
_SCOPE = '{"name":"VARCHAR","version":"VARCHAR"}'
_SPAN = (
    '{"traceId":"VARCHAR","spanId":"VARCHAR","parentSpanId":"VARCHAR","name":"VARCHAR","kind":"VARCHAR",'
    '"startTimeUnixNano":"VARCHAR","endTimeUnixNano":"VARCHAR","attributes":' + _ATTRS + ","
    '"status":{"code":"VARCHAR","message":"VARCHAR"},'
    '"events":[{"name":"VARCHAR","timeUnixNano":"VARCHAR","attributes":' + _ATTRS + "}]}"
)
_LOG = (
    '{"timeUnixNano":"VARCHAR","observedTimeUnixNano":"VARCHAR","severityNumber":"VARCHAR",'
    '"severityText":"VARCHAR","body":' + _ANY_VALUE + ',"attributes":' + _ATTRS + ","
    '"traceId":"VARCHAR","spanId":"VARCHAR","eventName":"VARCHAR"}'
)
_POINT = (
    '{"startTimeUnixNano":"VARCHAR","timeUnixNano":"VARCHAR","asDouble":"DOUBLE","asInt":"VARCHAR",'
    '"count":"VARCHAR","sum":"DOUBLE","min":"DOUBLE","max":"DOUBLE","bucketCounts":["VARCHAR"],'
    '"explicitBounds":["DOUBLE"],"scale":"INTEGER","zeroCount":"VARCHAR",'
    '"positive":{"offset":"INTEGER","bucketCounts":["VARCHAR"]},'
    '"negative":{"offset":"INTEGER","bucketCounts":["VARCHAR"]},'
    '"quantileValues":[{"quantile":"DOUBLE","value":"DOUBLE"}],"attributes":' + _ATTRS + "}"
)
_DATA = '{"dataPoints":[' + _POINT + '],"aggregationTemporality":"VARCHAR","isMonotonic":"BOOLEAN"}'
_METRIC = (
    '{"name":"VARCHAR","unit":"VARCHAR","gauge":' + _DATA + ',"sum":' + _DATA + ',"histogram":' + _DATA
    + ',"exponentialHistogram":' + _DATA + ',"summary":' + _DATA + "}"
)
STRUCTURE = (
    '{"resourceSpans":[{"resource":' + _RESOURCE + ',"scopeSpans":[{"scope":' + _SCOPE
    + ',"spans":[' + _SPAN + "]}]}],"
    '"resourceLogs":[{"resource":' + _RESOURCE + ',"scopeLogs":[{"scope":' + _SCOPE
    + ',"logRecords":[' + _LOG + "]}]}],"
    '"resourceMetrics":[{"resource":' + _RESOURCE + ',"scopeMetrics":[{"scope":' + _SCOPE
    + ',"metrics":[' + _METRIC + "]}]}]}"
)

# Macros shared by the flattening queries. Resource attributes (one set per resource, few) become a
# text->text map (first value wins for a repeated key: a producer bug must not fail the file). Per-record
# attributes are left as lists and handled columnar in polars, which is much faster than SQL lambdas.
_MACROS = [
    """CREATE OR REPLACE MACRO otlp_value(v) AS coalesce(v.stringValue, v.intValue,
        CAST(v.doubleValue AS VARCHAR), CAST(v.boolValue AS VARCHAR), CAST(v.arrayValue AS VARCHAR),
        CAST(v.kvlistValue AS VARCHAR), v.bytesValue)""",
    """CREATE OR REPLACE MACRO otlp_attrs(attrs) AS map_from_entries(list_transform(
        list_distinct(list_filter(list_transform(coalesce(attrs, []), a -> a.key), k -> k IS NOT NULL)),
        k -> {'key': k, 'value': otlp_value(list_filter(attrs, a -> a.key = k)[1].value)}))""",
    """CREATE OR REPLACE MACRO otlp_time(nanos) AS CASE
        WHEN TRY_CAST(nanos AS HUGEINT) > 0 THEN make_timestamp(CAST(TRY_CAST(nanos AS HUGEINT) // 1000 AS BIGINT))
        END""",
    "CREATE OR REPLACE MACRO otlp_hex(id) AS CASE WHEN id IS NULL OR id = '' THEN NULL ELSE lower(id) END",
    """CREATE OR REPLACE MACRO otlp_int(x) AS CASE WHEN x IS NULL THEN NULL
        ELSE TRY_CAST(TRY_CAST(x AS DOUBLE) AS BIGINT) END""",
]

_RESOURCE_COLUMNS = """
  res['service.name'] AS service,
  res['service.version'] AS service_version,
  coalesce(res['deployment.environment.name'], res['deployment.environment']) AS environment,
  CAST(to_json(res) AS VARCHAR) AS resource_attributes
"""

_DOCS = """
CREATE OR REPLACE TEMP TABLE otlp_docs AS
SELECT source_line, source_offset, json_transform(line, '""" + STRUCTURE + """') AS d
FROM otlp_lines WHERE json_valid(line) AND json_type(line) = 'OBJECT'
"""

_BAD_LINES = """
SELECT source_line, source_offset, line,
  CASE WHEN NOT json_valid(line) THEN 'line is not valid JSON'
       WHEN json_type(line) <> 'OBJECT' THEN 'line is JSON but not an object (an OTLP export request is an object)'
       ELSE 'JSON object without resourceSpans, resourceLogs or resourceMetrics: not an OTLP export request'
  END AS reason
FROM otlp_lines
WHERE NOT json_valid(line) OR json_type(line) <> 'OBJECT'
   OR (json_extract(line, '$.resourceSpans') IS NULL AND json_extract(line, '$.resourceLogs') IS NULL
       AND json_extract(line, '$.resourceMetrics') IS NULL)
"""

_SPANS = """
WITH r AS (SELECT source_line, source_offset, unnest(d.resourceSpans) AS rs FROM otlp_docs),
s AS (SELECT source_line, source_offset, unnest(rs.scopeSpans) AS ss,
             otlp_attrs(rs.resource.attributes) AS res FROM r),
sr AS (SELECT source_line, source_offset, ss, """ + _RESOURCE_COLUMNS + """ FROM s),
sp AS (SELECT source_line, source_offset, service, service_version, environment, resource_attributes,
              unnest(ss.spans) AS span FROM sr)
SELECT
  source_line, source_offset, service, service_version, environment, resource_attributes,
  otlp_hex(span.traceId) AS trace_id,
  otlp_hex(span.spanId) AS span_id,
  otlp_hex(span.parentSpanId) AS parent_span_id,
  span.name AS name,
  CASE upper(replace(coalesce(span.kind, '0'), 'SPAN_KIND_', ''))
    WHEN '1' THEN 'INTERNAL' WHEN '2' THEN 'SERVER' WHEN '3' THEN 'CLIENT' WHEN '4' THEN 'PRODUCER'
    WHEN '5' THEN 'CONSUMER' WHEN '0' THEN 'UNSPECIFIED'
    ELSE upper(replace(span.kind, 'SPAN_KIND_', '')) END AS kind,
  otlp_time(span.startTimeUnixNano) AS start_time,
  otlp_time(span.endTimeUnixNano) AS end_time,
  (TRY_CAST(span.endTimeUnixNano AS HUGEINT) - TRY_CAST(span.startTimeUnixNano AS HUGEINT)) / 1e6 AS duration_ms,
  CASE upper(replace(coalesce(span.status.code, '0'), 'STATUS_CODE_', ''))
    WHEN '0' THEN 'UNSET' WHEN '1' THEN 'OK' WHEN '2' THEN 'ERROR'
    ELSE upper(replace(span.status.code, 'STATUS_CODE_', '')) END AS status_code,
  nullif(span.status.message, '') AS status_message,
  span.attributes AS attribute_list,
  span.events AS events
FROM sp
"""

_LOGS = """
WITH r AS (SELECT source_line, source_offset, unnest(d.resourceLogs) AS rl FROM otlp_docs),
s AS (SELECT source_line, source_offset, unnest(rl.scopeLogs) AS sl,
             otlp_attrs(rl.resource.attributes) AS res FROM r),
sr AS (SELECT source_line, source_offset, sl, """ + _RESOURCE_COLUMNS + """ FROM s),
lr AS (SELECT source_line, source_offset, service, service_version, sl.scope.name AS scope_name,
              unnest(sl.logRecords) AS rec FROM sr)
SELECT
  source_line, source_offset, service, service_version, scope_name,
  coalesce(otlp_time(rec.timeUnixNano), otlp_time(rec.observedTimeUnixNano)) AS timestamp,
  rec.severityText AS severity_text,
  TRY_CAST(rec.severityNumber AS INTEGER) AS severity_number,
  coalesce(otlp_value(rec.body), rec.eventName) AS body,
  otlp_hex(rec.traceId) AS trace_id,
  otlp_hex(rec.spanId) AS span_id,
  rec.attributes AS attribute_list
FROM lr
"""

_METRICS = """
WITH r AS (SELECT source_line, source_offset, unnest(d.resourceMetrics) AS rm FROM otlp_docs),
s AS (SELECT source_line, source_offset, unnest(rm.scopeMetrics) AS sm,
             otlp_attrs(rm.resource.attributes) AS res FROM r),
sr AS (SELECT source_line, source_offset, sm, """ + _RESOURCE_COLUMNS + """ FROM s),
m AS (SELECT source_line, source_offset, service, resource_attributes, unnest(sm.metrics) AS metric FROM sr),
typed AS (
  SELECT source_line, source_offset, service, resource_attributes, metric.name AS metric_name, metric.unit AS unit,
    CASE WHEN metric.gauge IS NOT NULL THEN 'gauge' WHEN metric.sum IS NOT NULL THEN 'sum'
         WHEN metric.histogram IS NOT NULL THEN 'histogram'
         WHEN metric.exponentialHistogram IS NOT NULL THEN 'exponential_histogram'
         WHEN metric.summary IS NOT NULL THEN 'summary' END AS metric_type,
    coalesce(metric.gauge, metric.sum, metric.histogram, metric.exponentialHistogram, metric.summary) AS data
  FROM m
),
p AS (
  SELECT source_line, source_offset, service, resource_attributes, metric_name, unit, metric_type,
    data.isMonotonic AS is_monotonic, data.aggregationTemporality AS temporality,
    unnest(coalesce(data.dataPoints, [NULL])) AS point
  FROM typed
)
SELECT
  source_line, source_offset, service, resource_attributes, metric_name, metric_type, unit,
  otlp_time(point.timeUnixNano) AS timestamp,
  otlp_time(point.startTimeUnixNano) AS start_timestamp,
  coalesce(point.asDouble, TRY_CAST(point.asInt AS DOUBLE)) AS value,
  is_monotonic,
  CASE upper(replace(coalesce(temporality, ''), 'AGGREGATION_TEMPORALITY_', ''))
    WHEN '1' THEN 'DELTA' WHEN 'DELTA' THEN 'DELTA' WHEN '2' THEN 'CUMULATIVE' WHEN 'CUMULATIVE' THEN 'CUMULATIVE'
    ELSE NULL END AS temporality,
  otlp_int(point.count) AS count,
  point.sum AS sum, point.min AS min, point.max AS max,
  point.explicitBounds AS bucket_bounds,
  list_transform(point.bucketCounts, c -> otlp_int(c)) AS bucket_counts,
  point.attributes AS attribute_list,
  point IS NULL AS no_point
FROM p
"""

_SEVERITY_LEVEL = (
    pl.when(pl.col("severity_number").is_between(1, 4)).then(pl.lit("TRACE"))
    .when(pl.col("severity_number").is_between(5, 8)).then(pl.lit("DEBUG"))
    .when(pl.col("severity_number").is_between(9, 12)).then(pl.lit("INFO"))
    .when(pl.col("severity_number").is_between(13, 16)).then(pl.lit("WARN"))
    .when(pl.col("severity_number").is_between(17, 20)).then(pl.lit("ERROR"))
    .when(pl.col("severity_number").is_between(21, 24)).then(pl.lit("FATAL"))
)

# Well-known attributes (OpenTelemetry semantic conventions, current names first, then legacy ones).
_SPAN_ATTRIBUTES: dict[str, list[str]] = {
    "http_method": ["http.request.method", "http.method"],
    "http_route": ["http.route"],
    "url_path": ["url.path", "http.target"],
    "http_status_code": ["http.response.status_code", "http.status_code"],
    "peer_service": ["peer.service", "server.address", "net.peer.name", "db.system"],
    "db_system": ["db.system"],
    "db_statement": ["db.query.text", "db.statement"],
}
_EXCEPTION_ATTRIBUTES: dict[str, list[str]] = {
    "exception_type": ["exception.type"],
    "exception_message": ["exception.message"],
    "exception_stacktrace": ["exception.stacktrace"],
}
_LOG_ATTRIBUTES: dict[str, list[str]] = {
    **_EXCEPTION_ATTRIBUTES,
    "logger": ["code.namespace", "logger.name", "log.logger"],
}


def _json_string(text: pl.Expr) -> pl.Expr:
    """A JSON string literal for a text column (quotes, backslashes and control characters escaped)."""
    escaped = text
    for raw, replacement in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = escaped.str.replace_all(raw, replacement, literal=True)
    escaped = escaped.str.replace_all(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "")
    return pl.concat_str(pl.lit('"'), escaped, pl.lit('"'))


def _attribute_pairs(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """(row, key, value) pairs from an OTLP attribute list column, values rendered as text."""
    value = pl.col("value")
    return (
        frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), pl.col(column).alias("pair"))
        .explode("pair", empty_as_null=True)
        .filter(pl.col("pair").struct.field("key").is_not_null())
        .unnest("pair")
        .select(
            "row",
            "key",
            pl.coalesce(
                value.struct.field("stringValue"),
                value.struct.field("intValue"),
                value.struct.field("doubleValue").cast(pl.String),
                value.struct.field("boolValue").cast(pl.String),
                value.struct.field("arrayValue").cast(pl.String),
                value.struct.field("kvlistValue").cast(pl.String),
                value.struct.field("bytesValue"),
            ).alias("value"),
        )
    )


def expand_attributes(
    frame: pl.DataFrame, column: str, wanted: dict[str, list[str]], json_column: str | None
) -> pl.DataFrame:
    """Replace an OTLP attribute list column by well-known columns (the first of each output's keys that
    is present) and, when `json_column` is given, a JSON object text of all attributes."""
    pairs = _attribute_pairs(frame, column)
    rows = pl.DataFrame({"row": pl.int_range(frame.height, dtype=pl.UInt32, eager=True)})
    columns = []
    for output, keys in wanted.items():
        ranked = (
            pairs.filter(pl.col("key").is_in(keys))
            .with_columns(pl.col("key").replace_strict(keys, list(range(len(keys))), return_dtype=pl.Int32).alias("rank"))
            .sort("row", "rank")
            .unique("row", keep="first", maintain_order=True)
            .select("row", pl.col("value").alias(output))
        )
        columns.append(rows.join(ranked, on="row", how="left").get_column(output))
    if json_column:
        objects = pairs.group_by("row", maintain_order=True).agg(
            pl.concat_str(
                _json_string(pl.col("key")),
                pl.lit(":"),
                pl.when(pl.col("value").is_null()).then(pl.lit("null")).otherwise(_json_string(pl.col("value"))),
            ).str.join(",").alias("body")
        )
        json_text = rows.join(objects, on="row", how="left").select(
            pl.concat_str(pl.lit("{"), pl.col("body").fill_null(""), pl.lit("}")).alias(json_column)
        )
        columns.append(json_text.get_column(json_column))
    return frame.drop(column).with_columns(columns)


_HEX32 = r"^[0-9a-f]{32}$"
_HEX16 = r"^[0-9a-f]{16}$"


@dataclass
class OtlpFrames:
    spans: pl.DataFrame
    logs: pl.DataFrame
    metrics: pl.DataFrame
    quarantine: pl.DataFrame
    records_read: int


def parse_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for parsing (never the warehouse: parsing must not hold its lock)."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    for macro in _MACROS:
        con.execute(macro)
    return con


def _reject(frame: pl.DataFrame, condition: pl.Expr, reason: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a frame into accepted rows and (source_line, source_offset, reason) rows."""
    flagged = frame.with_columns(reason.alias("_reason"), condition.fill_null(True).alias("_bad"))
    bad = flagged.filter(pl.col("_bad")).select("source_line", "source_offset", pl.col("_reason").alias("reason"))
    good = flagged.filter(~pl.col("_bad")).drop("_reason", "_bad")
    return good, bad


def _first_failing(*checks: tuple[pl.Expr, str]) -> tuple[pl.Expr, pl.Expr]:
    condition = pl.lit(False)
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for failing, message in reversed(checks):
        failing = failing.fill_null(True)
        condition = condition | failing
        reason = pl.when(failing).then(pl.lit(message)).otherwise(reason)
    return condition, reason


_NO_SERVICE = (
    "resource has no service.name attribute: set OTEL_SERVICE_NAME (or the service.name resource attribute) "
    "in the producer"
)


def _check_spans(spans: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    condition, reason = _first_failing(
        (pl.col("service").is_null() | (pl.col("service") == ""), _NO_SERVICE),
        (~pl.col("trace_id").str.contains(_HEX32), "span traceId is missing or not 32 hex characters"),
        (~pl.col("span_id").str.contains(_HEX16), "span spanId is missing or not 16 hex characters"),
        (pl.col("start_time").is_null(), "span startTimeUnixNano is missing or not an integer of nanoseconds"),
        (pl.col("end_time").is_null(), "span endTimeUnixNano is missing or not an integer of nanoseconds"),
        (pl.col("end_time") < pl.col("start_time"), "span ends before it starts"),
    )
    return _reject(spans, condition, reason)


def _check_logs(logs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    condition, reason = _first_failing(
        (pl.col("service").is_null() | (pl.col("service") == ""), _NO_SERVICE),
        (pl.col("timestamp").is_null(), "log record has neither timeUnixNano nor observedTimeUnixNano as an integer"),
        (pl.col("trace_id").is_not_null() & ~pl.col("trace_id").str.contains(_HEX32),
         "log record traceId is not 32 hex characters"),
    )
    return _reject(logs, condition, reason)


def _check_metrics(metrics: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    condition, reason = _first_failing(
        (pl.col("service").is_null() | (pl.col("service") == ""), _NO_SERVICE),
        (pl.col("metric_name").is_null() | (pl.col("metric_name") == ""), "metric has no name"),
        (pl.col("metric_type").is_null(), "metric has no gauge, sum, histogram, exponentialHistogram or summary"),
        (pl.col("no_point"), "metric has no data points"),
        (pl.col("timestamp").is_null(), "data point timeUnixNano is missing or not an integer of nanoseconds"),
        (pl.col("metric_type").is_in(["gauge", "sum"]) & pl.col("value").is_null(),
         "gauge/sum data point has neither asDouble nor asInt as a number"),
    )
    return _reject(metrics, condition, reason)


def parse_otlp_lines(con: duckdb.DuckDBPyConnection, lines: pl.DataFrame, source_file: str) -> OtlpFrames:
    """Flatten a chunk of OTLP/JSON lines (columns line, source_line, source_offset)."""
    con.register("otlp_lines", lines.to_arrow())
    try:
        bad_lines = con.sql(_BAD_LINES).pl()
        con.execute(_DOCS)
        spans = con.sql(_SPANS).pl()
        logs = con.sql(_LOGS).pl()
        metrics = con.sql(_METRICS).pl()
    finally:
        con.unregister("otlp_lines")
        con.execute("DROP TABLE IF EXISTS otlp_docs")
    spans = spans.with_columns(
        pl.col("events").list.eval(
            pl.element().filter(pl.element().struct.field("name") == "exception").struct.field("attributes")
        ).list.first().alias("exception_list")
    ).drop("events")
    spans = expand_attributes(spans, "attribute_list", _SPAN_ATTRIBUTES, "attributes")
    spans = expand_attributes(spans, "exception_list", _EXCEPTION_ATTRIBUTES, None).with_columns(
        pl.col("http_method").str.to_uppercase(),
        pl.coalesce("http_route", pl.col("url_path").str.split("?").list.first()).alias("http_route"),
        pl.col("http_status_code").cast(pl.Float64, strict=False).cast(pl.Int32, strict=False),
    )
    spans, bad_spans = _check_spans(spans)
    logs = expand_attributes(logs, "attribute_list", _LOG_ATTRIBUTES, "attributes").with_columns(
        _SEVERITY_LEVEL.alias("level"), pl.coalesce("logger", "scope_name").alias("component")
    )
    logs, bad_logs = _check_logs(logs)
    metrics = expand_attributes(metrics, "attribute_list", {}, "attributes")
    metrics, bad_metrics = _check_metrics(metrics)

    line_text = lines.select("source_line", "line")
    quarantine = pl.concat(
        [
            bad_lines.select("source_line", "source_offset", "reason", pl.col("line").alias("excerpt")),
            *[
                bad.join(line_text, on="source_line", how="left").select(
                    "source_line", "source_offset", "reason", pl.col("line").alias("excerpt")
                )
                for bad in (bad_spans, bad_logs, bad_metrics)
            ],
        ],
        how="vertical_relaxed",
    ).with_columns(
        pl.lit("otlp").alias("source_kind"),
        pl.lit(source_file).alias("source_file"),
        pl.col("excerpt").str.slice(0, 1000),
    )
    with_file = pl.lit(source_file).alias("source_file")
    spans = spans.with_columns(with_file, pl.col("start_time").dt.truncate("1h").alias("hour"))
    logs = logs.with_columns(with_file, pl.col("timestamp").dt.truncate("1h").alias("hour"), pl.lit("otlp").alias("source_format"))
    metrics = metrics.with_columns(with_file, pl.col("timestamp").dt.truncate("1h").alias("hour"))
    records_read = (
        bad_lines.height + spans.height + bad_spans.height + logs.height + bad_logs.height
        + metrics.height + bad_metrics.height
    )
    return OtlpFrames(
        spans=conform(spans, SPANS),
        logs=conform(logs, LOGS),
        metrics=conform(metrics, METRICS),
        quarantine=conform(quarantine, QUARANTINE),
        records_read=records_read,
    )


def single_document_as_line(text: str) -> str | None:
    """A pretty-printed export request (as in the OTLP examples) as one JSON line, else None."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, dict) and {"resourceSpans", "resourceLogs", "resourceMetrics"} & document.keys():
        return json.dumps(document)
    return None
