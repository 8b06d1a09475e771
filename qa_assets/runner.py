"""Batch runs of the whole asset graph in-process: what `qa-assets run` and `qa-assets demo` do.

Order: the unpartitioned ingestion assets (land new files), then every hourly partition that received
records, oldest first, across all stages, then the unpartitioned assets downstream of the hours (graph,
models, release gate, report). The run uses the Dagster instance under DAGSTER_HOME when it is set, so the
runs show in the UI; the resources come from the same settings as the UI's (qa_assets.defs.resources).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg

from qa_assets.defs import resources as res
from qa_assets.defs.partitions import PARTITIONS_START, hourly_partitions
from qa_assets.defs.stages import stage_definitions
from qa_assets.defs.telemetry.assets import LANDED_KEYS
from qa_assets.lib import warehouse
from qa_assets.lib.ingest import landing as ingest


PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


class RunFailed(RuntimeError):
    pass


@dataclass
class GraphRun:
    hours: list[datetime] = field(default_factory=list)
    skipped_hours: list[datetime] = field(default_factory=list)
    runs: int = 0
    seconds: float = 0.0


def configure(landing: Path, warehouse_path: Path, artifacts: Path, *, settle_seconds: float) -> dict:
    """Resources for these paths; also exported to the environment so child code and the UI agree."""
    os.environ["QA_ASSETS_LANDING"] = str(landing)
    os.environ["QA_ASSETS_WAREHOUSE"] = str(warehouse_path)
    os.environ["QA_ASSETS_ARTIFACTS"] = str(artifacts)
    os.environ["QA_ASSETS_SETTLE_SECONDS"] = str(settle_seconds)
    resources = res.default_resources()
    resources["landing"] = res.LandingResource(path=str(landing), settle_seconds=settle_seconds)
    resources["warehouse"] = res.WarehouseResource(path=str(warehouse_path))
    resources["artifacts"] = res.artifacts_resource(str(artifacts))  # keeps the ticket-delivery settings
    # Models live beside the warehouse they were trained on, unless a store is configured.
    tracking_uri = os.environ.get("QA_ASSETS_MLFLOW_URI") or f"sqlite:///{warehouse_path.parent / 'mlflow.db'}"
    resources["model_store"] = res.ModelStoreResource(tracking_uri=tracking_uri)
    return resources


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_graph(resources: dict, *, say: Callable[[str], None] = print, log_level: str = "WARNING") -> GraphRun:
    started = time.monotonic()
    definitions = dg.Definitions.merge(*stage_definitions(), dg.Definitions(resources=resources))
    graph = definitions.resolve_asset_graph()
    assets = list(definitions.assets or []) + list(definitions.asset_checks or [])
    landed = set(LANDED_KEYS.values())
    partitioned = {k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None}
    downstream = set(graph.get_all_asset_keys()) - landed - partitioned
    instance = _instance()
    outcome = GraphRun()

    def materialize(selection: set[dg.AssetKey], partition_key: str | None, label: str) -> None:
        result = dg.materialize(assets, selection=list(selection), partition_key=partition_key,
                                resources=resources, instance=instance, raise_on_error=False,
                                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                                tags={"qa-assets/run": label})
        outcome.runs += 1
        if not result.success:
            failures = [e for e in result.all_events if e.is_step_failure]
            detail = "; ".join(
                f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else ''}"
                for e in failures)
            raise RunFailed(f"{label} failed: {detail or 'see the run in the Dagster UI'}")
        failed_checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
        for check in failed_checks:
            level = "warning" if check.severity == dg.AssetCheckSeverity.WARN else "check failed"
            say(f"  {level}: {check.asset_key.to_user_string()} {check.check_name}"
                + (f" ({check.description})" if check.description else ""))

    say("landing: ingesting new files ...")
    materialize(landed, None, "land")
    with warehouse.connect(resources["warehouse"].path) as con:
        hours = ingest.staged_hours(con)
    keys = set(hourly_partitions.get_partition_keys())
    outcome.hours = [h for h in hours if h.strftime(PARTITION_FORMAT) in keys]
    outcome.skipped_hours = [h for h in hours if h.strftime(PARTITION_FORMAT) not in keys]
    early = [h for h in outcome.skipped_hours if h < hourly_partitions.start.replace(tzinfo=None)]
    if early:
        say(f"  {len(early)} hours are before the partitions' start {PARTITIONS_START}: their records stay "
            "staged; set QA_ASSETS_PARTITIONS_START earlier to process them")
    if len(early) < len(outcome.skipped_hours):
        say(f"  {len(outcome.skipped_hours) - len(early)} hours are in the future (producer clocks ahead?): "
            "their records stay staged until those hours exist")
    for index, hour in enumerate(outcome.hours, 1):
        key = hour.strftime(PARTITION_FORMAT)
        say(f"hour {index}/{len(outcome.hours)}: {key} UTC")
        materialize(partitioned, key, f"hour {key}")
    if downstream:
        say("downstream: " + ", ".join(sorted(k.to_user_string() for k in downstream)))
        materialize(downstream, None, "downstream")
    outcome.seconds = time.monotonic() - started
    return outcome
