"""Signals stage: log templates with stable ids, the service knowledge graph, per-service feature windows."""

import os
from datetime import timedelta

import dagster as dg
import polars as pl

from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.resources import ArtifactsResource, WarehouseResource
from qa_assets.defs.telemetry.assets import LANDED_KEYS, RAW_KEYS
from qa_assets.lib import graph, windows
from qa_assets.lib import warehouse as wh
from qa_assets.lib.summary import markdown_table
from qa_assets.lib.templates import events as template_events

GROUP = "signals"
OWNERS = ["team:qa-platform"]
LOG_EVENTS = dg.AssetKey(["signals", "log_events"])
LOG_TEMPLATES = dg.AssetKey(["signals", "log_templates"])


def hour_of(context: dg.AssetExecutionContext):
    return context.partition_time_window.start.replace(tzinfo=None)


# Checks are evaluated in the step that writes the hour, on what it wrote (as the anomalies' drift check).
TEMPLATED_CHECK = dg.AssetCheckSpec(
    "every_line_templated", asset=LOG_EVENTS,
    description="Every raw log line of the hour has an event with a template id.")


def check_result(spec: dg.AssetCheckSpec, problems: list[str], severity: dg.AssetCheckSeverity, **metadata):
    """The outcome of a check: passed without problems, else the first problems listed."""
    return dg.AssetCheckResult(
        check_name=spec.name, asset_key=spec.asset_key, passed=not problems, severity=severity,
        description="; ".join(problems[:3]) if problems else None,
        metadata={**metadata, "problems": len(problems),
                  "first_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(LOG_EVENTS, group_name=GROUP, kinds={"duckdb", "polars"}, owners=OWNERS,
                     deps=[RAW_KEYS["logs"]], tags=HOURLY_TAG,
                     description="Every log line of the hour with its template id, template and parameters."),
        dg.AssetSpec(LOG_TEMPLATES, group_name=GROUP, kinds={"duckdb"}, owners=OWNERS, tags=HOURLY_TAG,
                     description="The template registry: stable ids, first/last seen, line counts, lineage."),
    ],
    partitions_def=hourly_partitions,
    pool="duckdb",
    check_specs=[TEMPLATED_CHECK],
)
def log_templates(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Mine the hour's log messages over their distinct shapes and match them against the registry."""
    hour = hour_of(context)
    with warehouse.connect() as con:
        _ensure_template_tables(con)
        logs = warehouse_frame(con, "SELECT * FROM raw.logs WHERE hour = ? ORDER BY timestamp, source_file, source_line",
                               [hour])
        registry = wh.read_table(con, "signals.log_templates")
        lineage = wh.read_table(con, "signals.template_lineage")
        result = template_events.template_hour(logs, registry, lineage, hour=hour)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM signals.log_events WHERE hour = ?", [hour])
            wh.insert(con, "signals.log_events", result.events)
            lineage_new = result.lineage_added.join(lineage.select("old_template_id", "new_template_id"),
                                                    on=["old_template_id", "new_template_id"], how="anti")
            wh.insert(con, "signals.template_lineage", lineage_new)
            lineage_all = wh.read_table(con, "signals.template_lineage")
            counts = warehouse_frame(con, "SELECT template_id, count(*) AS lines FROM signals.log_events GROUP BY 1")
            registry_new = template_events.recount_registry(result.registry, counts, lineage_all)
            con.execute("DELETE FROM signals.log_templates")
            wh.insert(con, "signals.log_templates", registry_new)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    events = result.events
    top = (events.group_by("service", "template_id", "template").agg(pl.len().alias("lines"))
           .sort("lines", descending=True).head(15))
    new = events.filter(pl.col("is_new_template")).select("template_id").n_unique()
    yield dg.MaterializeResult(asset_key=LOG_EVENTS, metadata={
        "dagster/row_count": events.height,
        "templates_in_hour": events.select("template_id").n_unique(),
        "new_templates": new,
        "top_templates": dg.MetadataValue.md(markdown_table(top)),
    })
    yield dg.MaterializeResult(asset_key=LOG_TEMPLATES, metadata={
        "dagster/row_count": registry_new.height,
        "active_templates": int((registry_new["status"] == "active").sum()),
        "generalized_this_hour": lineage_new.height,
    })
    yield check_result(TEMPLATED_CHECK, template_events.templating_problems(logs.height, events),
                       dg.AssetCheckSeverity.ERROR, raw_lines=logs.height, events=events.height)


def warehouse_frame(con, query: str, parameters=None) -> pl.DataFrame:
    return wh.read_frame(con, query, parameters)


def _ensure_template_tables(con) -> None:
    wh.ensure_table(con, "signals.log_events", template_events.LOG_EVENTS)
    wh.ensure_table(con, "signals.log_templates", template_events.TEMPLATES)
    wh.ensure_table(con, "signals.template_lineage", template_events.LINEAGE)


# ------------------------------------------------------------------------------ knowledge graph

SERVICE_CALLS = dg.AssetKey(["signals", "service_calls"])
GRAPH_NODES = dg.AssetKey(["signals", "service_graph_nodes"])
GRAPH_EDGES = dg.AssetKey(["signals", "service_graph_edges"])
SERVICE_WINDOWS = dg.AssetKey(["signals", "service_windows"])
REQUEST_CALLS_CHECK = dg.AssetCheckSpec(
    "request_calls_consistent", asset=SERVICE_CALLS,
    description="signals.request_calls: no window counts more failed requests, or requests calling a "
                "dependency, than it has requests.")
GRAPH_CHECK = dg.AssetCheckSpec(
    "graph_sound", asset=GRAPH_EDGES,
    description="Every edge end is a typed node; no service calls or depends on itself (mis-joined spans).")
WINDOWS_CHECK = dg.AssetCheckSpec(
    "windows_for_every_service", asset=SERVICE_WINDOWS,
    description="Every service with spans in the hour has windows, and every service has every window of the "
                "hour (quiet minutes are rows, not gaps).")
GRAPH_LOOKBACK = timedelta(hours=int(os.environ.get("QA_ASSETS_GRAPH_LOOKBACK_HOURS", "24")))
WINDOW_MINUTES = int(os.environ.get("QA_ASSETS_WINDOW_MINUTES", "1"))


def _with_hour(frame: pl.DataFrame, hour) -> pl.DataFrame:
    return frame.with_columns(pl.lit(hour).cast(pl.Datetime("us")).alias("hour")).select(
        "hour", *[c for c in frame.columns if c != "hour"])


def replace_hour(con, table: str, frame: pl.DataFrame, hour) -> None:
    wh.ensure_table(con, table, dict(frame.schema))
    wh.replace_where(con, table, frame, "hour", [hour])


@dg.asset(key=SERVICE_CALLS, group_name=GROUP, kinds={"duckdb", "polars"}, owners=OWNERS, tags=HOURLY_TAG,
          deps=[RAW_KEYS["spans"]], partitions_def=hourly_partitions, pool="duckdb",
          check_specs=[REQUEST_CALLS_CHECK])
def service_calls(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Caller→callee call counts, errors and latency of the hour, the services seen in spans, and per
    minute which dependencies each service's requests (and its failed ones) called."""
    hour = hour_of(context)
    with warehouse.connect() as con:
        spans = wh.read_frame(con, "SELECT * FROM raw.spans WHERE hour = ?", [hour])
        calls = _with_hour(graph.call_edges(spans), hour)
        services = _with_hour(graph.span_services(spans), hour)
        paths = _with_hour(graph.request_calls(spans, window_minutes=WINDOW_MINUTES), hour)
        replace_hour(con, "signals.call_edges", calls, hour)
        replace_hour(con, "signals.span_services", services, hour)
        replace_hour(con, "signals.request_calls", paths, hour)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": calls.height, "services_with_spans": services.height,
        "request_call_rows": paths.height,
        "calls": int(calls["call_count"].sum() or 0),
        "top_edges": dg.MetadataValue.md(markdown_table(
            calls.sort("call_count", descending=True).select("caller", "callee", "call_count", "error_count",
                                                             "latency_p95_ms").head(10))),
    }, check_results=[check_result(REQUEST_CALLS_CHECK, graph.request_calls_problems(paths),
                                   dg.AssetCheckSeverity.ERROR, rows=paths.height)])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(GRAPH_NODES, group_name=GROUP, kinds={"duckdb", "networkx"}, owners=OWNERS, tags=HOURLY_TAG,
                     deps=[SERVICE_CALLS, LANDED_KEYS["catalog"], RAW_KEYS["deployments"], RAW_KEYS["metrics"],
                           LOG_EVENTS],
                     description="Services, datastores, versions, changes and templates as of the hour."),
        dg.AssetSpec(GRAPH_EDGES, group_name=GROUP, kinds={"duckdb", "networkx"}, owners=OWNERS, tags=HOURLY_TAG,
                     description="Calls, dependsOn, versions, changes and emitted templates as of the hour."),
    ],
    partitions_def=hourly_partitions,
    pool="duckdb",
    check_specs=[GRAPH_CHECK],
)
def service_graph(context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactsResource):
    """The knowledge graph over the trailing window (calls) plus the catalog and every change so far."""
    hour = hour_of(context)
    end = hour + timedelta(hours=1)
    since = end - GRAPH_LOOKBACK
    with warehouse.connect() as con:
        inputs = graph_inputs(con, since=since, end=end)
        built = graph.build_graph(**inputs)
        nodes, edges = graph.graph_tables(built)
        replace_hour(con, "signals.service_graph_nodes", _with_hour(nodes, hour), hour)
        replace_hour(con, "signals.service_graph_edges", _with_hour(edges, hour), hour)
    folder = artifacts.folder("graph")
    stem = hour.strftime("%Y-%m-%dT%H")
    graphml = graph.write_graphml(built, folder / f"service-graph-{stem}.graphml")
    node_link = graph.write_node_link_json(built, folder / f"service-graph-{stem}.json")
    picture = graph.render_png(built, folder / f"service-graph-{stem}.png")
    summary = graph.graph_summary(built)
    yield dg.MaterializeResult(asset_key=GRAPH_NODES, metadata={
        "dagster/row_count": nodes.height,
        "node_types": dg.MetadataValue.json(summary["node_types"]),
        "blind_spots": dg.MetadataValue.json(summary["blind_spots"]),
        "graph": dg.MetadataValue.md(graph.png_markdown(picture)),
        "graphml": dg.MetadataValue.path(str(graphml)),
        "node_link_json": dg.MetadataValue.path(str(node_link)),
    })
    yield dg.MaterializeResult(asset_key=GRAPH_EDGES, metadata={
        "dagster/row_count": edges.height,
        "edge_types": dg.MetadataValue.json(summary["edge_types"]),
        "busiest_calls": dg.MetadataValue.json(summary["busiest_calls"]),
    })
    yield check_result(GRAPH_CHECK, graph.graph_problems(nodes, edges), dg.AssetCheckSeverity.ERROR,
                       nodes=nodes.height, edges=edges.height)


