"""Root-cause stage: ranked, explained candidate causes for every defect active in the hour."""

from datetime import timedelta

import dagster as dg
import polars as pl

from qa_assets.defs.defects.assets import ANOMALIES, DEFECTS, append_decisions
from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.resources import WarehouseResource
from qa_assets.defs.signals.assets import (
    GRAPH_EDGES,
    GRAPH_NODES,
    LOG_EVENTS,
    SERVICE_CALLS,
    SERVICE_WINDOWS,
    hour_of,
)
from qa_assets.defs.telemetry.assets import RAW_KEYS
from qa_assets.lib import graph, rca
from qa_assets.lib import warehouse as wh

ROOT_CAUSES = dg.AssetKey(["rca", "root_causes"])
LOOKBACK = timedelta(minutes=60)


@dg.asset(key=ROOT_CAUSES, group_name="root_causes", kinds={"duckdb", "networkx"}, owners=["team:qa-platform"],
          tags=HOURLY_TAG, deps=[DEFECTS, ANOMALIES, SERVICE_WINDOWS, SERVICE_CALLS, GRAPH_NODES, GRAPH_EDGES,
                                 RAW_KEYS["deployments"], LOG_EVENTS],
          partitions_def=hourly_partitions, pool="duckdb")
def root_causes(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Rank causes per defect from the graph, anomaly onset order, recent changes, new error templates and
    which dependencies the failed requests called."""
    hour = hour_of(context)
    end = hour + timedelta(hours=1)
    since = hour - LOOKBACK
    with warehouse.connect() as con:
        wh.ensure_table(con, "rca.root_causes", rca.ROOT_CAUSES)
        active = wh.read_frame(con, "SELECT * FROM defects.defects WHERE last_seen >= ? AND first_seen < ?", [hour, end])
        windows = wh.read_frame(con, "SELECT * FROM signals.service_windows WHERE window_start >= ? AND window_start < ?",
                                [since, end])
        scored = wh.read_frame(con, "SELECT * FROM defects.anomalies WHERE window_start >= ? AND window_start < ?",
                               [since, end])
        nodes = wh.read_frame(con, "SELECT * FROM signals.service_graph_nodes WHERE hour = ?", [hour]).drop("hour")
        edges = wh.read_frame(con, "SELECT * FROM signals.service_graph_edges WHERE hour = ?", [hour]).drop("hour")
        deployments = wh.read_frame(con, "SELECT * FROM raw.deployments WHERE timestamp < ?", [end])
        events = wh.read_frame(con, "SELECT * FROM signals.log_events WHERE hour >= ? AND hour < ?",
                               [hour - timedelta(hours=1), end])
        # a warehouse from before the table existed: an empty one (the ranking then goes without it)
        wh.ensure_table(con, "signals.request_calls", {"hour": graph.TS, **graph.REQUEST_CALLS})
        paths = wh.read_frame(con, "SELECT * FROM signals.request_calls WHERE window_start >= ? AND window_start < ?",
                              [since, end]).drop("hour")
        ranked = rca.rank_root_causes(active, windows=windows, anomalies=scored,
                                      graph=graph.graph_from_tables(nodes, edges), deployments=deployments,
                                      log_events=events, lookback=LOOKBACK, request_calls=paths)
        wh.replace_where(con, "rca.root_causes", ranked, "defect_id", active["defect_id"].to_list())
        top = ranked.filter(pl.col("rank") == 1)
        append_decisions(con, rca.decision_log_rows(
            ranked,
            feature_set_id=windows["feature_set_id"].drop_nulls().first() if windows.height else None,
            input_partitions=[hour.strftime("%Y-%m-%d-%H:%M")],
            input_row_counts={"defects.defects": active.height, "signals.service_windows": windows.height,
                              "defects.anomalies": scored.height, "raw.deployments": deployments.height,
                              "signals.request_calls": paths.height}))
    explanations = "\n\n---\n\n".join(top.sort("confidence", descending=True)["explanation"].head(5).to_list())
    return dg.MaterializeResult(metadata={
        "dagster/row_count": ranked.height, "defects_ranked": top.height,
        "changes_blamed": int(top["change_id"].is_not_null().sum()),
        "explanations": dg.MetadataValue.md(explanations or "no active defects this hour"),
    })
