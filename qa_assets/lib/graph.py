"""The service knowledge graph: who calls whom, who owns what, what changed, what each service logs.

Built with networkx (a ``MultiDiGraph``, one edge per source, target and edge type) from:

- **spans** (``call_edges``): caller -> callee edges with call and error counts and latency percentiles.
  A SERVER/CONSUMER span whose parent span belongs to another service is one call, seen from the callee.
  CLIENT/PRODUCER spans that name their peer (``peer_service`` / ``db_system``) are the same calls seen
  from the caller; they alone reveal callees without spans of their own (datastores, brokers,
  uninstrumented services: blind spots) and calls that never reached the callee (connection refused).
- **the Backstage catalog**: owner, system, tier, lifecycle; ``dependsOn`` refs become ``depends_on``
  edges; a ``Resource`` entity is a datastore.
- **deployments** (CDEvents): ``service -runs_version-> version -changed_by-> change`` for code changes;
  a config change (or an event without a version) hangs off the service directly
  (``service -changed_by-> change``), since it does not change which build runs.
- **log templates**: ``service -emits-> template``.
- **metrics**: services known only from their metrics still get a node.

Node ids: ``service:<name>``, ``datastore:<name>``, ``version:<service>@<version>``, ``change:<event id>``,
``template:<template id>``. Node data holds the ``NODES`` columns (``attributes`` as JSON text), edge data
the ``EDGES`` columns, so ``graph_tables`` / ``graph_from_tables`` round-trip the DuckDB tables exactly.
"""

from __future__ import annotations

import base64
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import networkx as nx
import orjson
import polars as pl

from qa_assets.lib.frames import require_frame
from qa_assets.lib.ingest.tables import conform

TS = pl.Datetime("us")

NODES: dict[str, pl.DataType] = {
    "node_id": pl.String,
    "node_type": pl.String,  # service | datastore | version | change | template
    "name": pl.String,
    "service": pl.String,  # the service the node belongs to (itself for service/datastore nodes)
    "owner": pl.String,
    "system": pl.String,
    "tier": pl.String,
    "lifecycle": pl.String,
    "traced": pl.Boolean,  # has spans of its own
    "in_catalog": pl.Boolean,
    "version": pl.String,  # service: the version deployed last; version/change: their version
    "change_kind": pl.String,  # code | config (change nodes)
    "commit": pl.String,
    "changed_files": pl.List(pl.String),
    "timestamp": TS,  # change time; first seen / first deployed for the others
    "attributes": pl.String,  # JSON object
}

EDGES: dict[str, pl.DataType] = {
    "source": pl.String,
    "target": pl.String,
    "edge_type": pl.String,  # calls | depends_on | runs_version | changed_by | emits
    "call_count": pl.Int64,  # calls: calls seen; emits: log lines
    "error_count": pl.Int64,  # calls: failed calls; emits: lines at ERROR or worse
    "latency_p50_ms": pl.Float64,
    "latency_p95_ms": pl.Float64,
    "first_seen": TS,
    "last_seen": TS,
    "evidence": pl.String,  # spans | catalog | metrics | deployments | logs
}

# What `call_edges` returns: one row per caller and callee.
CALL_EDGES: dict[str, pl.DataType] = {
    "caller": pl.String,
    "callee": pl.String,
    "callee_type": pl.String,  # service | datastore
    "callee_traced": pl.Boolean,  # the callee has spans of its own
    "db_system": pl.String,  # from the caller's client spans, for datastores
    "call_count": pl.Int64,
    "error_count": pl.Int64,
    "latency_p50_ms": pl.Float64,  # the callee's server spans where there are any, else the client spans
    "latency_p95_ms": pl.Float64,
    "first_seen": TS,
    "last_seen": TS,
    "observed_from": pl.String,  # callee | caller | both
}

# What `request_calls` returns: one row per caller, callee and window.
REQUEST_CALLS: dict[str, pl.DataType] = {
    "window_start": TS,
    "caller": pl.String,
    "callee": pl.String,
    "requests": pl.Int64,  # the caller's requests in the window (traces through it)
    "failed": pl.Int64,  # of them, those that failed at the caller
    "requests_calling": pl.Int64,  # of the caller's requests, those that called the callee
    "failed_calling": pl.Int64,  # of those, the failed ones
}

# What `span_services` returns: one row per service that has spans.
SPAN_SERVICES: dict[str, pl.DataType] = {
    "service": pl.String,
    "span_count": pl.Int64,
    "first_seen": TS,
    "last_seen": TS,
    "version": pl.String,  # service.version of the latest span that carries one
}

RECENT_CHANGES: dict[str, pl.DataType] = {
    "change_id": pl.String,
    "service": pl.String,
    "event_type": pl.String,
    "change_kind": pl.String,
    "version": pl.String,
    "previous_version": pl.String,
    "commit": pl.String,
    "changed_files": pl.List(pl.String),
    "timestamp": TS,
    "minutes_before": pl.Float64,  # at - timestamp, in minutes (negative: after `at`)
}

NODE_TYPES = ("service", "datastore", "version", "change", "template")
EDGE_TYPES = ("calls", "depends_on", "runs_version", "changed_by", "emits")
SERVICE_NODE_TYPES = ("service", "datastore")
DEPENDENCY_EDGE_TYPES = ("calls", "depends_on")

_SERVER_KINDS = ("SERVER", "CONSUMER")
_CLIENT_KINDS = ("CLIENT", "PRODUCER")
_LEVEL_RANK = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4, "FATAL": 5}
_ERROR_LEVELS = ("ERROR", "FATAL")
_TIME_KEYS = ("timestamp", "first_seen", "last_seen")
ERROR_EDGE_SHARE = 0.01  # render_png draws a call edge red from this share of failed calls
# Kubernetes service DNS names (`cart.shop.svc.cluster.local`, `cart.shop.svc`) name the service `cart`.
_K8S_SERVICE_DNS = re.compile(r"^([^.]+)\.[^.]+\.svc(?:\.cluster\.local)?\.?$")
_PORT = re.compile(r":\d+$")
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class GraphInputError(ValueError):
    """A frame handed to the graph builder lacks what it needs; the message says which and what to do."""


class UnknownServiceError(ValueError):
    """A query named a service the graph does not know."""


# ------------------------------------------------------------------------------------- helpers


def _require(frame: pl.DataFrame | None, name: str, columns: Iterable[str], producer: str) -> None:
    require_frame(frame, name, list(columns), producer, GraphInputError)