def graph_inputs(con, *, since, end) -> dict:
    """The build_graph inputs from the warehouse for calls in [since, end) and everything else up to `end`."""
    calls = wh.read_frame(con, "SELECT * FROM signals.call_edges WHERE hour >= ? AND hour < ?", [since, end])
    span_services = wh.read_frame(con, "SELECT * FROM signals.span_services WHERE hour >= ? AND hour < ?",
                                  [since, end])
    catalog = wh.read_table(con, "raw.catalog")
    deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp < ? ORDER BY timestamp",
                                [end])
    templates = wh.read_frame(
        con,
        # Per level: build_graph keeps the worst level and counts ERROR/FATAL lines itself.
        "SELECT service, template_id, any_value(template) AS template, level, count(*) AS count, "
        "min(timestamp) AS first_seen, max(timestamp) AS last_seen FROM signals.log_events "
        "WHERE hour >= ? AND hour < ? AND service IS NOT NULL GROUP BY service, template_id, level",
        [since, end])
    metric_services = wh.read_frame(
        con, "SELECT service, min(timestamp) AS first_seen FROM raw.metrics WHERE hour >= ? AND hour < ? "
             "AND service IS NOT NULL GROUP BY service", [since, end])
    return {
        "spans_edges": graph.merge_call_edges([calls.drop("hour")]),
        "span_services": graph.merge_span_services([span_services.drop("hour")]),
        "catalog": catalog, "deployments": deployments, "service_templates": templates,
        "metric_services": metric_services,
    }


