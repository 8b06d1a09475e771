"""Signals stage: log templates with stable ids, the service knowledge graph, per-service feature windows."""

import dagster as dg
import polars as pl

from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.resources import WarehouseResource
from qa_assets.defs.telemetry.assets import RAW_KEYS
from qa_assets.lib import warehouse as wh
from qa_assets.lib.summary import markdown_table
from qa_assets.lib.templates import events as template_events

GROUP = "signals"
OWNERS = ["team:qa-platform"]
LOG_EVENTS = dg.AssetKey(["signals", "log_events"])
LOG_TEMPLATES = dg.AssetKey(["signals", "log_templates"])


def hour_of(context: dg.AssetExecutionContext):
    return context.partition_time_window.start.replace(tzinfo=None)


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


def warehouse_frame(con, query: str, parameters=None) -> pl.DataFrame:
    return wh.read_frame(con, query, parameters)


def _ensure_template_tables(con) -> None:
    wh.ensure_table(con, "signals.log_events", template_events.LOG_EVENTS)
    wh.ensure_table(con, "signals.log_templates", template_events.TEMPLATES)
    wh.ensure_table(con, "signals.template_lineage", template_events.LINEAGE)
