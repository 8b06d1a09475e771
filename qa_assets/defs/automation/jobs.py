"""Jobs the sensors and schedules launch: landing new files, and the graph for one hour."""

import dagster as dg

from qa_assets.defs.partitions import HOURLY_TAG, hourly_partitions
from qa_assets.defs.telemetry.assets import LANDED_KEYS

HOUR_ORDER_TAG = {"qa-assets/hour-order": "serial"}

land_telemetry = dg.define_asset_job(
    "land_telemetry",
    selection=dg.AssetSelection.assets(*LANDED_KEYS.values()),
    description="Ingest new and grown files of the landing directory into staging (and quarantine).",
)

# Every hourly-partitioned asset of every stage: the hour's graph, from raw tables to artifacts.
hourly_graph = dg.define_asset_job(
    "hourly_graph",
    selection=dg.AssetSelection.tag(*next(iter(HOURLY_TAG.items()))),
    partitions_def=hourly_partitions,
    description="Publish one UTC hour into raw tables and run every later stage for it.",
    # dagster.yaml admits one run with this tag at a time: hours are processed in order (a fold).
    tags=HOUR_ORDER_TAG,
)

# The unpartitioned stage after the hours: artifacts, release gate, knowledge base, report, ticket delivery.
post_deploy_gate = dg.define_asset_job(
    "post_deploy_gate",
    selection=dg.AssetSelection.groups("qa_artifacts"),
    description="After a deployment's hours were verified: regenerate artifacts and decide the release gate.",
)

JOBS = [land_telemetry, hourly_graph, post_deploy_gate]