def _json(value: dict[str, Any]) -> str:
    clean = {k: v for k, v in value.items() if v is not None and v != [] and v != {}}
    return orjson.dumps(clean, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC).decode()


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _failed() -> pl.Expr:
    """A failed call: span status ERROR, or an HTTP 5xx (4xx is the caller's fault, not the callee's)."""
    return (pl.col("status_code") == "ERROR").fill_null(False) | (
        pl.col("http_status_code") >= 500
    ).fill_null(False)


def _call_stats(duration: str = "duration_ms") -> list[pl.Expr]:
    return [
        pl.len().cast(pl.Int64).alias("call_count"),
        pl.col("failed").sum().cast(pl.Int64).alias("error_count"),
        pl.col(duration).quantile(0.5, "linear").alias("latency_p50_ms"),
        pl.col(duration).quantile(0.95, "linear").alias("latency_p95_ms"),
        pl.col("start_time").min().alias("first_seen"),
        pl.col("start_time").max().alias("last_seen"),
    ]


def normalize_peer(peer: str) -> str:
    """A peer address as a service name: port dropped, Kubernetes service DNS reduced to the service."""
    text = peer.strip()
    if text.count(":") == 1 or text.startswith("["):  # host:port or [ipv6]:port, never a bare IPv6
        text = _PORT.sub("", text)
    match = _K8S_SERVICE_DNS.match(text)
    return match.group(1) if match else text


# ----------------------------------------------------------------------------------- from spans


_SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "service", "kind", "start_time", "duration_ms",
    "status_code", "http_status_code", "peer_service", "db_system",
)


def call_edges(spans: pl.DataFrame) -> pl.DataFrame:
    """Caller -> callee edges aggregated over ``spans`` (raw.spans), conformed to ``CALL_EDGES``.

    Seen from the callee: a SERVER/CONSUMER span whose parent span (same trace) belongs to another
    service. Seen from the caller: CLIENT/PRODUCER spans with a ``peer_service`` (or ``db_system``); the
    peer name is resolved to a traced service by exact name, by what the traces show that peer name
    reaches (a CLIENT span whose child server span is in service X names X), or by Kubernetes DNS.
    Where both sides saw a pair, the counts are the larger of the two (the caller sees calls that never
    arrived, the callee sees calls from uninstrumented clients) and latency is the callee's.
    """
    _require(spans, "spans", _SPAN_COLUMNS, "raw.spans (qa_assets.lib.ingest.tables.SPANS)")
    if spans.height == 0:
        return pl.DataFrame(schema=CALL_EDGES)
    linked, client_spans, traced = _observed_calls(spans)
    server_side = linked.group_by("caller", "callee").agg(_call_stats())
    client_side = (
        client_spans
        .group_by("caller", "callee")
        .agg(
            *_call_stats(),
            pl.col("db_system").drop_nulls().first().alias("db_system"),
            (pl.col("kind") == "PRODUCER").any().alias("via_producer"),
        )
    )
    both = server_side.join(client_side, on=["caller", "callee"], how="full", coalesce=True, suffix="_client")
    edges = both.select(
        "caller",
        "callee",
        pl.col("callee").is_in(list(traced)).alias("callee_traced"),
        "db_system",
        pl.max_horizontal("call_count", "call_count_client").alias("call_count"),
        pl.max_horizontal("error_count", "error_count_client").alias("error_count"),
        pl.coalesce("latency_p50_ms", "latency_p50_ms_client").alias("latency_p50_ms"),
        pl.coalesce("latency_p95_ms", "latency_p95_ms_client").alias("latency_p95_ms"),
        pl.min_horizontal("first_seen", "first_seen_client").alias("first_seen"),
        pl.max_horizontal("last_seen", "last_seen_client").alias("last_seen"),
        pl.when(pl.col("call_count").is_not_null() & pl.col("call_count_client").is_not_null())
        .then(pl.lit("both"))
        .when(pl.col("call_count").is_not_null())
        .then(pl.lit("callee"))
        .otherwise(pl.lit("caller"))
        .alias("observed_from"),
        pl.col("via_producer").fill_null(False),
    ).with_columns(
        # A callee without spans that is reached through a database client or a message producer is a
        # datastore / broker; anything else without spans is an uninstrumented service (a blind spot).
        pl.when(pl.col("callee_traced"))
        .then(pl.lit("service"))
        .when(pl.col("db_system").is_not_null() | pl.col("via_producer"))
        .then(pl.lit("datastore"))
        .otherwise(pl.lit("service"))
        .alias("callee_type")
    )
    return conform(edges, CALL_EDGES).sort("caller", "callee")


def _span_base(spans: pl.DataFrame) -> pl.LazyFrame:
    return spans.lazy().select(
        pl.col("trace_id", "span_id", "parent_span_id", "service", "start_time", "peer_service", "db_system"),
        pl.col("kind"),  # upper-case per the SPANS contract
        pl.col("duration_ms").cast(pl.Float64),
        _failed().alias("failed"),
    ).filter(pl.col("service").is_not_null())


