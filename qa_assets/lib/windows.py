"""Per-service feature windows (``signals.service_windows``): one row per service and window of an hour.

``service_windows`` turns one hour of raw telemetry into the feature table the detectors score: traffic,
errors and latency percentiles, outgoing calls, log counts by level, new and error templates, CPU, memory
and restarts, failing tests, and the time since the service's last change with the version it runs.

**Pure over its inputs.** The function reads nothing but its arguments and keeps no state, so the asset
recomputes the whole hour from the raw tables on every run: late spans, logs or metrics simply land in the
right window on the next run, and re-running an unchanged hour gives the same rows.

**Every window is a row.** The grid is every service seen in any input (its own spans, logs, metrics,
deployments or tests, or named as the callee of a CLIENT span) plus the ``services`` given (catalog,
graph) × every window of the hour. A window without traffic has zero counts and null latency.

**Where each feature comes from** (one source per service and hour, so a service's series stays comparable):

* ``requests`` / ``errors``: the service's own SERVER and CONSUMER spans (error = status ERROR or HTTP
  status >= 500). A service without server spans of its own (a blind spot: uninstrumented, a database, an
  external API) gets its callers' CLIENT spans that name it in ``peer_service``. A service with neither gets
  the counts of its server-duration histogram metrics (error = ``http.response.status_code`` /
  ``http.status_code`` >= 500 or an ``error.type`` attribute).
* ``latency_p50_ms`` … ``p99``: the same own spans (linear interpolation, as ``numpy.percentile``); else the
  service's server-duration histograms (``latency_source = "metrics"``); else the callers' CLIENT spans
  (``"spans"``). Histogram quantiles interpolate inside explicit buckets as Prometheus'
  ``histogram_quantile`` does (lowest bucket from 0, the overflow bucket answers its lower bound).
  Server-duration histograms are matched by name (see ``is_server_duration_histogram``).
* ``client_calls`` / ``client_errors``: the service's CLIENT and PRODUCER spans.
* Resource metrics: see ``resource_metric_family`` for the names matched and ``_resource_features`` for
  how values become per-window figures. Without a matching metric they are null (unknown, not zero).
* ``minutes_since_change``: minutes from the last deployment or config change at or before the window's
  end to the window's end (a change inside the window counts for that window). ``current_version``: the
  version of the last code deployment (a ``removed`` event ends it), else the version the service's spans
  and logs report.

Metric points mark the end of their reporting interval (an exporter reports what happened, or the state
reached, since its last export), so every point counts in the window just before its timestamp: a point at
00:05:00 describes 00:04. Cumulative counters and histograms are differenced per series; that needs the
point before, so pass metrics from a few minutes before the hour up to and including its end
(``metrics_time_range``). A series' first point counts in full only when the series started inside the data
given (its ``start_timestamp`` at or after the earlier of the hour's start and the first point given);
otherwise its base is unknown and it only serves as the base of the next point.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import polars as pl

from qa_assets.lib.frames import require_frame
from qa_assets.lib.ingest.tables import DEPLOYMENTS, LOGS, METRICS, SPANS, TEST_CASES, TS, conform

WINDOWS: dict[str, pl.DataType] = {
    "hour": TS,
    "service": pl.String,
    "window_start": TS,
    "window_minutes": pl.Int32,
    "feature_set_id": pl.String,
    "requests": pl.Int64,
    "errors": pl.Int64,
    "error_rate": pl.Float64,
    "latency_p50_ms": pl.Float64,
    "latency_p95_ms": pl.Float64,
    "latency_p99_ms": pl.Float64,
    "latency_source": pl.String,
    "client_calls": pl.Int64,
    "client_errors": pl.Int64,
    "log_count": pl.Int64,
    "log_debug": pl.Int64,
    "log_info": pl.Int64,
    "log_warn": pl.Int64,
    "log_error": pl.Int64,
    "new_template_count": pl.Int64,
    "error_template_count": pl.Int64,
    "cpu_utilization": pl.Float64,
    "memory_bytes": pl.Float64,
    "restarts": pl.Int64,
    "test_failures": pl.Int64,
    "minutes_since_change": pl.Float64,
    "last_change_id": pl.String,
    "last_change_kind": pl.String,
    "current_version": pl.String,
}

# What each feature means. The feature-set id hashes these texts, the schema and the window length, so
# a changed definition gives rows a new id (models trained on the old features can tell).
FEATURE_DEFINITIONS: dict[str, str] = {
    "requests": "own SERVER+CONSUMER spans; else callers' CLIENT spans naming the service; else server "
                "duration histogram counts",
    "errors": "requests with span status ERROR or HTTP status >= 500 (histograms: status >= 500 or error.type)",
    "error_rate": "errors / requests, 0 without requests",
    "latency": "p50/p95/p99 ms: own server spans (linear), else server duration histograms "
               "(histogram_quantile interpolation), else callers' CLIENT spans",
    "client": "CLIENT+PRODUCER spans of the service; errors: status ERROR or HTTP >= 500",
    "logs": "lines by level: debug=TRACE+DEBUG, info, warn, error=ERROR+FATAL",
    "new_template_count": "distinct templates first seen in the window",
    "error_template_count": "distinct templates of ERROR/FATAL lines",
    "cpu_utilization": "best-ranked CPU metric per service: cores (usage gauges, CPU-time counter rates) "
                       "summed over instances, or utilization ratios averaged over instances",
    "memory_bytes": "best-ranked memory metric per service, per-series window mean summed over instances",
    "restarts": "increments of the best-ranked restart counter per service",
    "test_failures": "failed/error test cases of the service with their timestamp in the window",
    "change": "last deployment/config change at or before the window end; minutes to the window end",
    "current_version": "version of the last code deployment, else the mode of span/log service_version",
    "metric_windows": "a metric point counts in the window before its timestamp (the end of its interval)",
}
FEATURE_SET_VERSION = "v1"


def feature_set_id(window_minutes: int = 1) -> str:
    """``service_windows/v1-<hash>`` of the columns, their definitions and the window length."""
    payload = json.dumps(
        {
            "columns": [[name, str(dtype)] for name, dtype in WINDOWS.items()],
            "definitions": FEATURE_DEFINITIONS,
            "window_minutes": int(window_minutes),
        },
        sort_keys=True,
    )
    return f"service_windows/{FEATURE_SET_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


FEATURE_SET_ID: str = feature_set_id(1)

METRICS_LOOKBACK = timedelta(minutes=10)  # earlier points of cumulative series: the base for differencing
_US = timedelta(microseconds=1)
# A container first reported this long after its metric's first point is new (not a late scrape).
NEW_CONTAINER_AFTER = timedelta(minutes=5)

SERVER_KINDS = ("SERVER", "CONSUMER")
CLIENT_KINDS = ("CLIENT", "PRODUCER")
QUANTILES = (0.5, 0.95, 0.99)
_LEVEL_BUCKETS = {
    "TRACE": "debug", "DEBUG": "debug", "FINE": "debug", "FINER": "debug", "FINEST": "debug",
    "INFO": "info", "NOTICE": "info",
    "WARN": "warn", "WARNING": "warn",
    "ERROR": "error", "ERR": "error", "FATAL": "error", "CRITICAL": "error", "SEVERE": "error",
    "ALERT": "error", "EMERGENCY": "error", "PANIC": "error",
}
_FAILED_TEST_STATUSES = ("failed", "failure", "error", "errored")


class WindowsInputError(ValueError):
    """An input to ``service_windows`` lacks what the features need."""


def metrics_time_range(hour_start: datetime) -> tuple[datetime, datetime]:
    """The metric points to pass for one hour: [hour_start - lookback, hour_end] (both ends included).

    The lookback gives cumulative series their previous point; the point at hour_end closes the last
    window (counters report at the end of their interval)."""
    start = _naive_utc(hour_start)
    return start - METRICS_LOOKBACK, start + timedelta(hours=1)


# ------------------------------------------------------------------------------------- name matching


def _normalized(name: str) -> str:
    return re.sub(r"[_/\s]+", ".", name.strip().lower())


_SERVER_DURATION = re.compile(r"server.*(duration|latency|response.?time|requests?($|\.seconds|\.milliseconds))")
_CONSUMER_DURATION = re.compile(r"messaging.*process.*duration")
_NOT_DURATION = re.compile(r"(size|body|bytes|active|inflight|in\.flight|connections)")


def is_server_duration_histogram(name: str | None) -> bool:
    """Histograms whose buckets are the service's own request latencies.

    Matches names with ``server`` and ``duration`` / ``latency`` / ``response time`` / ``requests``
    (``http.server.request.duration``, ``http.server.duration``, ``rpc.server.duration``, Micrometer's
    ``http.server.requests``, Prometheus ``http_server_requests_seconds``), and consumer processing time
    (``messaging.process.duration``); not sizes, bodies or active-request gauges."""
    if not name:
        return False
    text = _normalized(name)
    if _NOT_DURATION.search(text):
        return False
    return bool(_SERVER_DURATION.search(text) or _CONSUMER_DURATION.search(text))


# (family, ordered patterns): the first pattern a metric matches is its rank; per service the metric with
# the best rank wins, so one service's series never mixes units. Names are normalized ("_" → ".").
_RESOURCE_PATTERNS: dict[str, tuple[str, ...]] = {
    "cpu": (
        r"^(container|k8s\.container|k8s\.pod)\.cpu\.usage$",  # cores, kubeletstats / cAdvisor style
        r"^(container|k8s\.container|k8s\.pod)\.cpu\.(time|usage\.seconds(\.total)?|usage\.total)$",  # counters
        r"^(container|k8s\.container|k8s\.pod)\.cpu\.utilization$",
        r"^process\.cpu\.(utilization|usage)$",
        r"^process\.runtime\.[a-z0-9]+\.cpu\.(utilization|usage)$",
        r"^jvm\.(system\.)?cpu\.(recent\.utilization|utilization|usage)$",
        r"^process\.cpu\.(time|seconds(\.total)?)$",
        r"^process\.runtime\.[a-z0-9]+\.cpu\.(time|seconds)",
        r"^jvm\.cpu\.time$",
        r"^system\.cpu\.(utilization|usage)$",
        r"^system\.cpu\.time$",
        r"cpu.*(usage|utili[sz]ation|time|seconds)",  # anything else that reads as CPU use
    ),
    "memory": (
        r"^(container|k8s\.container|k8s\.pod)\.memory\.working\.set(\.bytes)?$",
        r"^(container|k8s\.container|k8s\.pod)\.memory\.(usage|rss)(\.bytes)?$",
        r"^process\.memory\.(usage|rss)$",
        r"^process\.resident\.memory(\.bytes)?$",
        r"^process\.runtime\.[a-z0-9]+\.memory\.(rss|usage)",
        r"^jvm\.memory\.used$",
        r"^process\.runtime\.jvm\.memory\.usage$",
        r"^(process\.runtime\.[a-z0-9]+\.)?(mem|memory)\.heap\.(alloc|used|inuse)",
        r"^system\.memory\.usage$",
        r"(memory|mem).*(usage|used|rss|working\.set|resident|heap\.(alloc|used|inuse))",
    ),
    "restarts": (
        r"^k8s\.(container|pod)\.restarts?(\.total)?$",
        r"restart",
    ),
}
_RESOURCE_EXCLUDE = re.compile(
    r"(limit|request(s)?$|available|capacity|allocatable|throttl|frequency|logical|physical|committed|"
    r"\.max$|\.init$|free|page\.?fault|virtual|\.count$|cpus$|reserved)"
)
_RESOURCE_EXCLUDE_RESTARTS = re.compile(r"(limit|\.max$)")


def resource_metric_family(name: str | None) -> tuple[str, int] | None:
    """(family, rank) of a resource metric name: ``cpu``, ``memory`` or ``restarts``; None otherwise.

    Lower rank = preferred. CPU: container/pod usage in cores (``container.cpu.usage``), container CPU-time
    counters, container utilization, ``process.cpu.utilization``, ``process.runtime.*.cpu.utilization``,
    JVM CPU, ``process.cpu.time`` and runtime CPU-time counters, host ``system.cpu.*``, then any other
    ``*cpu*usage|utilization|time|seconds*``. Memory: container/pod working set, usage or RSS,
    ``process.memory.usage|rss``, ``process_resident_memory_bytes``, ``process.runtime.*.memory.*``,
    ``jvm.memory.used``, runtime heap in use, ``system.memory.usage`` (state ``used`` only), then any other
    ``*memory*usage|used|rss|working_set|resident*``. Never limits, requests, capacity, free/available,
    committed/max, page faults or virtual size. Restarts: ``k8s.container.restarts``, then any
    ``*restart*``."""
    if not name:
        return None
    text = _normalized(name)
    for family, patterns in _RESOURCE_PATTERNS.items():
        exclude = _RESOURCE_EXCLUDE_RESTARTS if family == "restarts" else _RESOURCE_EXCLUDE
        if exclude.search(text):
            continue
        for rank, pattern in enumerate(patterns):
            if re.search(pattern, text):
                return family, rank
    return None


# State-like attributes whose values say a point is not "in use" (idle CPU, free memory).
_STATE_KEYS = ("state", "cpu.mode", "mode", "system.cpu.state", "process.cpu.state", "cpu.state",
               "system.memory.state", "memory.state")
_CPU_IDLE_STATES = ("idle", "wait", "iowait", "steal")
_MEMORY_USED_STATES = ("used", "usage", "inuse", "in_use")

_TIME_UNITS_MS = {"s": 1000.0, "sec": 1000.0, "seconds": 1000.0, "ms": 1.0, "milliseconds": 1.0,
                  "us": 1e-3, "µs": 1e-3, "microseconds": 1e-3, "ns": 1e-6, "nanoseconds": 1e-6}
_BYTE_UNITS = {"by": 1.0, "b": 1.0, "bytes": 1.0, "kiby": 1024.0, "kib": 1024.0, "miby": 1024.0**2,
               "mib": 1024.0**2, "giby": 1024.0**3, "gib": 1024.0**3, "kby": 1e3, "kb": 1e3, "mby": 1e6,
               "mb": 1e6, "gby": 1e9, "gb": 1e9}


def _latency_unit_ms(name: str, unit: str | None) -> float:
    """Milliseconds per unit of a duration histogram; without a unit, guess from the name."""
    if unit:
        factor = _TIME_UNITS_MS.get(unit.strip().lower())
        if factor is not None:
            return factor
    text = _normalized(name)
    if "milli" in text or text.endswith(".ms"):
        return 1.0
    # OTel semantic conventions since 1.21 (and Prometheus *_seconds) record seconds; older OTel ms.
    if "seconds" in text or text in ("http.server.request.duration", "messaging.process.duration"):
        return 1000.0
    return 1.0


def _seconds_per_unit(unit: str | None) -> float:
    factor = _TIME_UNITS_MS.get((unit or "s").strip().lower(), 1000.0)
    return factor / 1000.0


def _bytes_per_unit(unit: str | None) -> float:
    return _BYTE_UNITS.get((unit or "By").strip().lower(), 1.0)


# ------------------------------------------------------------------------------------------- helpers


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _prepare(frame: pl.DataFrame | None, name: str, schema: dict[str, pl.DataType],
             required: Iterable[str]) -> pl.DataFrame:
    """Check the columns a feature needs, then give the frame the raw schema (absent optional columns null)."""
    if frame is None:
        return pl.DataFrame(schema=schema)
    if not isinstance(frame, pl.DataFrame):
        raise WindowsInputError(f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise WindowsInputError(
            f"{name} lacks column(s) {', '.join(missing)}: pass the raw {name} table (qa_assets.lib.ingest.tables)"
            " or a frame with at least these columns"
        )
    return conform(frame, schema)


def _window(column: str | pl.Expr, minutes: int, *, interval_end: bool = False) -> pl.Expr:
    expr = pl.col(column) if isinstance(column, str) else column
    if interval_end:  # a point that closes an interval belongs to the window before its timestamp
        expr = expr - pl.duration(microseconds=1)
    # Truncation aligns to the epoch, which is hour-aligned, so windows that divide 60 align to the hour.
    return expr.dt.truncate(f"{minutes}m").alias("window_start")


def _attribute(column: str, keys: Iterable[str]) -> pl.Expr:
    """The first of ``keys`` present in a JSON-object text column (keys may contain dots)."""
    return pl.coalesce([pl.col(column).str.json_path_match(f"$['{key}']") for key in keys])


def _in_hour(column: str, start: datetime, end: datetime) -> pl.Expr:
    return (pl.col(column) >= start) & (pl.col(column) < end)


def _percentiles(column: str) -> list[pl.Expr]:
    names = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
    return [pl.col(column).quantile(q, interpolation="linear").alias(n) for q, n in zip(QUANTILES, names)]


# --------------------------------------------------------------------------------------------- spans


def _span_features(spans: pl.DataFrame, start: datetime, end: datetime, minutes: int) -> list[pl.DataFrame]:
    """(own server, callers' client view per callee, own client calls, version counts, services seen)."""
    frame = spans.lazy().filter(_in_hour("start_time", start, end) & pl.col("service").is_not_null()).select(
        "service",
        pl.col("kind").str.to_uppercase().alias("kind"),
        _window("start_time", minutes),
        pl.coalesce(
            "duration_ms",
            (pl.col("end_time") - pl.col("start_time")).dt.total_microseconds().cast(pl.Float64) / 1000.0,
        ).alias("duration_ms"),
        (
            (pl.col("status_code").str.to_uppercase() == "ERROR").fill_null(False)
            | (pl.col("http_status_code") >= 500).fill_null(False)
        ).alias("is_error"),
        "peer_service",
        "service_version",
    ).collect().lazy()
    server = (
        frame.filter(pl.col("kind").is_in(SERVER_KINDS))
        .group_by("service", "window_start")
        .agg(pl.len().cast(pl.Int64).alias("requests"), pl.col("is_error").sum().cast(pl.Int64).alias("errors"),
             *_percentiles("duration_ms"))
    )
    callee_view = (
        frame.filter((pl.col("kind") == "CLIENT") & pl.col("peer_service").is_not_null()
                     & (pl.col("peer_service") != pl.col("service")))
        .group_by(pl.col("peer_service").alias("service"), "window_start")
        .agg(pl.len().cast(pl.Int64).alias("requests"), pl.col("is_error").sum().cast(pl.Int64).alias("errors"),
             *_percentiles("duration_ms"))
    )
    client = (
        frame.filter(pl.col("kind").is_in(CLIENT_KINDS))
        .group_by("service", "window_start")
        .agg(pl.len().cast(pl.Int64).alias("client_calls"),
             pl.col("is_error").sum().cast(pl.Int64).alias("client_errors"))
    )
    versions = frame.filter(pl.col("service_version").is_not_null()).group_by(
        "service", "window_start", "service_version").agg(pl.len().alias("_n"))
    seen = frame.select(pl.col("service").unique())
    return pl.collect_all([server, callee_view, client, versions, seen])


# ------------------------------------------------------------------------------------------- metrics


def _series_key(extra: Iterable[str] = ()) -> list[str]:
    return ["service", "metric_name", "attributes", "resource_attributes", *extra]


def _difference(points: pl.DataFrame, value: str, key: list[str], data_start: datetime,
                *, count: str | None = None) -> pl.DataFrame:
    """Per-interval increments of cumulative series (points sorted into series by ``key``).

    Adds ``_delta`` (same type as ``value``; a list column for bucket counts) and ``_seconds`` (interval
    length). A reset (new start time, or a count/value that fell) restarts from the point's own value; a
    series' first point counts in full only when the series started inside the data (start_timestamp at or
    after ``data_start``), otherwise its base is unknown and it gives no increment. DELTA points are
    increments already."""
    points = points.sort([*key, "timestamp"])
    level = pl.col(count or value)
    prev = {c: pl.col(c).shift(1).over(key) for c in ("timestamp", "start_timestamp", value)}
    prev_level = level.shift(1).over(key)
    is_delta = pl.col("temporality").str.to_uppercase().fill_null("") == "DELTA"
    first = prev["timestamp"].is_null()
    reset = (
        (pl.col("start_timestamp").is_not_null() & prev["start_timestamp"].is_not_null()
         & (pl.col("start_timestamp") != prev["start_timestamp"]))
        | (level < prev_level).fill_null(False)
    )
    started_inside = (pl.col("start_timestamp") >= data_start).fill_null(False)
    since_start = (pl.col("timestamp") - pl.col("start_timestamp")).dt.total_microseconds() / 1e6
    since_prev = (pl.col("timestamp") - prev["timestamp"]).dt.total_microseconds() / 1e6
    delta = (
        pl.when(is_delta).then(pl.col(value))
        .when(first & started_inside).then(pl.col(value))
        .when(first).then(None)
        .when(reset).then(pl.col(value))
        .otherwise(pl.col(value) - prev[value])
    )
    seconds = (
        pl.when(is_delta | first | reset).then(since_start)
        .otherwise(since_prev)
    )
    return points.with_columns(delta.alias("_delta"), seconds.cast(pl.Float64).alias("_seconds")).filter(
        pl.col("_delta").is_not_null())


def _histogram_latency(metrics: pl.DataFrame, start: datetime, end: datetime, minutes: int,
                       data_start: datetime) -> pl.DataFrame:
    """Requests, errors and interpolated latency percentiles per service and window from server histograms."""
    empty = pl.DataFrame(schema={"service": pl.String, "window_start": TS, "requests": pl.Int64,
                                 "errors": pl.Int64, "latency_p50_ms": pl.Float64, "latency_p95_ms": pl.Float64,
                                 "latency_p99_ms": pl.Float64})
    hist = metrics.filter(
        (pl.col("metric_type").str.to_lowercase() == "histogram") & pl.col("service").is_not_null()
        & pl.col("bucket_counts").is_not_null() & pl.col("bucket_bounds").is_not_null()
        & (pl.col("bucket_counts").list.len() == pl.col("bucket_bounds").list.len() + 1)
    )
    names = hist.select("metric_name", "unit").unique()
    scales = [
        {"metric_name": r["metric_name"], "unit": r["unit"], "_ms": _latency_unit_ms(r["metric_name"], r["unit"])}
        for r in names.iter_rows(named=True) if is_server_duration_histogram(r["metric_name"])
    ]
    if not scales:
        return empty
    hist = hist.join(pl.DataFrame(scales, schema={"metric_name": pl.String, "unit": pl.String, "_ms": pl.Float64}),
                     on=["metric_name", "unit"], how="inner", nulls_equal=True)
    hist = hist.with_columns(
        pl.col("bucket_bounds").cast(pl.List(pl.String)).list.join(",").alias("_bounds_key"),
        pl.col("count").fill_null(pl.col("bucket_counts").list.sum()).alias("count"),
    )
    key = _series_key(["_bounds_key"])
    deltas = _difference(hist, "bucket_counts", key, data_start, count="count")
    deltas = deltas.with_columns(_window("timestamp", minutes, interval_end=True)).filter(
        _in_hour("window_start", start, end))
    if deltas.height == 0:
        return empty
    status = _attribute("attributes", ("http.response.status_code", "http.status_code")).cast(pl.Int64, strict=False)
    error_type = _attribute("attributes", ("error.type",))
    deltas = deltas.with_columns(
        pl.col("_delta").list.sum().alias("_n"),
        ((status >= 500).fill_null(False) | error_type.is_not_null()).alias("_failed"),
    )
    counts = deltas.group_by("service", "window_start").agg(
        pl.col("_n").sum().cast(pl.Int64).alias("requests"),
        pl.col("_n").filter(pl.col("_failed")).sum().cast(pl.Int64).alias("errors"),
    )
    # Buckets: (lower, upper] per index; the first bucket starts at 0 (or at its bound when that is <= 0),
    # the overflow bucket has no upper bound. Series with other bucket layouts are interpolated separately
    # and the layout holding most observations of the window answers.
    buckets = (
        deltas.select("service", "window_start", "_bounds_key", "_ms",
                      pl.col("bucket_bounds").alias("_bounds"), pl.col("_delta").alias("_counts"))
        .with_columns(pl.int_ranges(0, pl.col("_counts").list.len()).alias("_index"))
        .explode("_counts", "_index")
        .group_by("service", "window_start", "_bounds_key", "_index")
        .agg(pl.col("_counts").sum(), pl.col("_bounds").first(), pl.col("_ms").first())
        .with_columns(
            pl.col("_bounds").list.get(pl.col("_index"), null_on_oob=True).alias("_upper"),
            pl.col("_bounds").list.get(pl.col("_index") - 1, null_on_oob=True).alias("_lower"),
        )
        .with_columns(
            pl.when(pl.col("_index") == 0)
            .then(pl.when(pl.col("_upper") > 0).then(0.0).otherwise(pl.col("_upper")))
            .otherwise(pl.col("_lower")).alias("_lower")
        )
        .sort("service", "window_start", "_bounds_key", "_index")
        .with_columns(
            pl.col("_counts").cum_sum().over("service", "window_start", "_bounds_key").alias("_cum"),
            pl.col("_counts").sum().over("service", "window_start", "_bounds_key").alias("_total"),
        )
        .filter(pl.col("_total") > 0)
    )
    best = (
        buckets.select("service", "window_start", "_bounds_key", "_total").unique()
        .sort(["service", "window_start", "_total", "_bounds_key"], descending=[False, False, True, False])
        .unique(["service", "window_start"], keep="first")
    )
    buckets = buckets.join(best.select("service", "window_start", "_bounds_key"),
                           on=["service", "window_start", "_bounds_key"], how="semi")
    quantiles = pl.DataFrame({"_q": list(QUANTILES), "_name": ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]})
    ranked = (
        buckets.join(quantiles, how="cross")
        .with_columns((pl.col("_q") * pl.col("_total")).alias("_rank"))
        .filter(pl.col("_cum") >= pl.col("_rank"))
        .sort("service", "window_start", "_name", "_index")
        .unique(["service", "window_start", "_name"], keep="first")
        .with_columns(
            pl.when(pl.col("_upper").is_null())  # overflow bucket: answer its lower bound (no upper one)
            .then(pl.col("_lower"))
            .otherwise(
                pl.col("_lower") + (pl.col("_upper") - pl.col("_lower"))
                * (pl.col("_rank") - (pl.col("_cum") - pl.col("_counts"))) / pl.col("_counts")
            )
            .mul(pl.col("_ms"))
            .alias("_value")
        )
        .pivot(on="_name", index=["service", "window_start"], values="_value")
    )
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        if name not in ranked.columns:
            ranked = ranked.with_columns(pl.lit(None, dtype=pl.Float64).alias(name))
    return counts.join(ranked, on=["service", "window_start"], how="left").select(empty.columns)


