"""Telemetry stage: land files into the warehouse once, then publish each UTC hour into `raw.*`."""


from pathlib import Path

import dagster as dg
import polars as pl

from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.resources import LandingResource, WarehouseResource
from qa_assets.lib import warehouse
from qa_assets.lib.ingest import landing as ingest
from qa_assets.lib.summary import markdown_table

GROUP = "telemetry"
OWNERS = ["team:qa-platform"]
LANDED_KEYS = {
    "ingested_files": dg.AssetKey(["raw", "ingested_files"]),
    "quarantine": dg.AssetKey(["raw", "quarantine"]),
    "catalog": dg.AssetKey(["raw", "catalog"]),
}
RAW_KEYS = {name: dg.AssetKey(["raw", name]) for name in ingest.PARTITIONED_TABLES}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(LANDED_KEYS["ingested_files"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS,
                     description="Ledger of landed files: hash, resume point, status and per-file accounting."),
        dg.AssetSpec(LANDED_KEYS["quarantine"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS,
                     description="Every rejected record with the reason, source file and line or offset."),
        dg.AssetSpec(LANDED_KEYS["catalog"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS,
                     description="Backstage catalog entities (owner, system, tier, dependsOn)."),
    ],
    pool="duckdb",
)
def landed_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource):
    """Parse new and grown files of the landing directory into staging tables, masking personal data first."""
    key = ingest.mask_key(warehouse.folder)

    def progress(index: int, total: int, landed: ingest.LandedFile) -> None:
        if index % 50 == 0 or index == total - 1:
            context.log.info(f"landing: file {index + 1}/{total} ({landed.kind}) {landed.path.name}")

    with warehouse.connect() as con:
        summary = ingest.ingest_landing(con, Path(landing.path), key=key,
                                        settle_seconds=landing.settle_seconds, progress=progress)
        ledger = warehouse_totals(con)
        quarantine_rows = con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0]
        catalog_rows = con.execute("SELECT count(*) FROM raw.catalog").fetchone()[0]
        staged = ingest.staged_hours(con)
    this_run = pl.DataFrame(
        [{"kind": f.kind, "status": f.status, "records_read": f.records_read, "accepted": f.accepted,
          "quarantined": f.quarantined} for f in summary.files],
        schema={"kind": pl.String, "status": pl.String, "records_read": pl.Int64, "accepted": pl.Int64,
                "quarantined": pl.Int64},
    )
    per_kind = this_run.group_by("kind", "status").agg(pl.len().alias("files"), pl.sum("records_read"),
                                                        pl.sum("accepted"), pl.sum("quarantined")).sort("kind", "status")
    waiting = [f for f in summary.files if f.status == "waiting"]
    for f in waiting:
        context.log.warning(f"waiting: {f.path}: {f.reason}")
    yield dg.MaterializeResult(
        asset_key=LANDED_KEYS["ingested_files"],
        metadata={
            "files_this_run": len(summary.files),
            "records_read": summary.records_read,
            "accepted": summary.accepted,
            "quarantined": summary.quarantined,
            "waiting_files": len(waiting),
            "staged_hours": len(staged),
            "masked_values": dg.MetadataValue.json(summary.mask_counts),
            "this_run": dg.MetadataValue.md(markdown_table(per_kind) if per_kind.height else "no new files"),
            "all_files": dg.MetadataValue.md(markdown_table(ledger)),
            "dagster/row_count": int(ledger["files"].sum()) if ledger.height else 0,
        },
    )
    yield dg.MaterializeResult(asset_key=LANDED_KEYS["quarantine"],
                               metadata={"dagster/row_count": quarantine_rows,
                                         "new_rows": summary.quarantined})
    yield dg.MaterializeResult(asset_key=LANDED_KEYS["catalog"], metadata={"dagster/row_count": catalog_rows})


def warehouse_totals(con) -> pl.DataFrame:
    return warehouse.read_frame(
        con,
        "SELECT kind, status, count(*) AS files, sum(records_read) AS records_read, sum(accepted) AS accepted, "
        "sum(quarantined) AS quarantined FROM raw.ingested_files GROUP BY ALL ORDER BY ALL",
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(key, group_name=GROUP, kinds={"duckdb"}, owners=OWNERS, deps=[LANDED_KEYS["ingested_files"]],
                     tags=HOURLY_TAG,
                     description=f"raw.{name}: accepted {name.replace('_', ' ')} records of the hour, masked.")
        for name, key in RAW_KEYS.items()
    ],
    partitions_def=hourly_partitions,
    pool="duckdb",
)
def raw_telemetry(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Publish the staged records of one UTC hour (late ones too) into the raw tables."""
    hour = context.partition_time_window.start.replace(tzinfo=None)
    with warehouse.connect() as con:
        totals = ingest.publish_hour(con, hour)
    for name, key in RAW_KEYS.items():
        yield dg.MaterializeResult(asset_key=key, metadata={"dagster/row_count": totals[name]})