def _observed_calls(spans: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """Every call in ``spans``, as the callee saw it (its server span under a span of another service:
    ``trace_id``, ``span_id``, ``caller``, ``callee``, ``duration_ms``, ``failed``, ``start_time``) and as
    the caller saw it (its client spans, with the peer resolved to a ``callee``, plus ``kind`` and
    ``db_system``), and the names of the services with spans."""
    base = _span_base(spans)
    has_parent = pl.col("parent_span_id").is_not_null()
    children = base.filter(pl.col("kind").is_in(_SERVER_KINDS) & has_parent).select(
        "trace_id", "span_id", "parent_span_id", pl.col("service").alias("callee"), "duration_ms", "failed",
        "start_time",
    )
    parents = base.select(
        "trace_id",
        pl.col("span_id").alias("parent_span_id"),
        pl.col("service").alias("caller"),
        pl.col("kind").alias("parent_kind"),
        pl.col("peer_service").alias("parent_peer"),
    )
    # A span delivered twice (at-least-once exporters) is one call: dedupe the joined calls by the child
    # span, which also undoes the fan-out of a duplicated parent (cheaper than deduping all spans).
    linked = (
        children.join(parents, on=["trace_id", "parent_span_id"], how="inner")
        .filter(pl.col("caller") != pl.col("callee"))
        .unique(subset=["trace_id", "span_id"], keep="any")
    )
    client_spans = base.filter(
        pl.col("kind").is_in(_CLIENT_KINDS) & pl.col("peer_service").is_not_null()
    ).unique(subset=["trace_id", "span_id"], keep="any")
    linked, client_spans, traced_names = pl.collect_all(
        [linked, client_spans, base.select(pl.col("service").unique())]
    )
    traced = set(traced_names["service"].to_list())
    # Peer names that the traces tie to exactly one callee service (IP addresses, aliases, FQDNs).
    # Only CLIENT parents: a PRODUCER's peer is the broker, not the consumer behind it.
    peer_aliases = (
        linked.filter((pl.col("parent_kind") == "CLIENT") & pl.col("parent_peer").is_not_null())
        .group_by("parent_peer")
        .agg(pl.col("callee").unique().alias("callees"))
        .filter(pl.col("callees").list.len() == 1)
    )
    aliases = dict(zip(peer_aliases["parent_peer"].to_list(), peer_aliases["callees"].list.first().to_list(),
                       strict=True))
    peers = client_spans["peer_service"].unique().to_list()
    resolved = []
    for peer in peers:  # distinct peer names: a small set
        if peer in traced:
            resolved.append(peer)
        elif peer in aliases:
            resolved.append(aliases[peer])
        else:
            resolved.append(normalize_peer(peer) or peer)
    peer_map = pl.DataFrame({"peer_service": peers, "callee": resolved},
                            schema={"peer_service": pl.String, "callee": pl.String})
    client_side = (
        client_spans.join(peer_map, on="peer_service", how="left")
        .rename({"service": "caller"})
        .filter(pl.col("caller") != pl.col("callee"))
    )
    return linked, client_side, traced


def request_calls(spans: pl.DataFrame, window_minutes: int = 1) -> pl.DataFrame:
    """Per caller, callee and window: how many of the caller's requests called the callee, and how many
    of those failed, beside the caller's requests and failed requests of the window (``REQUEST_CALLS``).

    A request is a trace through the caller (its SERVER/CONSUMER spans in one trace, failed when one of
    them failed), in the window its first server span started in; it called the callee when the trace
    holds a call between the two, seen from either side. Every callee the caller called during ``spans``
    gets a row in every window the caller served requests in (zero where it was not called), so the
    failures of a window are counted whatever the calls. Whether the failing requests were the ones that
    called a dependency tells a dependency that broke them from one that merely changed or slowed."""
    _require(spans, "spans", _SPAN_COLUMNS, "raw.spans (qa_assets.lib.ingest.tables.SPANS)")
    if not isinstance(window_minutes, int) or window_minutes <= 0 or 60 % window_minutes:
        raise GraphInputError(f"window_minutes must be a whole divisor of 60, got {window_minutes!r}")
    if spans.height == 0:
        return pl.DataFrame(schema=REQUEST_CALLS)
    linked, client_side, _ = _observed_calls(spans)
    requests = (
        _span_base(spans)
        .filter(pl.col("kind").is_in(_SERVER_KINDS) & pl.col("trace_id").is_not_null())
        .group_by("trace_id", pl.col("service").alias("caller"))
        .agg(pl.col("start_time").min().dt.truncate(f"{window_minutes}m").alias("window_start"),
             pl.col("failed").any())
        .collect()
    )
    calls = pl.concat([linked.select("trace_id", "caller", "callee"),
                       client_side.select("trace_id", "caller", "callee")]).unique()
    per_window = requests.group_by("caller", "window_start").agg(
        pl.len().cast(pl.Int64).alias("requests"), pl.col("failed").sum().cast(pl.Int64).alias("failed"))
    calling = (
        requests.join(calls, on=["trace_id", "caller"])
        .group_by("caller", "callee", "window_start")
        .agg(pl.len().cast(pl.Int64).alias("requests_calling"),
             pl.col("failed").sum().cast(pl.Int64).alias("failed_calling"))
    )
    callees = calls.select("caller", "callee").unique()
    rows = (
        per_window.join(callees, on="caller")
        .join(calling, on=["caller", "callee", "window_start"], how="left")
        .with_columns(pl.col("requests_calling", "failed_calling").fill_null(0))
    )
    return conform(rows, REQUEST_CALLS).sort("window_start", "caller", "callee")


def span_services(spans: pl.DataFrame) -> pl.DataFrame:
    """Every service that has spans of its own (``SPAN_SERVICES``): count, first/last seen, latest version."""
    _require(spans, "spans", ("service", "start_time", "service_version"), "raw.spans")
    out = (
        spans.lazy()
        .filter(pl.col("service").is_not_null())
        .group_by("service")
        .agg(
            pl.len().cast(pl.Int64).alias("span_count"),
            pl.col("start_time").min().alias("first_seen"),
            pl.col("start_time").max().alias("last_seen"),
            pl.col("service_version").sort_by("start_time").drop_nulls().last().alias("version"),
        )
        .collect()
    )
    return conform(out, SPAN_SERVICES).sort("service")


def merge_call_edges(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Combine ``call_edges`` outputs of several partitions. Counts add up exactly; the latency
    percentiles become call-weighted means of the parts' percentiles (an approximation: exact
    percentiles need the spans, so run ``call_edges`` over the whole window where that is affordable)."""
    frames = [conform(p, CALL_EDGES) for p in parts if p is not None and p.height]
    if not frames:
        return pl.DataFrame(schema=CALL_EDGES)
    weight = pl.col("call_count").cast(pl.Float64)

    def weighted(column: str) -> pl.Expr:
        has = pl.col(column).is_not_null()
        return ((pl.col(column) * weight).filter(has).sum() / weight.filter(has).sum()).alias(column)

    merged = (
        pl.concat(frames)
        .group_by("caller", "callee")
        .agg(
            pl.col("callee_traced").any(),
            pl.col("db_system").drop_nulls().first(),
            pl.col("call_count").sum(),
            pl.col("error_count").sum(),
            weighted("latency_p50_ms"),
            weighted("latency_p95_ms"),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("observed_from").unique().alias("_from"),
            (pl.col("callee_type") == "datastore").any().alias("_datastore"),
        )
        .with_columns(
            pl.when(pl.col("_from").list.len() > 1).then(pl.lit("both"))
            .otherwise(pl.col("_from").list.first()).alias("observed_from"),
            pl.when(pl.col("callee_traced")).then(pl.lit("service"))
            .when(pl.col("_datastore")).then(pl.lit("datastore"))
            .otherwise(pl.lit("service")).alias("callee_type"),
            pl.col("latency_p50_ms").fill_nan(None),
            pl.col("latency_p95_ms").fill_nan(None),
        )
    )
    return conform(merged, CALL_EDGES).sort("caller", "callee")


def merge_span_services(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Combine ``span_services`` outputs of several partitions (the latest part's version wins)."""
    frames = [conform(p, SPAN_SERVICES) for p in parts if p is not None and p.height]
    if not frames:
        return pl.DataFrame(schema=SPAN_SERVICES)
    merged = pl.concat(frames).group_by("service").agg(
        pl.col("span_count").sum(),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("version").sort_by("last_seen").drop_nulls().last(),
    )
    return conform(merged, SPAN_SERVICES).sort("service")


# ------------------------------------------------------------------------------------ the graph


def _entity_name(ref: str) -> tuple[str, str]:
    """(kind, name) of a Backstage entity ref ``[kind:][namespace/]name``; a bare name is a component."""
    kind, rest = ref.split(":", 1) if ":" in ref else ("component", ref)
    name = rest.split("/", 1)[1] if "/" in rest else rest
    return kind.strip().lower(), name.strip()


class _Builder:
    """Collects node and edge rows before they become graph elements (names resolved once)."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}  # name -> service | datastore
        self.info: dict[str, dict[str, Any]] = defaultdict(dict)
        self.sources: dict[str, set[str]] = defaultdict(set)
        self.canonical: dict[str, str] = {}  # lower-case name -> name as telemetry spells it

    def name(self, raw: str) -> str:
        return self.canonical.setdefault(raw.lower(), raw)

    def note(self, name: str, source: str, **info: Any) -> None:
        self.sources[name].add(source)
        for key, value in info.items():
            if value is not None and self.info[name].get(key) is None:
                self.info[name][key] = value

    def earliest(self, name: str, when: datetime | None) -> None:
        if when is not None:
            current = self.info[name].get("timestamp")
            self.info[name]["timestamp"] = when if current is None else min(current, when)

    def node_id(self, name: str) -> str:
        return f"{self.kind.get(name, 'service')}:{name}"


def build_graph(
    *,
    spans_edges: pl.DataFrame,
    catalog: pl.DataFrame | None,
    deployments: pl.DataFrame | None,
    service_templates: pl.DataFrame | None = None,
    metric_services: pl.DataFrame | None = None,
    span_services: pl.DataFrame | None = None,
) -> nx.MultiDiGraph:
    """The knowledge graph from the stage inputs (see the module docstring for what each adds).

    ``spans_edges``: ``call_edges`` output. ``catalog``: raw.catalog. ``deployments``: raw.deployments.
    ``service_templates``: service, template_id, template, level, count (optionally first_seen,
    last_seen). ``metric_services``: service (optionally first_seen). ``span_services``: the
    ``span_services`` output, which also brings services with spans but no calls and their versions.
    """
    _require(spans_edges, "spans_edges", ("caller", "callee", "call_count", "error_count"),
             "graph.call_edges")
    spans_edges = conform(spans_edges, CALL_EDGES)
    catalog = _optional(catalog, "catalog",
                        ("name", "kind", "owner", "system", "tier", "lifecycle", "depends_on"), "raw.catalog")
    deployments = _optional(deployments, "deployments",
                            ("event_id", "timestamp", "service", "version", "change_kind"), "raw.deployments")
    service_templates = _optional(service_templates, "service_templates",
                                  ("service", "template_id", "template", "level", "count"),
                                  "signals.log_events / log_templates")
    metric_services = _optional(metric_services, "metric_services", ("service",), "raw.metrics")
    span_services_frame = _optional(span_services, "span_services", ("service",), "graph.span_services")

    b = _Builder()
    # Telemetry spells service names; the catalog is matched to them case-insensitively.
    for row in span_services_frame.iter_rows(named=True):
        if row["service"]:
            name = b.name(row["service"])
            b.kind[name] = "service"
            b.note(name, "spans", span_count=row.get("span_count"), last_seen=row.get("last_seen"),
                   span_version=row.get("version"))
            b.earliest(name, row.get("first_seen"))
    for row in spans_edges.iter_rows(named=True):
        caller, callee = b.name(row["caller"]), b.name(row["callee"])
        b.kind[caller] = "service"
        b.note(caller, "spans")
        b.earliest(caller, row["first_seen"])
        b.note(callee, "spans" if row["callee_traced"] else "caller_spans", db_system=row["db_system"])
        b.earliest(callee, row["first_seen"])
        if row["callee_traced"]:
            b.kind[callee] = "service"
    traced = {n for n, s in b.sources.items() if "spans" in s}
    for row in spans_edges.filter(~pl.col("callee_traced").fill_null(False)).iter_rows(named=True):
        callee = b.name(row["callee"])
        b.kind.setdefault(callee, row["callee_type"] or "service")
    for row in metric_services.iter_rows(named=True):
        if row["service"]:
            name = b.name(row["service"])
            b.kind.setdefault(name, "service")
            b.note(name, "metrics")
            b.earliest(name, row.get("first_seen"))
    for row in deployments.select(pl.col("service").drop_nulls().unique().sort()).iter_rows():
        name = b.name(row[0])
        b.kind.setdefault(name, "service")
        b.note(name, "deployments")
    for row in service_templates.select(pl.col("service").drop_nulls().unique().sort()).iter_rows():
        name = b.name(row[0])
        b.kind.setdefault(name, "service")
        b.note(name, "logs")

    catalog_names: set[str] = set()
    depends: list[tuple[str, str, str]] = []  # (source name, target kind, target name)
    for row in catalog.sort("name").iter_rows(named=True):
        if not row["name"]:
            continue
        name = b.name(row["name"])
        catalog_names.add(name)
        # The catalog says what an entity is; a Resource (database, cache, queue) is a datastore.
        b.kind[name] = "datastore" if (row["kind"] or "").lower() == "resource" else "service"
        b.note(name, "catalog", owner=row["owner"], system=row["system"], tier=row["tier"],
               lifecycle=row["lifecycle"], entity_ref=row.get("entity_ref"), catalog_type=row.get("type"))
        for ref in row["depends_on"] or []:
            kind, target = _entity_name(ref)
            if target:
                depends.append((name, kind, target))
    for _, kind, target in depends:
        name = b.name(target)
        if name not in b.kind:
            b.kind[name] = "datastore" if kind == "resource" else "service"
        b.note(name, "catalog_dependency")

    graph = nx.MultiDiGraph()
    graph.graph["description"] = "qa-assets service knowledge graph"
    versions = _service_versions(deployments, b)

    for name in sorted(b.kind):
        info = b.info[name]
        attributes = {
            # Where the node is known from: spans, caller_spans (other services' client spans),
            # catalog, catalog_dependency (named in a dependsOn), metrics, deployments, logs.
            "sources": sorted(b.sources[name]),
            "entity_ref": info.get("entity_ref"),
            "catalog_type": info.get("catalog_type"),
            "db_system": info.get("db_system"),
            "span_count": info.get("span_count"),
            "last_seen": info.get("last_seen"),
            "removed_at": versions.removed_at.get(name),
        }
        _add_node(
            graph, b.node_id(name), node_type=b.kind[name], name=name, service=name, owner=info.get("owner"),
            system=info.get("system"), tier=info.get("tier"), lifecycle=info.get("lifecycle"),
            traced=name in traced, in_catalog=name in catalog_names,
            version=versions.current.get(name, info.get("span_version")), timestamp=info.get("timestamp"),
            attributes=_json(attributes),
        )

    for row in spans_edges.iter_rows(named=True):
        _add_edge(graph, b.node_id(b.name(row["caller"])), b.node_id(b.name(row["callee"])), "calls", "spans",
                  call_count=row["call_count"], error_count=row["error_count"],
                  latency_p50_ms=row["latency_p50_ms"], latency_p95_ms=row["latency_p95_ms"],
                  first_seen=row["first_seen"], last_seen=row["last_seen"])
    for source, _, target in depends:
        source_id, target_id = b.node_id(source), b.node_id(b.name(target))
        if source_id != target_id:
            _add_edge(graph, source_id, target_id, "depends_on", "catalog")

    _add_deployments(graph, deployments, b)
    _add_templates(graph, service_templates, b)
    return graph


def _optional(frame: pl.DataFrame | None, name: str, columns: tuple[str, ...], producer: str) -> pl.DataFrame:
    if frame is None:
        return pl.DataFrame(schema={c: pl.String for c in columns})
    _require(frame, name, columns, producer)
    return frame


def _add_node(graph: nx.MultiDiGraph, node_id: str, **values: Any) -> None:
    """A node carrying every NODES column (None where the source says nothing)."""
    graph.add_node(node_id, **{c: values.get(c) for c in NODES if c != "node_id"})


def _add_edge(graph: nx.MultiDiGraph, source: str, target: str, edge_type: str, evidence: str,
              **values: Any) -> None:
    """An edge carrying every EDGES column; keyed by its type, so a pair has at most one of each."""
    data = {c: values.get(c) for c in EDGES if c not in ("source", "target", "edge_type", "evidence")}
    graph.add_edge(source, target, key=edge_type, edge_type=edge_type, evidence=evidence, **data)


class _Versions:
    def __init__(self) -> None:
        self.current: dict[str, str | None] = {}  # service -> version deployed last (None after a removal)
        self.removed_at: dict[str, datetime] = {}


_DEPLOYMENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String, "event_type": pl.String, "timestamp": TS, "service": pl.String,
    "version": pl.String, "previous_version": pl.String, "artifact_id": pl.String, "environment": pl.String,
    "change_kind": pl.String, "commit": pl.String, "author": pl.String, "changed_files": pl.List(pl.String),
}


def _ordered_deployments(deployments: pl.DataFrame) -> pl.DataFrame:
    frame = conform(deployments, _DEPLOYMENT_COLUMNS)
    return (
        frame.filter(pl.col("event_id").is_not_null() & pl.col("service").is_not_null())
        .unique("event_id", keep="first", maintain_order=True)
        .sort("timestamp", "event_id", nulls_last=True)
    )


def _is_code_release(row: dict[str, Any]) -> bool:
    """A new build running (deploy, upgrade, rollback), as opposed to a config change or a removal."""
    config = (row["change_kind"] or "code") == "config"
    return bool(row["version"]) and not config and row["event_type"] != "removed"


def _service_versions(deployments: pl.DataFrame, b: _Builder) -> _Versions:
    versions = _Versions()
    for row in _ordered_deployments(deployments).iter_rows(named=True):
        name = b.name(row["service"])
        if row["event_type"] == "removed":
            versions.current[name] = None
            versions.removed_at[name] = row["timestamp"]
        elif _is_code_release(row):
            versions.current[name] = row["version"]
            versions.removed_at.pop(name, None)
    return versions


def _add_deployments(graph: nx.MultiDiGraph, deployments: pl.DataFrame, b: _Builder) -> None:
    for row in _ordered_deployments(deployments).iter_rows(named=True):
        service = b.name(row["service"])
        service_id, change_id, when = b.node_id(service), f"change:{row['event_id']}", row["timestamp"]
        extra = {k: row[k] for k in ("event_type", "previous_version", "artifact_id", "environment",
                                     "author")}
        _add_node(graph, change_id, node_type="change", name=row["event_id"], service=service,
                  version=row["version"], change_kind=row["change_kind"], commit=row["commit"],
                  changed_files=row["changed_files"], timestamp=when, attributes=_json(extra))
        if not _is_code_release(row):
            _add_edge(graph, service_id, change_id, "changed_by", "deployments",
                      first_seen=when, last_seen=when)
            continue
        version_id = f"version:{service}@{row['version']}"
        if version_id not in graph:
            _add_node(graph, version_id, node_type="version", name=row["version"], service=service,
                      version=row["version"], commit=row["commit"], timestamp=when,
                      attributes=_json({"artifact_id": row["artifact_id"]}))
            _add_edge(graph, service_id, version_id, "runs_version", "deployments",
                      first_seen=when, last_seen=when)
        elif when is not None:  # deployed again (a rollback to it): the edge spans both times
            edge = graph.edges[service_id, version_id, "runs_version"]
            edge["last_seen"] = when if edge["last_seen"] is None else max(edge["last_seen"], when)
        _add_edge(graph, version_id, change_id, "changed_by", "deployments", first_seen=when, last_seen=when)


def _level_rank(column: str) -> pl.Expr:
    return pl.col(column).str.to_uppercase().replace_strict(_LEVEL_RANK, default=-1, return_dtype=pl.Int32)


def _add_templates(graph: nx.MultiDiGraph, service_templates: pl.DataFrame, b: _Builder) -> None:
    if service_templates.height == 0:
        return
    times = [pl.col(c).cast(TS) if c in service_templates.columns else pl.lit(None, dtype=TS).alias(c)
             for c in ("first_seen", "last_seen")]
    is_error = pl.col("level").str.to_uppercase().is_in(_ERROR_LEVELS)
    per_service = (
        service_templates.filter(pl.col("service").is_not_null() & pl.col("template_id").is_not_null())
        .with_columns(pl.col("count").cast(pl.Int64), *times)
        .group_by("service", "template_id")
        .agg(
            pl.col("template").drop_nulls().first(),
            pl.col("count").sum(),
            pl.col("count").filter(is_error).sum().alias("errors"),
            pl.col("level").sort_by(_level_rank("level")).last().str.to_uppercase(),  # the worst level
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
        )
        .sort("template_id", "service")
    )
    per_template = per_service.group_by("template_id", maintain_order=True).agg(
        pl.col("template").first(),
        pl.col("service").unique().sort().alias("services"),
        pl.col("level").sort_by(_level_rank("level")).last(),
        pl.col("first_seen").min(),
    )
    for row in per_template.iter_rows(named=True):
        services = [b.name(s) for s in row["services"]]
        shared = len(services) > 1
        _add_node(graph, f"template:{row['template_id']}", node_type="template", name=row["template"],
                  service=None if shared else services[0], timestamp=row["first_seen"],
                  attributes=_json({"level": row["level"], "services": services if shared else None}))
    for row in per_service.iter_rows(named=True):
        _add_edge(graph, b.node_id(b.name(row["service"])), f"template:{row['template_id']}", "emits", "logs",
                  call_count=row["count"], error_count=row["errors"], first_seen=row["first_seen"],
                  last_seen=row["last_seen"])


# ------------------------------------------------------------------------------ tables and files


def graph_tables(graph: nx.MultiDiGraph) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The graph as (nodes, edges) frames conformed to ``NODES`` / ``EDGES``, sorted by id."""
    node_rows = []
    for node, data in graph.nodes(data=True):
        row = {c: data.get(c) for c in NODES}
        row["node_id"] = str(node)
        if isinstance(row["attributes"], dict):
            row["attributes"] = _json(row["attributes"])
        node_rows.append(row)
    edge_rows = []
    for source, target, key, data in graph.edges(keys=True, data=True):
        row = {c: data.get(c) for c in EDGES}
        row.update(source=str(source), target=str(target), edge_type=data.get("edge_type") or str(key))
        edge_rows.append(row)
    nodes = pl.DataFrame(node_rows, schema=NODES) if node_rows else pl.DataFrame(schema=NODES)
    edges = pl.DataFrame(edge_rows, schema=EDGES) if edge_rows else pl.DataFrame(schema=EDGES)
    return nodes.sort("node_id"), edges.sort("source", "target", "edge_type")


def graph_from_tables(nodes: pl.DataFrame, edges: pl.DataFrame) -> nx.MultiDiGraph:
    """The graph back from its tables (``signals.service_graph_nodes`` / ``_edges``).

    An edge whose endpoint is missing from ``nodes`` (a partial read) gets a bare node typed by its id.
    """
    _require(nodes, "nodes", ("node_id", "node_type", "name"), "signals.service_graph_nodes")
    _require(edges, "edges", ("source", "target", "edge_type"), "signals.service_graph_edges")
    nodes, edges = conform(nodes, NODES), conform(edges, EDGES)
    graph = nx.MultiDiGraph()
    graph.graph["description"] = "qa-assets service knowledge graph"
    for row in nodes.iter_rows(named=True):
        node_id = row.pop("node_id")
        graph.add_node(node_id, **row)
    for row in edges.iter_rows(named=True):
        source, target = row.pop("source"), row.pop("target")
        for endpoint in (source, target):
            if endpoint not in graph:
                node_type, _, name = endpoint.partition(":")
                _add_node(graph, endpoint, node_type=node_type if name else "service", name=name or endpoint,
                          service=name or endpoint)
        graph.add_edge(source, target, key=row["edge_type"], **row)
    return graph


def _plain(value: Any) -> Any:
    """A value GraphML can hold: lists and dicts as JSON text, times as ISO text, None dropped, and
    text without the control characters XML 1.0 forbids (log templates may carry ANSI colour codes)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        value = orjson.dumps(value, option=orjson.OPT_NAIVE_UTC).decode()
    if isinstance(value, str):
        return _XML_FORBIDDEN.sub("\ufffd", value)
    return value


def write_graphml(graph: nx.MultiDiGraph, path: str | Path) -> Path:
    """GraphML for Gephi, yEd, Cytoscape. GraphML has no lists or nulls: lists (``changed_files``)
    are JSON text, times ISO text, and missing values are left out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = nx.MultiDiGraph()
    plain.graph.update({k: _plain(v) for k, v in graph.graph.items() if v is not None})
    for node, data in graph.nodes(data=True):
        plain.add_node(str(node), **{k: _plain(v) for k, v in data.items() if v is not None})
    for source, target, key, data in graph.edges(keys=True, data=True):
        plain.add_edge(str(source), str(target), key=str(key),
                       **{k: _plain(v) for k, v in data.items() if v is not None})
    nx.write_graphml(plain, path)
    return path


def write_node_link_json(graph: nx.MultiDiGraph, path: str | Path) -> Path:
    """networkx node-link JSON (``nx.node_link_graph(data, edges="edges")`` reads it); times as ISO text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = nx.node_link_data(graph, edges="edges")
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def read_node_link_json(path: str | Path) -> nx.MultiDiGraph:
    """The graph back from ``write_node_link_json``, times as datetimes again."""
    data = orjson.loads(Path(path).read_bytes())
    graph = nx.node_link_graph(data, edges="edges", directed=True, multigraph=True)
    for _, values in graph.nodes(data=True):
        _parse_times(values)
    for _, _, values in graph.edges(data=True):
        _parse_times(values)
    return graph


def _parse_times(values: dict[str, Any]) -> None:
    for key in _TIME_KEYS:
        if isinstance(values.get(key), str):
            values[key] = datetime.fromisoformat(values[key])


# -------------------------------------------------------------------------------------- queries


def _dependency_view(graph: nx.MultiDiGraph) -> nx.DiGraph:
    """Service and datastore nodes with calls / depends_on edges, as a simple directed graph."""
    view = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        if data.get("node_type") in SERVICE_NODE_TYPES:
            view.add_node(node, **data)
    for source, target, data in graph.edges(data=True):
        if data.get("edge_type") not in DEPENDENCY_EDGE_TYPES or source == target:
            continue
        if source not in view or target not in view:
            continue
        if not view.has_edge(source, target):
            view.add_edge(source, target, edge_types=set(), call_count=0, error_count=0)
        entry = view.edges[source, target]
        entry["edge_types"].add(data["edge_type"])
        entry["call_count"] += int(data.get("call_count") or 0)
        entry["error_count"] += int(data.get("error_count") or 0)
    return view


def service_node(graph: nx.MultiDiGraph, service: str) -> str:
    """The node id of a service or datastore by name (or by node id)."""
    for candidate in (f"service:{service}", f"datastore:{service}", service):
        if candidate in graph and graph.nodes[candidate].get("node_type") in SERVICE_NODE_TYPES:
            return candidate
    lowered = service.lower()
    for node, data in graph.nodes(data=True):
        if data.get("node_type") in SERVICE_NODE_TYPES and str(data.get("name") or "").lower() == lowered:
            return node
    known = sorted(str(d.get("name")) for _, d in graph.nodes(data=True)
                   if d.get("node_type") in SERVICE_NODE_TYPES)
    raise UnknownServiceError(
        f"service {service!r} is not in the service graph ({len(known)} services/datastores, "
        f"e.g. {known[:8]}); check the name as spans, metrics or the catalog spell it"
    )


def _names(graph: nx.MultiDiGraph, nodes: Iterable[str]) -> list[str]:
    return sorted(str(graph.nodes[n].get("name") or n) for n in nodes)


def dependencies(graph: nx.MultiDiGraph, service: str) -> list[str]:
    """What ``service`` calls or depends on (services and datastores), by name."""
    node = service_node(graph, service)
    return _names(graph, _dependency_view(graph).successors(node))


def dependents(graph: nx.MultiDiGraph, service: str) -> list[str]:
    """What calls or depends on ``service``, by name."""
    node = service_node(graph, service)
    return _names(graph, _dependency_view(graph).predecessors(node))


def blast_radius(graph: nx.MultiDiGraph, service: str) -> list[str]:
    """Everything that transitively depends on ``service``: nearest first, then by name."""
    node = service_node(graph, service)
    view = _dependency_view(graph)
    hops = nx.single_source_shortest_path_length(view.reverse(copy=False), node)
    hops.pop(node, None)
    return [str(graph.nodes[n].get("name") or n) for n in sorted(hops, key=lambda n: (hops[n], str(n)))]


def owners(graph: nx.MultiDiGraph, service: str) -> dict[str, str | None]:
    """owner, system, tier and lifecycle of a service as the catalog gives them (None where it does not)."""
    data = graph.nodes[service_node(graph, service)]
    return {key: data.get(key) for key in ("owner", "system", "tier", "lifecycle")}


def blind_spots(graph: nx.MultiDiGraph) -> list[str]:
    """Services without spans of their own (known from the catalog, metrics, logs or their callers)."""
    return sorted(
        str(d.get("name")) for _, d in graph.nodes(data=True)
        if d.get("node_type") == "service" and not d.get("traced")
    )


def recent_changes(
    graph: nx.MultiDiGraph,
    service: str,
    at: datetime,
    before: timedelta,
    after: timedelta = timedelta(0),
    *,
    include_dependencies: bool = False,
) -> pl.DataFrame:
    """Changes (deployments, config changes, rollbacks) of ``service`` from ``at - before`` to
    ``at + after``, latest first (``RECENT_CHANGES``). ``include_dependencies`` adds the changes of what
    the service calls or depends on directly."""
    if before < timedelta(0) or after < timedelta(0):
        raise ValueError(f"before={before} and after={after} must not be negative")
    at = _naive_utc(at)
    names = {graph.nodes[service_node(graph, service)]["name"]}
    if include_dependencies:
        names.update(dependencies(graph, service))
    start, end = at - before, at + after
    rows = []
    for node, data in graph.nodes(data=True):
        when = data.get("timestamp")
        if data.get("node_type") != "change" or data.get("service") not in names or when is None:
            continue
        if start <= when <= end:
            extra = orjson.loads(data.get("attributes") or "{}")
            rows.append({
                "change_id": data.get("name") or str(node).removeprefix("change:"),
                "service": data.get("service"),
                "event_type": extra.get("event_type"),
                "change_kind": data.get("change_kind"),
                "version": data.get("version"),
                "previous_version": extra.get("previous_version"),
                "commit": data.get("commit"),
                "changed_files": data.get("changed_files"),
                "timestamp": when,
                "minutes_before": (at - when).total_seconds() / 60.0,
            })
    frame = pl.DataFrame(rows, schema=RECENT_CHANGES) if rows else pl.DataFrame(schema=RECENT_CHANGES)
    return frame.sort("timestamp", "change_id", descending=[True, False])


def graph_summary(graph: nx.MultiDiGraph) -> dict[str, Any]:
    """Sizes for asset metadata: nodes and edges by type, blind spots, the busiest call edges."""
    node_types = defaultdict(int)
    for _, data in graph.nodes(data=True):
        node_types[str(data.get("node_type"))] += 1
    edge_types = defaultdict(int)
    for _, _, data in graph.edges(data=True):
        edge_types[str(data.get("edge_type"))] += 1
    calls = sorted(
        ((int(d.get("call_count") or 0), str(graph.nodes[s].get("name")), str(graph.nodes[t].get("name")))
         for s, t, d in graph.edges(data=True) if d.get("edge_type") == "calls"),
        reverse=True,
    )
    return {
        "nodes": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "node_types": dict(sorted(node_types.items())),
        "edge_types": dict(sorted(edge_types.items())),
        "blind_spots": blind_spots(graph),
        "busiest_calls": [{"caller": a, "callee": b, "calls": n} for n, a, b in calls[:5]],
    }


def graph_problems(nodes: pl.DataFrame, edges: pl.DataFrame, limit: int = 20) -> list[str]:
    """What is wrong with a graph's tables (``NODES``, ``EDGES``), at most ``limit`` lines; empty when
    sound: an edge end that is not a node, a node without a type, a service that calls or depends on
    itself (spans joined to the wrong parent, or a catalog entry naming itself)."""
    _require(nodes, "nodes", ("node_id", "node_type"), "graph_tables")
    _require(edges, "edges", ("source", "target", "edge_type"), "graph_tables")
    problems: list[str] = []
    known = nodes.select("node_id")
    for end in ("source", "target"):
        dangling = edges.join(known, left_on=end, right_on="node_id", how="anti")
        problems += [f"{r['edge_type']} edge {r['source']} -> {r['target']}: its {end} is not a node"
                     for r in dangling.head(limit).iter_rows(named=True)]
    untyped = nodes.filter(pl.col("node_type").is_null() | ~pl.col("node_type").is_in(NODE_TYPES))
    problems += [f"node {r['node_id']} has no known type ({r['node_type']})"
                 for r in untyped.head(limit).iter_rows(named=True)]
    loops = edges.filter(pl.col("edge_type").is_in(DEPENDENCY_EDGE_TYPES)
                         & (pl.col("source") == pl.col("target")))
    problems += [f"{r['edge_type']} self-loop on {r['source']}" for r in loops.head(limit).iter_rows(named=True)]
    return problems[:limit]


def request_calls_problems(rows: pl.DataFrame, limit: int = 20) -> list[str]:
    """Rows of ``request_calls`` whose counts cannot be (more failed than requests, more requests calling
    a dependency than requests, more failed calling it than either), at most ``limit`` lines."""
    _require(rows, "request_calls", REQUEST_CALLS, "graph.request_calls")
    bad = rows.filter((pl.col("failed") > pl.col("requests")) | (pl.col("requests_calling") > pl.col("requests"))
                      | (pl.col("failed_calling") > pl.col("failed"))
                      | (pl.col("failed_calling") > pl.col("requests_calling")))
    return [f"{r['caller']} -> {r['callee']} at {r['window_start']}: requests {r['requests']}, failed {r['failed']}, "
            f"calling {r['requests_calling']}, failed calling {r['failed_calling']}"
            for r in bad.head(limit).iter_rows(named=True)]


# -------------------------------------------------------------------------------------- picture


def _layers(view: nx.DiGraph) -> dict[str, int]:
    """Left-to-right layer of each node: callers before callees (cycles collapsed first)."""
    condensed = nx.condensation(view)
    layer_of_scc = {}
    for depth, generation in enumerate(nx.topological_generations(condensed)):
        for scc in generation:
            layer_of_scc[scc] = depth
    mapping = condensed.graph["mapping"]
    return {node: layer_of_scc[mapping[node]] for node in view}


def render_png(graph: nx.MultiDiGraph, path: str | Path, max_nodes: int = 40, *,
               highlight: Iterable[str] = (), highlight_label: str = "root cause") -> Path:
    """A small picture of the services and datastores (callers left, callees right) for the Dagster UI.

    ``highlight`` names services (or node ids) drawn large with a red ring, labelled ``highlight_label``
    in the legend (the QA report marks the root causes of open defects); they are always drawn.

    Blue: services with spans; orange: services without (blind spots); grey squares: datastores.
    Edge width grows with call volume; red edges failed at least ``ERROR_EDGE_SHARE`` of their calls
    (one timeout in thousands is no news in a picture); dashed edges are catalog
    ``dependsOn`` links never seen in traces. Beyond ``max_nodes`` only the busiest nodes are drawn.
    """
    # The object-oriented API with the Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    view = _dependency_view(graph)
    total = view.number_of_nodes()
    wanted = {str(h) for h in highlight}
    marked = {n for n in view if n in wanted or str(view.nodes[n].get("name")) in wanted}
    if total > max_nodes:
        volume = {n: sum(d["call_count"] for *_, d in view.in_edges(n, data=True))
                  + sum(d["call_count"] for *_, d in view.out_edges(n, data=True)) for n in view}
        keep = sorted(view, key=lambda n: (n not in marked, -volume[n], -view.degree(n), str(n)))[:max_nodes]
        view = view.subgraph(keep).copy()

    layers = _layers(view) if view.number_of_nodes() else {}
    per_layer: dict[int, list[str]] = defaultdict(list)
    for node in sorted(view, key=lambda n: str(view.nodes[n].get("name"))):
        per_layer[layers[node]].append(node)
    n_layers = max(len(per_layer), 1)
    # Fewer crossings: each layer ordered by the mean row of its callers (the barycenter heuristic).
    row: dict[str, float] = {}
    for layer in sorted(per_layer):
        members = per_layer[layer]
        if layer > 0:
            def barycenter(node: str) -> float:
                rows = [row[p] for p in view.predecessors(node) if p in row]
                return sum(rows) / len(rows) if rows else float(len(members))
            members.sort(key=lambda n: (barycenter(n), str(view.nodes[n].get("name"))))
        for i, node in enumerate(members):
            row[node] = i - (len(members) - 1) / 2
    tallest = max((len(v) for v in per_layer.values()), default=1)
    width = min(max(2.0 * n_layers + 1.5, 5.0), 11.0)
    height = min(max(0.5 * tallest + 1.4, 3.0), 9.0)
    figure = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_axis_off()

    position = {node: (layers[node], -row[node]) for node in view}

    max_calls = max((d["call_count"] for *_, d in view.edges(data=True)), default=0)
    for source, target, data in view.edges(data=True):
        (x0, y0), (x1, y1) = position[source], position[target]
        observed = "calls" in data["edge_types"]
        width_pt = 0.6 + (2.4 * math.log1p(data["call_count"]) / math.log1p(max_calls) if max_calls else 0)
        axes.annotate(
            "", xy=(x1, y1), xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "-|>", "shrinkA": 12, "shrinkB": 12, "mutation_scale": 9,
                "color": "tab:red" if data["error_count"] >= ERROR_EDGE_SHARE * max(data["call_count"], 1)
                else ("0.45" if observed else "0.7"),
                "linewidth": width_pt if observed else 0.8, "linestyle": "solid" if observed else (0, (3, 2)),
                "connectionstyle": "arc3,rad=0.25" if x1 <= x0 else "arc3,rad=0.05",
            },
        )
    for node, (x, y) in position.items():
        data = view.nodes[node]
        datastore = data.get("node_type") == "datastore"
        color = "0.6" if datastore else ("tab:blue" if data.get("traced") else "tab:orange")
        axes.scatter([x], [y], s=150, marker="s" if datastore else "o", color=color, zorder=3,
                     edgecolors="white")
        if node in marked:
            axes.scatter([x], [y], s=420, marker="s" if datastore else "o", facecolors="none",
                         edgecolors="tab:red", linewidths=2.2, zorder=4)
        axes.text(x, y - 0.22, str(data.get("name")), ha="center", va="top", fontsize=7, zorder=4,
                  bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
                  parse_math=False)  # a name with `$…$` is no formula
    axes.set_xlim(-0.6, n_layers - 0.4)
    axes.set_ylim(-tallest / 2 - 0.4, tallest / 2 + 0.2)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="tab:blue", label="service (traced)"),
        Line2D([], [], marker="o", linestyle="", color="tab:orange", label="service (no spans)"),
        Line2D([], [], marker="s", linestyle="", color="0.6", label="datastore"),
        Line2D([], [], color="tab:red", label=f"calls, >= {ERROR_EDGE_SHARE:.0%} failed"),
        Line2D([], [], color="0.7", linestyle=(0, (3, 2)), label="catalog dependsOn only"),
    ]
    if marked:
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="tab:red",
                              markeredgewidth=2, markersize=11, label=highlight_label))
    axes.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=6,
                frameon=False)
    shown = f" (busiest {view.number_of_nodes()} of {total})" if total > view.number_of_nodes() else ""
    axes.set_title(f"service graph: {total} services and datastores{shown}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def png_markdown(path: str | Path, alt: str = "service graph") -> str:
    """The picture as markdown with an inline data URI (``MetadataValue.md`` shows it in the Dagster UI)."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    safe_alt = re.sub(r"[\[\]\\]", "", alt)
    return f"![{safe_alt}](data:image/png;base64,{encoded})"