def _resource_features(metrics: pl.DataFrame, start: datetime, end: datetime, minutes: int,
                       data_start: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cpu_utilization, memory_bytes and restarts per service and window; services with a restart metric).

    Per service, the best-ranked metric of each family (``resource_metric_family``) is used. Levels
    (gauges, non-monotonic sums) average per series in the window and add up over series (instances); a
    ratio (unit ``1`` or ``%``, or ``utilization`` in the name) averages over series instead. A monotonic
    CPU-time counter becomes cores by differencing: CPU seconds / elapsed seconds. Restart counts (gauge or
    counter) count their increments per container. CPU series in an idle/wait state and memory series in a
    state other than used are left out."""
    schema = {"service": pl.String, "window_start": TS, "cpu_utilization": pl.Float64,
              "memory_bytes": pl.Float64, "restarts": pl.Int64}
    no_restarts = pl.DataFrame(schema={"service": pl.String})
    candidates = metrics.filter(pl.col("service").is_not_null() & pl.col("metric_name").is_not_null()
                                & pl.col("metric_type").str.to_lowercase().is_in(["gauge", "sum"]))
    rows = []
    for name in candidates["metric_name"].unique().to_list():
        family = resource_metric_family(name)
        if family is not None:
            rows.append({"metric_name": name, "_family": family[0], "_rank": family[1]})
    if not rows:
        return pl.DataFrame(schema=schema), no_restarts
    families = pl.DataFrame(rows, schema={"metric_name": pl.String, "_family": pl.String, "_rank": pl.Int64})
    points = candidates.join(families, on="metric_name", how="inner").with_columns(
        _attribute("attributes", _STATE_KEYS).str.to_lowercase().alias("_state"))
    points = points.filter(
        pl.when(pl.col("_family") == "cpu").then(~pl.col("_state").is_in(_CPU_IDLE_STATES).fill_null(False))
        .when(pl.col("_family") == "memory").then(pl.col("_state").is_null()
                                                   | pl.col("_state").is_in(_MEMORY_USED_STATES))
        .otherwise(True)
    )
    chosen = (
        points.select("service", "_family", "_rank", "metric_name").unique()
        .sort("service", "_family", "_rank", "metric_name")
        .unique(["service", "_family"], keep="first")
    )
    points = points.join(chosen.select("service", "metric_name"), on=["service", "metric_name"], how="semi")
    monotonic = (
        pl.col("is_monotonic").fill_null(False)
        | ((pl.col("metric_type").str.to_lowercase() == "sum") & pl.col("is_monotonic").is_null()
           & pl.col("metric_name").str.contains(r"(?i)(time|seconds|total)"))
    )
    unit = pl.col("unit").fill_null("").str.to_lowercase()
    is_ratio = (unit == "1") | (unit == "%") | pl.col("metric_name").str.contains(r"(?i)utili[sz]ation")
    points = points.with_columns(monotonic.alias("_monotonic"), is_ratio.alias("_ratio"))
    key = _series_key()
    out = []

    # CPU and memory levels: gauge-like points, in the window that holds their timestamp.
    levels = points.filter(pl.col("_family").is_in(["cpu", "memory"]) & ~pl.col("_monotonic"))
    if levels.height:
        scale = pl.DataFrame(
            [{"unit": u, "_scale": _bytes_per_unit(u)} for u in levels["unit"].unique().to_list()],
            schema={"unit": pl.String, "_scale": pl.Float64},
        )
        levels = levels.join(scale, on="unit", how="left", nulls_equal=True).with_columns(
            pl.when(pl.col("_family") == "memory").then(pl.col("value") * pl.col("_scale"))
            .when(pl.col("unit") == "%").then(pl.col("value") / 100.0)
            .otherwise(pl.col("value")).alias("_value"),
            _window("timestamp", minutes, interval_end=True),
        ).filter(_in_hour("window_start", start, end) & pl.col("_value").is_not_null())
        per_series = levels.group_by([*key, "_family", "_ratio", "window_start"]).agg(pl.col("_value").mean())
        out.append(per_series.group_by("service", "_family", "window_start").agg(
            pl.when(pl.col("_ratio").all()).then(pl.col("_value").mean()).otherwise(pl.col("_value").sum())
            .first().alias("_value")))

    # CPU-time counters → cores: CPU seconds over elapsed seconds, in the window before their timestamp.
    counters = points.filter((pl.col("_family") == "cpu") & pl.col("_monotonic"))
    if counters.height:
        scale = pl.DataFrame(
            [{"unit": u, "_scale": _seconds_per_unit(u)} for u in counters["unit"].unique().to_list()],
            schema={"unit": pl.String, "_scale": pl.Float64},
        )
        deltas = _difference(counters, "value", key, data_start).join(scale, on="unit", how="left",
                                                                      nulls_equal=True)
        deltas = deltas.with_columns(_window("timestamp", minutes, interval_end=True)).filter(
            _in_hour("window_start", start, end) & (pl.col("_seconds") > 0))
        per_series = deltas.group_by([*key, "window_start"]).agg(
            ((pl.col("_delta") * pl.col("_scale")).sum() / pl.col("_seconds").sum()).alias("_value"))
        out.append(per_series.group_by("service", "window_start").agg(pl.col("_value").sum())
                   .with_columns(pl.lit("cpu").alias("_family")).select("service", "_family", "window_start",
                                                                         "_value"))

    # Restarts: increments of the restart count, gauge or counter alike (a fall is a new container). A
    # container's count lives as long as the container, while resource attributes such as
    # service.instance.id or service.version change with every process start: series are keyed by the
    # container's identity (namespace, pod, container) where the resource names it.
    restarts = points.filter(pl.col("_family") == "restarts")
    if restarts.height:
        identity = pl.concat_str(
            [_attribute("resource_attributes", ("k8s.namespace.name",)).fill_null(""),
             _attribute("resource_attributes", ("k8s.pod.uid", "k8s.pod.name", "host.name", "host.id")),
             pl.coalesce(_attribute("resource_attributes", ("k8s.container.name",)),
                         _attribute("attributes", ("k8s.container.name",))).fill_null("")],
            separator="/",
        )
        restart_key = ["service", "metric_name", "attributes", "_instance"]
        gauge = pl.col("metric_type").str.to_lowercase() == "gauge"
        restarts = restarts.with_columns(pl.coalesce(identity, pl.col("resource_attributes")).alias("_instance"))
        first_seen = pl.col("timestamp").min().over(restart_key)
        metric_first = pl.col("timestamp").min().over("service", "metric_name")
        restarts = restarts.with_columns(
            # A gauge's own start time says nothing about when its count began. A container that appears
            # well after the metric's first point is new, so its count began inside the data.
            pl.when(gauge & (first_seen > metric_first + NEW_CONTAINER_AFTER)).then(metric_first)
            .when(gauge).then(None)
            .otherwise(pl.col("start_timestamp")).alias("start_timestamp"))
        deltas = _difference(restarts, "value", restart_key, data_start)
        deltas = deltas.with_columns(_window("timestamp", minutes, interval_end=True)).filter(
            _in_hour("window_start", start, end))
        out.append(deltas.group_by("service", "window_start").agg(pl.col("_delta").clip(0).sum().alias("_value"))
                   .with_columns(pl.lit("restarts").alias("_family")).select("service", "_family", "window_start",
                                                                             "_value"))
    restart_services = chosen.filter(pl.col("_family") == "restarts").select("service").unique()
    if not out:
        return pl.DataFrame(schema=schema), restart_services
    long = pl.concat([frame.select("service", "_family", "window_start", pl.col("_value").cast(pl.Float64))
                      for frame in out])
    wide = long.group_by("service", "window_start").agg(
        *[pl.col("_value").filter(pl.col("_family") == family).sum().alias(column)
          for family, column in (("cpu", "cpu_utilization"), ("memory", "memory_bytes"), ("restarts", "restarts"))],
        *[(pl.col("_family") == family).any().alias(f"_has_{family}") for family in ("cpu", "memory", "restarts")],
    ).select(
        "service", "window_start",
        *[pl.when(pl.col(f"_has_{family}")).then(pl.col(column)).alias(column)
          for family, column in (("cpu", "cpu_utilization"), ("memory", "memory_bytes"))],
        pl.when(pl.col("_has_restarts")).then(pl.col("restarts").round()).cast(pl.Int64).alias("restarts"),
    )
    return wide, restart_services


# ---------------------------------------------------------------------------------------------- logs


def _log_features(logs: pl.DataFrame, start: datetime, end: datetime, minutes: int,
                  new_template_ids: set | pl.Series | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = logs.filter(_in_hour("timestamp", start, end) & pl.col("service").is_not_null()).with_columns(
        _window("timestamp", minutes),
        pl.col("level").str.to_uppercase().replace_strict(_LEVEL_BUCKETS, default=None).alias("_bucket"),
    )
    is_new = pl.col("is_new_template").fill_null(False)
    if new_template_ids is not None:
        ids = pl.Series("ids", list(new_template_ids), dtype=pl.String)
        first_window = pl.col("window_start") == pl.col("window_start").min().over("template_id")
        is_new = is_new | (pl.col("template_id").is_in(ids) & first_window).fill_null(False)
    frame = frame.with_columns(is_new.alias("_new"))
    counts = frame.group_by("service", "window_start").agg(
        pl.len().cast(pl.Int64).alias("log_count"),
        *[(pl.col("_bucket") == b).sum().cast(pl.Int64).alias(f"log_{b}") for b in ("debug", "info", "warn", "error")],
        pl.col("template_id").filter(pl.col("_new")).drop_nulls().n_unique().cast(pl.Int64)
        .alias("new_template_count"),
        pl.col("template_id").filter(pl.col("_bucket") == "error").drop_nulls().n_unique().cast(pl.Int64)
        .alias("error_template_count"),
    )
    versions = frame.filter(pl.col("service_version").is_not_null()).group_by(
        "service", "window_start", "service_version").agg(pl.len().alias("_n"))
    return counts, versions


# ------------------------------------------------------------------------------------------- changes


def _change_features(grid: pl.DataFrame, changes: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """Last change and last code version at or before each window's end (as-of joins per service)."""
    changes = (
        changes.filter(pl.col("timestamp").is_not_null() & pl.col("service").is_not_null())
        .unique(["event_id", "service", "timestamp"], keep="first", maintain_order=True)
        .sort("timestamp", "event_id")
    )
    probe = grid.select("service", "window_start").with_columns(
        (pl.col("window_start") + pl.duration(minutes=minutes) - pl.duration(microseconds=1)).alias("_at")
    ).sort("_at")
    last = probe.join_asof(
        changes.select("service", pl.col("timestamp").alias("_at"), pl.col("timestamp").alias("_changed_at"),
                       pl.col("event_id").alias("last_change_id"),
                       pl.col("change_kind").fill_null("code").alias("last_change_kind")),
        on="_at", by="service", strategy="backward", check_sortedness=False,  # both sorted by _at above
    )
    code = changes.filter(pl.col("change_kind").fill_null("code") != "config").select(
        "service", pl.col("timestamp").alias("_at"),
        pl.when(pl.col("event_type").str.to_lowercase() == "removed").then(None).otherwise(pl.col("version"))
        .alias("_deployed_version"),
    )
    last = last.join_asof(code, on="_at", by="service", strategy="backward", check_sortedness=False)
    return last.with_columns(
        ((pl.col("_at") + _US - pl.col("_changed_at")).dt.total_microseconds() / 60e6).alias("minutes_since_change")
    ).select("service", "window_start", "minutes_since_change", "last_change_id", "last_change_kind",
             "_deployed_version")