# ------------------------------------------------------------------------------ feature windows


@dg.asset(key=SERVICE_WINDOWS, group_name=GROUP, kinds={"duckdb", "polars"}, owners=OWNERS, tags=HOURLY_TAG,
          deps=[RAW_KEYS["spans"], RAW_KEYS["metrics"], RAW_KEYS["deployments"], RAW_KEYS["test_cases"],
                LOG_EVENTS, GRAPH_NODES],
          partitions_def=hourly_partitions, pool="duckdb", check_specs=[WINDOWS_CHECK])
def service_windows(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Per service and minute: traffic, errors, latency, logs by level, new/error templates, resources, changes."""
    hour = hour_of(context)
    end = hour + timedelta(hours=1)
    metrics_from, metrics_to = windows.metrics_time_range(hour)
    with warehouse.connect() as con:
        spans = wh.read_frame(con, "SELECT * FROM raw.spans WHERE hour = ?", [hour])
        events = wh.read_frame(con, "SELECT * FROM signals.log_events WHERE hour = ?", [hour])
        # The point closing the hour's last minute may still be staged with the next hour.
        metrics = wh.read_frame(
            con, "SELECT * FROM raw.metrics WHERE timestamp BETWEEN ? AND ? "
                 "UNION ALL BY NAME SELECT * FROM staging.metrics WHERE timestamp BETWEEN ? AND ?",
            [metrics_from, metrics_to, metrics_from, metrics_to])
        deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE hour = ?", [hour])
        history = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp < ?", [hour])
        tests = wh.read_frame(con, "SELECT * FROM raw.test_cases WHERE hour = ?", [hour])
        services = [r[0] for r in con.execute(
            "SELECT DISTINCT name FROM signals.service_graph_nodes WHERE hour = ? "
            "AND node_type IN ('service', 'datastore')", [hour]).fetchall()]
        frame = windows.service_windows(hour_start=hour, spans=spans, logs_with_templates=events, metrics=metrics,
                                        deployments=deployments, test_cases=tests, services=services,
                                        window_minutes=WINDOW_MINUTES, history_deployments=history)
        replace_hour(con, "signals.service_windows", frame, hour)
    busiest = (frame.group_by("service").agg(pl.sum("requests"), pl.sum("errors"), pl.max("latency_p95_ms"),
                                             pl.sum("log_error"), pl.sum("new_template_count"))
               .sort("requests", descending=True))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height,
        "services": frame["service"].n_unique(),
        "feature_set_id": windows.feature_set_id(WINDOW_MINUTES),
        "per_service": dg.MetadataValue.md(markdown_table(busiest)),
    }, check_results=[check_result(
        WINDOWS_CHECK, windows.window_problems(frame, spans["service"].drop_nulls().unique().to_list(),
                                               WINDOW_MINUTES),
        dg.AssetCheckSeverity.WARN, services=frame["service"].n_unique())])
