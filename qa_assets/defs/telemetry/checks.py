"""Telemetry checks: nothing lost, nothing counted twice."""


import dagster as dg

from qa_assets.defs.resources import WarehouseResource
from qa_assets.defs.telemetry.assets import LANDED_KEYS
from qa_assets.lib.ingest.accounting import accounting_mismatches
from qa_assets.lib.summary import markdown_table


@dg.asset_check(asset=LANDED_KEYS["ingested_files"], pool="duckdb", description=(
    "Per source file, records read = accepted + quarantined, counted from the stored tables."))
def records_accounted_for(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=False) as con:
        mismatches, checked = accounting_mismatches(con)
    return dg.AssetCheckResult(
        passed=mismatches.height == 0,
        metadata={
            "files_checked": checked,
            "mismatched_files": mismatches.height,
            "mismatches": dg.MetadataValue.md(markdown_table(mismatches.head(20)) if mismatches.height else "none"),
        },
    )