# ---------------------------------------------------------------------------------------------- main


def window_problems(frame: pl.DataFrame, traced_services: Iterable[str], window_minutes: int = 1,
                    limit: int = 20) -> list[str]:
    """What the hour's windows (``WINDOWS`` rows of one hour) lack, at most ``limit`` lines; empty when
    complete: a service with spans in the hour but no windows, or a service with fewer or more windows
    than the hour holds (quiet windows are rows too, not gaps)."""
    require_frame(frame, "windows", ["service", "window_start"], "windows.service_windows", WindowsInputError)
    expected = 60 // window_minutes
    counts = frame.group_by("service").agg(pl.col("window_start").n_unique().alias("windows"), pl.len().alias("rows"))
    have = set(counts["service"].to_list())
    problems = [f"{name} has spans but no windows" for name in sorted(set(traced_services) - have)]
    problems += [f"{r['service']} has {r['rows']} rows over {r['windows']} windows, not {expected}"
                 for r in counts.filter((pl.col("windows") != expected) | (pl.col("rows") != expected))
                 .sort("service").iter_rows(named=True)]
    return problems[:limit]


def service_windows(
    *,
    hour_start: datetime,
    spans: pl.DataFrame | None,
    logs_with_templates: pl.DataFrame | None,
    metrics: pl.DataFrame | None,
    deployments: pl.DataFrame | None,
    test_cases: pl.DataFrame | None,
    services: list[str] | None = None,
    window_minutes: int = 1,
    new_template_ids: set | pl.Series | None = None,
    history_deployments: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """All windows of [hour_start, hour_start + 1h) for every service, as ``WINDOWS`` rows.

    ``spans``, ``metrics``, ``deployments``, ``test_cases``: the raw tables (``tables.SPANS`` …); rows
    outside the hour are ignored, except metric points used as the base of cumulative series
    (``metrics_time_range``). ``logs_with_templates``: log lines with ``template_id`` and optionally
    ``is_new_template`` (``signals.log_events`` or raw logs plus those columns). ``new_template_ids``:
    templates new in this hour; each counts as new in the first window it appears in.
    ``history_deployments``: earlier changes, so the first windows know the change before the hour.
    ``window_minutes`` must divide 60. Pure: the same inputs give the same rows."""
    if not isinstance(hour_start, datetime):
        raise WindowsInputError(f"hour_start must be a datetime, got {type(hour_start).__name__}")
    start = _naive_utc(hour_start)
    if (start.minute, start.second, start.microsecond) != (0, 0, 0):
        raise WindowsInputError(f"hour_start must be the start of a UTC hour, got {hour_start.isoformat()}")
    if not isinstance(window_minutes, int) or window_minutes <= 0 or 60 % window_minutes:
        raise WindowsInputError(
            f"window_minutes must be a whole divisor of 60 (1, 2, 5, 10, 15, 30, 60 …), got {window_minutes!r}")
    end = start + timedelta(hours=1)
    minutes = window_minutes

    spans = _prepare(spans, "spans", SPANS, ("service", "kind", "start_time"))
    logs_schema = {**LOGS, "template_id": pl.String, "is_new_template": pl.Boolean}
    logs = _prepare(logs_with_templates, "logs_with_templates", logs_schema,
                    ("service", "timestamp", "level", "template_id"))
    metrics = _prepare(metrics, "metrics", METRICS, ("service", "timestamp", "metric_name", "metric_type"))
    deployments = _prepare(deployments, "deployments", DEPLOYMENTS, ("service", "timestamp", "event_id"))
    history = _prepare(history_deployments, "history_deployments", DEPLOYMENTS, ("service", "timestamp", "event_id"))
    test_cases = _prepare(test_cases, "test_cases", TEST_CASES, ("service", "timestamp", "status"))

    server, callee_view, client, span_versions, span_services = _span_features(spans, start, end, minutes)
    metric_start = metrics["timestamp"].min() if metrics.height else start
    metric_start = min(metric_start, start) if metric_start is not None else start
    hist = _histogram_latency(metrics, start, end, minutes, metric_start)
    resources, restart_services = _resource_features(metrics, start, end, minutes, metric_start)
    log_counts, log_versions = _log_features(logs, start, end, minutes, new_template_ids)
    failures = (
        test_cases.filter(_in_hour("timestamp", start, end) & pl.col("service").is_not_null()
                          & pl.col("status").str.to_lowercase().is_in(_FAILED_TEST_STATUSES))
        .group_by("service", _window("timestamp", minutes))
        .agg(pl.len().cast(pl.Int64).alias("test_failures"))
    )

    # The grid: every service seen in the hour (or named) × every window.
    seen: set[str] = {s for s in (services or []) if s}
    in_hour_services = [
        span_services["service"],
        callee_view["service"],
        log_counts["service"],
        metrics.filter((pl.col("timestamp") > start) & (pl.col("timestamp") <= end))["service"],
        deployments.filter(_in_hour("timestamp", start, end))["service"],
        test_cases.filter(_in_hour("timestamp", start, end))["service"],
    ]
    for column in in_hour_services:
        seen.update(column.drop_nulls().unique().to_list())
    starts = pl.datetime_range(start, end, interval=f"{minutes}m", closed="left", eager=True, time_unit="us")
    grid = pl.DataFrame({"service": sorted(seen)}, schema={"service": pl.String}).join(
        pl.DataFrame({"window_start": starts}), how="cross")

    # One source per service: own server spans > callers' client spans > own histograms for traffic;
    # own spans > own histograms > callers' client spans for latency.
    own = set(server["service"].unique().to_list())
    viewed = set(callee_view["service"].unique().to_list()) - own
    metered = set(hist["service"].unique().to_list()) - own
    traffic = pl.concat([
        server,
        callee_view.filter(pl.col("service").is_in(list(viewed))),
        hist.filter(pl.col("service").is_in(list(metered - viewed))),
    ]).select("service", "window_start", "requests", "errors")
    latency = pl.concat([
        server.select("service", "window_start", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                      pl.lit("spans").alias("latency_source")),
        hist.filter(pl.col("service").is_in(list(metered))).select(
            "service", "window_start", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
            pl.lit("metrics").alias("latency_source")),
        callee_view.filter(pl.col("service").is_in(list(viewed - metered))).select(
            "service", "window_start", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
            pl.lit("spans").alias("latency_source")),
    ])

    # Version the telemetry reports: the most common in the window, carried over quiet windows.
    reported = (
        pl.concat([span_versions, log_versions.cast({"_n": span_versions.schema["_n"]})])
        .group_by("service", "window_start", "service_version").agg(pl.col("_n").sum())
        .sort(["service", "window_start", "_n", "service_version"], descending=[False, False, True, False])
        .unique(["service", "window_start"], keep="first")
        .select("service", "window_start", pl.col("service_version").alias("_reported_version"))
    )
    changes = _change_features(grid, pl.concat([history, deployments]), minutes)

    keys = ["service", "window_start"]
    frame = grid
    for part in (traffic, latency, client, log_counts, resources, failures, reported, changes):
        frame = frame.join(part, on=keys, how="left")
    counts = ["requests", "errors", "client_calls", "client_errors", "log_count", "log_debug", "log_info",
              "log_warn", "log_error", "new_template_count", "error_template_count", "test_failures"]
    frame = (
        frame.join(restart_services.with_columns(pl.lit(True).alias("_rs")), on="service", how="left")
        .sort(keys)
        .with_columns(
            *[pl.col(c).fill_null(0) for c in counts],
            pl.when(pl.col("_rs")).then(pl.col("restarts").fill_null(0)).alias("restarts"),
            pl.col("_reported_version").forward_fill().backward_fill().over("service").alias("_reported_version"),
        )
        .with_columns(
            pl.when(pl.col("requests") > 0).then(pl.col("errors") / pl.col("requests")).otherwise(0.0)
            .alias("error_rate"),
            pl.coalesce("_deployed_version", "_reported_version").alias("current_version"),
            # A histogram point whose increment is zero gives a window but no latency: no source either.
            pl.when(pl.col("latency_p50_ms").is_not_null()).then(pl.col("latency_source")).alias("latency_source"),
            pl.lit(start).cast(TS).alias("hour"),
            pl.lit(minutes).cast(pl.Int32).alias("window_minutes"),
            pl.lit(feature_set_id(minutes)).alias("feature_set_id"),
        )
    )
    # Parallel float sums differ in the last bits from run to run; rounding keeps re-runs identical.
    frame = conform(frame, WINDOWS)
    return frame.with_columns(pl.col(pl.Float64).round(9))
